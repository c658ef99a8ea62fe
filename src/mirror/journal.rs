//! The durable mirror journal: an append-only log of records, each with a
//! log sequence number (LSN, from 1, contiguous), stored in segment files.
//!
//! On disk: `<dir>/<first lsn, 20 digits>.seg`. A segment starts with an
//! 16-byte header (`TNDMJRN1` + first LSN); each record is
//! `len u32 | crc32 u32 | lsn u64 | payload`, the CRC covering LSN and
//! payload. Records become durable in batches: the writer thread appends
//! everything queued, fsyncs once, then acknowledges every record of the
//! batch (group commit). Nothing is acknowledged before its fsync.
//!
//! Recovery: a crash can leave a partly written record at the end of the
//! last segment; it was never acknowledged, so `open` truncates it. A bad
//! record anywhere else is corruption and is reported, never skipped.
//!
//! Preallocation: the active segment is zero-filled ahead of the write
//! position (`PREALLOCATE` at a time, within the segment size), so most
//! fsyncs overwrite allocated blocks and need not commit a new file size
//! (on ext4 an fdatasync after an append also commits filesystem metadata).
//! An all-zero record header is therefore the end of what was written; a
//! segment is cut back to its records when the next one is started, and the
//! last one when the journal is opened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Options for a file only its owner may read: the journal and the files
/// beside it hold every mirrored value.
pub fn private_file() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.mode(0o600);
    o
}

/// Creates `dir` (and missing parents) for its owner only; an existing
/// directory keeps its mode (start-up warns if others can read it).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Takes the directory's lock (an exclusive `flock`, released by the
/// kernel when the process ends, however it ends) and writes this
/// process's id into the lock file, for the error another one gets.
fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let mut file = private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                format!(" (process {pid})")
            } else {
                String::new()
            };
            Err(JournalError::Locked { path, holder })
        }
        Err(fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Log sequence number of a record.
pub type Lsn = u64;

const MAGIC: &[u8; 8] = b"TNDMJRN1";
const SEGMENT_HEADER: u64 = 16;
const RECORD_HEADER: usize = 16;
/// Largest record accepted (a mirrored transaction); guards against reading
/// a garbage length as a huge allocation.
pub const MAX_RECORD: usize = 1 << 30;
/// Default segment size before rotation.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Zero-filled space kept ahead of the active segment's end (at most up to
/// the segment size).
const PREALLOCATE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal i/o: {0}")]
    Io(#[from] io::Error),
    #[error("journal corrupt in {file}: {what} at offset {offset}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        what: &'static str,
    },
    #[error("journal no longer holds LSN {0} (oldest is {1})")]
    Truncated(Lsn, Lsn),
    #[error("record of {0} bytes exceeds the journal's record limit")]
    TooLarge(usize),
    #[error(
        "in use by another Tandem{holder} (it holds the lock on {}); each mirroring Tandem \
         needs a journal directory of its own",
        path.display()
    )]
    Locked { path: PathBuf, holder: String },
}

/// The lock file in a journal directory: one writer at a time.
pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug, Clone)]
struct Segment {
    first_lsn: Lsn,
    path: PathBuf,
    len: u64,
}

/// The journal's synchronous core (owned by one writer; readers open their
/// own file handles through `reader`).
pub struct Journal {
    dir: PathBuf,
    /// Holds the directory's lock (`LOCK_FILE`) while the journal is open.
    _lock: File,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// The last segment, opened for writing at the end of its records.
    active: File,
    /// The active file's length: its records plus the zero-filled space.
    allocated: u64,
    /// Appended but not yet written to the file.
    pending: Vec<u8>,
    next_lsn: Lsn,
    /// Highest LSN written to the file (readers can see it).
    written_lsn: Lsn,
    durable_lsn: Lsn,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, truncating a torn
    /// tail left by a crash.
    ///
    /// Fails with `Locked` while another `Journal` (in this process or
    /// another) has the directory open: two writers would interleave
    /// records with the same LSNs.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self, JournalError> {
        create_private_dir(dir)?;
        let lock = lock_dir(dir)?;
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            segments.push(create_segment(dir, 1)?);
        }
        let last = segments.last_mut().expect("at least one segment");
        let (valid_len, next_lsn) = scan_tail(last)?;
        let mut active = OpenOptions::new().read(true).write(true).open(&last.path)?;
        if valid_len < last.len {
            if !all_zero(&mut active, valid_len)? {
                tracing::warn!(
                    segment = %last.path.display(),
                    dropped_bytes = last.len - valid_len,
                    "journal: truncating an unacknowledged partial record left by a crash"
                );
            }
            active.set_len(valid_len)?;
            last.len = valid_len;
        }
        // What a killed process wrote may still be only in the page cache
        // (lazy outcomes, a batch cut short before its fsync): everything
        // read here is counted durable, so make it so.
        active.sync_all()?;
        active.seek(SeekFrom::Start(valid_len))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            segment_bytes: segment_bytes.max(SEGMENT_HEADER + RECORD_HEADER as u64),
            segments,
            active,
            allocated: valid_len,
            pending: Vec::new(),
            next_lsn,
            written_lsn: next_lsn - 1,
            durable_lsn: next_lsn - 1,
        })
    }

    /// LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Highest LSN known to be on disk.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// Oldest LSN still held.
    pub fn first_lsn(&self) -> Lsn {
        self.segments.first().map_or(1, |s| s.first_lsn)
    }

    /// Bytes on disk (plus not yet written).
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum::<u64>() + self.pending.len() as u64
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a record; it is durable after the next `sync`.
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn, JournalError> {
        if payload.len() > MAX_RECORD {
            return Err(JournalError::TooLarge(payload.len()));
        }
        let active_len = self.segments.last().map_or(0, |s| s.len) + self.pending.len() as u64;
        if active_len > SEGMENT_HEADER
            && active_len + (RECORD_HEADER + payload.len()) as u64 > self.segment_bytes
        {
            self.rotate()?;
        }
        let lsn = self.next_lsn;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&lsn.to_le_bytes());
        crc.update(payload);
        self.pending
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.pending
            .extend_from_slice(&crc.finalize().to_le_bytes());
        self.pending.extend_from_slice(&lsn.to_le_bytes());
        self.pending.extend_from_slice(payload);
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Writes queued records and fsyncs; returns the durable LSN.
    pub fn sync(&mut self) -> Result<Lsn, JournalError> {
        self.write()?;
        self.active.sync_data()?;
        self.durable_lsn = self.written_lsn;
        Ok(self.durable_lsn)
    }

    /// Writes queued records to the file without an fsync (readers see
    /// them; a crash may lose them); returns the written LSN.
    pub fn write(&mut self) -> Result<Lsn, JournalError> {
        if !self.pending.is_empty() {
            let len = self.segments.last().map_or(0, |s| s.len);
            let end = len + self.pending.len() as u64;
            if end > self.allocated {
                // Zero-fill ahead; the next fsync commits the new length.
                let upto = end.max((end + PREALLOCATE).min(self.segment_bytes));
                let zeros = vec![0u8; (upto - end) as usize];
                std::os::unix::fs::FileExt::write_all_at(&self.active, &zeros, end)?;
                self.allocated = upto;
            }
            // At the segment's length, not the file cursor: a write that
            // failed part way (disk full) is redone over the same bytes.
            std::os::unix::fs::FileExt::write_all_at(&self.active, &self.pending, len)?;
            if let Some(s) = self.segments.last_mut() {
                s.len = end;
            }
            self.pending.clear();
        }
        self.written_lsn = self.next_lsn - 1;
        Ok(self.written_lsn)
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        self.write()?;
        // The finished segment ends with its last record.
        let len = self.segments.last().map_or(0, |s| s.len);
        self.active.set_len(len)?;
        self.active.sync_data()?;
        self.durable_lsn = self.written_lsn;
        let seg = create_segment(&self.dir, self.next_lsn)?;
        let mut active = OpenOptions::new().write(true).open(&seg.path)?;
        active.seek(SeekFrom::Start(SEGMENT_HEADER))?;
        self.active = active;
        self.allocated = SEGMENT_HEADER;
        self.segments.push(seg);
        // Make the new file's directory entry durable too.
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Deletes segments whose every record is below `lsn` (already applied).
    pub fn truncate_before(&mut self, lsn: Lsn) -> Result<usize, JournalError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first_lsn <= lsn {
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// A reader positioned at `from` (which must still be held).
    pub fn reader(&self, from: Lsn) -> Result<Reader, JournalError> {
        Reader::new(self.segments.clone(), from)
    }
}

/// Reads records in LSN order across segments, up to what is on disk.
pub struct Reader {
    segments: Vec<Segment>,
    index: usize,
    file: Option<(BufReader<File>, u64)>,
    next: Lsn,
    /// Set for a reader opened on a directory: at the end of the last known
    /// segment it looks for segments created since (a tailing reader).
    dir: Option<PathBuf>,
}

impl Reader {
    /// A reader over the journal in `dir`, independent of the writer (it
    /// sees the segments that exist now; reopen to see later ones).
    pub fn open(dir: &Path, from: Lsn) -> Result<Self, JournalError> {
        let mut r = Self::new(list_segments(dir)?, from)?;
        r.dir = Some(dir.to_path_buf());
        Ok(r)
    }

    fn new(segments: Vec<Segment>, from: Lsn) -> Result<Self, JournalError> {
        let first = segments.first().map_or(1, |s| s.first_lsn);
        if from < first {
            return Err(JournalError::Truncated(from, first));
        }
        let index = segments
            .iter()
            .rposition(|s| s.first_lsn <= from)
            .unwrap_or(0);
        Ok(Self {
            segments,
            index,
            file: None,
            next: from,
            dir: None,
        })
    }

    /// The next record at or after the starting LSN, or None at the end of
    /// what was written.
    pub fn next_record(&mut self) -> Result<Option<(Lsn, Vec<u8>)>, JournalError> {
        loop {
            if self.file.is_none() {
                let Some(seg) = self.segments.get(self.index) else {
                    return Ok(None);
                };
                let mut f = BufReader::new(File::open(&seg.path)?);
                let mut header = [0u8; SEGMENT_HEADER as usize];
                f.read_exact(&mut header)?;
                self.file = Some((f, SEGMENT_HEADER));
            }
            let seg_path = self.segments[self.index].path.clone();
            let (f, offset) = self.file.as_mut().expect("opened above");
            match read_record(f, &seg_path, *offset)? {
                Some((lsn, payload)) => {
                    *offset += (RECORD_HEADER + payload.len()) as u64;
                    if lsn < self.next {
                        continue;
                    }
                    if lsn != self.next {
                        return Err(JournalError::Corrupt {
                            file: seg_path,
                            offset: *offset,
                            what: "LSN gap",
                        });
                    }
                    self.next += 1;
                    return Ok(Some((lsn, payload)));
                }
                None => {
                    // Back to the record's start: a partial record (the
                    // writer is mid-append) is read again, whole, next time.
                    let at = *offset;
                    f.seek(SeekFrom::Start(at))?;
                    if self.index + 1 >= self.segments.len() {
                        self.refresh_segments()?;
                        if self.index + 1 < self.segments.len() {
                            // The writer finishes a segment before it starts
                            // the next, but it may have written more here
                            // since the read above: read again first.
                            continue;
                        }
                        return Ok(None);
                    }
                    self.index += 1;
                    self.file = None;
                }
            }
        }
    }
}

impl Reader {
    /// Forgets bytes read ahead of the next record, so the next read sees
    /// the file as it is now (a tailing reader calls this before reading
    /// records the writer announced since).
    pub fn drop_buffer(&mut self) -> Result<(), JournalError> {
        if let Some((f, offset)) = self.file.as_mut() {
            f.seek(SeekFrom::Start(*offset))?;
        }
        Ok(())
    }

    /// Picks up segments created after this reader was opened.
    fn refresh_segments(&mut self) -> Result<(), JournalError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let current = self.segments[self.index].first_lsn;
        let fresh = list_segments(dir)?;
        if let Some(i) = fresh.iter().position(|s| s.first_lsn == current) {
            if fresh.len() > i + 1 {
                self.segments = fresh;
                self.index = i;
            }
        }
        Ok(())
    }
}

/// One record; None at a clean end of file. A partial record at the end of
/// a file is also None (the writer may be mid-append); a complete record
/// with a bad CRC is corruption.
fn read_record(
    f: &mut impl Read,
    path: &Path,
    offset: u64,
) -> Result<Option<(Lsn, Vec<u8>)>, JournalError> {
    let mut h = [0u8; RECORD_HEADER];
    match read_full(f, &mut h)? {
        0 => return Ok(None),
        n if n < RECORD_HEADER => return Ok(None),
        _ => {}
    }
    if h.iter().all(|b| *b == 0) {
        // Zero-filled space ahead of the writer (LSNs start at 1).
        return Ok(None);
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let lsn = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD {
        return Err(JournalError::Corrupt {
            file: path.to_path_buf(),
            offset,
            what: "record length out of range",
        });
    }
    let mut payload = vec![0u8; len];
    if read_full(f, &mut payload)? < len {
        return Ok(None);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(&payload);
    if hasher.finalize() != crc {
        return Err(JournalError::Corrupt {
            file: path.to_path_buf(),
            offset,
            what: "CRC mismatch",
        });
    }
    Ok(Some((lsn, payload)))
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether `f` holds only zero bytes from `from` to its end.
fn all_zero(f: &mut File, from: u64) -> io::Result<bool> {
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(true),
            n if buf[..n].iter().any(|b| *b != 0) => return Ok(false),
            _ => {}
        }
    }
}

fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}.seg"))
}

fn create_segment(dir: &Path, first_lsn: Lsn) -> Result<Segment, JournalError> {
    let path = segment_path(dir, first_lsn);
    let mut f = private_file().create_new(true).write(true).open(&path)?;
    f.write_all(MAGIC)?;
    f.write_all(&first_lsn.to_le_bytes())?;
    f.sync_all()?;
    Ok(Segment {
        first_lsn,
        path,
        len: SEGMENT_HEADER,
    })
}

/// The first LSN the journal in `dir` holds (1 for a journal never
/// truncated, such as a new one).
pub fn first_lsn_in(dir: &Path) -> Result<Lsn, JournalError> {
    Ok(list_segments(dir)?
        .iter()
        .map(|s| s.first_lsn)
        .min()
        .unwrap_or(1))
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>, JournalError> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
        else {
            continue;
        };
        let Ok(first_lsn) = stem.parse::<Lsn>() else {
            continue;
        };
        let mut f = File::open(&path)?;
        let len = f.metadata()?.len();
        let mut header = [0u8; SEGMENT_HEADER as usize];
        if len < SEGMENT_HEADER || f.read_exact(&mut header).is_err() || &header[..8] != MAGIC {
            return Err(JournalError::Corrupt {
                file: path,
                offset: 0,
                what: "bad segment header",
            });
        }
        segs.push(Segment {
            first_lsn,
            path,
            len,
        });
    }
    segs.sort_by_key(|s| s.first_lsn);
    Ok(segs)
}

/// Validates the last segment; returns (valid length, next LSN).
fn scan_tail(seg: &Segment) -> Result<(u64, Lsn), JournalError> {
    let mut f = BufReader::new(File::open(&seg.path)?);
    f.seek(SeekFrom::Start(SEGMENT_HEADER))?;
    let mut offset = SEGMENT_HEADER;
    let mut next = seg.first_lsn;
    loop {
        match read_record(&mut f, &seg.path, offset) {
            Ok(Some((lsn, payload))) if lsn == next => {
                offset += (RECORD_HEADER + payload.len()) as u64;
                next += 1;
            }
            // A bad or out-of-sequence record at the tail is where a crash
            // interrupted the last (unacknowledged) write.
            Ok(Some(_)) | Err(JournalError::Corrupt { .. }) | Ok(None) => {
                return Ok((offset, next))
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
