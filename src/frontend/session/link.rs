//! The session's two connections — the client's `Wire` and the backend
//! `Binding` — with the wire-level state between them (capabilities,
//! status flags, scratch tokens), and the calls that move packets: relay a
//! command's answer, answer the client directly, and, for mirror capture,
//! pipeline Tandem's own statements and buffer replies.

use super::relay::Relay;
use super::SessionError;
use crate::backend::Binding;
use crate::config::Config;
use crate::mirror::runtime::Mirror;
use crate::protocol::command::COM_QUERY;
use crate::protocol::drive::{drive, Buffer};
use crate::protocol::packets::{get_lenenc, ok_packet, OkInfo};
use crate::protocol::response::{Expect, Summary};
use crate::protocol::wire::write_frames;
use crate::protocol::{ErrSpec, Wire};
use crate::router::{rename, Scratch};
use crate::shadow::Collector;
use crate::state::Shared;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use std::sync::Arc;

/// Largest reply Tandem buffers for a captured statement.
const MAX_REPLY: usize = 1 << 30;

pub(super) struct Link<'a> {
    pub shared: &'a Shared,
    /// Tandem's connection id for this session (what the client sees).
    pub id: u32,
    pub client: Wire,
    pub binding: Binding,
    pub caps: CapabilityFlags,
    /// MariaDB extended capabilities the client chose.
    pub ext_caps: u32,
    pub collation: u8,
    /// Status flags of the last OK/EOF the client got.
    pub status: StatusFlags,
    pub max_packet: usize,
    /// Tokens of the statement being handled (no allocation per statement).
    pub scratch: Scratch,
    /// An error answered a statement since capture last checked: the
    /// transaction may be gone (see `Capture::check_txn_end`).
    pub after_error: bool,
    /// LOCK TABLES is in effect: the session stays on its backend and
    /// keeps its fence ticket, and capture cannot wrap writes in a
    /// transaction (BEGIN would release the locks).
    pub table_locks: bool,
    /// The session sent `XA PREPARE`: its backend connection may hold a
    /// prepared branch, which only a disconnect detaches, so it is closed
    /// at the session's end rather than reset into the pool.
    pub xa_prepared: bool,
    /// A prepared XA branch is attached to this session's backend
    /// connection (from a successful `XA PREPARE` to its `XA COMMIT` or
    /// `XA ROLLBACK`): only that connection can finish it, so the session
    /// stays on its backend and keeps its fence ticket.
    pub xa_branch: bool,
    /// Error answers sent to the client so far (a command's outcome, for
    /// callers that only see it go by).
    pub errors_answered: u64,
    /// Set while the statements of one multi-statement packet run one by
    /// one (`multi.rs`): every answer continues the packet's response.
    pub multi: Option<MultiOut>,
}

/// Where one statement's answer stands in a multi-statement response.
#[derive(Debug, Clone, Copy)]
pub(super) struct MultiOut {
    /// More results follow: the answer's final OK/EOF carries
    /// SERVER_MORE_RESULTS_EXISTS, as the server's own would.
    pub more: bool,
    /// The client sequence id after the answer.
    pub next_seq: u8,
    /// The answer was an error: the server stops at it, so does Tandem.
    pub errored: bool,
}

/// One buffered backend reply.
pub(super) struct Reply {
    pub packets: Vec<Vec<u8>>,
    pub ok: Option<OkInfo>,
    pub err: Option<u16>,
}

/// A COM_QUERY packet for `sql`.
pub(super) fn query_packet(sql: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(sql.len() + 1);
    p.push(COM_QUERY);
    p.extend_from_slice(sql);
    p
}

impl Link<'_> {
    /// The running mirror, when writes are being mirrored.
    pub fn capturing(&self) -> Option<Arc<Mirror>> {
        let m = self.shared.mirror.load_full()?;
        if self
            .shared
            .config
            .load()
            .secondary
            .as_deref()
            .is_some_and(|s| m.mirrors_to(s))
        {
            Some(m)
        } else {
            None
        }
    }

    /// Sends `payload` to the backend and relays its response to the
    /// client, frame by frame, renumbering sequence ids from `seq`.
    pub async fn forward(
        &mut self,
        payload: &[u8],
        seq: u8,
        expect: Expect,
    ) -> Result<Summary, SessionError> {
        self.forward_with(payload, seq, expect, None, None).await
    }

    /// `forward`, digesting the rows into `collector` (a shadowed read)
    /// and giving the client `prepare_id` in a PREPARE_OK.
    pub async fn forward_with(
        &mut self,
        payload: &[u8],
        seq: u8,
        expect: Expect,
        collector: Option<&mut Collector>,
        prepare_id: Option<u32>,
    ) -> Result<Summary, SessionError> {
        self.binding.set_reusable(false);
        let deprecate_eof = self.deprecate_eof();
        let conn = self.binding.conn();
        let relay = Relay {
            client: &mut self.client,
            max_packet: self.max_packet,
            collector,
            prepare_id,
            more_results: self.multi.is_some_and(|m| m.more),
            deprecate_eof,
            last_seq: seq.wrapping_sub(1),
        };
        let (summary, next_seq) = relay.command(&mut conn.wire, payload, seq, expect).await?;
        self.answered(next_seq, summary.error.is_some());
        if let Some(ok) = summary.last_ok {
            self.status = ok.status_flags();
        }
        if summary.error.is_some() {
            self.after_error = true;
        }
        self.binding.set_reusable(true);
        Ok(summary)
    }

    /// An answer was sent whole: inside a multi-statement packet, where the
    /// next one starts and whether the packet stops here.
    fn answered(&mut self, next_seq: u8, errored: bool) {
        if errored {
            self.errors_answered += 1;
        }
        if let Some(m) = &mut self.multi {
            m.next_seq = next_seq;
            m.errored = errored;
        }
    }

    pub async fn reply_err(&mut self, mut seq: u8, err: &ErrSpec) -> Result<(), SessionError> {
        self.client.send_packet(&mut seq, &err.encode()).await?;
        self.answered(seq, true);
        Ok(())
    }

    pub async fn reply_ok(&mut self, mut seq: u8) -> Result<(), SessionError> {
        let mut status = self.status;
        if self.multi.is_some_and(|m| m.more) {
            status |= StatusFlags::SERVER_MORE_RESULTS_EXISTS;
        }
        let p = ok_packet(0, 0, status, 0);
        self.client.send_packet(&mut seq, &p).await?;
        self.answered(seq, false);
        Ok(())
    }

    /// Sends a command that has no response.
    pub async fn send_to_backend(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let be = &mut self.binding.conn().wire;
        let mut bseq = 0;
        be.send_packet(&mut bseq, payload)
            .await
            .map_err(|e| SessionError::Backend(e.into()))
    }

    /// Runs Tandem's own statements (pipelined), discarding their answers;
    /// returns the last OK.
    pub async fn run_aux(&mut self, sqls: &[&[u8]]) -> Result<Option<OkInfo>, SessionError> {
        let packets: Vec<Vec<u8>> = sqls.iter().map(|s| query_packet(s)).collect();
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        self.send_backend(&refs).await?;
        let mut last = None;
        for _ in sqls {
            let r = self.read_reply(Expect::ResultSet).await?;
            last = r.ok.or(last);
        }
        Ok(last)
    }

    /// Sends commands back to back (each a fresh sequence), one flush.
    pub async fn send_backend(&mut self, packets: &[&[u8]]) -> Result<(), SessionError> {
        self.binding.set_reusable(false);
        let wire = &mut self.binding.conn().wire;
        for p in packets {
            let mut s = 0u8;
            wire.queue_packet(&mut s, p);
        }
        wire.flush()
            .await
            .map_err(|e| SessionError::Backend(e.into()))
    }

    /// Reads one whole reply into memory.
    pub async fn read_reply(&mut self, expect: Expect) -> Result<Reply, SessionError> {
        let deprecate_eof = self.deprecate_eof();
        let mut buffer = Buffer::new(MAX_REPLY);
        let wire = &mut self.binding.conn().wire;
        let summary = drive(wire, expect, deprecate_eof, 1, &mut buffer)
            .await?
            .summary;
        Ok(Reply {
            packets: buffer.packets,
            ok: summary.last_ok,
            err: summary.error,
        })
    }

    /// Sends a buffered reply to the client, optionally clearing the
    /// in-transaction bit Tandem's own BEGIN put into it.
    pub async fn relay(
        &mut self,
        seq: u8,
        mut reply: Reply,
        clear_trans: bool,
    ) -> Result<(), SessionError> {
        if reply.err.is_some() {
            self.after_error = true;
        }
        let deprecate_eof = self.deprecate_eof();
        let more = self.multi.is_some_and(|m| m.more);
        if let Some(last) = reply.packets.last_mut() {
            if clear_trans {
                edit_status(last, deprecate_eof, |s| {
                    s & !StatusFlags::SERVER_STATUS_IN_TRANS.bits()
                });
            }
            if more {
                mark_more_results(last, deprecate_eof);
            }
        }
        let mut s = seq;
        for p in &reply.packets {
            write_frames(&mut self.client.wbuf, &mut s, p);
        }
        self.client.flush().await?;
        self.answered(s, reply.err.is_some());
        self.binding.set_reusable(true);
        Ok(())
    }

    pub fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// The session's current database as backend `on` names it (either
    /// role's URL database is `on`'s own; see `rename::map_db`).
    pub fn current_db_on(&mut self, cfg: &Config, on: &str) -> Option<String> {
        let db = self.binding.conn().current_db.as_deref()?;
        Some(rename::map_db(cfg, db, on))
    }

    /// The backend sent something, or closed, while the client was idle:
    /// the server ended the session (wait_timeout, KILL, a restart). What
    /// it sent (an error packet, on servers that explain) goes to the
    /// client as it came, and the caller closes the client's connection:
    /// the session's state is gone, as it would be for a direct client.
    /// `filled`: the read that noticed (true: bytes arrived).
    pub async fn backend_went_away(&mut self, filled: std::io::Result<bool>) {
        self.binding.set_reusable(false);
        let wire = &mut self.binding.conn().wire;
        let sent = wire.rbuf.len();
        self.client.wbuf.extend_from_slice(&wire.rbuf);
        wire.rbuf.clear();
        let _ = self.client.flush().await;
        self.shared.metrics.backend_errors.inc();
        tracing::info!(
            conn = self.id,
            backend = self.binding.backend(),
            bytes = sent,
            closed = !matches!(filled, Ok(true)),
            "the backend ended an idle session; closing the client's connection"
        );
    }

    /// The backend thread serving the session.
    pub fn backend_thread(&mut self) -> u32 {
        self.binding.conn().thread_id
    }
}

/// Clears SERVER_STATUS_IN_TRANS in the final OK/EOF of a reply.
/// Sets SERVER_MORE_RESULTS_EXISTS in an answer's final OK or EOF.
pub(super) fn mark_more_results(packet: &mut [u8], deprecate_eof: bool) {
    edit_status(packet, deprecate_eof, |s| {
        s | StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits()
    });
}

/// Rewrites the status flags of an OK or EOF packet (other packets are
/// left alone).
pub(super) fn edit_status(packet: &mut [u8], deprecate_eof: bool, f: impl Fn(u16) -> u16) {
    let at = match packet.first() {
        Some(0x00) => ok_status_offset(packet),
        Some(0xFE) if packet.len() < 9 && !deprecate_eof => Some(3),
        Some(0xFE) => ok_status_offset(packet),
        _ => None,
    };
    if let Some(at) = at {
        if let Some(b) = packet.get_mut(at..at + 2) {
            let s = f(u16::from_le_bytes([b[0], b[1]]));
            b.copy_from_slice(&s.to_le_bytes());
        }
    }
}

fn ok_status_offset(p: &[u8]) -> Option<usize> {
    let (_, a) = get_lenenc(p.get(1..)?)?;
    let (_, b) = get_lenenc(p.get(1 + a..)?)?;
    Some(1 + a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clear_in_trans(p: &mut [u8], deprecate_eof: bool) {
        edit_status(p, deprecate_eof, |s| {
            s & !StatusFlags::SERVER_STATUS_IN_TRANS.bits()
        });
    }

    #[test]
    fn in_trans_bit_is_cleared_in_ok_and_eof() {
        let st =
            (StatusFlags::SERVER_STATUS_IN_TRANS | StatusFlags::SERVER_STATUS_AUTOCOMMIT).bits();
        let mut ok = vec![0x00, 0x01, 0xFC, 0x10, 0x27];
        ok.extend_from_slice(&st.to_le_bytes());
        ok.extend_from_slice(&[0, 0]);
        clear_in_trans(&mut ok, false);
        assert_eq!(
            u16::from_le_bytes([ok[5], ok[6]]),
            StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits()
        );
        let mut eof = vec![0xFE, 0, 0];
        eof.extend_from_slice(&st.to_le_bytes());
        clear_in_trans(&mut eof, false);
        assert_eq!(
            u16::from_le_bytes([eof[3], eof[4]]),
            StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits()
        );
    }
}
