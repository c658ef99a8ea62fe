//! Writes to tables without transactions (MyISAM, Aria, MEMORY, …),
//! mirrored by their effect (see `mirror::effect`): under the table's lock
//! of Tandem's, the intent is journaled before the statement runs and the
//! primary's answer (the id it generated, or the error it ended in) right
//! after. No BEGIN and no marker row: nothing here could undo the write,
//! and the client's own transaction and `LOCK TABLES` stay as they are.

use super::super::link::{query_packet, Link};
use super::super::SessionError;
use super::write::{pin_packet, row_count_of};
use super::Capture;
use crate::mirror::now_us;
use crate::mirror::record::{MirrorStatement, MirrorTxn};
use crate::mirror::runtime::{Mirror, TableFacts};
use crate::protocol::response::Expect;
use crate::protocol::ErrSpec;
use crate::router::{Class, Route, WriteKind};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a write waits for another write to the same table (without
/// transactions) through Tandem; then the server's lock-wait answer.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(50);

/// Errors a statement ends in before it touches a row: parse, name and
/// privilege errors. Any other error may come after some rows changed
/// (duplicate key, bad value, interrupted, disk full): the secondary must
/// end the same way.
const NOTHING_RAN: &[u16] = &[1044, 1045, 1046, 1049, 1054, 1064, 1142, 1143, 1146, 1149];

/// One write, ready to run.
pub(super) struct Effect {
    pub(super) packet: Vec<u8>,
    /// The statement as journaled (its insert id comes with the answer).
    pub(super) statement: MirrorStatement,
    /// The user variables it reads, journaled before it.
    pub(super) user_set: Option<MirrorStatement>,
    /// `INSERT … RETURNING` (or REPLACE): its answer is rows.
    pub(super) returning: bool,
    /// Every table it names (their order locks are taken).
    pub(super) locks: Vec<String>,
}

/// Why a write to such a table cannot be mirrored by its effect, if so
/// (the tables it reads are looked at by `effect_tables`).
pub(super) fn refusal(route: &Route, facts: &TableFacts, keyed: bool) -> Option<&'static str> {
    if facts.triggers {
        return Some("the table has triggers, whose writes elsewhere are not journaled with it");
    }
    if keyed {
        return Some("it picks rows by storage order (LIMIT)");
    }
    if route.determinism.uses.last_insert_id {
        return Some("it reads LAST_INSERT_ID()");
    }
    None
}

impl Capture {
    /// Every table a write to a table without transactions names (Ok), or
    /// why it cannot be mirrored by its effect (Err). Tables it reads are
    /// fine when they have no transactions either: such reads see the
    /// latest rows, on the primary and in replay alike, and taking their
    /// order locks too (`effect_write`) keeps writes to them on one side of
    /// it. A read of a table with transactions may see a snapshot, or miss
    /// a transaction journaled before it but not committed yet.
    pub(super) async fn effect_tables(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        sql: &[u8],
    ) -> Result<Result<Vec<String>, String>, SessionError> {
        let Some(named) = crate::router::named_tables(sql) else {
            return Ok(Err("Tandem cannot tell which tables it reads".into()));
        };
        let mut all = route.tables.clone();
        for t in named {
            if !all.iter().any(|a| a.eq_ignore_ascii_case(&t)) {
                all.push(t);
            }
        }
        if all.len() > 1 {
            for t in &all {
                let one = Route {
                    tables: vec![t.clone()],
                    ..route.clone()
                };
                if self
                    .table_facts(cx, m, &one)
                    .await?
                    .engine_without_transactions
                    .is_none()
                {
                    return Ok(Err(format!(
                        "it also names `{t}`, which has transactions (or is not a table), whose rows it may read at another moment than the secondary would"
                    )));
                }
            }
        }
        Ok(Ok(all))
    }

    pub(super) async fn effect_write(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        e: Effect,
        seq: u8,
    ) -> Result<(), SessionError> {
        let Some(_order) = m.effect_lock(&e.locks, LOCK_WAIT).await else {
            let msg = "Lock wait timeout exceeded; try restarting transaction (Tandem: another write to this table, which has no transactions, held it)";
            return cx.reply_err(seq, &ErrSpec::new(1205, "HY000", msg)).await;
        };
        let tables = route.tables.clone();
        // The statement time and seeds it was journaled with.
        let set_p = pin_packet(e.statement.pins.timestamp_us, e.statement.pins.rand_seeds);
        let txn = MirrorTxn {
            committed_at_us: now_us(),
            conn_id: cx.id,
            statements: e.user_set.into_iter().chain([e.statement]).collect(),
        };
        let lsn = match m.effect_intent(txn).await {
            Ok(lsn) => Some(lsn),
            Err(err) => match self.journal_failed(cx, m, &route.tables, &err.to_string()) {
                Some(msg) => return cx.reply_err(seq, &ErrSpec::new(1105, "HY000", msg)).await,
                None => None,
            },
        };
        let reset_p = query_packet(b"SET TIMESTAMP = DEFAULT");
        let mut batch: Vec<&[u8]> = Vec::with_capacity(3);
        batch.extend(set_p.as_deref());
        batch.push(&e.packet);
        if set_p.is_some() {
            batch.push(&reset_p);
        }
        let ran = async {
            cx.send_backend(&batch).await?;
            let set_r = match &set_p {
                Some(_) => Some(cx.read_reply(Expect::ResultSet).await?),
                None => None,
            };
            let stmt_r = cx.read_reply(Expect::ResultSet).await?;
            let reset_r = match &set_p {
                Some(_) => Some(cx.read_reply(Expect::ResultSet).await?),
                None => None,
            };
            Ok::<_, SessionError>((set_r, stmt_r, reset_r))
        };
        let (set_r, stmt_r, reset_r) = match ran.await {
            Ok(x) => x,
            Err(err) => {
                if let Some(lsn) = lsn {
                    m.effect_lost(lsn, &tables);
                }
                return Err(err);
            }
        };
        let insert = matches!(
            route.class,
            Class::Write(WriteKind::Insert | WriteKind::Replace)
        );
        let insert_id = match stmt_r.ok {
            // INSERT … RETURNING answers with rows, whose end carries no
            // generated id: LAST_INSERT_ID() has it (see `generated_id`).
            _ if e.returning => self.generated_id(cx).await?,
            Some(ok) if insert && ok.last_insert_id != 0 => Some(ok.last_insert_id),
            _ => None,
        };
        let refused_whole = stmt_r.err.is_some_and(|c| NOTHING_RAN.contains(&c));
        if let (Some(lsn), true) = (lsn, refused_whole) {
            // Refused before touching a row (the secondary, under another
            // account or schema, might not refuse it): nothing to apply.
            m.outcome(lsn, crate::mirror::effect::EFFECT_TOKEN, false);
        } else if let Some(lsn) = lsn {
            if let Err(err) = m.effect_answered(lsn, insert_id, stmt_r.err).await {
                tracing::error!(error = %err, "journal: the answer to a write without transactions was not recorded");
                m.effect_lost(lsn, &tables);
            } else if set_r.as_ref().is_some_and(|r| r.err.is_some()) {
                m.mark_divergent(
                    &tables,
                    "a write ran without the statement time Tandem pins (its SET TIMESTAMP failed)",
                );
            }
            m.stats.statements.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(ok) = reset_r.as_ref().and_then(|r| r.ok).or(stmt_r.ok) {
            cx.status = ok.status_flags();
        }
        if set_p.is_some() {
            // `SET TIMESTAMP = DEFAULT` ran after it.
            self.row_count_next = row_count_of(&stmt_r);
        }
        cx.relay(seq, stmt_r, false).await
    }
}
