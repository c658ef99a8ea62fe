//! Backends: raw MySQL connections (`conn`) and per-backend pools (`pool`).
//! PostgreSQL backends arrive with the PostgreSQL milestone.

pub mod conn;
pub mod pool;

pub use conn::{BackendConn, ServerInfo};
pub use pool::{Lease, Pool};

use crate::protocol::ProtocolError;

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
