//! Merging several shards' answers to one read into the answer one
//! database would give: the first shard's column definitions, then rows
//! concatenated, k-way merged on the ORDER BY columns (one row per shard
//! in memory), or combined into one row of aggregates; OFFSET and LIMIT
//! applied to the whole. Every shard's response is read to its end, so
//! the connections stay usable; an error from any shard is the client's
//! answer (before rows, or in place of the next row, as a server ends a
//! failing result set).

use super::values::{self, Column, Order};
use crate::frontend::session::link::edit_status;
use crate::protocol::packets::put_lenenc;
use crate::protocol::response::{Expect, Step, Tracker};
use crate::protocol::wire::{write_frames, FLUSH_AT};
use crate::protocol::{ErrSpec, ProtocolError, Wire};
use crate::router::shard::route::Merge;
use std::borrow::Cow;
use std::cmp::Ordering;

/// One shard's response, read packet by packet.
pub(super) struct Reply<'w> {
    pub wire: &'w mut Wire,
    tracker: Tracker,
    next_seq: u8,
    max: usize,
    /// Column definitions carry MariaDB's extended metadata.
    extended: bool,
}

/// The head of a shard's answer.
pub(super) enum Head {
    /// OK or ERR: the whole answer.
    Done(Vec<u8>),
    /// A result set: column count, definitions (and EOF), and the
    /// definitions parsed.
    Rows {
        packets: Vec<Vec<u8>>,
        columns: Vec<Column>,
    },
}

/// Why a merge stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum MergeError {
    #[error("shard: {0}")]
    Shard(ProtocolError),
    #[error("client: {0}")]
    Client(std::io::Error),
    /// A kept answer grew past its limit.
    #[error("the answer is larger than Tandem keeps")]
    TooLarge,
}

pub(super) type M<T> = Result<T, MergeError>;

impl<'w> Reply<'w> {
    pub fn new(wire: &'w mut Wire, deprecate_eof: bool, extended: bool, max: usize) -> Self {
        Reply {
            wire,
            tracker: Tracker::new(Expect::ResultSet, deprecate_eof),
            next_seq: 1,
            max,
            extended,
        }
    }

    /// The next packet and whether it ends the response.
    async fn next(&mut self) -> M<(Vec<u8>, bool)> {
        let p = self
            .wire
            .read_packet(Some(self.next_seq), self.max)
            .await
            .map_err(MergeError::Shard)?;
        self.next_seq = p.last_seq.wrapping_add(1);
        let step = self
            .tracker
            .feed(&p.payload, p.payload.len())
            .map_err(MergeError::Shard)?;
        match step {
            Step::Done => Ok((p.payload, true)),
            Step::More => Ok((p.payload, false)),
            Step::LocalInfile => Err(MergeError::Shard(ProtocolError::Malformed(
                "LOCAL INFILE request in a merged answer",
            ))),
        }
    }

    pub async fn head(&mut self) -> M<Head> {
        let (first, done) = self.next().await?;
        if done {
            return Ok(Head::Done(first));
        }
        let mut packets = vec![first];
        while !self.tracker.in_rows() {
            let (p, done) = self.next().await?;
            if done {
                // An error in place of the definitions.
                return Ok(Head::Done(p));
            }
            packets.push(p);
        }
        let n = crate::protocol::packets::get_lenenc(&packets[0]).map_or(0, |(n, _)| n as usize);
        let defs = packets.iter().skip(1).take(n);
        let columns: Option<Vec<Column>> = defs.map(|p| values::column(p, self.extended)).collect();
        let Some(columns) = columns else {
            return Err(MergeError::Shard(ProtocolError::Malformed(
                "a column definition Tandem cannot read",
            )));
        };
        Ok(Head::Rows { packets, columns })
    }

    /// The next row, or Err(final packet) at the end (EOF/OK or ERR).
    pub async fn row(&mut self) -> M<Result<Vec<u8>, Vec<u8>>> {
        let (p, done) = self.next().await?;
        if done {
            return Ok(Err(p));
        }
        if !self.tracker.in_rows() {
            // A result set ended and another follows: not a merged read.
            return Err(MergeError::Shard(ProtocolError::Malformed(
                "several result sets from one shard in a merged answer",
            )));
        }
        Ok(Ok(p))
    }

    /// Reads what is left of the response.
    pub async fn drain(&mut self) -> M<()> {
        if self.tracker.is_done() {
            return Ok(());
        }
        loop {
            let (_, done) = self.next().await?;
            if done && self.tracker.is_done() {
                return Ok(());
            }
        }
    }
}

/// Where merged packets go: to the client, or kept (a read Tandem makes
/// for itself, e.g. INSERT … SELECT's rows).
pub(super) struct Out<'c> {
    pub client: Option<&'c mut Wire>,
    /// The packets when there is no client.
    pub kept: Vec<Vec<u8>>,
    /// Most bytes kept (past it, the read fails).
    pub keep_max: usize,
    pub seq: u8,
    pub deprecate_eof: bool,
    /// The status flags the client's final packet carries.
    pub status: u16,
    /// Rows are in the binary protocol (COM_STMT_EXECUTE).
    pub binary: bool,
    /// Rows sent so far.
    pub rows: u64,
    /// (shard's, cluster's) database name: written as the cluster's in
    /// column definitions and text rows (`metadata.rs`).
    pub rename: Option<(Vec<u8>, Vec<u8>)>,
}

impl Out<'_> {
    pub(super) async fn send(&mut self, p: &[u8]) -> M<()> {
        let Some(client) = self.client.as_mut() else {
            self.keep_max = self.keep_max.saturating_sub(p.len() + 16);
            if self.keep_max == 0 {
                return Err(MergeError::TooLarge);
            }
            self.kept.push(p.to_vec());
            return Ok(());
        };
        write_frames(&mut client.wbuf, &mut self.seq, p);
        if client.wbuf.len() >= FLUSH_AT {
            client.flush().await.map_err(MergeError::Client)?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> M<()> {
        match self.client.as_mut() {
            Some(c) => c.flush().await.map_err(MergeError::Client),
            None => Ok(()),
        }
    }

    pub(super) async fn finish(&mut self, mut last: Vec<u8>) -> M<()> {
        let status = self.status;
        edit_status(&mut last, self.deprecate_eof, |s| {
            // The shard's own flags but for the session-level ones, which
            // are the session's across shards.
            let session = 0x0001 | 0x0002;
            (s & !session) | (status & session)
        });
        self.send(&last).await?;
        self.flush().await
    }

    pub(super) async fn error(&mut self, e: &ErrSpec) -> M<()> {
        self.send(&e.encode()).await?;
        self.flush().await
    }
}

/// Reads every shard's answer to a read and sends the client the merged
/// answer `merge` describes.
pub(super) async fn merge_read(
    replies: &mut [Reply<'_>],
    out: &mut Out<'_>,
    merge: &Merge,
    cap: u64,
) -> M<()> {
    let mut heads = Vec::with_capacity(replies.len());
    for r in replies.iter_mut() {
        heads.push(r.head().await?);
    }
    // An error anywhere is the answer.
    if let Some(at) = heads
        .iter()
        .position(|h| matches!(h, Head::Done(p) if p.first() == Some(&0xFF)))
    {
        for r in replies.iter_mut() {
            r.drain().await?;
        }
        let Head::Done(p) = &heads[at] else {
            unreachable!("position found a Done head")
        };
        return out.finish(p.clone()).await;
    }
    let Some(Head::Rows { packets, columns }) = heads.first() else {
        // OK from every shard (a read without rows): the first one's.
        for r in replies.iter_mut() {
            r.drain().await?;
        }
        let Some(Head::Done(p)) = heads.into_iter().next() else {
            return Ok(());
        };
        return out.finish(p).await;
    };
    let columns = columns.clone();
    let head_packets = packets.clone();
    match merge {
        Merge::Ordered {
            keys,
            offset,
            limit,
        } => {
            let mut orders = Vec::new();
            for &(i, desc) in keys {
                match columns.get(i).map(|c| c.order()) {
                    Some(Ok(o)) => orders.push((i, o, desc)),
                    Some(Err(why)) => {
                        for r in replies.iter_mut() {
                            r.drain().await?;
                        }
                        return out.error(&not_supported(format!("ORDER BY {why}"))).await;
                    }
                    None => {
                        for r in replies.iter_mut() {
                            r.drain().await?;
                        }
                        return out
                            .error(&not_supported("ORDER BY a column the answer lacks".into()))
                            .await;
                    }
                }
            }
            send_head(out, &head_packets).await?;
            ordered(replies, out, &columns, &orders, *offset, *limit).await
        }
        Merge::Grouped(g) => {
            super::group::grouped(replies, out, &columns, &head_packets, g, cap).await
        }
        Merge::Concat { offset, limit } => {
            let head = match &out.rename {
                Some((physical, logical)) => head_packets
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        match i {
                            0 => None,
                            _ if i <= columns.len() => {
                                super::metadata::rename_definition(p, physical, logical)
                            }
                            _ => None,
                        }
                        .unwrap_or_else(|| p.clone())
                    })
                    .collect(),
                None => head_packets,
            };
            send_head(out, &head).await?;
            concat(replies, out, *offset, *limit, columns.len()).await
        }
        _ => {
            send_head(out, &head_packets).await?;
            concat(replies, out, 0, None, columns.len()).await
        }
    }
}

pub(super) fn not_supported(why: String) -> ErrSpec {
    ErrSpec::new(
        1235,
        "42000",
        format!("Tandem: {why} across shards is not supported yet"),
    )
}

async fn send_head(out: &mut Out<'_>, packets: &[Vec<u8>]) -> M<()> {
    for p in packets {
        out.send(p).await?;
    }
    Ok(())
}

/// Rows of every shard in turn.
async fn concat(
    replies: &mut [Reply<'_>],
    out: &mut Out<'_>,
    offset: u64,
    limit: Option<u64>,
    columns: usize,
) -> M<()> {
    let (mut skipped, mut sent) = (0u64, 0u64);
    let mut end: Option<Vec<u8>> = None;
    for r in replies.iter_mut() {
        loop {
            match r.row().await? {
                Ok(row) => {
                    if end.as_ref().is_some_and(|p| p.first() == Some(&0xFF)) {
                        continue;
                    }
                    if skipped < offset {
                        skipped += 1;
                    } else if limit.is_none_or(|l| sent < l) {
                        let renamed = match &out.rename {
                            Some((physical, logical)) if !out.binary => {
                                super::metadata::rename_row(&row, columns, physical, logical)
                            }
                            _ => None,
                        };
                        out.send(renamed.as_deref().unwrap_or(&row)).await?;
                        out.rows += 1;
                        sent += 1;
                    }
                }
                Err(p) => {
                    keep_end(&mut end, p);
                    break;
                }
            }
        }
    }
    match end {
        Some(p) => out.finish(p).await,
        None => Ok(()),
    }
}

/// The k-way merge: one current row per shard, the least sent first.
async fn ordered(
    replies: &mut [Reply<'_>],
    out: &mut Out<'_>,
    columns: &[Column],
    orders: &[(usize, Order, bool)],
    offset: u64,
    limit: Option<u64>,
) -> M<()> {
    let mut current: Vec<Option<Vec<u8>>> = Vec::with_capacity(replies.len());
    let mut end: Option<Vec<u8>> = None;
    for r in replies.iter_mut() {
        match r.row().await? {
            Ok(row) => current.push(Some(row)),
            Err(p) => {
                keep_end(&mut end, p);
                current.push(None);
            }
        }
    }
    let (mut skipped, mut sent) = (0u64, 0u64);
    loop {
        if end.as_ref().is_some_and(|p| p.first() == Some(&0xFF)) {
            break;
        }
        let mut best: Option<usize> = None;
        let mut unordered = false;
        for i in 0..current.len() {
            let Some(row) = &current[i] else { continue };
            best = match best {
                None => Some(i),
                Some(b) => {
                    let other = current[b].as_deref().unwrap_or_default();
                    match row_cmp(row, other, columns, out.binary, orders) {
                        Some(Ordering::Less) => Some(i),
                        Some(_) => Some(b),
                        None => {
                            unordered = true;
                            Some(b)
                        }
                    }
                }
            };
        }
        if unordered {
            // In place of the next row, as a server ends a failing result.
            for r in replies.iter_mut() {
                r.drain().await?;
            }
            return out
                .error(&not_supported(
                    "ORDER BY a string with characters beyond printable ASCII under a \
                     _general_ci collation"
                        .into(),
                ))
                .await;
        }
        let Some(b) = best else { break };
        if let Some(row) = current[b].take() {
            if skipped < offset {
                skipped += 1;
            } else if limit.is_none_or(|l| sent < l) {
                out.send(&row).await?;
                out.rows += 1;
                sent += 1;
            }
        }
        match replies[b].row().await? {
            Ok(row) => current[b] = Some(row),
            Err(p) => keep_end(&mut end, p),
        }
    }
    for r in replies.iter_mut() {
        r.drain().await?;
    }
    match end {
        Some(p) => out.finish(p).await,
        None => Ok(()),
    }
}

/// Keeps the terminator the client gets: an error over any EOF/OK.
pub(super) fn keep_end(end: &mut Option<Vec<u8>>, p: Vec<u8>) {
    match end {
        Some(e) if e.first() == Some(&0xFF) => {}
        _ => *end = Some(p),
    }
}

/// A row's values in text form, None for NULL.
type Values<'r> = Vec<Option<Cow<'r, [u8]>>>;

/// A row's values in text form (binary-protocol values converted); None:
/// a row Tandem cannot read.
fn values_of<'r>(row: &'r [u8], columns: &[Column], binary: bool) -> Option<Values<'r>> {
    if !binary {
        let f = values::fields(row, columns.len())?;
        return Some(
            f.into_iter()
                .map(|r| r.map(|r| Cow::Borrowed(&row[r])))
                .collect(),
        );
    }
    let f = values::binary_fields(row, columns)?;
    f.into_iter()
        .zip(columns)
        .map(|(r, c)| match r {
            None => Some(None),
            Some(r) => values::binary_text(c, &row[r]).map(|t| Some(Cow::Owned(t))),
        })
        .collect()
}

/// Order of two rows on the merge keys; None: a value Tandem cannot
/// order exactly, or a row it cannot read.
fn row_cmp(
    a: &[u8],
    b: &[u8],
    columns: &[Column],
    binary: bool,
    orders: &[(usize, Order, bool)],
) -> Option<Ordering> {
    let (fa, fb) = (
        values_of(a, columns, binary)?,
        values_of(b, columns, binary)?,
    );
    for &(i, o, desc) in orders {
        let c = values::compare(o, fa.get(i)?.as_deref(), fb.get(i)?.as_deref())?;
        let c = if desc { c.reverse() } else { c };
        if c.is_ne() {
            return Some(c);
        }
    }
    Some(Ordering::Equal)
}

pub(super) fn lenenc_bytes(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() + 9);
    put_lenenc(&mut out, v.len() as u64);
    out.extend_from_slice(v);
    out
}
