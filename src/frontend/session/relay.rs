//! The relay: the response consumer of the hot path. Frames go to the
//! client's write buffer as they arrive, unchanged but for the sequence id
//! (renumbered by the driver); optionally the rows are digested for a
//! shadow read and PREPARE_OK's statement id becomes the client's.

use crate::protocol::drive::{Consumer, DriveError, Seen};
use crate::protocol::response::{Step, INSPECT_LIMIT};
use crate::protocol::wire::FLUSH_AT;
use crate::protocol::Wire;
use crate::shadow::Collector;
use std::future::Future;

pub(super) struct Relay<'a> {
    pub client: &'a mut Wire,
    /// Largest packet the client may send (LOCAL INFILE data).
    pub max_packet: usize,
    /// Digests the rows on their way (shadow reads).
    pub collector: Option<&'a mut Collector>,
    /// The client's id for the statement a PREPARE_OK announces.
    pub prepare_id: Option<u32>,
    /// More results follow this answer (a multi-statement packet run
    /// statement by statement): its final OK/EOF says so.
    pub more_results: bool,
    pub deprecate_eof: bool,
    /// The sequence id of the last frame written.
    pub last_seq: u8,
}

impl Relay<'_> {
    /// Sends `payload` to `backend` as a new command and relays its answer
    /// to the client, whose packets start at `seq`: the answer's summary
    /// and the sequence id after its last packet.
    pub(super) async fn command(
        mut self,
        backend: &mut Wire,
        payload: &[u8],
        seq: u8,
        expect: crate::protocol::response::Expect,
    ) -> Result<(crate::protocol::response::Summary, u8), super::SessionError> {
        let mut bseq = 0;
        backend
            .send_packet(&mut bseq, payload)
            .await
            .map_err(|e| super::SessionError::Backend(e.into()))?;
        self.last_seq = seq.wrapping_sub(1);
        let deprecate_eof = self.deprecate_eof;
        let driven =
            crate::protocol::drive::drive(backend, expect, deprecate_eof, seq, &mut self).await?;
        Ok((driven.summary, self.last_seq.wrapping_add(1)))
    }
}

impl Consumer for Relay<'_> {
    #[inline]
    fn head(&mut self, head: &mut [u8], len: usize, seen: Seen) {
        if let Some(c) = self.collector.as_deref_mut() {
            let whole = (len <= INSPECT_LIMIT).then_some(&*head);
            c.packet(seen.was_rows, seen.in_rows, seen.step, whole);
        }
        if self.more_results && seen.step == Step::Done && len == head.len() {
            super::link::mark_more_results(head, self.deprecate_eof);
        }
        // PREPARE_OK: the client gets Tandem's statement id.
        if let Some(id) = self.prepare_id.take() {
            if head.first() == Some(&0x00) && len >= 5 && head.len() >= 5 {
                head[1..5].copy_from_slice(&id.to_le_bytes());
            }
        }
    }

    #[inline]
    fn frame(
        &mut self,
        header: &[u8],
        _starts_packet: bool,
    ) -> Result<(), crate::protocol::ProtocolError> {
        self.client.wbuf.extend_from_slice(header);
        if let Some(&s) = header.get(3) {
            self.last_seq = s;
        }
        Ok(())
    }

    #[inline]
    fn data(&mut self, bytes: &[u8]) {
        self.client.wbuf.extend_from_slice(bytes);
    }

    #[inline]
    fn wants_flush(&self) -> bool {
        self.client.wbuf.len() >= FLUSH_AT
    }

    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        self.client.flush()
    }

    /// Relays the client's LOCAL INFILE data packets (up to the empty one)
    /// to the backend.
    async fn local_infile(
        &mut self,
        backend: &mut Wire,
        seq: u8,
        bseq: u8,
    ) -> Result<(u8, u8), DriveError> {
        let (mut seq, mut bseq) = (seq, bseq);
        loop {
            let p = self
                .client
                .read_packet(Some(seq), self.max_packet)
                .await
                .map_err(DriveError::Client)?;
            seq = p.last_seq.wrapping_add(1);
            backend.queue_packet(&mut bseq, &p.payload);
            if backend.wbuf.len() >= FLUSH_AT || p.payload.is_empty() {
                backend
                    .flush()
                    .await
                    .map_err(|e| DriveError::Backend(e.into()))?;
            }
            if p.payload.is_empty() {
                return Ok((seq, bseq));
            }
        }
    }
}
