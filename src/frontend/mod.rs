//! The client-facing side: the listener (this file), the handshake and
//! authentication (`handshake`), the per-connection command loop
//! (`session`), and the registry of live sessions (`registry`). The state
//! sessions share is `crate::server::Shared`.

mod handshake;
pub mod registry;
mod session;
pub mod sha2;

use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// Accept queue length requested from the kernel (capped by
/// net.core.somaxconn). A short queue drops connections in a burst; their
/// clients then wait for SYN-ACK retransmits while Tandem never sees them.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with a deliberate accept backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts clients until shutdown: one task per connection, at most
/// `limits.max_client_connections` at once (the rest get ERR 1040).
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shared.shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = shared.conn_slots.clone().try_acquire_owned().ok();
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.metrics.client_connections_total.inc();
            match permit {
                Some(permit) => {
                    shared.metrics.client_connections.inc();
                    session::run(stream, peer, &shared).await;
                    shared.metrics.client_connections.dec();
                    drop(permit);
                }
                None => {
                    shared.metrics.rejected_connections.inc();
                    debug!(%peer, "too many client connections");
                    handshake::refuse(stream, crate::protocol::ErrSpec::too_many_connections())
                        .await;
                }
            }
        });
    }
    debug!("listener stopped");
}
