//! Counters owned by the server (not process-global, so tests can run
//! servers side by side), and their Prometheus text exposition.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
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

/// caching_sha2_password's paths: `fast`, `full_tls`, `full_rsa`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: &'static str,
}

/// How many shards a statement on a cluster ran on.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// `one` (its key named one shard), `any` (any shard could answer:
    /// reference tables, no table), `several`, `all`.
    pub route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    pub shard: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `committed` or `rolled_back`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 100 µs .. ~3.3 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// 1 ms .. ~32 s, doubling.
fn phase_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    /// Statement latency through Tandem (command received → answer sent), by class.
    pub latency: HistogramFamily<ClassLabel>,
    latency_by_class: [Histogram; 6],
    pub cutovers_ok: Counter,
    pub cutovers_failed: Counter,
    pub cutover_phases: HistogramFamily<PhaseLabel>,
    /// How long statements waited at a cutover's fence.
    pub fence_wait: Histogram,
    pub client_connections: Gauge,
    pub client_connections_total: Counter,
    pub auth_failures: Counter,
    /// Successful caching_sha2_password logins by path.
    pub sha2_logins: Family<PathLabel, Counter>,
    /// Admin requests refused for a missing or wrong token.
    pub admin_refused: Counter,
    /// Statements on a cluster by how many shards they ran on.
    pub shard_routes: Family<RouteLabel, Counter>,
    /// A shard's answer time (request sent → answer read), per shard.
    pub shard_latency: HistogramFamily<ShardLabel>,
    /// Rows of several shards' answers merged into one.
    pub merged_rows: Counter,
    /// Tables whose definition differs between a cluster's shards.
    pub schema_drift: Gauge,
    /// Transactions committed atomically across shards (two-phase).
    pub xa_commits: Counter,
    /// Cross-shard commits rolled back because a shard refused to prepare.
    pub xa_prepare_refused: Counter,
    /// Prepared branches left behind and settled by the resolver.
    pub xa_resolved: Family<OutcomeLabel, Counter>,
    /// XA END + PREPARE on every written branch.
    pub xa_prepare_seconds: Histogram,
    /// The decision (the anchor's COMMIT) through the last XA COMMIT.
    pub xa_commit_seconds: Histogram,
    /// Connections closed in their handshake to make room
    /// (`limits.max_unauthenticated`).
    pub handshakes_evicted: Counter,
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
        let latency: HistogramFamily<ClassLabel> = Family::new_with_constructor(latency_histogram);
        let latency_by_class =
            CLASSES.map(|class| latency.get_or_create(&ClassLabel { class }).clone());
        Self {
            latency,
            latency_by_class,
            cutovers_ok: Counter::default(),
            cutovers_failed: Counter::default(),
            cutover_phases: Family::new_with_constructor(phase_histogram),
            fence_wait: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            client_connections: Gauge::default(),
            client_connections_total: Counter::default(),
            auth_failures: Counter::default(),
            sha2_logins: Family::default(),
            admin_refused: Counter::default(),
            shard_routes: Family::default(),
            shard_latency: Family::new_with_constructor(latency_histogram),
            merged_rows: Counter::default(),
            schema_drift: Gauge::default(),
            xa_commits: Counter::default(),
            xa_prepare_refused: Counter::default(),
            xa_resolved: Family::default(),
            xa_prepare_seconds: latency_histogram(),
            xa_commit_seconds: latency_histogram(),
            handshakes_evicted: Counter::default(),
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
    pub mirror: Option<std::sync::Arc<crate::mirror::runtime::Mirror>>,
    pub shadow: std::sync::Arc<crate::shadow::ShadowStats>,
}

/// Index of a route class in `CLASSES`.
pub fn class_index(class: &crate::router::Class) -> usize {
    use crate::router::Class;
    match class {
        Class::Read { .. } => 0,
        Class::Write(_) => 1,
        Class::Ddl => 2,
        Class::Transaction(_) => 3,
        Class::Session(_) => 4,
        Class::Other => 5,
    }
}

impl Metrics {
    pub fn count_route(&self, class: &crate::router::Class) {
        self.by_class[class_index(class)].inc();
    }

    /// A statement of class `class_index` took `secs` through Tandem.
    pub fn observe_latency_index(&self, class_index: usize, secs: f64) {
        if let Some(h) = self.latency_by_class.get(class_index) {
            h.observe(secs);
        }
    }

    pub fn observe_cutover_phase(&self, phase: &str, secs: f64) {
        self.cutover_phases
            .get_or_create(&PhaseLabel {
                phase: phase.to_string(),
            })
            .observe(secs);
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
            "caching_sha2_logins",
            "Successful caching_sha2_password logins by path (fast, full_tls, full_rsa)",
            self.sha2_logins.clone(),
        );
        r.register(
            "shard_statements",
            "Statements on a cluster by how many shards they ran on (one, any, several, all)",
            self.shard_routes.clone(),
        );
        r.register(
            "shard_latency_seconds",
            "A shard's answer time, request sent to answer read, per shard",
            self.shard_latency.clone(),
        );
        r.register(
            "shard_merged_rows",
            "Rows of several shards' answers merged into one answer",
            self.merged_rows.clone(),
        );
        r.register(
            "shard_schema_drift_tables",
            "Tables whose definition differs between a cluster's shards (or is missing on some)",
            self.schema_drift.clone(),
        );
        r.register(
            "shard_xa_commits",
            "Transactions committed atomically across shards (XA two-phase commit)",
            self.xa_commits.clone(),
        );
        r.register(
            "shard_xa_prepare_refused",
            "Cross-shard commits rolled back because a shard refused to prepare",
            self.xa_prepare_refused.clone(),
        );
        r.register(
            "shard_xa_in_doubt_resolved",
            "Prepared XA branches left behind (a lost session, a crash) and settled, by outcome",
            self.xa_resolved.clone(),
        );
        r.register(
            "shard_xa_prepare_seconds",
            "XA END and PREPARE on every written branch of a cross-shard commit",
            self.xa_prepare_seconds.clone(),
        );
        r.register(
            "shard_xa_commit_seconds",
            "A cross-shard commit's decision (the anchor's COMMIT) through its last XA COMMIT",
            self.xa_commit_seconds.clone(),
        );
        r.register(
            "handshakes_evicted",
            "Connections closed in their handshake to make room for new ones",
            self.handshakes_evicted.clone(),
        );
        r.register(
            "admin_refused",
            "Admin API requests refused for a missing or wrong token",
            self.admin_refused.clone(),
        );
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
            "statement_duration_seconds",
            "Statement latency through Tandem (command received to last answer byte sent), by class",
            self.latency.clone(),
        );
        r.register("cutovers", "Cutovers completed", self.cutovers_ok.clone());
        r.register(
            "cutovers_failed",
            "Cutovers refused or aborted (nothing changed)",
            self.cutovers_failed.clone(),
        );
        r.register(
            "cutover_phase_seconds",
            "Duration of each cutover phase (preflight, wait_transactions, drain, swap)",
            self.cutover_phases.clone(),
        );
        r.register(
            "cutover_fence_wait_seconds",
            "How long statements waited at a cutover's fence",
            self.fence_wait.clone(),
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
        if let Some(m) = &extras.mirror {
            register_mirror(&mut r, m);
        }
        register_shadow(&mut r, &extras.shadow);
        r.register("build_info", "Tandem version", ConstGauge::new(1i64));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

fn register_mirror(r: &mut Registry, m: &crate::mirror::runtime::Mirror) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let get = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let c = &m.stats;
    let a = &m.applier;
    let counters: [(&str, &str, u64); 18] = [
        (
            "mirror_journal_fsyncs",
            "fsyncs of the mirror journal (group commit: journaled transactions per fsync)",
            m.journal.fsyncs(),
        ),
        (
            "mirror_transactions",
            "Transactions journaled as committed on the primary",
            get(&c.committed),
        ),
        (
            "mirror_statements",
            "Statements in journaled transactions",
            get(&c.statements),
        ),
        (
            "mirror_aborted",
            "Journaled intents whose COMMIT failed on the primary",
            get(&c.aborted),
        ),
        (
            "mirror_in_doubt",
            "Commits whose answer was lost, settled from the marker",
            get(&c.in_doubt),
        ),
        (
            "mirror_applied",
            "Transactions applied on the secondary",
            get(&a.applied),
        ),
        (
            "mirror_apply_groups",
            "Secondary transactions the applied transactions were grouped into",
            get(&a.groups),
        ),
        (
            "mirror_retried",
            "Apply attempts retried after a transient secondary error",
            get(&a.retried),
        ),
        (
            "mirror_plain_fallbacks",
            "Apply groups sent as plain statements after the secondary refused their compound form",
            get(&a.plain_fallbacks),
        ),
        (
            "mirror_dead_lettered",
            "Transactions the secondary refused (dead-letter file)",
            get(&a.dead_lettered),
        ),
        (
            "mirror_dropped",
            "Committed writes neither mirrored nor reported (must stay 0)",
            get(&c.dropped),
        ),
        (
            "mirror_unsafe_rejected",
            "Unsafe writes refused",
            get(&c.unsafe_rejected),
        ),
        (
            "mirror_unsafe_primary_only",
            "Unsafe writes run on the primary only",
            get(&c.unsafe_primary_only),
        ),
        (
            "mirror_journal_errors",
            "Journal write failures",
            get(&c.journal_errors),
        ),
        (
            "mirror_skipped",
            "Intents skipped because the primary commit failed",
            get(&a.skipped),
        ),
        (
            "mirror_journal_full_waits",
            "Writes that waited for room in a full journal (journal_full: block)",
            get(&c.journal_full_waits),
        ),
        (
            "mirror_journal_full_refused",
            "Writes refused because the journal stayed full (nothing ran)",
            get(&c.journal_full_refused),
        ),
        (
            "mirror_journal_full_degraded",
            "Writes run unmirrored because the journal was full (tables marked divergent)",
            get(&c.journal_full_degraded),
        ),
    ];
    for (name, help, v) in counters {
        r.register(name, help, ConstCounter::new(v));
    }
    r.register(
        "mirror_apply_parallel_peak",
        "Most secondary connections applying mirrored writes at the same moment",
        ConstGauge::new(get(&a.parallel_peak) as i64),
    );
    r.register(
        "mirror_applied_lsn",
        "Highest journal LSN applied or skipped",
        ConstGauge::new(get(&a.applied_lsn) as i64),
    );
    let (lag_txns, lag_secs) = m.lag();
    r.register(
        "mirror_lag_transactions",
        "Journal records not yet applied on the secondary",
        ConstGauge::new(lag_txns as i64),
    );
    r.register(
        "mirror_lag_seconds",
        "Seconds since the primary commit of the last applied transaction, while behind",
        ConstGauge::new(lag_secs),
    );
    r.register(
        "mirror_journal_bytes",
        "Bytes held by the mirror journal",
        ConstGauge::new(m.journal.size_bytes() as i64),
    );
    r.register(
        "mirror_applier_stopped",
        "1 while the applier is stopped (halted on a refused transaction, or an error; see /status); writes are still journaled",
        ConstGauge::new(i64::from(
            a.stopped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some(),
        )),
    );
    r.register(
        "mirror_divergent_tables",
        "Tables marked divergent (need backfill/verify)",
        ConstGauge::new(m.divergent().len() as i64),
    );
    let lag = Family::<BucketLabel, Gauge>::default();
    for (le, count) in a.lag.cumulative() {
        let le = if le == u64::MAX {
            "+Inf".to_string()
        } else {
            format!("{}", le as f64 / 1000.0)
        };
        lag.get_or_create(&BucketLabel { le }).set(count as i64);
    }
    r.register(
        "mirror_apply_lag_seconds_bucket",
        "Applied transactions by primary-commit-to-secondary-commit lag (cumulative, le = seconds)",
        lag,
    );
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

fn register_shadow(r: &mut Registry, s: &crate::shadow::ShadowStats) {
    use std::sync::atomic::Ordering;
    for (name, help, v) in [
        (
            "shadow_reads",
            "Shadow reads compared with the primary's answer",
            &s.compared,
        ),
        (
            "shadow_skipped",
            "Sampled reads not compared (tables written meanwhile, no free slot)",
            &s.skipped,
        ),
        (
            "shadow_errors",
            "Shadow reads the secondary failed",
            &s.errors,
        ),
    ] {
        r.register(name, help, ConstCounter::new(v.load(Ordering::Relaxed)));
    }
    let by = Family::<TableLabel, Counter>::default();
    for (table, n) in s.by_table.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        by.get_or_create(&TableLabel {
            table: table.clone(),
        })
        .inc_by(*n);
    }
    r.register(
        "shadow_mismatches",
        "Shadow reads whose secondary answer differed, by table",
        by,
    );
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabel {
    le: String,
}
