//! Keyed writes (see `router::keyed` and `mirror::rowkey`): an UPDATE or
//! DELETE whose matched rows depend on more than the locks it takes — under
//! READ COMMITTED or READ UNCOMMITTED, or with a LIMIT (storage order and
//! ties in ORDER BY pick rows) — first reads, with a locking read, the keys
//! of the rows its own WHERE, ORDER BY and LIMIT select, then runs on the
//! primary, and is journaled, with its WHERE replaced by exactly those
//! keys. The locked rows cannot change before the write, so the primary
//! changes exactly them; the secondary, holding the same rows, changes the
//! same ones the same way. Triggers fire once on each server, as for any
//! replayed statement.
//!
//! To the client this is the statement run at the moment of the locking
//! read, which its isolation level allows. It may wait for a lock where
//! the plain statement would have skipped a row (InnoDB's semi-consistent
//! read under READ COMMITTED).

use super::super::link::{query_packet, Link, Reply};
use super::super::SessionError;
use super::vars::rows;
use super::write::pin_packet;
use super::Capture;
use crate::mirror::rowkey::MAX_KEYS;
use crate::mirror::runtime::Mirror;
use crate::router::determinism::UnsafeReason;
use crate::router::keyed::keyed_shape;
use crate::router::lexer;
use crate::router::{Class, Route, WriteKind};

/// What the locking read found.
pub(super) enum Keyed {
    /// The statement restricted to the locked rows' keys.
    Restricted(Vec<u8>),
    /// It cannot be keyed; why.
    Refused(String),
    /// The read failed: the reply to relay to the client (the locking
    /// read's error, which the statement itself would have met).
    Failed(Reply),
}

/// Whether `route` must be keyed to replay exactly, given the isolation
/// hazard found for it: an UPDATE or DELETE under that hazard, or with a
/// LIMIT (known from the route, so plain writes pay nothing).
pub(super) fn needs_key(route: &Route, hazard: bool) -> bool {
    matches!(
        route.class,
        Class::Write(WriteKind::Update | WriteKind::Delete)
    ) && (hazard || route.determinism.uses.limit)
}

/// The route's unsafe reason, except what keying the write removes.
pub(super) fn unsafe_reason(route: &Route) -> Option<&UnsafeReason> {
    let reason = route.determinism.unsafe_reason.as_ref()?;
    let keyable = matches!(
        route.class,
        Class::Write(WriteKind::Update | WriteKind::Delete)
    ) && *reason == UnsafeReason::LimitWithoutOrder;
    (!keyable).then_some(reason)
}

impl Capture {
    /// Locks the rows `sql` (the text the primary runs) would change and
    /// returns it restricted to them. `ts`/`seeds`: the pinned time and
    /// RAND() seeds the statement runs with (its WHERE may read them);
    /// `begin`: open the transaction first (an autocommit write). After
    /// `Refused` or `Failed`, whatever this opened is rolled back.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn keyed(
        &mut self,
        cx: &mut Link<'_>,
        m: &Mirror,
        route: &Route,
        sql: &[u8],
        isolation_hazard: bool,
        ts: Option<i64>,
        seeds: Option<(u32, u32)>,
        begin: bool,
    ) -> Result<Keyed, SessionError> {
        let Class::Write(kind) = route.class else {
            return Ok(Keyed::Refused("it is not an UPDATE or DELETE".into()));
        };
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        let Some(shape) = keyed_shape(sql, &toks, kind) else {
            return Ok(Keyed::Refused(
                "only a single-table UPDATE or DELETE (no join, no WITH) can be restricted to the rows it locks".into(),
            ));
        };
        if isolation_hazard && shape.set_reads_rows {
            return Ok(Keyed::Refused(
                "its SET reads other rows with a subquery, which take no lock at this isolation level".into(),
            ));
        }
        // The key from a look-up (cached or read now), never from the cache
        // alone: a DDL on any table may have emptied it meanwhile.
        let one = Route {
            tables: vec![match &shape.table.0 {
                Some(db) => format!("{db}.{}", shape.table.1),
                None => shape.table.1.clone(),
            }],
            ..route.clone()
        };
        let Some(key) = self.table_facts(cx, m, &one).await?.key else {
            return Ok(Keyed::Refused(format!(
                "table `{}` has no primary key or unique NOT NULL key of exact type to name its rows by",
                shape.table.1
            )));
        };
        let set_p = pin_packet(ts, seeds);
        let begin_p = query_packet(b"BEGIN");
        let read_p = query_packet(&shape.lock_read(sql, &key.select_list()));
        let mut batch: Vec<&[u8]> = Vec::with_capacity(3);
        batch.extend(set_p.as_deref());
        if begin {
            batch.push(&begin_p);
        }
        batch.push(&read_p);
        let mut replies = self.own_reads(cx, &batch).await?;
        let read = replies.pop().expect("own_reads answers every packet");
        let failed = replies.into_iter().find(|r| r.err.is_some());
        let outcome = match failed {
            Some(r) => Keyed::Failed(r),
            None if read.err.is_some() => Keyed::Failed(read),
            None => match rows(&read, cx.deprecate_eof()) {
                Some(rows) if rows.len() > MAX_KEYS => Keyed::Refused(format!(
                    "it changes {} rows, more than the {MAX_KEYS} a keyed write names",
                    rows.len()
                )),
                Some(rows) => match key.restriction(&rows) {
                    Some(r) => Keyed::Restricted(shape.restricted(sql, &r)),
                    None => Keyed::Refused("a key value could not be read back exactly".into()),
                },
                None => Keyed::Refused("the locking read of its keys returned no rows".into()),
            },
        };
        if !matches!(outcome, Keyed::Restricted(_)) {
            let mut undo: Vec<&[u8]> = Vec::new();
            if begin {
                undo.push(b"ROLLBACK");
            }
            if ts.is_some() {
                undo.push(b"SET TIMESTAMP = DEFAULT");
            }
            if !undo.is_empty() {
                if let Some(ok) = cx.run_aux(&undo).await? {
                    cx.status = ok.status_flags();
                }
            }
        }
        Ok(outcome)
    }
}
