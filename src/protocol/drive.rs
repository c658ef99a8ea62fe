//! One loop for every backend response. [`drive`] reads a response's frames
//! from the backend's read buffer, lets the [`Tracker`] find where it ends
//! from packet heads only, renumbers sequence ids, and hands each piece to a
//! [`Consumer`] that decides what becomes of it:
//!
//! - the session's relay copies frames to the client byte for byte (the hot
//!   path; it may also digest rows for shadow reads and rewrite PREPARE_OK's
//!   statement id);
//! - [`Buffer`] keeps whole packets in memory (mirror capture answers the
//!   client only after it has seen the reply);
//! - the shadow `Collector` digests rows and drops them;
//! - [`Discard`] drops everything (Tandem's own commands).
//!
//! Consumers are type parameters, so the relay's calls are static and
//! inlined. Packets of any size stream through bounded memory unless the
//! consumer keeps them.

use super::packets::err_message;
use super::response::{Expect, Step, Summary, Tracker, INSPECT_LIMIT};
use super::wire::{frame_len, Wire, HEADER, MAX_FRAME};
use super::ProtocolError;
use bytes::Buf;
use std::future::Future;

/// What the tracker made of one logical packet.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// The tracker was inside a result set's rows before this packet.
    pub was_rows: bool,
    /// ... and is still inside them after it (the packet was a row).
    pub in_rows: bool,
    pub step: Step,
}

/// Where a response's packets go. Calls come in stream order: for each
/// frame, `head` (only when the frame starts a logical packet), then
/// `frame`, then one or more `data` calls with the frame's payload.
pub trait Consumer {
    /// The head of a logical packet, after the tracker judged it: the whole
    /// payload when `len <= INSPECT_LIMIT`, otherwise at least its first
    /// byte. It may be edited in place before it is passed on.
    fn head(&mut self, head: &mut [u8], len: usize, seen: Seen) {
        let _ = (head, len, seen);
    }

    /// A frame header (sequence id already renumbered); `starts_packet` is
    /// false for the continuation frames of a packet over 16 MiB.
    fn frame(&mut self, header: &[u8], starts_packet: bool) -> Result<(), ProtocolError> {
        let _ = (header, starts_packet);
        Ok(())
    }

    /// Payload bytes of the current frame.
    fn data(&mut self, bytes: &[u8]) {
        let _ = bytes;
    }

    /// At a frame boundary inside the response: whether buffered output
    /// should be written before more is read.
    fn wants_flush(&self) -> bool {
        false
    }

    /// Writes buffered output (the relay's client socket).
    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        async { Ok(()) }
    }

    /// The server asked for LOCAL INFILE data. Sends it to `backend`, its
    /// frames numbered from `bseq`, ending with the empty packet; returns
    /// the renumbered sequence id and the backend's sequence id that the
    /// server's answer carries next. By default nothing is sent (Tandem
    /// never runs LOAD DATA LOCAL for itself): just the empty packet.
    fn local_infile(
        &mut self,
        backend: &mut Wire,
        seq: u8,
        bseq: u8,
    ) -> impl Future<Output = Result<(u8, u8), DriveError>> + Send {
        async move {
            let mut bseq = bseq;
            backend
                .send_packet(&mut bseq, &[])
                .await
                .map_err(|e| DriveError::Backend(e.into()))?;
            Ok((seq, bseq))
        }
    }
}

/// Which side of the relay failed.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("{0}")]
    Backend(ProtocolError),
    #[error("{0}")]
    Client(ProtocolError),
}

/// The end of one response: what the tracker read from it on the way.
#[derive(Debug, Clone, Default)]
pub struct Driven {
    pub summary: Summary,
    /// The server's message when the response ended with ERR.
    pub error_message: Option<String>,
}

/// Reads one response to a command already sent to `be` and hands it to
/// `c`, renumbering frames from `seq`. Returns when the response is complete and `c` has flushed.
pub async fn drive<C: Consumer>(
    be: &mut Wire,
    expect: Expect,
    deprecate_eof: bool,
    seq: u8,
    c: &mut C,
) -> Result<Driven, DriveError> {
    let mut tracker = Tracker::new(expect, deprecate_eof);
    let mut error_message = None;
    let mut seq = seq;
    // The backend's own numbering, needed to send it LOCAL INFILE data:
    // the first frame continues the command's (1 after a one-frame
    // command, more after a long one); every later frame is checked.
    let mut bseq: Option<u8> = None;
    // Bytes of the current frame still to pass through, and whether the
    // current logical packet continues in another frame.
    let mut pass = 0usize;
    let mut continued = false;
    let mut step = Step::More;
    loop {
        // Cleared when the loop stops only to flush.
        let mut need_more = true;
        loop {
            if pass > 0 {
                let n = pass.min(be.rbuf.len());
                if n == 0 {
                    break;
                }
                c.data(&be.rbuf[..n]);
                be.rbuf.advance(n);
                pass -= n;
                continue;
            }
            if step != Step::More || be.rbuf.len() < HEADER {
                break;
            }
            let len = frame_len(&be.rbuf);
            let starts_packet = !continued;
            if starts_packet {
                // Small packets are inspected whole; big ones by their first
                // byte, then streamed.
                let need = HEADER + if len <= INSPECT_LIMIT { len } else { 1 };
                if be.rbuf.len() < need {
                    be.rbuf.reserve(need - be.rbuf.len());
                    break;
                }
            }
            let got = be.rbuf[3];
            if let Some(expected) = bseq.filter(|e| *e != got) {
                return Err(DriveError::Backend(ProtocolError::Sequence {
                    expected,
                    got,
                }));
            }
            bseq = Some(got.wrapping_add(1));
            be.rbuf[3] = seq;
            seq = seq.wrapping_add(1);
            continued = len == MAX_FRAME;
            if starts_packet {
                let head_end = (HEADER + len).min(be.rbuf.len());
                let was_rows = tracker.in_rows();
                step = tracker
                    .feed(&be.rbuf[HEADER..head_end], len)
                    .map_err(DriveError::Backend)?;
                if tracker.summary.error.is_some() && step == Step::Done {
                    error_message = Some(err_message(&be.rbuf[HEADER..head_end]));
                }
                let seen = Seen {
                    was_rows,
                    in_rows: tracker.in_rows(),
                    step,
                };
                c.head(&mut be.rbuf[HEADER..head_end], len, seen);
            }
            c.frame(&be.rbuf[..HEADER], starts_packet)
                .map_err(DriveError::Backend)?;
            let take = len.min(be.rbuf.len() - HEADER);
            c.data(&be.rbuf[HEADER..HEADER + take]);
            be.rbuf.advance(HEADER + take);
            pass = len - take;
            if pass == 0 && step == Step::More && c.wants_flush() {
                need_more = false;
                break;
            }
        }
        if pass == 0 && !continued {
            match step {
                Step::Done => {
                    c.flush().await.map_err(|e| DriveError::Client(e.into()))?;
                    return Ok(Driven {
                        summary: tracker.summary,
                        error_message,
                    });
                }
                Step::LocalInfile => {
                    c.flush().await.map_err(|e| DriveError::Client(e.into()))?;
                    let next = bseq.unwrap_or(1);
                    let (s, b) = c.local_infile(be, seq, next).await?;
                    (seq, bseq) = (s, Some(b));
                    tracker.infile_sent();
                    step = Step::More;
                    continue;
                }
                Step::More => {}
            }
        }
        c.flush().await.map_err(|e| DriveError::Client(e.into()))?;
        if !need_more {
            continue;
        }
        match be.fill().await {
            Ok(true) => {}
            Ok(false) => return Err(DriveError::Backend(ProtocolError::Closed)),
            Err(e) => return Err(DriveError::Backend(ProtocolError::Io(e))),
        }
    }
}

/// Keeps every packet of a response whole, up to `limit` bytes in all.
#[derive(Debug)]
pub struct Buffer {
    pub packets: Vec<Vec<u8>>,
    size: usize,
    limit: usize,
}

impl Buffer {
    pub fn new(limit: usize) -> Self {
        Self {
            packets: Vec::new(),
            size: 0,
            limit,
        }
    }
}

impl Consumer for Buffer {
    fn frame(&mut self, header: &[u8], starts_packet: bool) -> Result<(), ProtocolError> {
        let len = frame_len(header);
        self.size += len;
        if self.size > self.limit {
            return Err(ProtocolError::TooLarge {
                len: self.size,
                max: self.limit,
            });
        }
        match self.packets.last_mut() {
            Some(p) if !starts_packet => p.reserve(len),
            _ => self.packets.push(Vec::with_capacity(len)),
        }
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) {
        if let Some(p) = self.packets.last_mut() {
            p.extend_from_slice(bytes);
        }
    }
}

/// Drops the response; only what the tracker read from it is kept.
#[derive(Debug, Default)]
pub struct Discard;

impl Consumer for Discard {}
