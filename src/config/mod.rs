//! Configuration: the YAML model (`model`), and `load`, which turns a file and
//! its rules directory into a fully validated `Config` or the complete list of
//! what is wrong with it. Nothing is published until everything validated.
//!
//! Relative paths (`rules`, `migration.journal`) are resolved against the
//! process's working directory.

pub mod model;
pub mod roles;

use crate::protocol::auth::StoredPassword;
pub use model::{
    AdminTokenScope, ApplyErrors, AuthPlugin, BackendKind, CrossShard, JournalFull, Reads,
    ShardKeyUpdates, UnsafeWrites,
};
use model::{RawConfig, RawRulesFile};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most apply connections (`migration.apply_workers`).
pub const MAX_APPLY_WORKERS: usize = 32;

/// A validated, ready-to-use configuration snapshot.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// The admin API's bearer token (`admin_token_file` or
    /// `TANDEM_ADMIN_TOKEN`), and which requests need it.
    pub admin_token: Option<Secret>,
    pub admin_token_scope: AdminTokenScope,
    /// TLS for application connections (`tls:`).
    pub tls: Option<ClientTls>,
    /// The plugin the greeting announces (`auth_plugin`).
    pub auth_plugin: AuthPlugin,
    pub users: HashMap<String, StoredPassword>,
    /// Users whose plain-text logins are refused (`require_tls: true`).
    pub users_require_tls: std::collections::HashSet<String>,
    /// Proxy user → its own cap on sessions (`max_connections`).
    pub user_limits: HashMap<String, usize>,
    /// Proxy user → the database account it acts as (`backend_user`).
    /// Users without one act as the backend URL's account.
    pub accounts: HashMap<String, Account>,
    pub backends: BTreeMap<String, BackendConfig>,
    /// Clusters (`clusters:`); `primary` may name one.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// The backend or cluster that serves every statement.
    pub primary: String,
    pub secondary: Option<String>,
    pub journal: PathBuf,
    pub unsafe_writes: UnsafeWrites,
    pub cutover_timeout: Duration,
    pub cutover_max_lag: Duration,
    pub reads: Reads,
    /// Percent of reads shadowed under `reads: shadow`.
    pub shadow_sample_percent: f64,
    /// Set when `migration.secondary` named the primary itself and no
    /// cutover record says which backend was primary before: a reload
    /// resolves it to the running primary (the one-line cutover edit); a
    /// start cannot, and says so.
    pub unresolved_secondary: Option<String>,
    pub journal_limit: JournalLimit,
    /// Secondary connections applying mirrored writes (`migration.apply_workers`).
    pub apply_workers: usize,
    /// `migration.apply_batch_wait`: how long an apply connection waits to
    /// fill a bigger group.
    pub apply_batch_wait: Duration,
    /// `migration.journal_commit_wait`: how long the journal's fsync may
    /// wait for other sessions' intents.
    pub journal_commit_wait: Duration,
    /// `migration.apply_errors`: what the applier does with a transaction
    /// the secondary refuses (changes apply to the running applier).
    pub apply_errors: ApplyErrors,
    pub rules_dir: PathBuf,
    pub rules: Rules,
    pub limits: Limits,
    pub verify: VerifySchedule,
    /// The file this config was loaded from (None when parsed from text);
    /// reloads read it again.
    pub source: Option<PathBuf>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub name: String,
    pub kind: BackendKind,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: Option<String>,
    pub pool: usize,
    /// The database on this backend's server where Tandem keeps its
    /// bookkeeping (`migration.bookkeeping_database`; see
    /// `mirror::bookkeeping`).
    pub bookkeeping: String,
    /// TLS to this backend (`ssl-mode` and friends in the URL); None: plain.
    pub tls: Option<BackendTls>,
    /// PostgreSQL: the schema tables go in (`?schema=` in the URL; `public`
    /// when not given). None for MySQL.
    pub schema: Option<String>,
}

/// Everything but the password, which prints as `***`: configs are
/// logged and shown in errors.
impl std::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("database", &self.database)
            .field("pool", &self.pool)
            .field("bookkeeping", &self.bookkeeping)
            .field("tls", &self.tls)
            .finish()
    }
}

/// What happens when the mirror journal reaches its size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimit {
    pub max_bytes: u64,
    pub when_full: JournalFull,
    pub timeout: Duration,
    /// Free space the journal's file system keeps (`journal_min_free`):
    /// below it the journal counts as full. 0: not checked.
    pub min_free: u64,
}

/// Periodic verify (`verify:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifySchedule {
    pub every: Option<Duration>,
    pub tables: Option<Vec<String>>,
    pub chunk_size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_client_connections: usize,
    pub max_unauthenticated: usize,
    pub max_allowed_packet: usize,
    pub connect_timeout: Duration,
    pub pool_wait_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub handshake_timeout: Duration,
}

/// Table rules merged from every file in the rules directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub tables: BTreeMap<String, TableRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRule {
    pub auto_increment: Option<String>,
    pub mirror: bool,
    /// The rule as written (its sharding keys are validated against the
    /// cluster in `cluster::validate`).
    pub raw: model::RawTableRule,
}

impl Rules {
    /// Whether writes to `table` are mirrored (tables without a rule are).
    pub fn mirrored(&self, table: &str) -> bool {
        self.tables.get(table).is_none_or(|r| r.mirror)
    }
}

impl Config {
    /// The primary backend; on a cluster, its first shard (which greets
    /// clients and holds Tandem's bookkeeping for the cluster).
    pub fn primary_backend(&self) -> &BackendConfig {
        // `load` guarantees the primary names a backend or a cluster of them.
        match self.clusters.get(&self.primary) {
            Some(c) => &self.backends[&c.shards[0]],
            None => &self.backends[&self.primary],
        }
    }

    /// The cluster that serves as the primary, if it is one.
    pub fn cluster(&self) -> Option<&ClusterConfig> {
        self.clusters.get(&self.primary)
    }

    /// The secondary, when it is a PostgreSQL backend.
    pub fn postgres_secondary(&self) -> Option<&BackendConfig> {
        self.secondary
            .as_ref()
            .and_then(|s| self.backends.get(s))
            .filter(|b| b.kind == BackendKind::Postgres)
    }

    /// Why `tandem serve` (and a reload) refuses this config although the
    /// offline tools take it: mirroring would journal writes it can never
    /// apply.
    pub fn serve_refusal(&self) -> Option<String> {
        self.postgres_secondary().map(|b| {
            format!(
                "migration.secondary: backend {:?} is PostgreSQL; Tandem cannot mirror writes into \
                 PostgreSQL yet, so it does not serve with this secondary. What works today: \
                 `tandem schema --to postgres` (the DDL), `tandem backfill --create-tables` and \
                 `tandem verify [--repair]` against it. To serve meanwhile, remove the secondary \
                 or mirror into a MySQL backend",
                b.name
            )
        })
    }
}

/// Every problem found in a config, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// Reads, parses and validates `path` and its rules directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
    let mut cfg = parse(&text)?;
    cfg.source = Some(path.to_path_buf());
    Ok(cfg)
}

/// `load` for a process that starts with this config (the server, the
/// tools): the roles must be known and agree with the last cutover.
pub fn load_for_start(path: &Path) -> Result<Config, ConfigErrors> {
    let cfg = load(path)?;
    if let Some(e) = &cfg.unresolved_secondary {
        return Err(ConfigErrors(vec![e.clone()]));
    }
    if let (Some(r), Some(s)) = (roles::RolesRecord::read(&cfg.journal), &cfg.secondary) {
        let same_pair = (r.primary == *s && r.secondary == cfg.primary)
            || (r.primary == cfg.primary && r.secondary == *s);
        if same_pair && r.primary != cfg.primary {
            return Err(ConfigErrors(vec![format!(
                "migration.primary: the last cutover (recorded in {}) made {:?} the primary, but the \
                 config says {:?}; its journal and commit markers belong to {:?}. Set \
                 migration.primary to {:?} (then cut over, if that is what you want)",
                cfg.journal.join(roles::ROLES_FILE).display(),
                r.primary,
                cfg.primary,
                r.primary,
                r.primary
            )]));
        }
    }
    Ok(cfg)
}

/// Parses and validates config text (rules are read from disk).
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let raw: RawConfig =
        serde_saphyr::from_str(text).map_err(|e| ConfigErrors(vec![format!("config: {e}")]))?;
    validate(raw)
}

/// `parse` for the fuzz target (`fuzzing::config_text`): the files the
/// text names (rules directory, token, password, certificate and key
/// files) are left out before validation, so nothing is read from disk.
#[doc(hidden)]
pub fn parse_without_files(text: &str) -> Result<Config, ConfigErrors> {
    let mut raw: RawConfig =
        serde_saphyr::from_str(text).map_err(|e| ConfigErrors(vec![format!("config: {e}")]))?;
    let _ = serde_saphyr::from_str::<RawRulesFile>(text);
    raw.admin_token_file = None;
    raw.tls = None;
    // A path no file system holds (read_dir refuses a NUL byte).
    raw.rules = "\0".into();
    raw.migration.journal = "\0".into();
    for u in &mut raw.users {
        u.backend_password_file = None;
    }
    validate(raw)
}

/// Longest `migration.apply_batch_wait` (it adds to the mirror's lag).
const MAX_APPLY_BATCH_WAIT: Duration = Duration::from_secs(1);
/// Longest `migration.journal_commit_wait` (it adds to commit latency).
const MAX_JOURNAL_COMMIT_WAIT: Duration = Duration::from_millis(100);

/// [`duration`], and an error when it is longer than `max`.
fn duration_at_most(errors: &mut Vec<String>, key: &str, value: &str, max: Duration) -> Duration {
    let d = duration(errors, key, value);
    if d > max {
        errors.push(format!(
            "{key}: {value} is more than {}",
            humantime::format_duration(max)
        ));
    }
    d
}

fn duration(errors: &mut Vec<String>, key: &str, value: &str) -> Duration {
    match humantime::parse_duration(value) {
        Ok(d) => d,
        Err(e) => {
            errors.push(format!("{key}: invalid duration {value:?}: {e}"));
            Duration::ZERO
        }
    }
}

fn socket_addr(errors: &mut Vec<String>, key: &str, value: &str) -> Option<SocketAddr> {
    match value.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(format!(
                "{key}: {value:?} is not an IP:port address (e.g. 127.0.0.1:3307)"
            ));
            None
        }
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let listen = socket_addr(&mut errors, "listen", &raw.listen);
    let admin = raw
        .admin
        .as_deref()
        .and_then(|a| socket_addr(&mut errors, "admin", a));
    let admin_token = access::admin_token(&raw, admin, &mut errors);

    let access::Access {
        tls,
        users,
        users_require_tls,
        accounts,
        user_limits,
    } = access::validate(&raw, &mut errors);

    let mut backends = BTreeMap::new();
    if raw.backends.is_empty() {
        errors.push("backends: at least one backend is required".into());
    }
    let book = raw.migration.bookkeeping_database.trim();
    if book.is_empty()
        || book.len() > 64
        || !book
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
    {
        errors.push(format!(
            "migration.bookkeeping_database: {book:?} is not a database name (letters, digits, _ and $, at most 64)"
        ));
    }
    for (name, b) in &raw.backends {
        match parse_backend(name, b, book) {
            Ok(cfg) if cfg.database.as_deref() == Some(book) => errors.push(format!(
                "migration.bookkeeping_database: {book:?} is backend {name}'s own database; Tandem's bookkeeping must stay out of the application's schema (name another database)"
            )),
            Ok(cfg) => {
                backends.insert(name.clone(), cfg);
            }
            Err(errs) => errors.extend(errs),
        }
    }

    let m = &raw.migration;
    let is_cluster = |n: &str| raw.clusters.contains_key(n);
    match raw.backends.get(&m.primary) {
        None if is_cluster(&m.primary) => {
            if m.secondary.is_some() {
                errors.push(format!(
                    "migration.secondary: mirroring from cluster {:?} is not built yet; a cluster \
                     serves as the primary without a secondary for now",
                    m.primary
                ));
            }
        }
        None => errors.push(format!(
            "migration.primary: unknown backend or cluster {:?} (known: {})",
            m.primary,
            known(&raw.backends)
        )),
        Some(b) if b.kind == BackendKind::Postgres => errors.push(format!(
            "migration.primary: backend {:?} is PostgreSQL; a PostgreSQL primary is not supported yet",
            m.primary
        )),
        Some(_) => {}
    }
    if let Some(s) = &m.secondary {
        if is_cluster(s) {
            errors.push(format!(
                "migration.secondary: mirroring into cluster {s:?} (moving a live database onto \
                 shards) is not built yet; today a cluster can be migration.primary without a \
                 secondary"
            ));
        } else if !raw.backends.contains_key(s) {
            errors.push(format!(
                "migration.secondary: unknown backend {s:?} (known: {})",
                known(&raw.backends)
            ));
        }
    }
    // `secondary` naming the primary: the backend that was primary before
    // the last cutover (recorded beside the journal), or, on reload, the
    // running primary.
    let mut secondary = m.secondary.clone();
    let mut unresolved_secondary = None;
    if secondary.as_deref() == Some(m.primary.as_str()) {
        let record = roles::RolesRecord::read(std::path::Path::new(&m.journal));
        match record {
            Some(r) if r.primary == m.primary && raw.backends.contains_key(&r.secondary) => {
                secondary = Some(r.secondary)
            }
            _ => {
                secondary = None;
                unresolved_secondary = Some(format!(
                    "migration.secondary: names the primary ({:?}); that means \"the previous primary\", \
                     but no cutover to {:?} is recorded in {}: name the backend that receives mirrored writes",
                    m.primary,
                    m.primary,
                    std::path::Path::new(&m.journal).join(roles::ROLES_FILE).display()
                ));
            }
        }
    }
    let cutover_timeout = duration(&mut errors, "migration.cutover_timeout", &m.cutover_timeout);
    let cutover_max_lag = duration(&mut errors, "migration.cutover_max_lag", &m.cutover_max_lag);
    if !(0.0..=100.0).contains(&m.shadow_sample_percent) {
        errors.push(format!(
            "migration.shadow_sample_percent: {} is not between 0 and 100",
            m.shadow_sample_percent
        ));
    }
    if !(1..=MAX_APPLY_WORKERS).contains(&m.apply_workers) {
        errors.push(format!(
            "migration.apply_workers: {} is not between 1 and {}",
            m.apply_workers, MAX_APPLY_WORKERS
        ));
    }
    let apply_batch_wait = duration_at_most(
        &mut errors,
        "migration.apply_batch_wait",
        &m.apply_batch_wait,
        MAX_APPLY_BATCH_WAIT,
    );
    let journal_commit_wait = duration_at_most(
        &mut errors,
        "migration.journal_commit_wait",
        &m.journal_commit_wait,
        MAX_JOURNAL_COMMIT_WAIT,
    );
    if m.reads == Reads::Shadow && m.secondary.is_none() {
        errors.push("migration.reads: shadow needs migration.secondary".into());
    }
    let journal_limit = JournalLimit {
        max_bytes: match parse_size(&m.journal_max_size) {
            Some(n) if n >= 1 << 20 => n,
            Some(_) => {
                errors.push("migration.journal_max_size: must be at least 1MiB".into());
                0
            }
            None => {
                errors.push(format!(
                    "migration.journal_max_size: {:?} is not a size (e.g. 512MiB, 2GiB, 1000000)",
                    m.journal_max_size
                ));
                0
            }
        },
        when_full: m.journal_full,
        min_free: match parse_size(&m.journal_min_free) {
            Some(n) => n,
            None => {
                errors.push(format!(
                    "migration.journal_min_free: {:?} is not a size (e.g. 256MiB, 0 to not check)",
                    m.journal_min_free
                ));
                0
            }
        },
        timeout: duration(
            &mut errors,
            "migration.journal_full_timeout",
            &m.journal_full_timeout,
        ),
    };

    let l = &raw.limits;
    if l.max_client_connections == 0 {
        errors.push("limits.max_client_connections: must be at least 1".into());
    }
    if l.max_allowed_packet < 1024 || l.max_allowed_packet > 1 << 30 {
        errors.push("limits.max_allowed_packet: must be between 1024 and 1073741824".into());
    }
    if l.max_unauthenticated == 0 || l.max_unauthenticated > l.max_client_connections {
        errors.push(
            "limits.max_unauthenticated: must be between 1 and limits.max_client_connections"
                .into(),
        );
    }
    let limits = Limits {
        max_client_connections: l.max_client_connections,
        max_unauthenticated: l.max_unauthenticated,
        max_allowed_packet: l.max_allowed_packet,
        connect_timeout: duration(&mut errors, "limits.connect_timeout", &l.connect_timeout),
        pool_wait_timeout: duration(
            &mut errors,
            "limits.pool_wait_timeout",
            &l.pool_wait_timeout,
        ),
        pool_idle_timeout: duration(
            &mut errors,
            "limits.pool_idle_timeout",
            &l.pool_idle_timeout,
        ),
        handshake_timeout: duration(
            &mut errors,
            "limits.handshake_timeout",
            &l.handshake_timeout,
        ),
    };

    let v = &raw.verify;
    let verify = VerifySchedule {
        every: v
            .every
            .as_deref()
            .map(|e| duration(&mut errors, "verify.every", e)),
        tables: v.tables.clone(),
        chunk_size: v.chunk_size.unwrap_or(5000),
    };
    if verify
        .every
        .is_some_and(|d| !d.is_zero() && d < Duration::from_secs(1))
    {
        errors.push("verify.every: must be at least 1s".into());
    }
    if verify.chunk_size == 0 {
        errors.push("verify.chunk_size: must be at least 1".into());
    }

    let rules_dir = PathBuf::from(&raw.rules);
    let rules = match load_rules(&rules_dir) {
        Ok(r) => r,
        Err(errs) => {
            errors.extend(errs);
            Rules::default()
        }
    };

    let clusters = cluster::validate(&raw.clusters, &backends, &rules, &mut errors);

    match (errors.is_empty(), listen) {
        (true, Some(listen)) => Ok(Config {
            listen,
            admin,
            admin_token,
            admin_token_scope: raw.admin_token_scope,
            auth_plugin: raw.auth_plugin,
            tls,
            users_require_tls,
            accounts,
            user_limits,
            users,
            backends,
            clusters,
            primary: m.primary.clone(),
            secondary,
            journal: PathBuf::from(&m.journal),
            unsafe_writes: m.unsafe_writes,
            cutover_timeout,
            cutover_max_lag,
            reads: m.reads,
            shadow_sample_percent: m.shadow_sample_percent,
            unresolved_secondary,
            journal_limit,
            apply_workers: m.apply_workers,
            apply_batch_wait,
            journal_commit_wait,
            apply_errors: m.apply_errors,
            rules_dir,
            rules,
            limits,
            verify,
            source: None,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

/// `1GiB`, `512MiB`, `64KiB`, `2GB`, `1000000` (bytes).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn known(backends: &BTreeMap<String, model::RawBackend>) -> String {
    backends.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn parse_backend(
    name: &str,
    b: &model::RawBackend,
    bookkeeping: &str,
) -> Result<BackendConfig, Vec<String>> {
    let key = format!("backends.{name}");
    let mut errors = Vec::new();
    if b.pool == 0 {
        errors.push(format!("{key}.pool: must be at least 1"));
    }
    let url = match url::Url::parse(&b.url) {
        Ok(u) => u,
        Err(e) => {
            errors.push(format!("{key}.url: {e}"));
            return Err(errors);
        }
    };
    let (scheme_ok, default_port) = match b.kind {
        BackendKind::Mysql => (url.scheme() == "mysql", 3306),
        BackendKind::Postgres => (matches!(url.scheme(), "postgres" | "postgresql"), 5432),
    };
    if !scheme_ok {
        errors.push(format!(
            "{key}.url: scheme {:?} does not match kind {:?}",
            url.scheme(),
            b.kind
        ));
    }
    let host = url.host_str().unwrap_or_default().to_string();
    if host.is_empty() {
        errors.push(format!("{key}.url: host is missing"));
    }
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let user = decode(url.username());
    if user.is_empty() {
        errors.push(format!("{key}.url: user is missing (mysql://user@host/db)"));
    }
    let database = url
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .filter(|d| !d.is_empty())
        .map(decode);
    let mut schema = None;
    let mut query = Vec::new();
    for (k, v) in url.query_pairs() {
        if k == "schema" && b.kind == BackendKind::Postgres {
            schema = Some(v.into_owned());
        } else {
            query.push((k.into_owned(), v.into_owned()));
        }
    }
    if b.kind == BackendKind::Postgres {
        if schema.as_deref() == Some("") {
            errors.push(format!("{key}.url: schema= is empty"));
        }
        schema = schema.or_else(|| Some("public".into()));
    }
    let tls = match backend_tls::from_query(query.into_iter()) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("{key}.url: {e}"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(BackendConfig {
        name: name.to_string(),
        kind: b.kind,
        port: url.port().unwrap_or(default_port),
        host,
        password: url.password().map(decode).unwrap_or_default(),
        user,
        database,
        pool: b.pool,
        bookkeeping: bookkeeping.to_string(),
        tls,
        schema,
    })
}

mod access;
pub mod backend_tls;
pub mod cluster;
mod diff;
mod rules;
#[cfg(test)]
mod tests;

pub use access::{Account, ClientTls, Secret};
pub use backend_tls::BackendTls;
pub use cluster::{ClusterConfig, Placement, TablePlacement};
pub use diff::{diff, Changes};
pub use rules::{load_rules, rule_files};
