//! Capture of writes that commit by themselves or join a transaction:
//! pinning (time, seeds, LAST_INSERT_ID, UUID), the autocommit wrap with
//! its marker row and intent, and writes that cannot be mirrored
//! (`unsafe_writes`). DDL is in `ddl`.

use super::super::link::{query_packet, Link, Reply};
use super::super::SessionError;
use super::carry::Carried;
use super::vars::first_number;
use super::{bare, Capture, Marker, WriteSrc};
use crate::config::UnsafeWrites;
use crate::mirror::now_us;
use crate::mirror::record::{tables_of, MirrorStatement, MirrorTxn, Pins};
use crate::mirror::runtime::Mirror;
use crate::protocol::packets::OkInfo;
use crate::protocol::response::Expect;
use crate::protocol::ErrSpec;
use crate::router::lexer;
use crate::router::{Class, Route, WriteKind};
use mysql_common::constants::StatusFlags;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::warn;

impl Capture {
    /// Database the secondary should run a statement in: None means the
    /// secondary URL's own database (the primary URL's maps to it).
    pub(super) fn mirror_db(&mut self, cx: &mut Link<'_>) -> Option<String> {
        let primary_db = cx.shared.config.load().primary_backend().database.clone();
        let current = cx.binding.conn().current_db.clone();
        if current == primary_db {
            None
        } else {
            current
        }
    }

    /// A secondary in the primary's own server shares every database with
    /// it but the two URL databases: a write to any other would be applied
    /// to the same tables a second time. Why not, if so.
    pub(super) fn shared_server_hazard(&self, cx: &mut Link<'_>, route: &Route) -> Option<String> {
        let cfg = cx.shared.config.load();
        let primary = cfg.primary_backend();
        let secondary = cfg.secondary.as_ref().and_then(|s| cfg.backends.get(s))?;
        if (primary.host.as_str(), primary.port) != (secondary.host.as_str(), secondary.port) {
            return None;
        }
        let current = cx.binding.conn().current_db.clone();
        let home = primary.database.as_deref();
        let dbs: Vec<Option<String>> = if route.tables.is_empty() {
            vec![current]
        } else {
            route
                .tables
                .iter()
                .map(|t| match t.split_once('.') {
                    Some((db, _)) => Some(crate::router::rename::map_db(&cfg, db, &cfg.primary)),
                    None => current.clone(),
                })
                .collect()
        };
        let other = dbs
            .into_iter()
            .flatten()
            .find(|db| Some(db.as_str()) != home)?;
        Some(format!(
            "it writes database `{other}`, which the secondary ({}) shares with the primary on {}:{}; applied there it would write the same tables again",
            secondary.name, primary.host, primary.port
        ))
    }

    /// `sql` as the secondary should run it (see `rename::secondary_text`).
    pub(super) fn for_secondary(&self, cx: &Link<'_>, sql: Vec<u8>) -> Result<Vec<u8>, String> {
        use crate::router::rename;
        if !rename::may_qualify(&sql) {
            return Ok(sql);
        }
        Ok(rename::secondary_text(&cx.shared.config.load(), &sql)?.unwrap_or(sql))
    }

    /// A write that can be mirrored: pins, runs, buffers or commits.
    pub(super) async fn mirrored_write(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        src: WriteSrc<'_>,
        seq: u8,
    ) -> Result<(), SessionError> {
        let vars = self.ensure_vars(cx).await?;
        // Copies of the temporary tables it reads (see `carry`).
        let carried = self.carried.take().unwrap_or_default();
        let uses = route.determinism.uses;
        // A column defaulting to a sequence that the INSERT leaves out is
        // written in (see `seqdefault`), its NEXTVAL then pinned.
        let text_of = |src: &WriteSrc<'_>| match src {
            WriteSrc::Query(sql) => sql.to_vec(),
            WriteSrc::Execute { rendered, .. } => rendered.clone(),
        };
        let facts = self.table_facts(cx, m, route).await?;
        let kind = match route.class {
            Class::Write(k) => Some(k),
            _ => None,
        };
        let insert = matches!(kind, Some(WriteKind::Insert | WriteKind::Replace));
        let defaulted = if insert && !facts.sequence_defaults.is_empty() {
            let sql = text_of(&src);
            let mut toks = Vec::new();
            lexer::tokenize(&sql, &mut toks);
            super::seqdefault::write_in(&sql, &toks, &facts.sequence_defaults)
        } else {
            None
        };
        // NEXTVAL calls become the values the primary hands out, taken
        // first.
        let pinned = if uses.nextval || defaulted.is_some() {
            let sql = defaulted.unwrap_or_else(|| text_of(&src));
            match self.pin_nextval(cx, m, &sql).await? {
                Ok(pinned) => Some(pinned),
                Err(reason) => {
                    let packet = match &src {
                        WriteSrc::Query(sql) => query_packet(sql),
                        WriteSrc::Execute { packet, .. } => packet.to_vec(),
                    };
                    return self
                        .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                        .await;
                }
            }
        } else {
            None
        };
        let (mut packet, text) = match (src, pinned) {
            (WriteSrc::Query(sql), None) => {
                let rewritten = if uses.needs_rewrite() {
                    lexer::pin_rewrite(sql, &cx.scratch.tokens, new_uuid)
                } else {
                    None
                };
                let sql = rewritten.unwrap_or_else(|| sql.to_vec());
                (query_packet(&sql), sql)
            }
            (WriteSrc::Execute { packet, rendered }, None) if !uses.needs_rewrite() => {
                (packet.to_vec(), rendered)
            }
            // A text with its NEXTVAL values, or a prepared write whose
            // server-side text would evaluate UUID() and SYSDATE() itself:
            // the text runs instead (a write's answer is the same OK packet
            // either way).
            (_, Some(sql)) | (WriteSrc::Execute { rendered: sql, .. }, None) => {
                let sql = if uses.needs_rewrite() {
                    let mut toks = Vec::new();
                    lexer::tokenize(&sql, &mut toks);
                    lexer::pin_rewrite(&sql, &toks, new_uuid).unwrap_or(sql)
                } else {
                    sql
                };
                (query_packet(&sql), sql)
            }
        };
        let mut record_sql = match self.for_secondary(cx, text.clone()) {
            Ok(sql) => sql,
            Err(reason) => {
                return self
                    .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                    .await
            }
        };
        if let Some(reason) = self.shared_server_hazard(cx, route) {
            return self
                .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                .await;
        }
        let autocommit = cx.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
            && !cx.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS);
        // A write runs at the level chosen for its transaction: its own
        // under autocommit, else the one it begins or is in.
        let own = if autocommit {
            self.next_isolation.take()
        } else {
            self.transaction_begins();
            None
        };
        let hazard = self.isolation_hazard(route, &record_sql, own);
        let keyed = super::keyed::needs_key(route, hazard.is_some());
        if let (Some(reason), false) = (&hazard, keyed) {
            return self
                .unsafe_write(cx, m, &route.tables, reason, &packet, seq)
                .await;
        }
        // A table without transactions: mirrored by its effect (see
        // `effect`), which needs neither a transaction nor a marker.
        let effect = match &facts.engine_without_transactions {
            None => None,
            Some(engine) => {
                let carries = !carried.before.is_empty();
                let why = match super::effect::refusal(route, &facts, keyed) {
                    None if carries => Err("it reads temporary tables".into()),
                    Some(why) => Err(why.to_string()),
                    None => self.effect_tables(cx, m, route, &record_sql).await?,
                };
                match why {
                    Ok(tables) => Some(tables),
                    Err(why) => {
                        let reason = format!(
                            "a table it writes uses {engine}, which has no transactions (such writes are mirrored by their effect, but not this one: {why})"
                        );
                        return self
                            .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                            .await;
                    }
                }
            }
        };
        if cx.table_locks && effect.is_none() {
            let reason = "LOCK TABLES is in effect: Tandem journals a write with a transaction and a marker row, and opening one would release the session's table locks; write outside LOCK TABLES (transactions lock the rows they write)";
            return self
                .unsafe_write(cx, m, &route.tables, reason, &packet, seq)
                .await;
        }
        if let Some(reason) = (self.interleaved_autoinc && effect.is_none())
            .then(|| {
                super::facts::interleaved_ids(route, &record_sql, facts.auto_increment.as_deref())
            })
            .flatten()
        {
            return self
                .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                .await;
        }
        if let Some(column) =
            super::facts::defaults_taken(route, &record_sql, &facts.unpinnable_defaults)
        {
            let reason = format!(
                "column `{column}` would take its default, a value the secondary generates anew (UUID() and the like cannot be pinned); give the column a value"
            );
            return self
                .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                .await;
        }
        // User variables it reads: their primary values travel as a SET
        // journaled just before it (see `uservars`).
        let Carried { mut before, after } = carried;
        let user_set = if route.determinism.user_vars.is_empty() {
            None
        } else {
            match self.user_vars(cx, &route.determinism.user_vars).await? {
                Ok(sql) => Some(MirrorStatement {
                    db: self.mirror_db(cx),
                    sql,
                    tables: Vec::new(),
                    ddl: false,
                    pins: Pins::default(),
                    session: vars.clone(),
                }),
                Err(reason) => {
                    return self
                        .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                        .await
                }
            }
        };
        // Pin the statement time only where something reads it: a time
        // function in the statement or a clock default / trigger on the
        // table; seeds likewise for RAND(). Unpinned writes cost no extra
        // statements.
        let rand_used = uses.rand || facts.reads_rand;
        let pin = uses.time || rand_used || facts.reads_time;
        let ts = pin.then(now_us);
        let seeds = rand_used.then(|| {
            (
                rand::random::<u32>() % 0x3FFF_FFFF,
                rand::random::<u32>() % 0x3FFF_FFFF,
            )
        });
        if autocommit || effect.is_some() {
            if let Some(done) = self
                .journal_room(cx, m, &route.tables, &packet, seq)
                .await?
            {
                return Ok(done);
            }
        }
        // INSERT … RETURNING answers with rows: without CLIENT_DEPRECATE_EOF
        // they end with an EOF, which carries no generated id, so it is
        // read with LAST_INSERT_ID() after the statement. (A keyed write
        // below changes the text of UPDATE and DELETE only.)
        let returning = insert && {
            let mut toks = Vec::new();
            lexer::tokenize(&record_sql, &mut toks);
            toks.iter().any(|t| t.is_word(&record_sql, "RETURNING"))
        };
        if let Some(locks) = effect {
            let e = super::effect::Effect {
                statement: MirrorStatement {
                    db: self.mirror_db(cx),
                    sql: record_sql,
                    tables: route.tables.clone(),
                    ddl: false,
                    pins: Pins {
                        timestamp_us: ts,
                        insert_id: None,
                        last_insert_id: None,
                        rand_seeds: seeds,
                    },
                    session: vars.clone(),
                },
                packet,
                user_set,
                returning,
                locks,
            };
            return self.effect_write(cx, m, route, e, seq).await;
        }
        // The user variables' SET goes after the copies it may read.
        before.extend(user_set);
        // A keyed write (see `keyed`): its rows are locked and named
        // first; an autocommit one has begun its transaction by then.
        let mut begun = false;
        if keyed {
            use super::keyed::Keyed;
            match self
                .keyed(cx, m, route, &text, hazard.is_some(), ts, seeds, autocommit)
                .await?
            {
                Keyed::Restricted(sql) => {
                    packet = query_packet(&sql);
                    begun = autocommit;
                    record_sql = match self.for_secondary(cx, sql) {
                        Ok(sql) => sql,
                        Err(reason) => {
                            let undo: &[&[u8]] = if autocommit {
                                &[b"ROLLBACK", b"SET TIMESTAMP = DEFAULT"]
                            } else {
                                &[]
                            };
                            if let Some(ok) = cx.run_aux(undo).await? {
                                cx.status = ok.status_flags();
                            }
                            return self
                                .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                                .await;
                        }
                    };
                }
                Keyed::Refused(why) => {
                    let reason = hazard.unwrap_or_else(|| {
                        "LIMIT picks rows by storage order or among ties of ORDER BY".into()
                    });
                    let reason = format!(
                        "{reason}, and it cannot be restricted to the rows it locks: {why}"
                    );
                    return self
                        .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                        .await;
                }
                Keyed::Failed(reply) => return cx.relay(seq, reply, false).await,
            }
        }
        let insert_id_of = |ok: Option<OkInfo>| match ok {
            Some(ok) if insert && ok.last_insert_id != 0 => Some(ok.last_insert_id),
            _ => None,
        };
        let statement = |db, insert_id, lid| MirrorStatement {
            db,
            sql: record_sql.clone(),
            tables: route.tables.clone(),
            ddl: false,
            pins: Pins {
                timestamp_us: ts,
                insert_id,
                last_insert_id: lid,
                rand_seeds: seeds,
            },
            session: vars.clone(),
        };
        // The first mirrored write of a transaction takes the marker row
        // along (pipelined before it), so COMMIT needs no round trip of its
        // own for it.
        let early = (!autocommit && self.marker.is_none()).then(|| m.token());
        if !autocommit && !pin && !uses.last_insert_id && early.is_none() {
            // Inside a transaction with nothing to pin: relayed as it
            // streams, like any statement; buffered for the commit if it
            // succeeded.
            let summary = cx.forward(&packet, seq, Expect::ResultSet).await?;
            if summary.error.is_none() {
                let generated = match returning {
                    true => self.generated_id(cx).await?,
                    false => insert_id_of(summary.last_ok),
                };
                let db = self.mirror_db(cx);
                let st = statement(db, generated, None);
                self.txn.extend(before);
                self.txn.push(st);
                self.txn.extend(after);
            }
            return Ok(());
        }
        // A CALL inside a transaction runs after a savepoint: one that
        // fails half-way is undone whole (see `call`).
        let call = kind == Some(WriteKind::Call) && !autocommit;
        let save_p = call.then(|| query_packet(b"SAVEPOINT tandem_call"));
        let set_p = pin_packet(ts, seeds);
        let token = autocommit.then(|| m.token());
        let lid_p = query_packet(b"SELECT LAST_INSERT_ID()");
        let begin_p = query_packet(b"BEGIN");
        let reset_p = query_packet(b"SET TIMESTAMP = DEFAULT");
        let marker_p = token.map(|t| query_packet(m.marker_insert(t).as_bytes()));
        let early_p = early.map(|t| query_packet(m.marker_insert(t).as_bytes()));
        let mut batch: Vec<&[u8]> = Vec::with_capacity(6);
        if let Some(p) = &early_p {
            batch.push(p);
        }
        if let Some(p) = &set_p {
            batch.push(p);
        }
        let probe_p = uses.last_insert_id.then(|| self.probe()).flatten();
        if uses.last_insert_id {
            batch.extend(probe_p.as_deref());
            batch.push(&lid_p);
        }
        if autocommit && !begun {
            batch.push(&begin_p);
        }
        // The marker goes before the statement, so nothing of Tandem's
        // that reads a table runs after it: SHOW WARNINGS still shows the
        // statement's warnings (COMMIT and SET do not clear them).
        if let Some(mp) = &marker_p {
            batch.push(mp);
        }
        if let Some(p) = &save_p {
            batch.push(p);
        }
        batch.push(&packet);
        if marker_p.is_none() && pin {
            batch.push(&reset_p);
        }
        let marker_first = marker_p.is_some();
        let has_tail = marker_first || pin;
        let phase1 = async {
            cx.send_backend(&batch).await?;
            let early_r = match early_p {
                Some(_) => Some(cx.read_reply(Expect::ResultSet).await?),
                None => None,
            };
            let set_r = match set_p {
                Some(_) => Some(cx.read_reply(Expect::ResultSet).await?),
                None => None,
            };
            let probe_r = match probe_p {
                Some(_) => Some(cx.read_reply(Expect::ResultSet).await?),
                None => None,
            };
            let lid_r = if uses.last_insert_id {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                None
            };
            let begin_r = if autocommit && !begun {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                None
            };
            let marker_r = if marker_first {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                None
            };
            let save_r = if call {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                None
            };
            let stmt_r = cx.read_reply(Expect::ResultSet).await?;
            let tail_r = if has_tail && !marker_first {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                marker_r
            };
            Ok::<_, SessionError>((
                early_r, set_r, probe_r, lid_r, begin_r, save_r, stmt_r, tail_r,
            ))
        };
        let (early_r, set_r, probe_r, lid_r, begin_r, save_r, stmt_r, tail_r) = match phase1.await {
            Ok(x) => x,
            Err(e) => {
                for t in token.into_iter().chain(early) {
                    m.abandon(t);
                }
                return Err(e);
            }
        };
        if let Some(t) = early {
            if early_r.is_some_and(|r| r.err.is_none()) {
                self.marker = Some(Marker {
                    token: t,
                    mirror: Some(m.clone()),
                });
            } else {
                // No marker yet: COMMIT inserts one.
                m.abandon(t);
            }
        }
        if let Some(r) = &probe_r {
            self.hold_probe(r, cx.deprecate_eof());
        }
        let lid = lid_r
            .as_ref()
            .and_then(|r| first_number(r, cx.deprecate_eof()));
        // The marker table was dropped under us: created again, the
        // marker goes in now (the statement's transaction is still open).
        let mut tail_r = tail_r;
        let marker_missing = tail_r
            .as_ref()
            .and_then(|r| r.err)
            .is_some_and(crate::mirror::bookkeeping::is_missing);
        if let (true, Some(mp), None) = (marker_missing, &marker_p, stmt_r.err) {
            if m.restore_bookkeeping().await.is_ok() {
                let again = async {
                    cx.send_backend(&[mp]).await?;
                    cx.read_reply(Expect::ResultSet).await
                };
                match again.await {
                    Ok(r) => tail_r = Some(r),
                    Err(e) => {
                        m.abandon(token.unwrap_or_default());
                        return Err(e);
                    }
                }
            }
        }
        let failed = |r: &Option<Reply>| r.as_ref().is_some_and(|r| r.err.is_some());
        // A pin that did not take: the write ran with the primary's own
        // time, seeds or LAST_INSERT_ID(), which the record does not hold.
        let unpinned = failed(&set_r) || (uses.last_insert_id && lid.is_none());
        let aux_failed = unpinned || failed(&begin_r) || (autocommit && failed(&tail_r));
        let generated = match returning && stmt_r.err.is_none() {
            true => self.generated_id(cx).await?,
            false => insert_id_of(stmt_r.ok),
        };
        let db = self.mirror_db(cx);
        let st = statement(db, generated, lid);
        const UNPINNED: &str = "a write ran without the values Tandem pins (its SET TIMESTAMP or SELECT LAST_INSERT_ID() failed)";
        if !autocommit {
            if let Some(ok) = tail_r.as_ref().and_then(|r| r.ok).or(stmt_r.ok) {
                cx.status = ok.status_flags();
            }
            // (A failed statement sets it in `relay`.)
            if aux_failed {
                cx.after_error = true;
            }
            if has_tail {
                // `SET TIMESTAMP = DEFAULT` ran after it.
                self.row_count_next = row_count_of(&stmt_r);
            }
            if call && stmt_r.err.is_some() {
                // Undone whole, or marked: writes before the failing
                // statement of its body stand on the primary only.
                let undone = save_r.is_some_and(|r| r.err.is_none())
                    && cx
                        .run_aux(&[b"ROLLBACK TO SAVEPOINT tandem_call"])
                        .await?
                        .is_some();
                if !undone {
                    m.mark_divergent(
                        &tables_of(std::slice::from_ref(&st)),
                        "a CALL failed half-way and could not be undone",
                    );
                }
            }
            if stmt_r.err.is_none() {
                // The write stands in the transaction whatever failed
                // around it: mirrored, and marked when not pinned.
                if unpinned {
                    m.mark_divergent(&tables_of(std::slice::from_ref(&st)), UNPINNED);
                }
                self.txn.extend(before);
                self.txn.push(st);
                self.txn.extend(after);
            }
            return cx.relay(seq, stmt_r, false).await;
        }
        let token = token.unwrap_or_default();
        if failed(&begin_r) && stmt_r.err.is_none() {
            // Without its BEGIN the statement committed on its own, with
            // no marker and no intent: the client gets its answer, and the
            // tables are marked.
            m.abandon(token);
            if let Some(ok) = tail_r.as_ref().and_then(|r| r.ok).or(stmt_r.ok) {
                cx.status = ok.status_flags();
            }
            if pin {
                cx.run_aux(&[b"SET TIMESTAMP = DEFAULT"]).await?;
            }
            m.mark_divergent(
                &tables_of(std::slice::from_ref(&st)),
                "a write committed on the primary without the BEGIN Tandem wraps it in",
            );
            return cx.relay(seq, stmt_r, false).await;
        }
        if stmt_r.err.is_some() || aux_failed {
            m.abandon(token);
            undo_wrap(cx, pin).await?;
            self.row_count_next = row_count_of(&stmt_r);
            let reply = if stmt_r.err.is_some() {
                Some(stmt_r)
            } else {
                [set_r, lid_r, begin_r, tail_r]
                    .into_iter()
                    .flatten()
                    .find(|r| r.err.is_some())
            };
            return match reply {
                Some(r) => cx.relay(seq, r, false).await,
                // LAST_INSERT_ID() answered something unreadable: the
                // statement was rolled back, which the client must hear.
                None => {
                    let msg = "Tandem: statement rolled back: its LAST_INSERT_ID() could not be read to mirror it";
                    cx.reply_err(seq, &ErrSpec::new(1105, "HY000", msg)).await
                }
            };
        }
        let txn = MirrorTxn {
            committed_at_us: now_us(),
            conn_id: cx.id,
            statements: before.into_iter().chain([st]).chain(after).collect(),
        };
        let lsn = match m.intent(token, txn).await {
            Ok(lsn) => Some(lsn),
            Err(e) => {
                if let Some(msg) = self.journal_failed(cx, m, &route.tables, &e.to_string()) {
                    m.abandon(token);
                    undo_wrap(cx, pin).await?;
                    return cx.reply_err(seq, &ErrSpec::new(1105, "HY000", msg)).await;
                }
                None
            }
        };
        let commit_p = query_packet(b"COMMIT");
        let commit_batch: Vec<&[u8]> = if pin {
            vec![&commit_p, &reset_p]
        } else {
            vec![&commit_p]
        };
        let replies = async {
            cx.send_backend(&commit_batch).await?;
            let c = cx.read_reply(Expect::ResultSet).await?;
            let r = if pin {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                None
            };
            Ok::<_, SessionError>((c, r))
        };
        let (commit_r, reset_r) = match replies.await {
            Ok(x) => x,
            Err(e) => {
                match lsn {
                    Some(lsn) => m.in_doubt(lsn, token, Some(cx.backend_thread())),
                    None => m.abandon(token),
                }
                return Err(e);
            }
        };
        if let Some(ok) = reset_r.and_then(|r| r.ok).or(commit_r.ok) {
            cx.status = ok.status_flags();
        }
        if commit_r.err.is_some() {
            self.commit_failed(m, lsn, token);
            return cx.relay(seq, commit_r, false).await;
        }
        m.stats.statements.fetch_add(1, Ordering::Relaxed);
        self.settle(m, lsn, token, true);
        self.row_count_next = row_count_of(&stmt_r);
        cx.relay(seq, stmt_r, true).await
    }

    /// A write that cannot be mirrored deterministically.
    pub(super) async fn unsafe_write(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        tables: &[String],
        reason: &str,
        payload: &[u8],
        seq: u8,
    ) -> Result<(), SessionError> {
        let policy = cx.shared.config.load().unsafe_writes;
        match policy {
            UnsafeWrites::Reject => {
                m.stats.unsafe_rejected.fetch_add(1, Ordering::Relaxed);
                warn!(conn = cx.id, reason, "unsafe write rejected");
                let msg = format!(
                    "Tandem: statement not executed: it cannot be mirrored deterministically ({reason}); migration.unsafe_writes is reject"
                );
                cx.reply_err(seq, &ErrSpec::new(1105, "HY000", msg)).await
            }
            UnsafeWrites::PrimaryOnly => {
                let summary = cx.forward(payload, seq, Expect::ResultSet).await?;
                if summary.error.is_none() {
                    m.stats.unsafe_primary_only.fetch_add(1, Ordering::Relaxed);
                    let tables = if tables.is_empty() {
                        vec!["(unknown)".to_string()]
                    } else {
                        tables.iter().map(|t| bare(t).to_string()).collect()
                    };
                    m.mark_divergent(
                        &tables,
                        &format!("unsafe write run on the primary only: {reason}"),
                    );
                }
                Ok(())
            }
        }
    }
}

/// What `ROW_COUNT()` says after a statement with this reply: its
/// affected rows, -1 after an error; None after a result set.
pub(super) fn row_count_of(reply: &Reply) -> Option<i64> {
    if reply.err.is_some() {
        return Some(-1);
    }
    reply.ok.map(|ok| ok.affected_rows as i64)
}

/// The packet that pins a write's statement time and RAND() seeds, when
/// it has a pinned time.
pub(super) fn pin_packet(ts: Option<i64>, seeds: Option<(u32, u32)>) -> Option<Vec<u8>> {
    ts.map(|ts| {
        let mut set = set_timestamp(ts);
        if let Some((a, b)) = seeds {
            set.push_str(&format!(", @@rand_seed1 = {a}, @@rand_seed2 = {b}"));
        }
        query_packet(set.as_bytes())
    })
}

/// Rolls back the transaction an autocommit write was wrapped in (and the
/// pinned time, when there was one); the client's status follows.
async fn undo_wrap(cx: &mut Link<'_>, pin: bool) -> Result<(), SessionError> {
    let undo: &[&[u8]] = if pin {
        &[b"ROLLBACK", b"SET TIMESTAMP = DEFAULT"]
    } else {
        &[b"ROLLBACK"]
    };
    if let Some(ok) = cx.run_aux(undo).await? {
        cx.status = ok.status_flags();
    }
    Ok(())
}

/// `SET TIMESTAMP = <seconds>.<micros>` for a time in microseconds.
pub(super) fn set_timestamp(ts: i64) -> String {
    format!(
        "SET TIMESTAMP = {}.{:06}",
        ts.div_euclid(1_000_000),
        ts.rem_euclid(1_000_000)
    )
}

/// A UUID in MySQL's UUID() text form (version 1 layout is not needed by
/// anything that compares them; a random v4 has the same shape).
fn new_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

impl Capture {
    /// The first id the statement just run generated (LAST_INSERT_ID(),
    /// which a statement that generated none leaves as it was; pinned as
    /// INSERT_ID, an unused value changes nothing on replay).
    pub(super) async fn generated_id(
        &mut self,
        cx: &mut Link<'_>,
    ) -> Result<Option<u64>, SessionError> {
        let r = self.own_read(cx, b"SELECT LAST_INSERT_ID()").await?;
        Ok(first_number(&r, cx.deprecate_eof()).filter(|&id| id != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_the_server_shape() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }
}
