//! A new client: greeting and authentication, then a pooled connection to
//! the primary opened with the client's capabilities and collation, in the
//! database it asked for.

use crate::backend::{BackendError, Lease};
use crate::frontend::handshake::{self, Authenticated};
use crate::protocol::packets::ok_packet;
use crate::protocol::{ErrSpec, Wire};
use crate::router::rename;
use crate::state::Shared;
use mysql_common::constants::StatusFlags;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tracing::{info, warn};

/// Handshake, authentication and backend lease (with the backend's name).
/// None: the client was answered with an error (or vanished) and the
/// connection should close.
pub(super) async fn open<'s>(
    client: &mut Wire,
    shared: &'s Shared,
    id: u32,
    peer: SocketAddr,
    backend_thread: Arc<AtomicU32>,
) -> Option<(Authenticated, Lease, String, crate::state::UserSlot<'s>)> {
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
    let logged_in = tokio::time::timeout(timeout, login).await;
    // Past its handshake: no longer a candidate for eviction
    // (`limits.max_unauthenticated`), whatever waits for a backend next.
    shared.handshake_ended(id);
    let mut auth = match logged_in {
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
    let Some(user_slot) = shared.user_slot(&auth.user) else {
        // As MySQL answers past max_user_connections.
        let limit = shared.config.load().user_limits.get(&auth.user).copied();
        let err = ErrSpec::new(
            1203,
            "42000",
            format!(
                "User {} already has more than 'max_user_connections' active connections ({})",
                auth.user,
                limit.unwrap_or_default()
            ),
        );
        let _ = client.send_packet(&mut auth.seq, &err.encode()).await;
        return None;
    };
    let account = shared.config.load().accounts.get(&auth.user).cloned();
    let mut lease = match pool
        .acquire(auth.caps, auth.ext_caps, auth.collation, account.as_ref())
        .await
    {
        Ok(l) => l,
        Err(e) => {
            warn!(%peer, error = %e, "no backend connection for client");
            let err = match e {
                BackendError::PoolExhausted(_) => ErrSpec::too_many_connections(),
                BackendError::Server { code: 1040, .. } => ErrSpec::too_many_connections(),
                // The database refused the user's own account: its answer.
                BackendError::Server { code, message } if account.is_some() => {
                    ErrSpec::new(code, "28000", message)
                }
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
    Some((auth, lease, backend, user_slot))
}
