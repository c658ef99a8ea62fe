//! Process-wide counters, owned by the server (not global, so tests can run
//! servers side by side). Prometheus exposition arrives with the admin API.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub client_connections: AtomicU64,
    pub client_connections_total: AtomicU64,
    pub auth_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub backend_errors: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub queries_read: AtomicU64,
    pub queries_write: AtomicU64,
    pub queries_ddl: AtomicU64,
    pub queries_transaction: AtomicU64,
    pub queries_session: AtomicU64,
    pub queries_other: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
    pub fn count_route(&self, class: &crate::router::Class) {
        use crate::router::Class;
        Self::inc(match class {
            Class::Read { .. } => &self.queries_read,
            Class::Write(_) => &self.queries_write,
            Class::Ddl => &self.queries_ddl,
            Class::Transaction(_) => &self.queries_transaction,
            Class::Session(_) => &self.queries_session,
            Class::Other => &self.queries_other,
        });
    }
}
