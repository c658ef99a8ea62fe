//! Backends: raw MySQL connections (`conn`), per-backend pools (`pool`),
//! and what a session is bound to (`binding`). PostgreSQL backends arrive
//! with the PostgreSQL milestone, as a new binding variant.

pub mod accounts;
pub mod binding;
pub mod conn;
pub mod pool;
pub mod sequence;
pub mod shards;

pub use binding::Binding;
pub use conn::{greeting_reserved_at, BackendConn, ServerInfo, MARIADB_EXTENDED_METADATA};
pub use pool::{Lease, Pool};

use crate::config::BackendConfig;
use crate::protocol::ProtocolError;

/// mysql_async options for Tandem's own (non-relay) connections to a
/// backend: the applier, backfill, verify, cutover. TCP only: a unix socket
/// found through `@@socket` would silently bypass the configured address
/// (and its TLS). TLS as the backend URL asks, like the relay's pools.
fn client_opts(b: &BackendConfig) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(b.host.clone())
        .tcp_port(b.port)
        .user(Some(b.user.clone()))
        .pass(Some(b.password.clone()))
        .db_name(b.database.clone())
        .prefer_socket(false)
        .ssl_opts(b.tls.as_ref().map(|t| t.ssl_opts()))
}

/// `client_opts`, once the backend's TLS settings are ready for mysql_async
/// (under verify-ca, a name its certificate holds is learned by connecting
/// once as the relay does; see `BackendTls::ssl_opts`). Every connection
/// of Tandem's own goes through here.
pub async fn own_opts(b: &BackendConfig) -> mysql_async::OptsBuilder {
    if b.tls.as_ref().is_some_and(|t| t.needs_name()) {
        // Only the TLS handshake matters; a refused login is the real
        // connection's to report.
        let _ = BackendConn::connect(
            b,
            mysql_common::constants::CapabilityFlags::CLIENT_PROTOCOL_41,
            0,
            None,
            std::time::Duration::from_secs(10),
        )
        .await;
    }
    client_opts(b)
}

/// Opens one of Tandem's own connections. A refused login (1045) is
/// tried twice more: mysql_common 0.37 drops the last byte of a MariaDB
/// ed25519 nonce when it is zero (it takes it for a terminator), which
/// fails one login in 256 for such accounts; a wrong password fails all
/// three alike.
pub async fn own_conn(
    opts: impl Into<mysql_async::Opts>,
) -> Result<mysql_async::Conn, mysql_async::Error> {
    let opts: mysql_async::Opts = opts.into();
    let mut tries = 0;
    loop {
        match mysql_async::Conn::new(opts.clone()).await {
            Err(mysql_async::Error::Server(e)) if e.code == 1045 && tries < 2 => tries += 1,
            other => return other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot reach backend: {0}")]
    Io(#[from] std::io::Error),
    #[error("backend protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("backend refused: ERROR {code}: {message}")]
    Server { code: u16, message: String },
    #[error("backend not supported: {0}")]
    Unsupported(String),
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("all {0} pooled connections are in use")]
    PoolExhausted(usize),
}

impl From<crate::protocol::drive::DriveError> for BackendError {
    /// Tandem's own commands have no client side: either failure is the
    /// backend connection's. An I/O error reads as one, as `Wire`'s do.
    fn from(e: crate::protocol::drive::DriveError) -> Self {
        use crate::protocol::drive::DriveError;
        match e {
            DriveError::Backend(ProtocolError::Io(e))
            | DriveError::Client(ProtocolError::Io(e)) => BackendError::Io(e),
            DriveError::Backend(e) | DriveError::Client(e) => BackendError::Protocol(e),
        }
    }
}
