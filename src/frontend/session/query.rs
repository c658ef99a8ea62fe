//! COM_QUERY: plan, pass the cutover boundary, map `USE` of the other
//! role's database, answer KILL, rewrite the text for the backend, hand
//! mirrored statements to capture, shadow sampled reads, relay the answer,
//! and track session state.

use super::capture::found_rows::{self, Effect};
use super::link::query_packet;
use super::{Session, SessionError};
use crate::protocol::response::Expect;
use crate::protocol::ErrSpec;
use crate::router::plan::Target;
use crate::router::{lexer, rename, Class, SessionOp};
use crate::shadow::Collector;
use crate::state::Shared;
use std::sync::atomic::Ordering;

impl Session<'_> {
    /// Before a command with `effect` on the server's `FOUND_ROWS()`,
    /// while Tandem's reads hold the client's value (see
    /// `capture::found_rows`).
    pub(super) async fn settle_found_rows(
        &mut self,
        effect: Effect,
    ) -> Result<Option<u64>, SessionError> {
        if self.capture.held_found_rows().is_none() {
            return Ok(None);
        }
        let db = self.bookkeeping_db();
        self.capture
            .settle_found_rows(&mut self.link, effect, &db)
            .await
    }

    /// The bookkeeping database on the session's backend's server.
    pub(super) fn bookkeeping_db(&self) -> String {
        let cfg = self.link.shared.config.load();
        cfg.backends
            .get(self.link.binding.backend())
            .map_or_else(|| "tandem".into(), |b| b.bookkeeping.clone())
    }

    pub(super) async fn query(&mut self, payload: Vec<u8>, seq: u8) -> Result<(), SessionError> {
        // An XA branch prepared here stays attached to this connection
        // until its COMMIT or ROLLBACK succeeds (`Link::xa_branch`).
        let xa = xa_step(&payload[1..]);
        if matches!(xa, Some(XaStep::Prepare)) {
            // Whatever its outcome, only a disconnect detaches a branch
            // from the connection (`Link::xa_prepared`).
            self.link.xa_prepared = true;
        }
        let errors = self.link.errors_answered;
        self.query_once(payload, seq).await?;
        if self.link.errors_answered == errors {
            match xa {
                Some(XaStep::Prepare) => self.link.xa_branch = true,
                Some(XaStep::End) => self.link.xa_branch = false,
                None => {}
            }
        }
        Ok(())
    }

    async fn query_once(&mut self, payload: Vec<u8>, seq: u8) -> Result<(), SessionError> {
        let sql = &payload[1..];
        let plan = self.link.shared.router.plan(sql, &mut self.link.scratch);
        let classified = &plan.classified;
        debug_assert_eq!(plan.target, Target::Primary);
        if self.must_split(classified) {
            return Box::pin(self.split_query(&payload, seq)).await;
        }
        for r in &classified.statements {
            self.link.shared.metrics.count_route(&r.class);
        }
        self.last_class = classified
            .statements
            .first()
            .map_or(5, |r| crate::metrics::class_index(&r.class));
        // Named locks belong to a server connection: a session taking one
        // holds a fence ticket and stays on its backend until it releases
        // them (another server's lock of the same name excludes nobody).
        let lock_calls = classified.named_locks;
        let needs_ticket = lock_calls.is_some()
            || classified
                .statements
                .iter()
                .any(|r| self.needs_ticket(&r.class));
        self.boundary(needs_ticket).await?;
        // `USE <the other role's database>` selects the current primary's.
        let use_mapped = match classified.statements.as_slice() {
            [r] => match &r.class {
                Class::Session(SessionOp::Use(db)) => Some(rename::map_db(
                    &self.link.shared.config.load(),
                    db,
                    self.link.binding.backend(),
                ))
                .filter(|m| m != db),
                _ => None,
            },
            _ => None,
        };
        if let Some(db) = use_mapped {
            let p = query_packet(format!("USE {}", crate::sql::quote(&db)).as_bytes());
            let summary = self.link.forward(&p, seq, Expect::ResultSet).await?;
            if summary.error.is_none() {
                self.link.binding.conn().current_db = Some(db);
            }
            return Ok(());
        }
        if let Some(kill) = plan.kill {
            return self.kill(kill, seq).await;
        }
        let mut sent = match self.sql_for_backend(sql, classified.calls_connection_id, "run") {
            Ok(t) => t.map(|t| query_packet(&t)),
            Err(err) => return self.link.reply_err(seq, &err).await,
        };
        if let Some(n) = self.capture.row_count() {
            // Tandem's own statements after the client's last one reset
            // ROW_COUNT(): it is answered with the client's count.
            let text: &[u8] = sent.as_deref().map_or(sql, |p| &p[1..]);
            if sent.is_some() {
                lexer::tokenize(text, &mut self.link.scratch.tokens);
            }
            let t =
                lexer::rewrite_calls(text, &self.link.scratch.tokens, "ROW_COUNT", &n.to_string());
            if let Some(t) = t {
                sent = Some(query_packet(&t));
            }
        }
        let mut found_rows_back = None;
        if let Some(n) = self.capture.held_found_rows() {
            // Tandem's own reads replaced the server's FOUND_ROWS().
            let text: &[u8] = sent.as_deref().map_or(sql, |p| &p[1..]);
            if sent.is_some() {
                lexer::tokenize(text, &mut self.link.scratch.tokens);
            }
            let effect = found_rows::effect(text, &self.link.scratch.tokens);
            if effect != Effect::Unknown {
                let t = lexer::rewrite_calls(
                    text,
                    &self.link.scratch.tokens,
                    "FOUND_ROWS",
                    &n.to_string(),
                );
                if let Some(t) = t {
                    sent = Some(query_packet(&t));
                }
            }
            found_rows_back = self.settle_found_rows(effect).await?;
        }
        let to_send = sent.as_deref().unwrap_or(&payload);
        if sent.is_some() {
            lexer::tokenize(&to_send[1..], &mut self.link.scratch.tokens);
        }
        if let Some(m) = self.link.capturing() {
            if self
                .capture
                .query(&mut self.link, &m, classified, to_send, seq)
                .await?
            {
                return Ok(());
            }
        }
        let shadow = self.shadow_plan(classified, to_send);
        let mut collected = shadow.as_ref().map(|_| Collector::default());
        let summary = self
            .link
            .forward_with(to_send, seq, Expect::ResultSet, collected.as_mut(), None)
            .await?;
        if let (Some(n), Some(_)) = (found_rows_back, &summary.error) {
            self.capture.found_rows_failed(n);
        }
        if let Some(l) = lock_calls {
            // Counted whether or not GET_LOCK got the lock (conservative:
            // the session moves after its next RELEASE_LOCK or reset).
            if l.release_all {
                self.replay.named_locks = 0;
            }
            self.replay.named_locks = self.replay.named_locks.saturating_sub(l.release) + l.get;
        }
        if let (Some((tables, mirror)), Some(c)) = (shadow, collected) {
            if summary.error.is_none() && c.saw_rows {
                self.shadow_send(to_send, tables, mirror, c.digest);
            }
        }
        if summary.error.is_none() {
            if let Some(locked) = self
                .replay
                .track(classified, to_send, &self.link.scratch.tokens)
            {
                self.link.table_locks = locked;
            }
            // Track the current database for pooling and cutover.
            if let Some(db) = classified
                .statements
                .iter()
                .rev()
                .find_map(|r| match &r.class {
                    Class::Session(SessionOp::Use(db)) => Some(db.clone()),
                    _ => None,
                })
            {
                self.link.binding.conn().current_db = Some(db);
            }
        }
        Ok(())
    }

    /// `sql` (whose tokens are in `scratch`) as this session's backend
    /// should get it (`backend_sql`). Err: the client's error when the
    /// rename cannot be done with certainty, saying that nothing was
    /// `not_done` ("run", "prepared").
    pub(super) fn sql_for_backend(
        &self,
        sql: &[u8],
        calls_connection_id: bool,
        not_done: &str,
    ) -> Result<Option<Vec<u8>>, ErrSpec> {
        backend_sql(
            self.link.shared,
            self.link.id,
            self.link.binding.backend(),
            sql,
            &self.link.scratch.tokens,
            calls_connection_id,
        )
        .map_err(|reason| {
            ErrSpec::new(
                1105,
                "HY000",
                format!("Tandem: {reason}; nothing was {not_done}"),
            )
        })
    }

    /// KILL [QUERY] <tandem id>: the id clients see is Tandem's; the backend
    /// thread it maps to is killed through this session's own backend
    /// connection, so the server checks privileges as it would directly.
    pub(super) async fn kill(&mut self, kill: lexer::Kill, seq: u8) -> Result<(), SessionError> {
        let Some(target) = self.link.shared.registry.get(kill.id) else {
            return self
                .link
                .reply_err(seq, &ErrSpec::no_such_thread(kill.id))
                .await;
        };
        let thread = target.backend_thread.load(Ordering::Relaxed);
        if thread == 0 {
            // Still logging in: nothing runs yet; closing it is the whole effect.
            if !kill.query_only {
                target.cancel.cancel();
            }
            return self.link.reply_ok(seq).await;
        }
        let what = if kill.query_only {
            "QUERY"
        } else {
            "CONNECTION"
        };
        let p = query_packet(format!("KILL {what} {thread}").as_bytes());
        let summary = self.link.forward(&p, seq, Expect::ResultSet).await?;
        if summary.error.is_none() && !kill.query_only {
            target.cancel.cancel();
        }
        Ok(())
    }
}

/// `sql` as backend `on` should get it: `CONNECTION_ID()` answered with
/// the session's Tandem id (when `calls_connection_id`; `tokens` are
/// `sql`'s), then names qualified with the other migration database
/// renamed to `on`'s (`rename::backend_text`). Ok(None): `sql` as it is.
/// Err: why the rename cannot be done with certainty.
pub(super) fn backend_sql(
    shared: &Shared,
    id: u32,
    on: &str,
    sql: &[u8],
    tokens: &[lexer::Token],
    calls_connection_id: bool,
) -> Result<Option<Vec<u8>>, String> {
    let rewritten = if calls_connection_id {
        lexer::rewrite_connection_id(sql, tokens, id)
    } else {
        None
    };
    let text = rewritten.as_deref().unwrap_or(sql);
    if !rename::may_qualify(text) {
        return Ok(rewritten);
    }
    Ok(rename::backend_text(&shared.config.load(), on, text)?.or(rewritten))
}

/// What an XA statement does to the branch attached to the connection.
#[derive(Clone, Copy)]
enum XaStep {
    /// `XA PREPARE`: a branch is attached until it is decided.
    Prepare,
    /// `XA COMMIT` / `XA ROLLBACK` (of any xid: while a branch is prepared
    /// here, the server refuses every other statement but these for it).
    End,
}

fn xa_step(sql: &[u8]) -> Option<XaStep> {
    // Most statements are told apart by their first bytes, without a pass
    // of the lexer (a leading comment takes the lexer).
    let start = sql.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = &sql[start..];
    let commented = head.starts_with(b"/*") || head.starts_with(b"--") || head.starts_with(b"#");
    if !commented && !head.get(..2).is_some_and(|h| h.eq_ignore_ascii_case(b"XA")) {
        return None;
    }
    let mut toks = Vec::new();
    lexer::tokenize(sql, &mut toks);
    if !toks.first().is_some_and(|t| t.is_word(sql, "XA")) {
        return None;
    }
    let second = toks.get(1)?;
    if second.is_word(sql, "PREPARE") {
        Some(XaStep::Prepare)
    } else if second.is_word(sql, "COMMIT") || second.is_word(sql, "ROLLBACK") {
        Some(XaStep::End)
    } else {
        None
    }
}
