//! One client connection: handshake, then a loop of command → primary →
//! response relayed as frames. The session is pinned to one backend
//! connection for its life.
//!
//! Byte-exactness: backend frames are copied to the client unchanged except
//! for the sequence id byte (renumbered to the client's sequence). Tandem
//! writes packets itself only for its own answers: the handshake, errors it
//! raises (unknown command, unknown KILL target, lost backend).

mod capture;
mod relay;

use super::handshake::{self, Authenticated};
use super::registry::SessionEntry;
use crate::backend::{BackendError, Lease};
use crate::protocol::command::*;
use crate::protocol::drive::{drive, DriveError};
use crate::protocol::packets::ok_packet;
use crate::protocol::response::{Expect, Summary};
use crate::protocol::{ErrSpec, ProtocolError, Wire};
use crate::router::plan::Target;
use crate::router::{lexer, rename, Class, Classified, Scratch, SessionOp};
use crate::state::Shared;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use relay::Relay;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("client: {0}")]
    Client(#[from] ProtocolError),
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
}

impl From<DriveError> for SessionError {
    fn from(e: DriveError) -> Self {
        match e {
            DriveError::Client(e) => SessionError::Client(e),
            e => SessionError::Backend(e.into()),
        }
    }
}

/// I/O errors on the client socket (backend I/O is mapped explicitly).
impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::Client(ProtocolError::Io(e))
    }
}

/// A statement prepared through this session.
struct Prepared {
    /// The backend's id for it (the client holds Tandem's own id, which
    /// stays valid when the session moves to another backend).
    backend_id: u32,
    /// The backend knows the parameter types (an execute sent them to this
    /// backend statement); false after a re-prepare on a new primary.
    types_on_backend: bool,
    route: Arc<Classified>,
    /// The text as prepared on the backend (the mirror renders bound values
    /// into it).
    sql: Vec<u8>,
    /// The text as the client sent it: a move to another backend prepares
    /// it again, as that backend should get it (`backend_sql`).
    client_sql: Vec<u8>,
    /// Where its `?` placeholders are in `sql` (found once, at prepare).
    param_spans: Vec<std::ops::Range<usize>>,
    params: u16,
    /// Parameter types from the last execute that sent them (type, unsigned).
    types: Vec<(u8, bool)>,
    /// COM_STMT_SEND_LONG_DATA chunks per parameter, until the next execute.
    long_data: HashMap<u16, Vec<u8>>,
}

struct Session<'a> {
    shared: &'a Shared,
    id: u32,
    peer: SocketAddr,
    client: Wire,
    lease: Lease,
    caps: CapabilityFlags,
    user: String,
    salt: [u8; 20],
    max_packet: usize,
    /// Prepared statements by the id the client holds (Tandem's).
    stmts: HashMap<u32, Prepared>,
    next_stmt_id: u32,
    /// Set while a COM_STMT_PREPARE is forwarded: the id the client gets.
    prepare_client_id: Option<u32>,
    scratch: Scratch,
    status: StatusFlags,
    capture: capture::Capture,
    /// Backend the lease is on (a cutover moves the session to the new
    /// primary at its next transaction boundary).
    backend: String,
    collation: u8,
    backend_thread: Arc<AtomicU32>,
    /// Session-level SET statements the client ran, replayed on a move.
    sets: Vec<Vec<u8>>,
    /// LOCK TABLES is in effect (no move, fence ticket kept).
    locked_tables: bool,
    /// GET_LOCK calls not yet matched by RELEASE_LOCK (no move, ticket kept).
    named_locks: u32,
    /// This session's pass through the cutover fence, held from the start
    /// of a transaction or write to its end.
    ticket: Option<crate::cutover::Ticket<'a>>,
    /// Route class index of the last statement (latency histogram).
    last_class: usize,
    /// Digest of the rows being relayed, while a sampled read is shadowed.
    collector: Option<crate::shadow::Collector>,
}

/// SET statements kept for replay on a move (oldest dropped beyond this).
const MAX_REPLAYED_SETS: usize = 256;

/// Serves one client connection to the end.
pub(super) async fn run(stream: tokio::net::TcpStream, peer: SocketAddr, shared: &Shared) {
    let cancel = shared.shutdown.child_token();
    let backend_thread = Arc::new(AtomicU32::new(0));
    let id = shared.registry.register(SessionEntry {
        backend_thread: backend_thread.clone(),
        cancel: cancel.clone(),
    });
    let mut client = Wire::new(stream);
    let session = tokio::select! {
        s = open(&mut client, shared, id, peer, backend_thread.clone()) => s,
        _ = cancel.cancelled() => None,
    };
    if let Some((auth, lease, backend)) = session {
        let mut s = Session {
            backend,
            collation: auth.collation,
            backend_thread,
            sets: Vec::new(),
            locked_tables: false,
            named_locks: 0,
            ticket: None,
            last_class: 0,
            collector: None,
            next_stmt_id: 0,
            prepare_client_id: None,
            shared,
            id,
            peer,
            client,
            lease,
            caps: auth.caps,
            user: auth.user,
            salt: auth.salt,
            max_packet: shared.config.load().limits.max_allowed_packet,
            stmts: HashMap::new(),
            scratch: Scratch::default(),
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            capture: capture::Capture::default(),
        };
        debug!(conn = id, %peer, user = %s.user, "session started");
        match s.serve(&cancel).await {
            Ok(()) => debug!(conn = id, "session ended"),
            Err(SessionError::Client(ProtocolError::Closed)) => {
                debug!(conn = id, "client disconnected")
            }
            Err(SessionError::Client(e)) => {
                shared.metrics.protocol_errors.inc();
                info!(conn = id, %peer, error = %e, "closing client connection");
            }
            Err(SessionError::Backend(e)) => {
                shared.metrics.backend_errors.inc();
                warn!(conn = id, %peer, error = %e, "backend connection lost");
                let mut seq = 1;
                let _ = s
                    .client
                    .send_packet(&mut seq, &ErrSpec::backend_lost(&e).encode())
                    .await;
            }
        }
        s.client.shutdown().await;
    } else {
        client.shutdown().await;
    }
    shared.registry.remove(id);
}

/// Handshake, authentication and backend lease (with the backend's name).
/// None: the client was answered with an error (or vanished) and the
/// connection should close.
async fn open(
    client: &mut Wire,
    shared: &Shared,
    id: u32,
    peer: SocketAddr,
    backend_thread: Arc<AtomicU32>,
) -> Option<(Authenticated, Lease, String)> {
    let pool = shared.primary_pool();
    let server = match pool.server_info().await {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, backend = %pool.config().name, error = %e, "primary unavailable");
            let mut seq = 0;
            let err = ErrSpec::backend_unavailable(&pool.config().name, &e);
            let _ = client.send_packet(&mut seq, &err.encode()).await;
            return None;
        }
    };
    // The client's own part of the login is bounded; waiting for a pooled
    // connection afterwards is bounded by pool_wait_timeout (then ERR 1040).
    let timeout = shared.config.load().limits.handshake_timeout;
    let login = handshake::greet_and_auth(client, shared, id, &server, peer);
    let mut auth = match tokio::time::timeout(timeout, login).await {
        Ok(Ok(Some(a))) => a,
        Ok(Ok(None)) => {
            info!(%peer, "authentication failed");
            return None;
        }
        Ok(Err(e)) => {
            shared.metrics.protocol_errors.inc();
            info!(%peer, error = %e, "handshake failed");
            return None;
        }
        Err(_) => {
            info!(%peer, "handshake timed out");
            return None;
        }
    };
    let mut lease = match pool.acquire(auth.caps, auth.collation).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%peer, error = %e, "no backend connection for client");
            let err = match e {
                BackendError::PoolExhausted(_) => ErrSpec::too_many_connections(),
                BackendError::Server { code: 1040, .. } => ErrSpec::too_many_connections(),
                e => ErrSpec::backend_unavailable(&pool.config().name, e),
            };
            let _ = client.send_packet(&mut auth.seq, &err.encode()).await;
            return None;
        }
    };
    let backend = pool.config().name.clone();
    if let Some(db) = auth
        .db
        .as_ref()
        .map(|d| rename::map_db(&shared.config.load(), d, &backend))
    {
        let db = &db;
        if lease.conn().current_db.as_deref() != Some(db.as_str()) {
            lease.reusable = false;
            match lease.conn().init_db(db).await {
                Ok(()) => lease.reusable = true,
                Err(BackendError::Server { code, message }) => {
                    // e.g. 1049 Unknown database: the same answer a direct
                    // connection gets at login.
                    lease.reusable = true;
                    let state = if code == 1049 { "42000" } else { "HY000" };
                    let err = ErrSpec::new(code, state, message);
                    let _ = client.send_packet(&mut auth.seq, &err.encode()).await;
                    return None;
                }
                Err(e) => {
                    let err = ErrSpec::backend_unavailable(&pool.config().name, e);
                    let _ = client.send_packet(&mut auth.seq, &err.encode()).await;
                    return None;
                }
            }
        }
    }
    backend_thread.store(lease.conn().thread_id, Ordering::Relaxed);
    let ok = ok_packet(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT, 0);
    if client.send_packet(&mut auth.seq, &ok).await.is_err() {
        return None;
    }
    Some((auth, lease, backend))
}

impl Session<'_> {
    async fn serve(&mut self, cancel: &CancellationToken) -> Result<(), SessionError> {
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
            if !matches!(cmd, COM_QUERY | COM_STMT_EXECUTE | COM_QUIT) {
                self.boundary(false).await?;
            }
            match cmd {
                COM_QUIT => return Ok(()),
                COM_QUERY => {
                    self.query(payload, seq).await?;
                    self.shared
                        .metrics
                        .observe_latency_index(self.last_class, started.elapsed().as_secs_f64());
                }
                COM_STMT_PREPARE => self.prepare(payload, seq).await?,
                COM_STMT_EXECUTE => {
                    let id = stmt_id(&payload);
                    let Some(payload) = self.stmt_command(payload, seq).await? else {
                        continue;
                    };
                    if self.capturing().is_some() {
                        self.execute(id, payload, seq).await?
                    } else {
                        self.forward(&payload, seq, Expect::ResultSet).await?;
                    }
                    self.shared
                        .metrics
                        .observe_latency_index(self.last_class, started.elapsed().as_secs_f64());
                }
                COM_STMT_FETCH | COM_STMT_RESET => {
                    if cmd == COM_STMT_RESET {
                        if let Some(p) = stmt_id(&payload).and_then(|id| self.stmts.get_mut(&id)) {
                            p.long_data.clear();
                        }
                    }
                    let expect = match cmd {
                        COM_STMT_FETCH => Expect::Fetch,
                        _ => Expect::Single,
                    };
                    let Some(payload) = self.stmt_command(payload, seq).await? else {
                        continue;
                    };
                    self.forward(&payload, seq, expect).await?;
                }
                COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE => {
                    if cmd == COM_STMT_CLOSE {
                        if let Some(id) = stmt_id(&payload) {
                            self.stmts.remove(&id);
                        }
                    } else {
                        self.long_data(&payload);
                    }
                    // No answer is expected: an unknown id is dropped here,
                    // as the server would ignore it.
                    if let Some(payload) = self.map_stmt_id(payload)? {
                        self.send_to_backend(&payload).await?;
                    }
                }
                COM_INIT_DB => {
                    let asked = String::from_utf8_lossy(&payload[1..]).into_owned();
                    let db = rename::map_db(&self.shared.config.load(), &asked, &self.backend);
                    let payload = if db == asked {
                        payload
                    } else {
                        let mut p = vec![COM_INIT_DB];
                        p.extend_from_slice(db.as_bytes());
                        p
                    };
                    let summary = self.forward(&payload, seq, Expect::Single).await?;
                    if summary.error.is_none() {
                        self.lease.conn().current_db = Some(db);
                    }
                }
                COM_PING | COM_STATISTICS => {
                    self.forward(&payload, seq, Expect::Single).await?;
                }
                COM_FIELD_LIST => {
                    self.forward(&payload, seq, Expect::FieldList).await?;
                }
                COM_SET_OPTION => {
                    let summary = self.forward(&payload, seq, Expect::Single).await?;
                    if summary.error.is_none() {
                        let on = payload.get(1..3) == Some(&[0, 0]);
                        self.lease.conn().multi_statements = on;
                    }
                }
                COM_RESET_CONNECTION => {
                    let summary = self.forward(&payload, seq, Expect::Single).await?;
                    if summary.error.is_none() {
                        self.stmts.clear();
                        self.capture.reset();
                        self.sets.clear();
                        self.locked_tables = false;
                        self.named_locks = 0;
                    }
                }
                COM_CHANGE_USER => self.change_user(payload, seq).await?,
                COM_PROCESS_KILL => {
                    let id = payload
                        .get(1..5)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or(ProtocolError::Malformed("short COM_PROCESS_KILL"))?;
                    let kill = lexer::Kill {
                        query_only: false,
                        id: id.into(),
                    };
                    self.kill(kill, seq).await?;
                }
                _ => {
                    debug!(conn = self.id, cmd, "unknown command");
                    self.reply_err(seq, &ErrSpec::unknown_command()).await?;
                }
            }
            self.check_txn_end().await?;
            if self.ticket.is_some() && !self.in_txn() {
                self.ticket = None;
            }
        }
    }

    /// In a transaction (or holding table locks): the session stays on its
    /// backend and keeps its fence ticket.
    fn in_txn(&self) -> bool {
        self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
            || self.capture.has_writes()
            || self.locked_tables
            || self.named_locks > 0
    }

    /// Before a command: a statement that may start a transaction or write
    /// passes the cutover fence (waiting while it is closed); outside a
    /// transaction, a session still on a former primary moves to the
    /// current one first.
    async fn boundary(&mut self, needs_ticket: bool) -> Result<(), SessionError> {
        let shared = self.shared;
        if needs_ticket && self.ticket.is_none() {
            let (ticket, waited) = shared.cutover.fence.enter().await;
            if let Some(d) = waited {
                shared.metrics.fence_wait.observe(d.as_secs_f64());
            }
            self.ticket = Some(ticket);
        }
        if !self.in_txn() {
            let cfg = shared.config.load();
            if cfg.primary != self.backend {
                let to = cfg.primary.clone();
                drop(cfg);
                self.move_to(&to).await?;
            }
        }
        Ok(())
    }

    /// Whether a statement of `class` may open a transaction or write.
    fn needs_ticket(&self, class: &Class) -> bool {
        if !self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT) {
            // With autocommit off, anything but a session statement opens
            // a transaction.
            return !matches!(class, Class::Session(op) if *op != SessionOp::LockTables);
        }
        !matches!(class, Class::Read { .. } | Class::Session(_))
            || *class == Class::Session(SessionOp::LockTables)
    }

    /// Moves the session to backend `to` (the new primary after a
    /// cutover), carrying its state: current database (mapped to `to`'s),
    /// the multi-statement option, the session SETs it ran, and its
    /// prepared statements (re-prepared; client ids stay valid).
    async fn move_to(&mut self, to: &str) -> Result<(), SessionError> {
        let Some(pool) = self.shared.pools.load().get(to).cloned() else {
            return Err(BackendError::Protocol(ProtocolError::Malformed(
                "the new primary has no connection pool",
            ))
            .into());
        };
        let mut lease = pool.acquire(self.caps, self.collation).await?;
        lease.reusable = false;
        let conn = lease.conn();
        let db = self
            .lease
            .conn()
            .current_db
            .clone()
            .map(|d| rename::map_db(&self.shared.config.load(), &d, to));
        if let Some(db) = &db {
            if conn.current_db.as_deref() != Some(db.as_str()) {
                if let Err(e) = conn.init_db(db).await {
                    warn!(conn = self.id, %db, error = %e, "moving session: cannot select its database");
                }
            }
        }
        let multi = self.lease.conn().multi_statements;
        if conn.multi_statements != multi {
            let option: u16 = if multi { 0 } else { 1 };
            let mut p = vec![COM_SET_OPTION];
            p.extend_from_slice(&option.to_le_bytes());
            conn.run(&p, Expect::Single).await?;
            conn.multi_statements = multi;
        }
        for set in &self.sets {
            match conn.run(set, Expect::ResultSet).await {
                Ok(_) => {}
                Err(BackendError::Server { code, message }) => warn!(
                    conn = self.id,
                    code,
                    %message,
                    sql = %String::from_utf8_lossy(&set[1..]),
                    "moving session: a SET it ran fails on the new primary"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        let mut lost = 0;
        for p in self.stmts.values_mut() {
            let mut toks = Vec::new();
            lexer::tokenize(&p.client_sql, &mut toks);
            let calls_id = p.route.calls_connection_id;
            match backend_sql(self.shared, self.id, to, &p.client_sql, &toks, calls_id) {
                Ok(t) => p.sql = t.unwrap_or_else(|| p.client_sql.clone()),
                Err(reason) => {
                    lost += 1;
                    warn!(conn = self.id, %reason, "moving session: a prepared statement cannot be renamed for the new primary");
                    p.backend_id = u32::MAX;
                    p.types_on_backend = false;
                    continue;
                }
            }
            p.param_spans = lexer::param_spans(&p.sql);
            match conn.prepare(&p.sql).await {
                Ok(id) => p.backend_id = id,
                Err(BackendError::Server { code, message }) => {
                    lost += 1;
                    warn!(conn = self.id, code, %message, "moving session: a prepared statement does not prepare on the new primary");
                    p.backend_id = u32::MAX;
                }
                Err(e) => return Err(e.into()),
            }
            p.types_on_backend = false;
        }
        lease.reusable = true;
        let from = std::mem::replace(&mut self.backend, to.to_string());
        self.backend_thread
            .store(lease.conn().thread_id, Ordering::Relaxed);
        // The old connection goes back to its pool (reset there).
        self.lease = lease;
        self.capture.forget_vars();
        debug!(
            conn = self.id,
            %from,
            %to,
            statements = self.stmts.len(),
            lost,
            sets = self.sets.len(),
            "session moved to the new primary"
        );
        Ok(())
    }

    /// Keeps a successful session-level SET for replay on a move.
    fn remember_set(&mut self, payload: &[u8]) {
        let sql = &payload[1..];
        let global = self.scratch.tokens.iter().any(|t| {
            t.is_word(sql, "GLOBAL") || t.is_word(sql, "PERSIST") || t.is_word(sql, "PERSIST_ONLY")
        }) || memchr::memmem::find(&sql.to_ascii_lowercase(), b"@@global").is_some();
        if global {
            return;
        }
        self.sets.retain(|s| s != payload);
        if self.sets.len() == MAX_REPLAYED_SETS {
            self.sets.remove(0);
        }
        self.sets.push(payload.to_vec());
    }

    /// COM_STMT_EXECUTE/FETCH/RESET: passes the boundary (an execute may
    /// need a fence ticket), maps the client's id to the backend's and, for
    /// an execute of a statement re-prepared by a move, re-sends parameter
    /// types the client sent earlier. None: the id is unknown (the client
    /// got ERR 1243).
    async fn stmt_command(
        &mut self,
        payload: Vec<u8>,
        seq: u8,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        let cmd = payload[0];
        let id = stmt_id(&payload);
        if cmd == COM_STMT_EXECUTE {
            let class = id
                .and_then(|id| self.stmts.get(&id))
                .and_then(|p| p.route.statements.first().map(|r| r.class.clone()));
            let needs = class.as_ref().is_none_or(|c| self.needs_ticket(c));
            self.last_class = class.as_ref().map_or(5, crate::metrics::class_index);
            self.boundary(needs).await?;
        } else {
            self.boundary(false).await?;
        }
        let Some(mut payload) = self.map_stmt_id(payload)? else {
            let name = match cmd {
                COM_STMT_EXECUTE => "mysqld_stmt_execute",
                COM_STMT_FETCH => "mysqld_stmt_fetch",
                _ => "mysqld_stmt_reset",
            };
            let err = ErrSpec::new(
                1243,
                "HY000",
                format!(
                    "Unknown prepared statement handler ({}) given to {name}",
                    id.unwrap_or(0)
                ),
            );
            self.reply_err(seq, &err).await?;
            return Ok(None);
        };
        if cmd == COM_STMT_EXECUTE {
            if let Some(p) = id.and_then(|id| self.stmts.get_mut(&id)) {
                carry_param_types(&mut payload, p);
            }
        }
        Ok(Some(payload))
    }

    async fn query(&mut self, payload: Vec<u8>, seq: u8) -> Result<(), SessionError> {
        let sql = &payload[1..];
        let plan = self.shared.router.plan(sql, &mut self.scratch);
        let classified = &plan.classified;
        debug_assert_eq!(plan.target, Target::Primary);
        for r in &classified.statements {
            self.shared.metrics.count_route(&r.class);
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
                    &self.shared.config.load(),
                    db,
                    &self.backend,
                ))
                .filter(|m| m != db),
                _ => None,
            },
            _ => None,
        };
        if let Some(db) = use_mapped {
            let p = capture::query_packet(format!("USE {}", crate::sql::quote(&db)).as_bytes());
            let summary = self.forward(&p, seq, Expect::ResultSet).await?;
            if summary.error.is_none() {
                self.lease.conn().current_db = Some(db);
            }
            return Ok(());
        }
        if let Some(kill) = plan.kill {
            return self.kill(kill, seq).await;
        }
        let sent = match self.sql_for_backend(sql, classified.calls_connection_id, "run") {
            Ok(t) => t.map(|t| capture::query_packet(&t)),
            Err(err) => return self.reply_err(seq, &err).await,
        };
        let to_send = sent.as_deref().unwrap_or(&payload);
        if sent.is_some() {
            lexer::tokenize(&to_send[1..], &mut self.scratch.tokens);
        }
        if let Some(m) = self.capturing() {
            if self.capture_query(&m, &classified, to_send, seq).await? {
                return Ok(());
            }
        }
        let shadow = self.shadow_plan(&classified, to_send);
        if shadow.is_some() {
            self.collector = Some(crate::shadow::Collector::default());
        }
        let summary = self.forward(to_send, seq, Expect::ResultSet).await;
        let collected = self.collector.take();
        let summary = summary?;
        if let Some(l) = lock_calls {
            // Counted whether or not GET_LOCK got the lock (conservative:
            // the session moves after its next RELEASE_LOCK or reset).
            if l.release_all {
                self.named_locks = 0;
            }
            self.named_locks = self.named_locks.saturating_sub(l.release) + l.get;
        }
        if let (Some((tables, mirror)), Some(c)) = (shadow, collected) {
            if summary.error.is_none() && c.saw_rows {
                self.shadow_send(to_send, tables, mirror, c.digest);
            }
        }
        if summary.error.is_none() {
            self.track_session_state(&classified, to_send);
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
                self.lease.conn().current_db = Some(db);
            }
        }
        Ok(())
    }

    /// `sql` (whose tokens are in `scratch`) as this session's backend
    /// should get it (`backend_sql`). Err: the client's error when the
    /// rename cannot be done with certainty, saying that nothing was
    /// `not_done` ("run", "prepared").
    fn sql_for_backend(
        &self,
        sql: &[u8],
        calls_connection_id: bool,
        not_done: &str,
    ) -> Result<Option<Vec<u8>>, ErrSpec> {
        backend_sql(
            self.shared,
            self.id,
            &self.backend,
            sql,
            &self.scratch.tokens,
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

    async fn prepare(&mut self, payload: Vec<u8>, seq: u8) -> Result<(), SessionError> {
        let sql = &payload[1..];
        let route = self.shared.router.route(sql, &mut self.scratch);
        let sent = match self.sql_for_backend(sql, route.calls_connection_id, "prepared") {
            Ok(t) => t.map(|t| {
                let mut p = vec![COM_STMT_PREPARE];
                p.extend_from_slice(&t);
                p
            }),
            Err(err) => return self.reply_err(seq, &err).await,
        };
        let client_id = self.next_stmt_id.wrapping_add(1).max(1);
        self.prepare_client_id = Some(client_id);
        let summary = self
            .forward(sent.as_deref().unwrap_or(&payload), seq, Expect::Prepare)
            .await;
        self.prepare_client_id = None;
        let summary = summary?;
        if let Some((backend_id, _cols, params)) = summary.prepared {
            self.next_stmt_id = client_id;
            let client_sql = sql.to_vec();
            let sql = sent.as_ref().map_or(sql, |p| &p[1..]).to_vec();
            let param_spans = lexer::param_spans(&sql);
            self.stmts.insert(
                client_id,
                Prepared {
                    backend_id,
                    types_on_backend: false,
                    route,
                    sql,
                    client_sql,
                    param_spans,
                    params,
                    types: Vec::new(),
                    long_data: HashMap::new(),
                },
            );
        }
        Ok(())
    }

    /// Rewrites the statement id of a COM_STMT_* packet from the client's
    /// (Tandem's) id to the backend's. None: no such statement here.
    fn map_stmt_id(&self, mut payload: Vec<u8>) -> Result<Option<Vec<u8>>, SessionError> {
        let id = stmt_id(&payload).ok_or(ProtocolError::Malformed("short statement command"))?;
        let Some(p) = self.stmts.get(&id) else {
            return Ok(None);
        };
        payload[1..5].copy_from_slice(&p.backend_id.to_le_bytes());
        Ok(Some(payload))
    }

    /// Whether to shadow this read (`migration.reads: shadow`, sampled): the
    /// tables it reads and the running mirror, when it qualifies.
    fn shadow_plan(
        &self,
        classified: &Classified,
        packet: &[u8],
    ) -> Option<(
        crate::shadow::TableMarks,
        Arc<crate::mirror::runtime::Mirror>,
    )> {
        let cfg = self.shared.config.load();
        if cfg.reads != crate::config::Reads::Shadow
            || self.in_txn()
            || !self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
            || rand::random::<f64>() * 100.0 >= cfg.shadow_sample_percent
        {
            return None;
        }
        let [route] = classified.statements.as_slice() else {
            return None;
        };
        if !matches!(route.class, Class::Read { .. }) || !route.parsed {
            return None;
        }
        let sql = &packet[1..];
        if !crate::shadow::eligible(sql, &self.scratch.tokens, &route.tables, |t| {
            cfg.rules.mirrored(t)
        }) {
            return None;
        }
        // `shop.t` on the secondary's connection would read the primary's
        // database again (same server) or none: not compared.
        if rename::may_qualify(sql) && !matches!(rename::secondary_text(&cfg, sql), Ok(None)) {
            return None;
        }
        let m = self.capturing()?;
        match crate::shadow::quiet_tables(&m, &route.tables) {
            Some(tables) => Some((tables, m)),
            None => {
                self.shared.shadow.skipped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Hands a shadowed read to the background (the client has its answer).
    fn shadow_send(
        &mut self,
        packet: &[u8],
        tables: crate::shadow::TableMarks,
        mirror: Arc<crate::mirror::runtime::Mirror>,
        primary: crate::shadow::RowDigest,
    ) {
        let cfg = self.shared.config.load();
        let Some(secondary) = cfg.secondary.clone() else {
            return;
        };
        let Some(pool) = self.shared.pools.load().get(&secondary).cloned() else {
            return;
        };
        let db = self
            .lease
            .conn()
            .current_db
            .clone()
            .map(|d| rename::map_db(&cfg, &d, &secondary));
        let job = crate::shadow::Job {
            packet: packet.to_vec(),
            db,
            sets: self.sets.clone(),
            caps: self.caps,
            collation: self.collation,
            tables,
            primary,
        };
        crate::shadow::spawn(job, pool, mirror, self.shared.shadow.clone());
    }

    /// After a COM_QUERY succeeded: remembers session SETs (replayed when
    /// the session moves) and LOCK/UNLOCK TABLES.
    fn track_session_state(&mut self, classified: &Classified, payload: &[u8]) {
        if let [r] = classified.statements.as_slice() {
            match r.class {
                Class::Session(SessionOp::Set) => self.remember_set(payload),
                Class::Session(SessionOp::LockTables) => self.locked_tables = true,
                Class::Session(SessionOp::UnlockTables) => self.locked_tables = false,
                _ => {}
            }
        }
    }

    /// KILL [QUERY] <tandem id>: the id clients see is Tandem's; the backend
    /// thread it maps to is killed through this session's own backend
    /// connection, so the server checks privileges as it would directly.
    async fn kill(&mut self, kill: lexer::Kill, seq: u8) -> Result<(), SessionError> {
        let Some(target) = self.shared.registry.get(kill.id) else {
            return self.reply_err(seq, &ErrSpec::no_such_thread(kill.id)).await;
        };
        let thread = target.backend_thread.load(Ordering::Relaxed);
        if thread == 0 {
            // Still logging in: nothing runs yet; closing it is the whole effect.
            if !kill.query_only {
                target.cancel.cancel();
            }
            return self.reply_ok(seq).await;
        }
        let what = if kill.query_only {
            "QUERY"
        } else {
            "CONNECTION"
        };
        let p = capture::query_packet(format!("KILL {what} {thread}").as_bytes());
        let summary = self.forward(&p, seq, Expect::ResultSet).await?;
        if summary.error.is_none() && !kill.query_only {
            target.cancel.cancel();
        }
        Ok(())
    }

    async fn change_user(&mut self, payload: Vec<u8>, mut seq: u8) -> Result<(), SessionError> {
        let cu = parse_change_user(&payload, self.caps)
            .ok_or(ProtocolError::Malformed("COM_CHANGE_USER"))?;
        let salt = self.salt;
        let ok = handshake::verify(
            &mut self.client,
            self.shared,
            &cu.user,
            &cu.plugin,
            &cu.auth,
            &salt,
            &mut seq,
        )
        .await?;
        if !ok {
            self.shared.metrics.auth_failures.inc();
            let err =
                ErrSpec::access_denied(&cu.user, &self.peer.ip().to_string(), !cu.auth.is_empty());
            self.client.send_packet(&mut seq, &err.encode()).await?;
            // As MySQL does: a failed change of user ends the connection.
            return Err(ProtocolError::Closed.into());
        }
        // A new user starts with a fresh session, as on a direct connection.
        self.lease.reusable = false;
        let conn = self.lease.conn();
        conn.reset().await?;
        if let Some(db) = &cu.db {
            if let Err(e) = conn.init_db(db).await {
                self.lease.reusable = true;
                let (code, message) = match e {
                    BackendError::Server { code, message } => (code, message),
                    other => return Err(other.into()),
                };
                let err = ErrSpec::new(code, "42000", message);
                self.client.send_packet(&mut seq, &err.encode()).await?;
                return Ok(());
            }
        }
        if let Some(collation) = cu.collation.filter(|c| *c != conn.collation as u16) {
            let c = mysql_common::collations::Collation::resolve(collation.into());
            let sql = format!("SET NAMES {} COLLATE {}", c.charset(), c.collation());
            conn.query(&sql).await?;
        }
        self.lease.reusable = true;
        self.stmts.clear();
        self.capture.reset();
        self.sets.clear();
        self.locked_tables = false;
        self.named_locks = 0;
        self.user = cu.user;
        self.status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        self.client
            .send_packet(&mut seq, &ok_packet(0, 0, self.status, 0))
            .await?;
        Ok(())
    }

    async fn reply_err(&mut self, mut seq: u8, err: &ErrSpec) -> Result<(), SessionError> {
        self.client.send_packet(&mut seq, &err.encode()).await?;
        Ok(())
    }

    async fn reply_ok(&mut self, mut seq: u8) -> Result<(), SessionError> {
        let p = ok_packet(0, 0, self.status, 0);
        self.client.send_packet(&mut seq, &p).await?;
        Ok(())
    }

    /// Sends a command that has no response.
    async fn send_to_backend(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let be = &mut self.lease.conn().wire;
        let mut bseq = 0;
        be.send_packet(&mut bseq, payload)
            .await
            .map_err(|e| SessionError::Backend(e.into()))
    }

    /// Sends `payload` to the backend and relays its response to the client,
    /// frame by frame, renumbering sequence ids from `seq`.
    async fn forward(
        &mut self,
        payload: &[u8],
        seq: u8,
        expect: Expect,
    ) -> Result<Summary, SessionError> {
        self.lease.reusable = false;
        let deprecate_eof = self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let conn = self.lease.conn();
        let mut bseq = 0;
        conn.wire
            .send_packet(&mut bseq, payload)
            .await
            .map_err(|e| SessionError::Backend(e.into()))?;
        let mut relay = Relay {
            client: &mut self.client,
            max_packet: self.max_packet,
            collector: self.collector.as_mut(),
            prepare_id: self.prepare_client_id.take(),
        };
        let summary = drive(&mut conn.wire, expect, deprecate_eof, seq, &mut relay)
            .await?
            .summary;
        if let Some(ok) = summary.last_ok {
            self.status = ok.status_flags();
        }
        if summary.error.is_some() {
            self.capture.after_error = true;
        }
        self.lease.reusable = true;
        Ok(summary)
    }
}

/// COM_STMT_EXECUTE carries parameter types only when they change
/// (`new_params_bound_flag`); a statement re-prepared on a new backend has
/// none yet, so the types the client sent before are put in.
fn carry_param_types(payload: &mut Vec<u8>, p: &mut Prepared) {
    let n = p.params as usize;
    if n == 0 {
        return;
    }
    let flag_at = 10 + n.div_ceil(8);
    match payload.get(flag_at) {
        Some(1) => {
            if let Some(types) = payload.get(flag_at + 1..flag_at + 1 + 2 * n) {
                p.types = types.chunks(2).map(|c| (c[0], c[1] & 0x80 != 0)).collect();
                p.types_on_backend = true;
            }
        }
        Some(0) if !p.types_on_backend && p.types.len() == n => {
            let types: Vec<u8> = p
                .types
                .iter()
                .flat_map(|(t, unsigned)| [*t, if *unsigned { 0x80 } else { 0 }])
                .collect();
            payload[flag_at] = 1;
            payload.splice(flag_at + 1..flag_at + 1, types);
            p.types_on_backend = true;
        }
        _ => {}
    }
}

/// `sql` as backend `on` should get it: `CONNECTION_ID()` answered with
/// the session's Tandem id (when `calls_connection_id`; `tokens` are
/// `sql`'s), then names qualified with the other migration database
/// renamed to `on`'s (`rename::backend_text`). Ok(None): `sql` as it is.
/// Err: why the rename cannot be done with certainty.
fn backend_sql(
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

fn stmt_id(payload: &[u8]) -> Option<u32> {
    payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

struct ChangeUser {
    user: String,
    auth: Vec<u8>,
    db: Option<String>,
    collation: Option<u16>,
    plugin: String,
}

/// COM_CHANGE_USER: user NUL, auth (u8 length), db NUL, [collation u16],
/// [plugin NUL], [attributes].
fn parse_change_user(p: &[u8], caps: CapabilityFlags) -> Option<ChangeUser> {
    let mut rest = p.get(1..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let user = String::from_utf8_lossy(&rest[..nul]).into_owned();
    rest = &rest[nul + 1..];
    let len = *rest.first()? as usize;
    let auth = rest.get(1..1 + len)?.to_vec();
    rest = &rest[1 + len..];
    let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let db = Some(String::from_utf8_lossy(&rest[..nul]).into_owned()).filter(|d| !d.is_empty());
    rest = rest.get(nul + 1..).unwrap_or_default();
    let mut collation = None;
    let mut plugin = crate::protocol::auth::NATIVE_PLUGIN.to_string();
    if rest.len() >= 2 {
        collation = Some(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
            let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            if nul > 0 {
                plugin = String::from_utf8_lossy(&rest[..nul]).into_owned();
            }
        }
    }
    Some(ChangeUser {
        user,
        auth,
        db,
        collation,
        plugin,
    })
}
