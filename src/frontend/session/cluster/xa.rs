//! Transactions on a cluster, all or nothing across shards.
//!
//! Under `cross_shard_transactions: xa` (the default) a transaction's
//! first branch, the anchor, is an ordinary transaction (the client's
//! BEGIN, or autocommit=0's implicit one) and every later branch opens
//! with `XA START` (MariaDB cannot turn an open transaction into an XA
//! branch, so this is decided when a branch opens). A transaction that
//! stays on one shard is therefore exactly what it is on one database.
//! A COMMIT that wrote an XA branch runs the two-phase commit:
//!
//! 1. the decision row (the gtrid) is inserted in the anchor, its answer
//!    read (the row is locked from here on);
//! 2. read-only XA branches end with `XA COMMIT … ONE PHASE`; written ones
//!    get `XA END` + `XA PREPARE`, on every shard at once;
//! 3. the anchor's COMMIT: the decision, durable with the anchor's rows;
//! 4. `XA COMMIT` of every prepared branch.
//!
//! A crash or lost connection anywhere leaves prepared branches whose
//! decision row is committed (commit them) or gone with the anchor's
//! rollback (roll them back): `shard_tools::xa`'s resolver settles them.
//! A shard that refuses to prepare rolls the whole transaction back and
//! the client gets that shard's error.

use super::{not_supported, ClusterSession};
use crate::backend::BackendError;
use crate::frontend::session::link::query_packet;
use crate::frontend::session::SessionError;
use crate::protocol::drive::{drive, Discard};
use crate::protocol::response::Expect;
use crate::protocol::ErrSpec;
use crate::shard_tools::xa;

/// One shard's answers to a pipelined list of statements: the first
/// server error, if any.
type Answers = Result<Option<(u16, String)>, BackendError>;

/// Statements for shards, each shard's sent in order (`pipeline`).
type Work = Vec<(usize, Vec<Vec<u8>>)>;

/// `shard`'s XA branch of `gtrid` ended (`XA END`), then `last` of its
/// xid (`XA COMMIT {x} ONE PHASE`, `XA PREPARE {x}`, `XA ROLLBACK {x}`).
fn ended(gtrid: &str, shard: usize, last: impl FnOnce(&str) -> String) -> (usize, Vec<Vec<u8>>) {
    let x = xa::xid(gtrid, shard);
    (
        shard,
        vec![format!("XA END {x}").into_bytes(), last(&x).into_bytes()],
    )
}

impl ClusterSession<'_> {
    /// Opens `shard`'s branch of the open transaction: the anchor as the
    /// client began it, later branches as XA branches (or, under
    /// `reject` and for READ ONLY transactions, as the anchor).
    pub(super) async fn open_branch(&mut self, shard: usize) -> Result<(), BackendError> {
        let sql = if self.anchor.is_none() {
            self.anchor = Some(shard);
            self.explicit_txn.then(|| self.begin_sql.clone())
        } else if self.xa_branches() {
            let tag = xa::cluster_tag(&self.shared.config.load());
            let gtrid = self.gtrid.get_or_insert_with(|| xa::new_gtrid(&tag));
            Some(format!("XA START {}", xa::xid(gtrid, shard)).into_bytes())
        } else {
            self.explicit_txn.then(|| self.begin_sql.clone())
        };
        if let (Some(sql), Some(conn)) = (sql, self.shards.open(shard)) {
            conn.run(&query_packet(&sql), Expect::ResultSet).await?;
        }
        self.branches.insert(shard);
        Ok(())
    }

    /// Whether branches after the anchor open as XA branches.
    fn xa_branches(&self) -> bool {
        let xa = self
            .cluster()
            .is_some_and(|c| c.cross_shard == crate::config::CrossShard::Xa);
        xa && !self.read_only_txn()
    }

    /// The client began the transaction READ ONLY (it cannot write).
    fn read_only_txn(&self) -> bool {
        if !self.explicit_txn {
            return false;
        }
        let mut toks = Vec::new();
        crate::router::lexer::tokenize(&self.begin_sql, &mut toks);
        toks.windows(2)
            .any(|w| w[0].is_word(&self.begin_sql, "READ") && w[1].is_word(&self.begin_sql, "ONLY"))
    }

    /// Whether a write that reaches `targets` may run in the open
    /// transaction: one shard always; more under `xa`.
    pub(super) fn may_write(&self, targets: &[usize]) -> Result<(), ErrSpec> {
        if !self.in_txn() {
            return Ok(());
        }
        let mut w = self.wrote.clone();
        w.extend(targets.iter().copied());
        if w.len() > 1 && !self.xa_branches() {
            return Err(not_supported(
                "a transaction that writes more than one shard (cross_shard_transactions: \
                 reject); this statement did not run and the transaction is still open",
            ));
        }
        Ok(())
    }

    /// Ends the transaction on every shard with a branch (`verb`: COMMIT or
    /// ROLLBACK). Returns the error the client gets, if any.
    pub(super) async fn end_txn(&mut self, verb: &[u8]) -> Result<Option<ErrSpec>, SessionError> {
        let branches = std::mem::take(&mut self.branches);
        let wrote = std::mem::take(&mut self.wrote);
        let anchor = self.anchor.take();
        let gtrid = self.gtrid.take();
        self.explicit_txn = false;
        let commit = verb == b"COMMIT";
        let (Some(gtrid), Some(anchor)) = (gtrid, anchor) else {
            return self.end_plain(&branches, verb).await;
        };
        let (written, read_only): (Vec<usize>, Vec<usize>) = branches
            .iter()
            .filter(|&&s| s != anchor)
            .partition(|s| wrote.contains(s));
        if !commit || written.is_empty() {
            // Nothing to agree on: each branch ends on its own.
            let mut work = vec![(anchor, vec![verb.to_vec()])];
            for &s in written.iter().chain(&read_only) {
                work.push(ended(&gtrid, s, |x| {
                    if commit {
                        format!("XA COMMIT {x} ONE PHASE")
                    } else {
                        format!("XA ROLLBACK {x}")
                    }
                }));
            }
            let answers = self.pipeline(&work).await;
            return self.first_error(&work, answers, !commit);
        }
        self.two_phase(anchor, &gtrid, &written, &read_only).await
    }

    /// A shard rolled its branch back (a deadlock): the transaction ends
    /// on every shard, as one database ends all of it.
    pub(super) async fn abort_txn(&mut self) -> Result<(), SessionError> {
        if self.branches.is_empty() {
            return Ok(());
        }
        self.end_txn(b"ROLLBACK").await.map(|_| ())
    }

    /// Ends every branch with `verb` (no XA branch in the transaction).
    async fn end_plain(
        &mut self,
        branches: &std::collections::BTreeSet<usize>,
        verb: &[u8],
    ) -> Result<Option<ErrSpec>, SessionError> {
        let work: Vec<(usize, Vec<Vec<u8>>)> =
            branches.iter().map(|&s| (s, vec![verb.to_vec()])).collect();
        let answers = self.pipeline(&work).await;
        self.first_error(&work, answers, verb != b"COMMIT")
    }

    /// The client's error from a list of answers: the first server error
    /// (naming its shard when there were several); a lost connection ends
    /// the session. `rollback`: errors of ending a branch that is already
    /// gone (a deadlock rolled it back) are not the client's.
    fn first_error(
        &mut self,
        work: &[(usize, Vec<Vec<u8>>)],
        answers: Vec<Answers>,
        rollback: bool,
    ) -> Result<Option<ErrSpec>, SessionError> {
        let mut first = None;
        for ((shard, _), a) in work.iter().zip(answers) {
            match a {
                Ok(None) => {}
                Ok(Some(_)) if rollback => {}
                Ok(Some((code, message))) => {
                    first.get_or_insert_with(|| {
                        let message = if work.len() > 1 {
                            format!("{message} (shard {})", self.shards.name(*shard))
                        } else {
                            message
                        };
                        ErrSpec::new(code, "HY000", message)
                    });
                }
                Err(e) if rollback => {
                    // The branch rolls back with its connection.
                    tracing::debug!(shard, error = %e, "branch lost while rolling back");
                    self.shards.discard(*shard);
                }
                Err(e) => return Err(SessionError::Backend(e)),
            }
        }
        Ok(first)
    }

    /// The two-phase commit of a transaction that wrote XA branches.
    async fn two_phase(
        &mut self,
        anchor: usize,
        gtrid: &str,
        written: &[usize],
        read_only: &[usize],
    ) -> Result<Option<ErrSpec>, SessionError> {
        let started = std::time::Instant::now();
        // Every state a branch can be in (active, rollback-only after a
        // deadlock, idle, prepared) ends with XA END (its error ignored)
        // and XA ROLLBACK.
        let rollback_all = || -> Work {
            let mut work = vec![(anchor, vec![b"ROLLBACK".to_vec()])];
            for &s in written {
                work.push(ended(gtrid, s, |x| format!("XA ROLLBACK {x}")));
            }
            work
        };
        // 1. The decision row, locked in the anchor from here on.
        if let Some(e) = self.insert_decision(anchor, gtrid).await? {
            let work = rollback_all();
            let answers = self.pipeline(&work).await;
            self.first_error(&work, answers, true)?;
            return Ok(Some(e));
        }
        // 2. Read-only branches end; written ones prepare, all at once.
        let mut work: Work = Vec::new();
        for &s in read_only {
            work.push(ended(gtrid, s, |x| format!("XA COMMIT {x} ONE PHASE")));
        }
        for &s in written {
            work.push(ended(gtrid, s, |x| format!("XA PREPARE {x}")));
        }
        let answers = self.pipeline(&work).await;
        let refused = work.iter().zip(&answers).find_map(|((s, _), a)| match a {
            Ok(None) => None,
            Ok(Some((code, msg))) => Some((*s, *code, msg.clone())),
            Err(e) => Some((*s, 2013, e.to_string())),
        });
        let lost: Vec<usize> = work
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_err())
            .map(|((s, _), _)| *s)
            .collect();
        self.shared
            .metrics
            .xa_prepare_seconds
            .observe(started.elapsed().as_secs_f64());
        crate::failpoint::hit("xa-after-prepare");
        if let Some((shard, code, msg)) = refused {
            // A branch that did not prepare: the transaction rolls back
            // everywhere (a lost branch rolled back with its connection,
            // or, prepared, is settled by the resolver: no decision row).
            self.shared.metrics.xa_prepare_refused.inc();
            for s in &lost {
                self.shards.discard(*s);
            }
            let work: Vec<_> = rollback_all()
                .into_iter()
                .filter(|(s, _)| !lost.contains(s))
                .collect();
            let answers = self.pipeline(&work).await;
            self.first_error(&work, answers, true)?;
            let why = format!(
                "Tandem (cluster): the transaction was rolled back on every shard: shard {} \
                 could not prepare it (ERROR {code}: {msg})",
                self.shards.name(shard)
            );
            return Ok(Some(ErrSpec::new(
                if code == 2013 { 1180 } else { code },
                "HY000",
                why,
            )));
        }
        // 3. The decision.
        let decided = started.elapsed();
        let work = vec![(anchor, vec![b"COMMIT".to_vec()])];
        let answer = self.pipeline(&work).await.pop();
        match answer {
            Some(Ok(None)) => {}
            Some(Ok(Some((code, msg)))) => {
                let work = rollback_all()
                    .into_iter()
                    .filter(|(s, _)| *s != anchor)
                    .collect::<Vec<_>>();
                let answers = self.pipeline(&work).await;
                self.first_error(&work, answers, true)?;
                return Ok(Some(ErrSpec::new(
                    code,
                    "HY000",
                    format!("{msg} (the transaction was rolled back on every shard)"),
                )));
            }
            // The anchor's connection is gone: the commit may or may not
            // have happened; the resolver reads the decision and settles
            // the prepared branches. The client cannot be told which.
            _ => {
                self.shards.discard(anchor);
                let e = ErrSpec::new(
                    1180,
                    "HY000",
                    format!(
                        "Tandem (cluster): the connection to shard {} was lost during the \
                         commit; whether the transaction committed is decided by its record \
                         there, and Tandem completes it on every shard (see /status \
                         cluster.xa)",
                        self.shards.name(anchor)
                    ),
                );
                return Ok(Some(e));
            }
        }
        crate::failpoint::hit("xa-after-decision");
        // 4. The prepared branches commit: the first alone (a crash point
        // for tests sits after it), the rest at once.
        let mut all = true;
        let commit_of = |s: usize| {
            (
                s,
                vec![format!("XA COMMIT {}", xa::xid(gtrid, s)).into_bytes()],
            )
        };
        let (first, rest) = written.split_at(1);
        for (i, part) in [first, rest].into_iter().enumerate() {
            let work: Work = part.iter().map(|&s| commit_of(s)).collect();
            let answers = self.pipeline(&work).await;
            for ((s, _), a) in work.iter().zip(answers) {
                if !matches!(a, Ok(None)) {
                    // Committed by the resolver later; the transaction is
                    // committed (its decision is).
                    tracing::warn!(
                        shard = self.shards.name(*s),
                        gtrid,
                        "XA COMMIT of a prepared branch failed; the resolver completes it"
                    );
                    self.shards.discard(*s);
                    all = false;
                }
            }
            if i == 0 {
                crate::failpoint::hit("xa-after-first-commit");
            }
        }
        self.shared
            .metrics
            .xa_commit_seconds
            .observe((started.elapsed() - decided).as_secs_f64());
        self.shared.metrics.xa_commits.inc();
        if all {
            let backend = self.shards.name(anchor).to_string();
            self.shared.xa.finished(&backend, gtrid.to_string());
        }
        Ok(None)
    }

    /// Inserts `gtrid`'s decision row in the anchor's branch; the client's
    /// error when it cannot be (the table re-created once if it is gone).
    async fn insert_decision(
        &mut self,
        anchor: usize,
        gtrid: &str,
    ) -> Result<Option<ErrSpec>, SessionError> {
        let cfg = self.shared.config.load_full();
        let Some(b) = cfg.backends.get(self.shards.name(anchor)).cloned() else {
            return Ok(Some(not_supported(
                "the anchor shard is no longer configured",
            )));
        };
        let insert = query_packet(xa::decision_insert(&b, gtrid).as_bytes());
        for attempt in 0..2 {
            let Some(conn) = self.shards.open(anchor) else {
                return Ok(Some(not_supported("the anchor shard's connection is gone")));
            };
            match conn.run(&insert, Expect::ResultSet).await {
                Ok(_) => return Ok(None),
                Err(BackendError::Server { code, .. })
                    if attempt == 0 && crate::mirror::bookkeeping::is_missing(code) =>
                {
                    tracing::error!(
                        shard = b.name,
                        "Tandem's XA decision table was gone (dropped?); creating it again"
                    );
                    let mut c =
                        match crate::backend::own_conn(crate::backend::own_opts(&b).await).await {
                            Ok(c) => c,
                            Err(e) => return Ok(Some(ErrSpec::new(1105, "HY000", e.to_string()))),
                        };
                    let made = xa::ensure_table(&mut c, &b).await;
                    let _ = c.disconnect().await;
                    if let Err(e) = made {
                        return Ok(Some(ErrSpec::new(1105, "HY000", e.to_string())));
                    }
                }
                Err(BackendError::Server { code, message }) => {
                    return Ok(Some(ErrSpec::new(
                        code,
                        "HY000",
                        format!(
                            "Tandem (cluster): cannot record the cross-shard commit's decision \
                             on shard {}: {message}; the transaction was rolled back",
                            b.name
                        ),
                    )))
                }
                Err(e) => return Err(SessionError::Backend(e)),
            }
        }
        Ok(None)
    }

    /// Sends each shard its statements (every shard's sent before any
    /// answer is read, so the shards work at once), then reads them all.
    async fn pipeline(&mut self, work: &[(usize, Vec<Vec<u8>>)]) -> Vec<Answers> {
        let mut sent: Vec<Result<(), BackendError>> = Vec::with_capacity(work.len());
        for (shard, stmts) in work {
            let Some(conn) = self.shards.open(*shard) else {
                sent.push(Err(BackendError::Unsupported(
                    "shard connection not open".into(),
                )));
                continue;
            };
            for s in stmts {
                let mut seq = 0;
                conn.wire.queue_packet(&mut seq, &query_packet(s));
            }
            sent.push(conn.wire.flush().await.map_err(BackendError::from));
        }
        let mut out = Vec::with_capacity(work.len());
        for ((shard, stmts), sent) in work.iter().zip(sent) {
            if let Err(e) = sent {
                out.push(Err(e));
                continue;
            }
            let Some(conn) = self.shards.open(*shard) else {
                out.push(Err(BackendError::Unsupported(
                    "shard connection not open".into(),
                )));
                continue;
            };
            let deprecate_eof = conn.deprecate_eof();
            let mut first = None;
            let mut lost = None;
            for _ in stmts {
                match drive(
                    &mut conn.wire,
                    Expect::ResultSet,
                    deprecate_eof,
                    1,
                    &mut Discard,
                )
                .await
                {
                    Ok(d) => {
                        if let (None, Some(code)) = (&first, d.summary.error) {
                            first = Some((code, d.error_message.unwrap_or_default()));
                        }
                    }
                    Err(e) => {
                        lost = Some(BackendError::from(e));
                        break;
                    }
                }
            }
            out.push(match lost {
                Some(e) => Err(e),
                None => Ok(first),
            });
        }
        out
    }
}
