//! Prepared statements on a cluster. The client holds Tandem's statement
//! ids; each maps to one server statement per shard, prepared there when
//! an execute is first routed to it. An execute is planned from its bound
//! values (rendered into the text as literals, as the mirror renders
//! them): a read runs as the prepared statement on the shards the plan
//! names (several shards' binary rows merged); a write runs as the
//! rendered text through the write path (its answer, OK or ERR, is the
//! same in both protocols).

use super::{not_supported, ClusterSession};
use crate::frontend::session::capture::params::{bound_literals, sent_types, types_flag_at};
use crate::frontend::session::link::query_packet;
use crate::frontend::session::SessionError;
use crate::protocol::command::{
    COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_SEND_LONG_DATA,
};
use crate::protocol::response::Expect;
use crate::protocol::ErrSpec;
use crate::router::lexer;
use crate::router::shard::route::{self, Merge};
use crate::router::{Class, TxnOp};
use mysql_common::constants::StatusFlags;
use std::collections::HashMap;

/// A statement prepared through a cluster session.
pub(super) struct ClusterStmt {
    /// The client's text.
    pub(super) sql: Vec<u8>,
    pub(super) param_spans: Vec<std::ops::Range<usize>>,
    params: u16,
    /// Parameter types from the last execute that sent them.
    types: Vec<(u8, bool)>,
    /// The server statement id on each shard where it is prepared.
    on: Vec<Option<u32>>,
    is_write: bool,
    /// BEGIN, COMMIT or ROLLBACK, answered by Tandem (`prepare_control`).
    control: bool,
    /// COM_STMT_SEND_LONG_DATA chunks per parameter, until the execute.
    long_data: HashMap<u16, Vec<u8>>,
    /// The shard holding this statement's open cursor.
    cursor_on: Option<usize>,
    /// Per shard, the rendered text last prepared there for an execute
    /// on several shards, and its server id: the next such execute with
    /// the same text reuses it.
    scatter: HashMap<usize, (Vec<u8>, u32)>,
    /// The shape a read is routed from (None: not parsed yet; Some(None):
    /// the planner cannot parse it).
    pub(super) shape: Option<Option<std::sync::Arc<super::shape::Shape>>>,
}

/// The statement id of a COM_STMT_* packet.
fn stmt_id(payload: &[u8]) -> Option<u32> {
    payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl ClusterSession<'_> {
    pub(super) async fn prepare(&mut self, payload: &[u8], seq: u8) -> Result<(), SessionError> {
        let sql = &payload[1..];
        let classified = self.shared.router.route(sql, &mut self.scratch);
        let is_write = match classified.statements.as_slice() {
            [r] if matches!(
                r.class,
                Class::Transaction(TxnOp::Begin | TxnOp::Commit | TxnOp::Rollback)
            ) =>
            {
                return self.prepare_control(sql, seq).await;
            }
            [r] => match &r.class {
                Class::Read { .. } => false,
                Class::Write(
                    crate::router::WriteKind::Insert
                    | crate::router::WriteKind::Replace
                    | crate::router::WriteKind::Update
                    | crate::router::WriteKind::Delete,
                ) => true,
                _ => {
                    return self
                        .reply_err(
                            seq,
                            &not_supported("prepared statements other than reads and writes"),
                        )
                        .await
                }
            },
            _ => {
                return self
                    .reply_err(seq, &not_supported("several statements in one prepare"))
                    .await
            }
        };
        if is_write
            && self
                .scratch
                .tokens
                .iter()
                .any(|t| t.is_word(sql, "RETURNING"))
        {
            return self
                .reply_err(seq, &not_supported("a prepared write with RETURNING"))
                .await;
        }
        let shard = self.last_shard;
        let text = match self.text_for(shard, sql) {
            Ok(t) => t,
            Err(e) => return self.reply_err(seq, &e).await,
        };
        let id = self.next_stmt.wrapping_add(1).max(1);
        let mut p = vec![COM_STMT_PREPARE];
        p.extend_from_slice(&text);
        let summary = self
            .relay_with(shard, &p, seq, Expect::Prepare, Some(id))
            .await?;
        if let Some((backend_id, _cols, params)) = summary.and_then(|s| s.prepared) {
            self.next_stmt = id;
            let mut on = vec![None; self.shards.len()];
            on[shard] = Some(backend_id);
            self.stmts.insert(
                id,
                ClusterStmt {
                    param_spans: lexer::param_spans(sql),
                    sql: sql.to_vec(),
                    params,
                    types: Vec::new(),
                    on,
                    is_write,
                    control: false,
                    long_data: HashMap::new(),
                    cursor_on: None,
                    scatter: HashMap::new(),
                    shape: None,
                },
            );
        }
        Ok(())
    }

    /// A prepared BEGIN, COMMIT or ROLLBACK (sysbench prepares them):
    /// answered by Tandem, no parameters, no columns; each execute runs it
    /// as the text statement, on every branch.
    async fn prepare_control(&mut self, sql: &[u8], mut seq: u8) -> Result<(), SessionError> {
        let id = self.next_stmt.wrapping_add(1).max(1);
        self.next_stmt = id;
        self.stmts.insert(
            id,
            ClusterStmt {
                param_spans: Vec::new(),
                sql: sql.to_vec(),
                params: 0,
                types: Vec::new(),
                on: vec![None; self.shards.len()],
                is_write: false,
                control: true,
                long_data: HashMap::new(),
                cursor_on: None,
                scatter: HashMap::new(),
                shape: None,
            },
        );
        // PREPARE_OK: status, id, 0 columns, 0 parameters, filler, warnings.
        let mut p = vec![0x00];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        self.client.send_packet(&mut seq, &p).await?;
        Ok(())
    }

    /// COM_STMT_SEND_LONG_DATA (kept until the execute) and COM_STMT_CLOSE
    /// (on every shard holding the statement); neither is answered.
    pub(super) async fn stmt_unanswered(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let Some(id) = stmt_id(payload) else {
            return Ok(());
        };
        if payload[0] == COM_STMT_SEND_LONG_DATA {
            if let (Some(s), Some(param)) = (self.stmts.get_mut(&id), payload.get(5..7)) {
                let param = u16::from_le_bytes([param[0], param[1]]);
                s.long_data
                    .entry(param)
                    .or_default()
                    .extend_from_slice(&payload[7..]);
            }
            return Ok(());
        }
        if let Some(s) = self.stmts.remove(&id) {
            let rendered = s.scatter.iter().map(|(shard, (_, b))| (*shard, Some(*b)));
            let prepared = s.on.iter().copied().enumerate();
            for (shard, backend) in prepared.chain(rendered) {
                if let Some(b) = backend {
                    self.send_unanswered(shard, COM_STMT_CLOSE, b, &[]).await?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn execute(&mut self, payload: &[u8], seq: u8) -> Result<(), SessionError> {
        let Some(id) = stmt_id(payload) else {
            return Err(crate::protocol::ProtocolError::Malformed("short execute").into());
        };
        let Some(stmt) = self.stmts.get_mut(&id) else {
            return self
                .reply_err(seq, &ErrSpec::unknown_stmt(id, "mysqld_stmt_execute"))
                .await;
        };
        if stmt.control {
            let sql = stmt.sql.clone();
            return self.query(&query_packet(&sql), seq).await;
        }
        // The parameter types, when this execute sends them.
        if let Some(types) = sent_types(payload, stmt.params as usize) {
            stmt.types = types;
        }
        let nbe = self.no_backslash_escapes;
        let long_data = std::mem::take(&mut stmt.long_data);
        let Some(values) = bound_literals(payload, stmt.params, &stmt.types, &long_data, nbe)
        else {
            return self
                .reply_err(seq, &not_supported("parameters Tandem cannot read"))
                .await;
        };
        let is_write = stmt.is_write;
        let (sql, types) = (stmt.sql.clone(), stmt.types.clone());
        let (n, flag_at) = (stmt.params as usize, types_flag_at(stmt.params as usize));
        let fast = match is_write {
            true => None,
            false => self.shape_shard(id, &values).await,
        };
        let targets = match fast {
            Some(shard) => vec![shard],
            None => {
                let Some(stmt) = self.stmts.get(&id) else {
                    return Ok(());
                };
                let Some(text) = lexer::render_params(&stmt.sql, &stmt.param_spans, &values) else {
                    return self
                        .reply_err(seq, &not_supported("parameters Tandem cannot place"))
                        .await;
                };
                if is_write {
                    // OK or ERR: the same answer as the text protocol's.
                    return self.routed(&text, true, seq).await;
                }
                match self.plan_statement(&text, false).await {
                    Ok((plan, targets)) if targets.len() > 1 => {
                        return self.execute_scatter(id, plan, &targets, text, seq).await;
                    }
                    Ok((_, targets)) => targets,
                    Err(e) => return self.reply_err(seq, &e).await,
                }
            }
        };
        if let [shard] = targets.as_slice() {
            // One shard: the statement prepared there, the client's values.
            let shard = *shard;
            if let Err(e) = self.enter(shard).await {
                return self.backend_refused(seq, e).await;
            }
            let backend = match self.stmt_on(id, &sql, shard).await {
                Ok(b) => b,
                Err(e) => return self.backend_refused(seq, e).await,
            };
            for (param, data) in &long_data {
                let mut rest = param.to_le_bytes().to_vec();
                rest.extend_from_slice(data);
                self.send_unanswered(shard, COM_STMT_SEND_LONG_DATA, backend, &rest)
                    .await?;
            }
            let mut p = payload.to_vec();
            p[1..5].copy_from_slice(&backend.to_le_bytes());
            if n > 0 && payload.get(flag_at) == Some(&0) {
                // This shard's statement may never have been given the
                // types: send them.
                let t: Vec<u8> = types
                    .iter()
                    .flat_map(|(ty, unsigned)| [*ty, if *unsigned { 0x80 } else { 0 }])
                    .collect();
                p[flag_at] = 1;
                p.splice(flag_at + 1..flag_at + 1, t);
            }
            self.relay_with(shard, &p, seq, Expect::ResultSet, None)
                .await?;
            let cursor = self.server_status & StatusFlags::SERVER_STATUS_CURSOR_EXISTS.bits() != 0;
            if let Some(s) = self.stmts.get_mut(&id) {
                s.cursor_on = cursor.then_some(shard);
            }
            return Ok(());
        }
        Ok(())
    }

    /// Several shards: each runs the statement with the values rendered
    /// in (and the LIMIT widened as the plan says), prepared for this
    /// text (kept while the next execute renders the same text), so its
    /// rows come in the binary protocol the client expects; the merge is
    /// the text query's. A cursor is not opened:
    /// the rows come with the execute, as from a server without one.
    async fn execute_scatter(
        &mut self,
        id: u32,
        plan: route::ShardPlan,
        targets: &[usize],
        text: Vec<u8>,
        seq: u8,
    ) -> Result<(), SessionError> {
        let mut packets = Vec::with_capacity(targets.len());
        let mut temporary = Vec::with_capacity(targets.len());
        for &t in targets {
            let shard_text = match self.text_for(t, plan.text_for(t, &text)) {
                Ok(x) => x,
                Err(e) => return self.reply_err(seq, &e).await,
            };
            if let Err(e) = self.enter(t).await {
                return self.backend_refused(seq, e).await;
            }
            let cached = self
                .stmts
                .get(&id)
                .and_then(|s| s.scatter.get(&t))
                .filter(|(x, _)| *x == shard_text)
                .map(|(_, b)| *b);
            let Some(conn) = self.shards.open(t) else {
                continue;
            };
            let backend = match cached {
                Some(b) => b,
                None => match conn.prepare(&shard_text).await {
                    Ok(b) => {
                        let old = self
                            .stmts
                            .get_mut(&id)
                            .and_then(|s| s.scatter.insert(t, (shard_text, b)));
                        if let Some((_, old)) = old {
                            temporary.push((t, old));
                        }
                        b
                    }
                    Err(e) => return self.backend_refused(seq, e).await,
                },
            };
            let mut p = vec![COM_STMT_EXECUTE];
            p.extend_from_slice(&backend.to_le_bytes());
            p.push(0);
            p.extend_from_slice(&1u32.to_le_bytes());
            packets.push(p);
        }
        let merge = match plan.merge {
            Merge::Relay => Merge::Concat {
                offset: 0,
                limit: None,
            },
            m => m,
        };
        self.read_many(targets, packets, &merge, seq, true, None)
            .await?;
        // Statements of earlier texts, replaced by this execute's.
        for (t, backend) in temporary {
            self.send_unanswered(t, COM_STMT_CLOSE, backend, &[])
                .await?;
        }
        Ok(())
    }

    /// Sends `shard` a statement command that has no answer
    /// (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA) for its statement
    /// `backend`, followed by `rest`; nothing when the shard is not open.
    async fn send_unanswered(
        &mut self,
        shard: usize,
        cmd: u8,
        backend: u32,
        rest: &[u8],
    ) -> Result<(), SessionError> {
        let Some(conn) = self.shards.open(shard) else {
            return Ok(());
        };
        let mut p = vec![cmd];
        p.extend_from_slice(&backend.to_le_bytes());
        p.extend_from_slice(rest);
        let mut bseq = 0;
        conn.wire
            .send_packet(&mut bseq, &p)
            .await
            .map_err(|e| SessionError::Backend(e.into()))
    }

    /// COM_STMT_FETCH and COM_STMT_RESET: on the shard holding the cursor
    /// (fetch), or every shard holding the statement (reset).
    pub(super) async fn fetch_or_reset(
        &mut self,
        payload: &[u8],
        seq: u8,
        fetch: bool,
    ) -> Result<(), SessionError> {
        let id = stmt_id(payload).unwrap_or(0);
        let Some(stmt) = self.stmts.get_mut(&id) else {
            let what = if fetch {
                "mysqld_stmt_fetch"
            } else {
                "mysqld_stmt_reset"
            };
            return self.reply_err(seq, &ErrSpec::unknown_stmt(id, what)).await;
        };
        if !fetch {
            stmt.long_data.clear();
            stmt.cursor_on = None;
            for (shard, backend) in stmt.on.clone().iter().enumerate() {
                if let (Some(b), Some(conn)) = (backend, self.shards.open(shard)) {
                    let mut p = vec![payload[0]];
                    p.extend_from_slice(&b.to_le_bytes());
                    if let Err(e) = conn.run(&p, Expect::Single).await {
                        return self.backend_refused(seq, e).await;
                    }
                }
            }
            return self.reply_ok(seq).await;
        }
        let (Some(shard), Some(backend)) =
            (stmt.cursor_on, stmt.cursor_on.and_then(|s| stmt.on[s]))
        else {
            return self
                .reply_err(
                    seq,
                    &ErrSpec::new(1421, "HY000", "The statement has no open cursor"),
                )
                .await;
        };
        let mut p = payload.to_vec();
        p[1..5].copy_from_slice(&backend.to_le_bytes());
        self.relay_with(shard, &p, seq, Expect::Fetch, None)
            .await
            .map(|_| ())
    }

    /// The server id of statement `id` on `shard`, prepared there first
    /// when it is not yet.
    async fn stmt_on(
        &mut self,
        id: u32,
        sql: &[u8],
        shard: usize,
    ) -> Result<u32, crate::backend::BackendError> {
        if let Some(b) = self.stmts.get(&id).and_then(|s| s.on[shard]) {
            return Ok(b);
        }
        let text = self
            .text_for(shard, sql)
            .map_err(|e| crate::backend::BackendError::Server {
                code: e.code,
                message: e.message,
            })?;
        let conn = self
            .shards
            .open(shard)
            .ok_or_else(|| crate::backend::BackendError::Unsupported("shard not open".into()))?;
        let b = conn.prepare(&text).await?;
        if let Some(s) = self.stmts.get_mut(&id) {
            s.on[shard] = Some(b);
        }
        Ok(b)
    }
}
