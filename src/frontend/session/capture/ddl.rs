//! DDL while mirroring: placed in the journal exactly where it falls among
//! the writes to its tables, and settled from the tables' definitions when
//! its answer is lost or is an error after a partial effect.
//!
//! Order: the DDL runs under `LOCK TABLES … WRITE` on the tables it names.
//! Taking that lock waits until every transaction that touched them has
//! committed (and so journaled its intent, which precedes its COMMIT);
//! while it is held no other session can touch them. The intent is
//! journaled under the lock, so every write to those tables is on the
//! same side of the DDL in the journal as on the primary. Without the
//! lock, a transaction that commits while the DDL waits for its metadata
//! lock would be journaled after a DDL that the primary ran after it.
//! A DDL the server refuses under LOCK TABLES (RENAME TABLE, one naming a
//! table that does not exist yet) runs without it: a table that does not
//! exist has no writes to order.
//!
//! Outcome: the intent's token carries a fingerprint of the named tables'
//! definitions taken under the lock (`mirror::ddl`). An error answer is
//! checked against the definitions afterwards: `DROP TABLE a, b` that
//! dropped `a` and failed on `b` is journaled as the drop of `a`. A lost
//! answer is settled in the background from the primary's definitions
//! once the connection's thread is gone.

use super::super::link::{query_packet, Link, Reply};
use super::super::SessionError;
use super::vars::rows;
use super::{bare, Capture};
use crate::mirror::ddl;
use crate::mirror::now_us;
use crate::mirror::record::{MirrorStatement, MirrorTxn, Pins, SessionVars};
use crate::mirror::runtime::Mirror;
use crate::protocol::response::Expect;
use crate::protocol::ErrSpec;
use crate::router::{lexer, Route, SchemaObject};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Errors that say LOCK TABLES (or a DDL under it) cannot run in this form:
/// a table missing or not lockable, a statement not allowed under LOCK
/// TABLES. Nothing was changed; the DDL runs without the lock.
fn not_under_lock(code: u16) -> bool {
    matches!(
        code,
        1100 | 1192 | 1146 | 1049 | 1102 | 1103 | 1099 | 1347 | 1356
    )
}

impl Capture {
    /// DDL on tables (or triggers and routines) that the mirror follows.
    pub(super) async fn mirrored_ddl(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        payload: &[u8],
        sql: &[u8],
        seq: u8,
    ) -> Result<(), SessionError> {
        let secondary_sql = match self.for_secondary(cx, sql.to_vec()) {
            Ok(sql) => sql,
            Err(reason) => {
                return self
                    .unsafe_write(cx, m, &route.tables, &reason, payload, seq)
                    .await
            }
        };
        // An event must not run on both servers: disabled on the secondary.
        let secondary_sql = if route.object == Some(SchemaObject::Event) {
            match crate::mirror::events::disabled_on_secondary(&secondary_sql) {
                Some(sql) => sql,
                None => {
                    let reason = "Tandem cannot tell where this event statement's status goes, to keep the event disabled on the secondary";
                    return self
                        .unsafe_write(cx, m, &route.tables, reason, payload, seq)
                        .await;
                }
            }
        } else {
            secondary_sql
        };
        if let Some(reason) = self.shared_server_hazard(cx, route) {
            return self
                .unsafe_write(cx, m, &route.tables, &reason, payload, seq)
                .await;
        }
        if let Some(done) = self
            .journal_room(cx, m, &route.tables, payload, seq)
            .await?
        {
            return Ok(done);
        }
        let vars = self.ensure_vars(cx).await?;
        // Triggers and routines are not tables: no definitions to check.
        let tables = route.object.is_none() && !route.tables.is_empty();
        lexer::tokenize(sql, &mut cx.scratch.tokens);
        let rename = cx
            .scratch
            .tokens
            .first()
            .is_some_and(|t| t.is_word(sql, "RENAME"));
        // Writes to tables without transactions journal their intent
        // before they run (`effect`): their order locks keep them wholly
        // before or after the DDL in the journal, as on the primary.
        let _effects = match tables {
            true => match m.effect_lock(&route.tables, super::effect::LOCK_WAIT).await {
                Some(g) => Some(g),
                None => {
                    let msg = "Lock wait timeout exceeded; try restarting transaction (Tandem: a write to this table, which has no transactions, held it)";
                    return cx
                        .reply_err(seq, &crate::protocol::ErrSpec::new(1205, "HY000", msg))
                        .await;
                }
            },
            false => None,
        };
        // Under the client's own LOCK TABLES the tables are locked already
        // (a DDL there must name locked tables); UNLOCK would free them.
        let mut lock = tables && !rename && !cx.table_locks;
        loop {
            if lock {
                let refs: Vec<&String> = route.tables.iter().collect();
                cx.send_backend(&[&query_packet(ddl::lock_tables(&refs).as_bytes())])
                    .await?;
                let r = cx.read_reply(Expect::ResultSet).await?;
                match r.err {
                    None => {}
                    Some(code) if not_under_lock(code) => lock = false,
                    // Timed out or killed waiting: what the DDL itself
                    // would have met.
                    Some(_) => return cx.relay(seq, r, false).await,
                }
            }
            let before = if tables {
                self.definitions(cx, &route.tables).await?
            } else {
                None
            };
            let token = before.as_ref().map_or(ddl::UNCHECKED_DDL_TOKEN, |d| {
                ddl::checked_token(ddl::fingerprint(d))
            });
            let ts = now_us();
            let txn = self.ddl_txn(cx, secondary_sql.clone(), route.tables.clone(), ts, &vars);
            let lsn = match m.intent(token, txn).await {
                Ok(lsn) => Some(lsn),
                Err(e) => {
                    if let Some(msg) = self.journal_failed(cx, m, &route.tables, &e.to_string()) {
                        if lock {
                            cx.run_aux(&[b"UNLOCK TABLES"]).await?;
                        }
                        return cx.reply_err(seq, &ErrSpec::new(1105, "HY000", msg)).await;
                    }
                    None
                }
            };
            // Facts being read now may describe either side of the DDL.
            self.invalidate(cx, m, route);
            let (set_r, reply) = match self.run_pinned(cx, payload, ts).await {
                Ok(r) => r,
                Err(e) => {
                    match (lsn, before.is_some()) {
                        (Some(lsn), true) => m.in_doubt_ddl(
                            lsn,
                            token,
                            cx.backend_thread(),
                            cx.binding.conn().current_db.clone(),
                            route.tables.clone(),
                        ),
                        // Nothing to judge by: applied (a replay that finds
                        // it done is skipped by the applier).
                        _ => self.settle(m, lsn, token, true),
                    }
                    return Err(e);
                }
            };
            if let (Some(code), true) = (reply.err, lock) {
                if matches!(code, 1100 | 1192) {
                    // Refused in this form before doing anything: again
                    // without the lock.
                    self.settle(m, lsn, token, false);
                    cx.run_aux(&[b"UNLOCK TABLES"]).await?;
                    lock = false;
                    continue;
                }
            }
            if set_r.err.is_some() && reply.err.is_none() {
                m.mark_divergent(
                    &route.tables,
                    "a DDL ran without the statement time Tandem pins (its SET TIMESTAMP failed)",
                );
            }
            let committed = reply.err.is_none();
            self.settle(m, lsn, token, committed);
            if committed {
                m.stats.statements.fetch_add(1, Ordering::Relaxed);
                self.invalidate(cx, m, route);
            } else if let Some(before) = &before {
                if let Err(e) = self.partial_effect(cx, m, route, before, &vars).await {
                    m.mark_divergent(
                        &route.tables,
                        "a DDL failed on the primary and the connection was lost before Tandem could check what it changed",
                    );
                    return Err(e);
                }
            }
            if lock {
                // The DDL's status flags are what the client sees.
                cx.run_aux(&[b"UNLOCK TABLES"]).await?;
            }
            return cx.relay(seq, reply, false).await;
        }
    }

    /// Cached facts of the DDL's tables (of every table, for a DDL that
    /// names none: a trigger or routine may change any write) are stale.
    fn invalidate(&mut self, cx: &mut Link<'_>, m: &Mirror, route: &Route) {
        let current = cx.binding.conn().current_db.clone();
        let tables: Option<Vec<(String, String)>> = (route.object.is_none())
            .then(|| {
                route
                    .tables
                    .iter()
                    .map(|t| match t.split_once('.') {
                        Some((d, t)) => Some((d.to_string(), t.to_string())),
                        None => current.clone().map(|d| (d, t.clone())),
                    })
                    .collect()
            })
            .flatten();
        match tables {
            Some(t) if !t.is_empty() => m.tables_changed(&t),
            _ => m.schema_changed(),
        }
    }

    /// The DDL at a pinned statement time (a column added with a clock
    /// default stamps the existing rows with it): the SET's answer and the
    /// DDL's. The client's status follows the DDL's answer.
    async fn run_pinned(
        &mut self,
        cx: &mut Link<'_>,
        payload: &[u8],
        ts: i64,
    ) -> Result<(Reply, Reply), SessionError> {
        let set_p = query_packet(super::write::set_timestamp(ts).as_bytes());
        let reset_p = query_packet(b"SET TIMESTAMP = DEFAULT");
        cx.send_backend(&[&set_p, payload, &reset_p]).await?;
        let set = cx.read_reply(Expect::ResultSet).await?;
        let ddl = cx.read_reply(Expect::ResultSet).await?;
        let reset = cx.read_reply(Expect::ResultSet).await?;
        if let Some(ok) = reset.ok.or(ddl.ok) {
            cx.status = ok.status_flags();
        }
        Ok((set, ddl))
    }

    fn ddl_txn(
        &mut self,
        cx: &mut Link<'_>,
        sql: Vec<u8>,
        tables: Vec<String>,
        ts: i64,
        vars: &SessionVars,
    ) -> MirrorTxn {
        MirrorTxn {
            committed_at_us: now_us(),
            conn_id: cx.id,
            statements: vec![MirrorStatement {
                db: self.mirror_db(cx),
                sql,
                tables,
                ddl: true,
                pins: Pins {
                    timestamp_us: Some(ts),
                    ..Pins::default()
                },
                session: vars.clone(),
            }],
        }
    }

    /// The named tables' definitions as the session sees them (None: one
    /// could not be read for another reason than its absence; the DDL is
    /// then journaled unchecked).
    async fn definitions(
        &mut self,
        cx: &mut Link<'_>,
        tables: &[String],
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, SessionError> {
        let packets: Vec<Vec<u8>> = tables
            .iter()
            .map(|t| query_packet(ddl::show_create(t).as_bytes()))
            .collect();
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        cx.send_backend(&refs).await?;
        let mut out = Some(Vec::with_capacity(tables.len()));
        for _ in tables {
            let r = cx.read_reply(Expect::ResultSet).await?;
            let def = match r.err {
                Some(code) if ddl::is_absent(code) => Some(None),
                Some(_) => None,
                None => rows(&r, cx.deprecate_eof())
                    .and_then(|rows| rows.into_iter().next())
                    .and_then(|row| row.into_iter().nth(1))
                    .map(|d| ddl::normalize(d.as_deref())),
            };
            match (def, out.as_mut()) {
                (Some(d), Some(out)) => out.push(d),
                _ => out = None,
            }
        }
        Ok(out)
    }

    /// A DDL answered with an error: if it changed some of its tables
    /// anyway (a multi-table DROP stops at the first missing table, after
    /// dropping those before it), the tables it dropped are dropped on the
    /// secondary too; any other change marks the table divergent.
    async fn partial_effect(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        before: &[Option<Vec<u8>>],
        vars: &SessionVars,
    ) -> Result<(), SessionError> {
        let Some(after) = self.definitions(cx, &route.tables).await? else {
            m.mark_divergent(
                &route.tables,
                "a DDL failed on the primary and its tables' definitions could not be read back",
            );
            return Ok(());
        };
        let mut dropped = Vec::new();
        let mut changed = Vec::new();
        for ((t, b), a) in route.tables.iter().zip(before).zip(&after) {
            match (b, a) {
                (Some(_), None) => dropped.push(t.clone()),
                (b, a) if b != a => changed.push(bare(t).to_string()),
                _ => {}
            }
        }
        if !changed.is_empty() {
            m.mark_divergent(
                &changed,
                "a DDL failed on the primary after changing this table",
            );
        }
        if dropped.is_empty() {
            return Ok(());
        }
        let list = dropped
            .iter()
            .map(|t| ddl::quoted_name(t))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("DROP TABLE IF EXISTS {list}").into_bytes();
        let sql = match self.for_secondary(cx, sql) {
            Ok(sql) => sql,
            Err(reason) => {
                m.mark_divergent(&dropped, &reason);
                return Ok(());
            }
        };
        // Settled at once: nothing to judge later.
        let token = ddl::UNCHECKED_DDL_TOKEN;
        let txn = self.ddl_txn(cx, sql, dropped.clone(), now_us(), vars);
        match m.intent(token, txn).await {
            Ok(lsn) => {
                m.schema_changed();
                self.settle(m, Some(lsn), token, true);
            }
            Err(e) => {
                m.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                let reason =
                    format!("the tables a failed DROP dropped could not be journaled ({e})");
                m.mark_divergent(&dropped, &reason);
            }
        }
        Ok(())
    }
}
