//! What a session's statements run on. Today one variant: a pinned
//! connection to one MySQL backend (the current primary, or a former one
//! until the session's next transaction boundary). A session on a cluster
//! is bound to a `shards::ShardSet` instead (one connection per shard it
//! touched); PostgreSQL adds a variant holding a PostgreSQL connection; the
//! session asks the binding, never a lease directly.

use super::{BackendConn, Lease};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub enum Binding {
    /// One leased MySQL connection, kept for the session's life (pinning):
    /// current database, session variables, temporary tables, transactions
    /// and prepared statements behave as on a direct connection.
    Direct(Direct),
}

pub struct Direct {
    lease: Lease,
    /// The backend the lease is on.
    backend: String,
    /// The backend thread serving the session, published for `KILL <id>`
    /// from other sessions (the registry holds the other end).
    thread: Arc<AtomicU32>,
}

impl Binding {
    /// Binds `lease` (on `backend`). `thread` already holds its thread id:
    /// login publishes it before the client hears OK, so a KILL sent right
    /// after login finds it.
    pub fn direct(lease: Lease, backend: String, thread: Arc<AtomicU32>) -> Self {
        Binding::Direct(Direct {
            lease,
            backend,
            thread,
        })
    }

    /// Name of the backend the session is bound to.
    pub fn backend(&self) -> &str {
        match self {
            Binding::Direct(d) => &d.backend,
        }
    }

    /// The connection the session's statements run on.
    #[inline]
    pub fn conn(&mut self) -> &mut BackendConn {
        match self {
            Binding::Direct(d) => d.lease.conn(),
        }
    }

    /// Marks a command in flight (false) or finished (true): a binding
    /// dropped while a command is in flight closes its connection instead
    /// of returning it to the pool.
    #[inline]
    pub fn set_reusable(&mut self, reusable: bool) {
        match self {
            Binding::Direct(d) => d.lease.reusable = reusable,
        }
    }

    /// Moves the session to `lease` on `backend` (a cutover); the old
    /// connection goes back to its pool (reset there). Returns the old
    /// backend's name.
    pub fn rebind(&mut self, mut lease: Lease, backend: &str) -> String {
        match self {
            Binding::Direct(d) => {
                d.thread.store(lease.conn().thread_id, Ordering::Relaxed);
                d.lease = lease;
                std::mem::replace(&mut d.backend, backend.to_string())
            }
        }
    }
}
