//! One client connection: handshake, then a loop of commands, each run on
//! the session's binding (today one pinned connection to the primary) with
//! the answer relayed to the client as frames.
//!
//! Byte-exactness: backend frames are copied to the client unchanged except
//! for the sequence id byte (renumbered to the client's sequence). Tandem
//! writes packets itself only for its own answers: the handshake, errors it
//! raises (unknown command, unknown KILL target, lost backend).
//!
//! The files, one job each: this one is the command loop (read, dispatch);
//! `open` logs the client in and binds it; `link` is the session's two
//! connections and the calls that move packets between them; `relay` the
//! hot-path response consumer; `query` the COM_QUERY pipeline; `prepared`
//! the prepared-statement commands and id mapping; `commands` the other
//! commands; `state` the session state replayed on a move; `boundary` the
//! cutover fence and the move; `shadow` shadow reads; `capture` mirror
//! capture, a type of its own that the session calls.

mod boundary;
mod capture;
mod cluster;
mod commands;
mod link;
mod load_stmt;
mod multi;
mod open;
mod prepared;
mod query;
mod relay;
mod shadow;
mod state;

use super::registry::{Holding, SessionEntry};
use crate::backend::{BackendError, Binding};
use crate::protocol::command::*;
use crate::protocol::drive::DriveError;
use crate::protocol::response::Expect;
use crate::protocol::{ErrSpec, ProtocolError, Wire};
use crate::router::Scratch;
use crate::state::Shared;
use capture::found_rows::Effect;
use link::Link;
use mysql_common::constants::StatusFlags;
use prepared::Statements;
use state::Replay;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
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

struct Session<'a> {
    /// The client and backend connections and the wire state between them.
    link: Link<'a>,
    peer: SocketAddr,
    user: String,
    salt: [u8; 20],
    /// Prepared statements by the id the client holds (Tandem's).
    stmts: Statements,
    /// Session state replayed on a move (SETs), and what pins the session
    /// to its backend (table and named locks).
    replay: Replay,
    capture: capture::Capture,
    /// This session's pass through the cutover fence, held from the start
    /// of a transaction or write to its end.
    ticket: Option<crate::cutover::Ticket<'a>>,
    /// Route class index of the last statement (latency histogram).
    last_class: usize,
    /// The server's idle tick (see `registry::SessionEntry::idle_tick`).
    idle_tick: Arc<tokio::sync::Notify>,
    /// What this session holds of the fence, as the registry shows it.
    holding: Arc<std::sync::Mutex<Holding>>,
}

/// Serves one client connection to the end.
pub(super) async fn run(stream: tokio::net::TcpStream, peer: SocketAddr, shared: &Shared) {
    let cancel = shared.shutdown.child_token();
    let backend_thread = Arc::new(AtomicU32::new(0));
    let idle_tick = Arc::new(tokio::sync::Notify::new());
    let holding = Arc::new(std::sync::Mutex::new(Holding::default()));
    let id = shared.registry.register(SessionEntry {
        backend_thread: backend_thread.clone(),
        cancel: cancel.clone(),
        idle_tick: idle_tick.clone(),
        holding: holding.clone(),
    });
    let mut client = Wire::new(stream);
    shared.handshake_started(id, cancel.clone());
    let session = tokio::select! {
        s = open::open(&mut client, shared, id, peer, backend_thread.clone()) => s,
        _ = cancel.cancelled() => None,
    };
    shared.handshake_ended(id);
    let session = match (session, shared.config.load().cluster().cloned()) {
        (Some((auth, lease, _, _user_slot)), Some(c)) => {
            cluster::run(shared, id, peer, client, auth, lease, c, &cancel).await;
            shared.registry.remove(id);
            return;
        }
        (s, _) => s,
    };
    if let Some((auth, lease, backend, _user_slot)) = session {
        let mut s = Session {
            link: Link {
                shared,
                id,
                client,
                binding: Binding::direct(lease, backend, backend_thread),
                caps: auth.caps,
                ext_caps: auth.ext_caps,
                collation: auth.collation,
                status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
                max_packet: shared.config.load().limits.max_allowed_packet,
                scratch: Scratch::default(),
                after_error: false,
                table_locks: false,
                xa_prepared: false,
                xa_branch: false,
                errors_answered: 0,
                multi: None,
            },
            peer,
            user: auth.user,
            salt: auth.salt,
            stmts: Statements::default(),
            replay: Replay::default(),
            capture: capture::Capture::default(),
            ticket: None,
            last_class: 0,
            idle_tick,
            holding,
        };
        s.held().who = format!("{}@{peer}", s.user);
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
                    .link
                    .client
                    .send_packet(&mut seq, &ErrSpec::backend_lost(&e).encode())
                    .await;
            }
        }
        if s.link.xa_prepared {
            s.link.binding.set_reusable(false);
        }
        s.link.client.shutdown().await;
    } else {
        client.shutdown().await;
    }
    shared.registry.remove(id);
}

impl Session<'_> {
    /// The command loop: reads a command, dispatches it, and after each one
    /// lets capture see whether a transaction ended and releases the fence
    /// ticket once none is open.
    async fn serve(&mut self, cancel: &CancellationToken) -> Result<(), SessionError> {
        loop {
            self.link.client.shrink();
            let packet = {
                let read = self.link.client.read_packet(Some(0), self.link.max_packet);
                tokio::pin!(read);
                // Once the client has been idle through a server tick, the
                // backend is watched too: a server that closes the session
                // meanwhile (wait_timeout, KILL, restart) closes the
                // client's connection, as it would close a direct one. (A
                // timer per command cost microseconds per query.)
                let tick = self.idle_tick.notified();
                tokio::pin!(tick);
                let mut watching = false;
                loop {
                    tokio::select! {
                        biased;
                        p = &mut read => break Ok(p?),
                        _ = cancel.cancelled() => return Ok(()),
                        _ = &mut tick, if !watching => watching = true,
                        gone = self.link.binding.conn().wire.fill(), if watching => break Err(gone),
                    }
                }
            };
            let packet = match packet {
                Ok(p) => p,
                Err(gone) => {
                    self.link.backend_went_away(gone).await;
                    return Ok(());
                }
            };
            let seq = packet.last_seq.wrapping_add(1);
            let payload = packet.payload;
            let Some(&cmd) = payload.first() else {
                return Err(ProtocolError::Malformed("empty command packet").into());
            };
            let started = std::time::Instant::now();
            self.capture.next_command(matches!(
                cmd,
                COM_STMT_PREPARE | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA | COM_PING
            ));
            if !matches!(cmd, COM_QUERY | COM_STMT_EXECUTE | COM_QUIT) {
                self.boundary(false).await?;
            }
            match cmd {
                COM_QUIT => return Ok(()),
                COM_QUERY => {
                    self.query(payload, seq).await?;
                    self.observe_latency(started);
                }
                COM_STMT_PREPARE => self.prepare(payload, seq).await?,
                COM_STMT_EXECUTE => {
                    if self.execute(payload, seq).await? {
                        self.observe_latency(started);
                    }
                }
                COM_STMT_FETCH | COM_STMT_RESET => self.fetch_or_reset(payload, seq).await?,
                COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE => self.unanswered(payload).await?,
                COM_INIT_DB => self.init_db(payload, seq).await?,
                COM_PING | COM_STATISTICS => {
                    self.link.forward(&payload, seq, Expect::Single).await?;
                }
                COM_FIELD_LIST => {
                    self.settle_found_rows(Effect::Unknown).await?;
                    self.link.forward(&payload, seq, Expect::FieldList).await?;
                }
                COM_SET_OPTION => self.set_option(payload, seq).await?,
                COM_RESET_CONNECTION => self.reset_connection(payload, seq).await?,
                COM_CHANGE_USER => self.change_user(payload, seq).await?,
                COM_PROCESS_KILL => self.process_kill(&payload, seq).await?,
                _ => {
                    debug!(conn = self.link.id, cmd, "unknown command");
                    self.link
                        .reply_err(seq, &ErrSpec::unknown_command())
                        .await?;
                }
            }
            self.capture.check_txn_end(&mut self.link).await?;
            if self.ticket.is_some() {
                self.note_holding();
            }
        }
    }

    fn observe_latency(&self, started: std::time::Instant) {
        self.link
            .shared
            .metrics
            .observe_latency_index(self.last_class, started.elapsed().as_secs_f64());
    }
}
