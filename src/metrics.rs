//! Counters owned by the server (not process-global, so tests can run
//! servers side by side), and their Prometheus text exposition.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// Route class label: read, write, ddl, transaction, session, other.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: String,
}

#[derive(Debug)]
pub struct Metrics {
    pub client_connections: Gauge,
    pub client_connections_total: Counter,
    pub auth_failures: Counter,
    pub protocol_errors: Counter,
    pub backend_errors: Counter,
    pub rejected_connections: Counter,
    pub reloads_ok: Counter,
    pub reloads_failed: Counter,
    pub statements: Family<ClassLabel, Counter>,
    /// The family's counters, created once so counting a statement is one
    /// atomic increment (no map lookup on the hot path).
    by_class: [Counter; 6],
}

const CLASSES: [&str; 6] = ["read", "write", "ddl", "transaction", "session", "other"];

impl Default for Metrics {
    fn default() -> Self {
        let statements = Family::<ClassLabel, Counter>::default();
        let by_class = CLASSES.map(|class| statements.get_or_create(&ClassLabel { class }).clone());
        Self {
            client_connections: Gauge::default(),
            client_connections_total: Counter::default(),
            auth_failures: Counter::default(),
            protocol_errors: Counter::default(),
            backend_errors: Counter::default(),
            rejected_connections: Counter::default(),
            reloads_ok: Counter::default(),
            reloads_failed: Counter::default(),
            statements,
            by_class,
        }
    }
}

/// Values read from elsewhere at scrape time.
pub struct ScrapeExtras {
    pub router_cache_hits: u64,
    pub router_cache_misses: u64,
    pub unparsed: u64,
    pub backend_connections: Vec<(String, i64)>,
}

impl Metrics {
    pub fn count_route(&self, class: &crate::router::Class) {
        use crate::router::Class;
        let i = match class {
            Class::Read { .. } => 0,
            Class::Write(_) => 1,
            Class::Ddl => 2,
            Class::Transaction(_) => 3,
            Class::Session(_) => 4,
            Class::Other => 5,
        };
        self.by_class[i].inc();
    }

    /// Prometheus text format (OpenMetrics-compatible).
    pub fn encode(&self, extras: ScrapeExtras) -> String {
        let mut r = Registry::with_prefix("tandem");
        r.register(
            "client_connections",
            "Client connections open now",
            self.client_connections.clone(),
        );
        r.register(
            "client_connections_accepted",
            "Client connections accepted",
            self.client_connections_total.clone(),
        );
        r.register(
            "client_connections_rejected",
            "Client connections refused at the connection limit",
            self.rejected_connections.clone(),
        );
        r.register("auth_failures", "Failed logins", self.auth_failures.clone());
        r.register(
            "protocol_errors",
            "Client connections closed for malformed input",
            self.protocol_errors.clone(),
        );
        r.register(
            "backend_errors",
            "Sessions ended because their backend connection failed",
            self.backend_errors.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads applied",
            self.reloads_ok.clone(),
        );
        r.register(
            "config_reloads_failed",
            "Config reloads rejected (the running config stayed)",
            self.reloads_failed.clone(),
        );
        r.register(
            "statements",
            "Statements routed, by class",
            self.statements.clone(),
        );
        r.register(
            "statements_unparsed",
            "Statements sqlparser could not parse (classified by keywords)",
            ConstCounter::new(extras.unparsed),
        );
        r.register(
            "route_cache_hits",
            "Statements classified from the digest cache",
            ConstCounter::new(extras.router_cache_hits),
        );
        r.register(
            "route_cache_misses",
            "Statements classified by a full parse",
            ConstCounter::new(extras.router_cache_misses),
        );
        let pools = Family::<BackendLabel, Gauge>::default();
        for (backend, open) in extras.backend_connections {
            pools.get_or_create(&BackendLabel { backend }).set(open);
        }
        r.register(
            "backend_connections",
            "Server connections open (leased or idle), by backend",
            pools,
        );
        r.register("build_info", "Tandem version", ConstGauge::new(1i64));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}
