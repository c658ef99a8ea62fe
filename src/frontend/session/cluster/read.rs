//! Reads on several shards (or one, kept for Tandem's own use): each
//! shard sent its command, the answers merged as the plan says — to the
//! client, or kept in memory up to a limit.

use super::merge::{merge_read, MergeError, Out, Reply};
use super::values::{self, Column};
use super::ClusterSession;
use crate::backend::BackendError;
use crate::frontend::session::SessionError;
use crate::protocol::packets::get_lenenc;
use crate::router::shard::route::Merge;

/// A kept answer's column definitions and rows (text protocol, the end
/// packet left out). None: not a result set Tandem can read.
pub(in crate::frontend::session) fn rows_of(
    answer: &[Vec<u8>],
    extended: bool,
    deprecate_eof: bool,
) -> Option<(Vec<Column>, &[Vec<u8>])> {
    let n = get_lenenc(answer.first()?)?.0 as usize;
    let columns: Vec<Column> = answer
        .iter()
        .skip(1)
        .take(n)
        .map(|p| values::column(p, extended))
        .collect::<Option<_>>()?;
    if columns.len() != n || n == 0 {
        return None;
    }
    let from = 1 + n + usize::from(!deprecate_eof);
    Some((columns, answer.get(from..answer.len().saturating_sub(1))?))
}

impl ClusterSession<'_> {
    /// A kept answer's column definitions and rows, read with this
    /// session's protocol options.
    pub(super) fn kept_rows<'a>(
        &self,
        answer: &'a [Vec<u8>],
    ) -> Option<(Vec<Column>, &'a [Vec<u8>])> {
        let extended = self.ext_caps & crate::backend::MARIADB_EXTENDED_METADATA != 0;
        rows_of(answer, extended, self.deprecate_eof())
    }

    /// The values (text form) of a kept answer's first row; None: no row.
    pub(super) fn first_row(&self, answer: &[Vec<u8>]) -> Option<Vec<Option<Vec<u8>>>> {
        let (columns, rows) = self.kept_rows(answer)?;
        let row = rows.first()?;
        let fields = values::fields(row, columns.len())?;
        Some(
            fields
                .into_iter()
                .map(|f| f.map(|r| row[r].to_vec()))
                .collect(),
        )
    }

    /// Sends each target its command (`packets`, in target order; shards
    /// already entered) and merges the answers; `binary`: rows in the
    /// binary protocol (an execute).
    pub(super) async fn read_many(
        &mut self,
        targets: &[usize],
        packets: Vec<Vec<u8>>,
        merge: &Merge,
        seq: u8,
        binary: bool,
        rename: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), SessionError> {
        self.read_merged(targets, packets, merge, seq, binary, rename, None)
            .await
            .map(|_| ())
    }

    /// The most bytes a read Tandem keeps for itself may hold (the
    /// cluster's `merge_buffer`).
    pub(super) fn merge_buffer(&self) -> usize {
        self.shared
            .config
            .load()
            .cluster()
            .map_or(64 << 20, |c| c.merge_buffer as usize)
    }

    /// `read_many` whose merged answer is kept (up to `max` bytes), for a
    /// read Tandem makes itself.
    pub(super) async fn read_kept(
        &mut self,
        targets: &[usize],
        packets: Vec<Vec<u8>>,
        merge: &Merge,
        seq: u8,
        max: usize,
    ) -> Result<Kept, SessionError> {
        self.read_merged(targets, packets, merge, seq, false, None, Some(max))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn read_merged(
        &mut self,
        targets: &[usize],
        packets: Vec<Vec<u8>>,
        merge: &Merge,
        seq: u8,
        binary: bool,
        rename: Option<(Vec<u8>, Vec<u8>)>,
        keep: Option<usize>,
    ) -> Result<Kept, SessionError> {
        for &t in targets {
            if let Err(e) = self.enter(t).await {
                if keep.is_some() {
                    // Tandem's own read: its caller answers the client.
                    return Ok(Kept::Unreachable(e.to_string()));
                }
                self.backend_refused(seq, e).await?;
                return Ok(Kept::Answered);
            }
        }
        let started = std::time::Instant::now();
        for (&t, packet) in targets.iter().zip(&packets) {
            self.shards.set_reusable(t, false);
            if let Some(conn) = self.shards.open(t) {
                let mut s = 0;
                conn.wire.queue_packet(&mut s, packet);
                conn.wire
                    .flush()
                    .await
                    .map_err(|e| SessionError::Backend(e.into()))?;
            }
        }
        let deprecate_eof = self.deprecate_eof();
        let status = self.status().bits();
        let max = self.max_packet.max(1 << 24);
        let extended = self.ext_caps & crate::backend::MARIADB_EXTENDED_METADATA != 0;
        let cap = (self.shared.config.load().cluster()).map_or(64 << 20, |c| c.merge_buffer);
        let mut replies: Vec<Reply> = self
            .shards
            .wires(targets)
            .into_iter()
            .map(|w| Reply::new(w, deprecate_eof, extended, max))
            .collect();
        let mut out = Out {
            client: match keep {
                Some(_) => None,
                None => Some(&mut self.client),
            },
            kept: Vec::new(),
            keep_max: keep.unwrap_or(usize::MAX),
            seq,
            deprecate_eof,
            status,
            binary,
            rows: 0,
            rename,
        };
        let merged = merge_read(&mut replies, &mut out, merge, cap).await;
        if targets.len() > 1 {
            self.shared.metrics.merged_rows.inc_by(out.rows);
        }
        let kept = std::mem::take(&mut out.kept);
        let outcome = match merged {
            Ok(()) if keep.is_some() => Kept::Rows(kept),
            Ok(()) => Kept::Answered,
            Err(MergeError::TooLarge) => {
                for r in replies.iter_mut() {
                    match r.drain().await {
                        Ok(()) => {}
                        Err(MergeError::Shard(e)) => return Err(SessionError::Backend(e.into())),
                        Err(e) => {
                            return Err(SessionError::Backend(BackendError::Unsupported(
                                e.to_string(),
                            )))
                        }
                    }
                }
                Kept::TooLarge
            }
            Err(MergeError::Client(e)) => return Err(e.into()),
            Err(MergeError::Shard(e)) => return Err(SessionError::Backend(e.into())),
        };
        drop(replies);
        for &t in targets {
            self.shards.set_reusable(t, true);
            // Until the merged answer was read whole.
            self.observe_shard(t, started);
        }
        Ok(outcome)
    }
}

/// What a merged read Tandem makes for itself gave.
pub(super) enum Kept {
    /// The answer's packets (column count, definitions, rows, end).
    Rows(Vec<Vec<u8>>),
    /// Larger than asked for; the shards' answers were read to their end.
    TooLarge,
    /// The client was answered (the answer was not kept).
    Answered,
    /// A shard could not be reached (the client not answered).
    Unreachable(String),
}
