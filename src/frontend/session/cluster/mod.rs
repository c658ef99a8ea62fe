//! A session whose primary is a cluster: the client sees one MySQL
//! database; each statement runs on the shards its shard key names
//! (`router::shard`), on one connection per shard the session touched
//! (`backend::shards::ShardSet`), and several shards' answers are merged
//! into the one a single database would give (`merge`).
//!
//! Session state applies on every shard: `USE` of the cluster's database
//! selects each shard's own; SETs run on every open shard connection and
//! are replayed on those opened later. A transaction opens a branch on
//! each shard it touches (its BEGIN sent before the first statement
//! there) and ends on all of them; a transaction may write one shard only
//! until cross-shard commits are atomic, and a single statement that
//! writes several shards outside a transaction runs as one transaction
//! per shard, committed only when every shard's part succeeded.
//!
//! The files: this one is the command loop and session state; `exec`
//! runs one statement's plan; `merge` merges reads; `values` compares and
//! sums the values merges see.

mod exec;
mod group;
pub(in crate::frontend::session) mod insert_select;
mod key_move;
mod load;
mod merge;
mod metadata;
mod pin;
mod prepared;
pub(in crate::frontend::session) mod read;
mod shape;
mod temp;
pub(in crate::frontend::session) mod values;
mod xa;
mod zone;

use super::SessionError;
use crate::backend::shards::{Prelude, ShardSet};
use crate::config::ClusterConfig;
use crate::protocol::command::*;
use crate::protocol::packets::ok_packet;
use crate::protocol::response::Expect;
use crate::protocol::{ErrSpec, ProtocolError, Wire};
use crate::router::lexer::{self, Tok};
use crate::router::{Class, Scratch, SessionOp, TxnOp};
use crate::state::Shared;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use std::collections::BTreeSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub(super) struct ClusterSession<'a> {
    pub shared: &'a Shared,
    pub id: u32,
    pub client: Wire,
    pub shards: ShardSet,
    pub caps: CapabilityFlags,
    /// MariaDB extended capabilities the client chose.
    pub ext_caps: u32,
    pub max_packet: usize,
    pub scratch: Scratch,
    /// The client's autocommit setting.
    pub autocommit: bool,
    /// BEGIN / START TRANSACTION seen and not ended.
    pub explicit_txn: bool,
    /// The statement that opens a branch on a shard the transaction
    /// reaches (the client's BEGIN, or START TRANSACTION …).
    pub begin_sql: Vec<u8>,
    /// Shards with an open transaction branch.
    pub branches: BTreeSet<usize>,
    /// Shards the open transaction wrote.
    pub wrote: BTreeSet<usize>,
    /// The transaction's first branch, an ordinary transaction; later
    /// branches are XA branches of `gtrid` (`xa.rs`).
    pub anchor: Option<usize>,
    pub gtrid: Option<String>,
    /// The shard that ran the last statement: statements that read the
    /// session's diagnostics (`ROW_COUNT()`, `LAST_INSERT_ID()`, `SHOW
    /// WARNINGS`) and need no particular shard run there.
    pub last_shard: usize,
    /// The affected rows of the last statement when it ran on several
    /// shards (no one server knows them): `ROW_COUNT()` is answered with it.
    pub merged_count: Option<u64>,
    /// The first id the last INSERT took from a global sequence:
    /// `LAST_INSERT_ID()` is answered with it (no shard knows it).
    pub last_insert_id: Option<u64>,
    /// The session's time zone in seconds east of UTC, once asked (for
    /// TIMESTAMP shard keys; Some(None): not a fixed offset). Forgotten
    /// on SET and reset.
    pub time_zone: Option<Option<i32>>,
    /// The session's temporary tables: on every shard, planned as
    /// reference tables of the session (`temp.rs`).
    pub temp_tables: BTreeSet<String>,
    /// Prepared statements by the client's id, and the last id given.
    stmts: std::collections::HashMap<u32, prepared::ClusterStmt>,
    next_stmt: u32,
    /// Status flags of the last answer relayed from a shard.
    pub server_status: u16,
    /// The session's sql_mode has NO_BACKSLASH_ESCAPES (bound strings are
    /// rendered accordingly).
    pub no_backslash_escapes: bool,
}

/// Serves a logged-in client of a cluster to the end; `lease` is the
/// login's connection to the first shard.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    shared: &Shared,
    id: u32,
    peer: std::net::SocketAddr,
    client: Wire,
    auth: crate::frontend::handshake::Authenticated,
    lease: crate::backend::Lease,
    cluster: ClusterConfig,
    cancel: &CancellationToken,
) {
    let account = shared.config.load().accounts.get(&auth.user).cloned();
    let mut s = ClusterSession {
        shared,
        id,
        client,
        shards: ShardSet::new(
            cluster.shards.clone(),
            lease,
            auth.caps,
            auth.ext_caps,
            auth.collation,
            account,
            auth.db.as_deref() == Some(cluster.database.as_str()),
        ),
        caps: auth.caps,
        ext_caps: auth.ext_caps,
        max_packet: shared.config.load().limits.max_allowed_packet,
        scratch: Scratch::default(),
        autocommit: true,
        explicit_txn: false,
        begin_sql: Vec::new(),
        branches: Default::default(),
        wrote: Default::default(),
        anchor: None,
        gtrid: None,
        last_shard: 0,
        merged_count: None,
        last_insert_id: None,
        temp_tables: Default::default(),
        time_zone: None,
        stmts: Default::default(),
        next_stmt: 0,
        server_status: 0,
        no_backslash_escapes: false,
    };
    debug!(conn = id, %peer, user = %auth.user, "cluster session started");
    match s.serve(cancel).await {
        Ok(()) | Err(SessionError::Client(ProtocolError::Closed)) => {}
        Err(SessionError::Client(e)) => {
            shared.metrics.protocol_errors.inc();
            tracing::info!(conn = id, %peer, error = %e, "closing client connection");
        }
        Err(SessionError::Backend(e)) => {
            shared.metrics.backend_errors.inc();
            tracing::warn!(conn = id, %peer, error = %e, "shard connection lost");
            s.shards.discard_all();
            let mut seq = 1;
            let _ = s
                .client
                .send_packet(&mut seq, &ErrSpec::backend_lost(&e).encode())
                .await;
        }
    }
    if s.in_txn() {
        // Open branches roll back with their connections.
        s.shards.discard_all();
    }
    s.client.shutdown().await;
}

/// ER_NOT_SUPPORTED_YET with Tandem's reason.
pub(super) fn not_supported(why: impl std::fmt::Display) -> ErrSpec {
    ErrSpec::new(1235, "42000", format!("Tandem (cluster): {why}"))
}

impl<'a> ClusterSession<'a> {
    pub fn cluster(&self) -> Option<ClusterConfig> {
        self.shared.config.load().cluster().cloned()
    }

    pub fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// A transaction is open for the client (explicitly, or implicitly
    /// under autocommit=0 once a statement ran).
    pub fn in_txn(&self) -> bool {
        self.explicit_txn || !self.autocommit
    }

    /// The session-level status flags the client sees.
    pub fn status(&self) -> StatusFlags {
        let mut s = StatusFlags::empty();
        if self.autocommit {
            s |= StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        }
        if self.explicit_txn || (!self.autocommit && !self.branches.is_empty()) {
            s |= StatusFlags::SERVER_STATUS_IN_TRANS;
        }
        s
    }

    pub async fn reply_ok(&mut self, mut seq: u8) -> Result<(), SessionError> {
        let p = ok_packet(0, 0, self.status(), 0);
        self.client.send_packet(&mut seq, &p).await?;
        Ok(())
    }

    pub async fn reply_err(&mut self, mut seq: u8, e: &ErrSpec) -> Result<(), SessionError> {
        self.client.send_packet(&mut seq, &e.encode()).await?;
        Ok(())
    }

    /// The command loop.
    pub async fn serve(&mut self, cancel: &CancellationToken) -> Result<(), SessionError> {
        loop {
            self.client.shrink();
            let packet = tokio::select! {
                p = self.client.read_packet(Some(0), self.max_packet) => p?,
                _ = cancel.cancelled() => return Ok(()),
            };
            let seq = packet.last_seq.wrapping_add(1);
            let payload = packet.payload;
            let Some(&cmd) = payload.first() else {
                return Err(ProtocolError::Malformed("empty command packet").into());
            };
            let started = std::time::Instant::now();
            match cmd {
                COM_QUIT => return Ok(()),
                COM_QUERY => self.query(&payload, seq).await?,
                COM_PING | COM_STATISTICS => {
                    self.relay_one(0, &payload, seq, Expect::Single).await?
                }
                COM_FIELD_LIST => self.relay_one(0, &payload, seq, Expect::FieldList).await?,
                COM_INIT_DB => {
                    let db = String::from_utf8_lossy(&payload[1..]).into_owned();
                    self.use_db(&db, seq).await?
                }
                COM_RESET_CONNECTION => self.reset(seq).await?,
                COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE => self.stmt_unanswered(&payload).await?,
                COM_STMT_PREPARE => self.prepare(&payload, seq).await?,
                COM_STMT_EXECUTE => self.execute(&payload, seq).await?,
                COM_STMT_FETCH => self.fetch_or_reset(&payload, seq, true).await?,
                COM_STMT_RESET => self.fetch_or_reset(&payload, seq, false).await?,
                _ => {
                    debug!(conn = self.id, cmd, "command not served on a cluster");
                    let e = if matches!(cmd, COM_CHANGE_USER | COM_PROCESS_KILL | COM_SET_OPTION) {
                        not_supported("this command on a cluster is not supported yet")
                    } else {
                        ErrSpec::unknown_command()
                    };
                    self.reply_err(seq, &e).await?
                }
            }
            self.shared
                .metrics
                .observe_latency_index(5, started.elapsed().as_secs_f64());
        }
    }

    pub(super) async fn query(&mut self, payload: &[u8], seq: u8) -> Result<(), SessionError> {
        let sql = &payload[1..];
        if let Some(n) = self.merged_count.take() {
            lexer::tokenize(sql, &mut self.scratch.tokens);
            let t = lexer::rewrite_calls(sql, &self.scratch.tokens, "ROW_COUNT", &n.to_string());
            if let Some(t) = t {
                let p = crate::frontend::session::link::query_packet(&t);
                return Box::pin(self.query(&p, seq)).await;
            }
        }
        if let Some(id) = self.last_insert_id {
            lexer::tokenize(sql, &mut self.scratch.tokens);
            let toks = &self.scratch.tokens;
            let sets_it = toks.windows(3).any(|w| {
                w[0].is_word(sql, "LAST_INSERT_ID")
                    && w[1].kind == Tok::Punct(b'(')
                    && w[2].kind != Tok::Punct(b')')
            });
            if sets_it {
                // LAST_INSERT_ID(expr): the server's value from now on.
                self.last_insert_id = None;
            } else if let Some(t) =
                lexer::rewrite_calls(sql, toks, "LAST_INSERT_ID", &id.to_string())
            {
                let p = crate::frontend::session::link::query_packet(&t);
                return Box::pin(self.query(&p, seq)).await;
            }
        }
        let classified = self.shared.router.route(sql, &mut self.scratch);
        let [r] = classified.statements.as_slice() else {
            return self
                .reply_err(
                    seq,
                    &not_supported("several statements in one packet on a cluster"),
                )
                .await;
        };
        let toks = &self.scratch.tokens;
        let first_is = |w: &str| toks.first().is_some_and(|t| t.is_word(sql, w));
        let second_is = |w: &str| toks.get(1).is_some_and(|t| t.is_word(sql, w));
        match &r.class {
            Class::Session(SessionOp::Use(db)) => {
                let db = db.clone();
                self.use_db(&db, seq).await
            }
            Class::Session(SessionOp::Set) => {
                if crate::router::named_tables(sql).is_some_and(|t| !t.is_empty()) {
                    return self
                        .reply_err(seq, &not_supported("a SET that reads tables on a cluster"))
                        .await;
                }
                let autocommit = autocommit_value(sql, &self.scratch.tokens);
                if autocommit == Some(true) && !self.autocommit {
                    // Turning autocommit on commits the open transaction:
                    // every branch, atomically, before the SET.
                    if let Some(e) = self.end_txn(b"COMMIT").await? {
                        return self.reply_err(seq, &e).await;
                    }
                }
                self.time_zone = None;
                self.everywhere(payload, seq, true).await?;
                if let Some(on) = autocommit {
                    self.autocommit = on;
                }
                Ok(())
            }
            Class::Session(SessionOp::UnlockTables) => self.everywhere(payload, seq, false).await,
            Class::Session(_) => {
                self.reply_err(
                    seq,
                    &not_supported("LOCK TABLES, KILL and SQL-level PREPARE on a cluster"),
                )
                .await
            }
            Class::Transaction(TxnOp::Begin) => {
                if let Some(e) = self.end_txn(b"COMMIT").await? {
                    return self.reply_err(seq, &e).await;
                }
                self.explicit_txn = true;
                self.begin_sql = sql.to_vec();
                self.reply_ok(seq).await
            }
            Class::Transaction(TxnOp::Commit | TxnOp::Rollback) => {
                if toks
                    .iter()
                    .any(|t| t.is_word(sql, "RELEASE") || t.is_word(sql, "CHAIN"))
                {
                    return self
                        .reply_err(seq, &not_supported("COMMIT/ROLLBACK AND CHAIN or RELEASE"))
                        .await;
                }
                let verb: &[u8] = if matches!(r.class, Class::Transaction(TxnOp::Commit)) {
                    b"COMMIT"
                } else {
                    b"ROLLBACK"
                };
                match self.end_txn(verb).await? {
                    Some(e) => self.reply_err(seq, &e).await,
                    None => self.reply_ok(seq).await,
                }
            }
            Class::Transaction(TxnOp::Other) if !first_is("XA") => {
                // SET TRANSACTION …: every open shard connection.
                self.everywhere(payload, seq, false).await
            }
            Class::Transaction(_) => {
                self.reply_err(seq, &not_supported("savepoints and XA on a cluster"))
                    .await
            }
            Class::Ddl if r.object == Some(crate::router::SchemaObject::TemporaryTable) => {
                self.temp_ddl(sql, seq).await
            }
            Class::Ddl => {
                if second_is("DATABASE") || second_is("SCHEMA") || r.object.is_some() {
                    let what = if r.object.is_some() {
                        "triggers, routines and events"
                    } else {
                        "CREATE/DROP DATABASE"
                    };
                    return self
                        .reply_err(seq, &not_supported(format!("{what} on a cluster")))
                        .await;
                }
                self.ddl(sql, seq).await
            }
            Class::Write(crate::router::WriteKind::LoadData) => self.load_data(sql, seq).await,
            Class::Write(crate::router::WriteKind::Call) => {
                self.reply_err(seq, &not_supported("CALL on a cluster"))
                    .await
            }
            Class::Read { .. } | Class::Write(_) => self.routed(sql, r.is_write(), seq).await,
            Class::Other => {
                if first_is("HANDLER")
                    || crate::router::named_tables(sql).is_some_and(|t| !t.is_empty())
                        && first_is("DO")
                {
                    return self
                        .reply_err(
                            seq,
                            &not_supported("HANDLER, and DO over tables, on a cluster"),
                        )
                        .await;
                }
                // SHOW, DESCRIBE, EXPLAIN and the like: any shard answers
                // for the schema they share; the last one used for SHOW
                // WARNINGS and the like.
                self.relay_text(self.last_shard, sql, seq).await
            }
        }
    }

    /// `USE db` / COM_INIT_DB: the cluster's database selects each shard's.
    async fn use_db(&mut self, db: &str, seq: u8) -> Result<(), SessionError> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        if db != cluster.database {
            let e = ErrSpec::new(
                1049,
                "42000",
                format!(
                    "Unknown database '{db}' (this Tandem serves cluster database '{}')",
                    cluster.database
                ),
            );
            return self.reply_err(seq, &e).await;
        }
        let dbs = self.physical_dbs();
        for shard in self.shards.open_shards() {
            if let (Some(conn), Some(Some(d))) = (self.shards.open(shard), dbs.get(shard)) {
                if let Err(e) = conn.init_db(d).await {
                    return self.backend_refused(seq, e).await;
                }
            }
        }
        self.shards.remember(Prelude::UseDatabase);
        self.reply_ok(seq).await
    }

    /// COM_RESET_CONNECTION on every open shard connection.
    async fn reset(&mut self, seq: u8) -> Result<(), SessionError> {
        for shard in self.shards.open_shards() {
            if let Some(conn) = self.shards.open(shard) {
                if let Err(e) = conn.reset().await {
                    return self.backend_refused(seq, e).await;
                }
            }
        }
        self.shards.forget_state(true);
        self.stmts.clear();
        self.temp_tables.clear();
        self.time_zone = None;
        self.autocommit = true;
        self.explicit_txn = false;
        self.branches.clear();
        self.wrote.clear();
        self.anchor = None;
        self.gtrid = None;
        self.reply_ok(seq).await
    }

    /// A backend error on Tandem's own command: the server's refusal goes
    /// to the client; a lost connection ends the session.
    pub async fn backend_refused(
        &mut self,
        seq: u8,
        e: crate::backend::BackendError,
    ) -> Result<(), SessionError> {
        match e {
            crate::backend::BackendError::Server { code, message } => {
                self.reply_err(seq, &ErrSpec::new(code, "HY000", message))
                    .await
            }
            crate::backend::BackendError::PoolExhausted(_) => {
                self.reply_err(seq, &ErrSpec::too_many_connections()).await
            }
            e => Err(SessionError::Backend(e)),
        }
    }

    /// Each shard's physical database (from its URL).
    pub fn physical_dbs(&self) -> Vec<Option<String>> {
        let cfg = self.shared.config.load();
        match cfg.cluster() {
            Some(c) => c
                .shards
                .iter()
                .map(|s| cfg.backends.get(s).and_then(|b| b.database.clone()))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// The value a `SET autocommit = …` gives (None: the SET leaves it).
fn autocommit_value(sql: &[u8], toks: &[lexer::Token]) -> Option<bool> {
    let i = toks.iter().position(|t| {
        t.is_word(sql, "autocommit")
            || (t.kind == Tok::Var && t.text(sql).to_ascii_lowercase().ends_with(b"autocommit"))
    })?;
    let v = match toks.get(i + 1).map(|t| t.kind) {
        Some(Tok::Punct(b'=')) => toks.get(i + 2)?,
        Some(Tok::Punct(b':')) => toks.get(i + 3)?,
        _ => return None,
    };
    let text = v.text(sql).to_ascii_uppercase();
    match text.as_slice() {
        b"0" | b"OFF" | b"FALSE" => Some(false),
        b"1" | b"ON" | b"TRUE" => Some(true),
        _ => None,
    }
}
