//! The YAML shape operators write. Every field documents its default; unknown
//! keys are rejected. Validation and the runtime form live in `validate.rs`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn default_listen() -> String {
    "127.0.0.1:3307".into()
}
fn default_pool() -> usize {
    32
}
fn default_journal() -> String {
    "./var/journal".into()
}
fn default_shadow_sample() -> f64 {
    10.0
}

fn default_cutover_max_lag() -> String {
    "1s".into()
}

fn default_cutover_timeout() -> String {
    "5s".into()
}
fn default_rules() -> String {
    "./rules".into()
}

/// Top-level config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// MySQL-protocol listen address for applications. Default `127.0.0.1:3307`.
    /// Cannot change on reload.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// HTTP admin address (status, metrics, reload, cutover). Default: none
    /// (admin API off).
    #[serde(default)]
    pub admin: Option<String>,
    /// File holding the bearer token the admin API requires (its first
    /// line, trimmed). Default: none, then `TANDEM_ADMIN_TOKEN` from the
    /// environment if set. Required when `admin` is not a loopback address.
    #[serde(default)]
    pub admin_token_file: Option<String>,
    /// Which admin requests need the token: `posts` (default: every POST),
    /// `status` (also GET /status and /mirror/position), `all` (also
    /// GET /metrics).
    #[serde(default)]
    pub admin_token_scope: AdminTokenScope,
    /// TLS for application connections (reloaded with the config, so a
    /// certificate swap is a reload). Default: none (plain text only).
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// The authentication plugin the greeting announces:
    /// `mysql_native_password` (default, as MariaDB) or
    /// `caching_sha2_password` (as MySQL 8). Clients answering with either
    /// are served by it whatever was announced. Reloadable (new logins).
    #[serde(default)]
    pub auth_plugin: AuthPlugin,
    /// Users allowed to connect to the proxy. Default: none (nobody can log in).
    #[serde(default)]
    pub users: Vec<RawUser>,
    /// Named backends. Required.
    pub backends: BTreeMap<String, RawBackend>,
    /// Named clusters: sets of shard backends that serve as one database
    /// (`migration.primary` may name one). Default: none.
    #[serde(default)]
    pub clusters: BTreeMap<String, RawCluster>,
    /// Which backend is primary and which receives mirrored writes. Required.
    pub migration: RawMigration,
    /// Directory of `*.yaml` table rules. Default `./rules`; a missing
    /// directory means "no rules".
    #[serde(default = "default_rules")]
    pub rules: String,
    /// Limits; every key has a default.
    #[serde(default)]
    pub limits: RawLimits,
    /// Periodic verification inside the server. Default: off.
    #[serde(default)]
    pub verify: RawVerify,
}

/// `verify:` block: the server runs `tandem verify` (without repair) on a
/// schedule while it mirrors; the latest result is in `/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawVerify {
    /// Interval between runs (`10m`, `1h`). Default: none (no periodic verify).
    pub every: Option<String>,
    /// Tables to verify. Default: every table the rules mirror.
    pub tables: Option<Vec<String>>,
    /// Rows per chunk. Default 5000.
    pub chunk_size: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    /// Plain-text password (hashed at load; never logged).
    #[serde(default)]
    pub password: Option<String>,
    /// `*` + 40 hex digits: SHA1(SHA1(password)), as in mysql.user.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Refuse this user's plain-text logins (needs `tls`). Default false.
    #[serde(default)]
    pub require_tls: bool,
    /// This user's sessions at once (ERR 1203 past it, as MySQL's
    /// max_user_connections). Default: no limit of its own.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// The database account this user acts as on the backends (its GRANTs
    /// apply). Default: none, the backend URL's account (start-up warns).
    #[serde(default)]
    pub backend_user: Option<String>,
    /// That account's password: inline (local use), from a file (its first
    /// line), or from an environment variable. At most one.
    #[serde(default)]
    pub backend_password: Option<String>,
    #[serde(default)]
    pub backend_password_file: Option<String>,
    #[serde(default)]
    pub backend_password_env: Option<String>,
}

/// `tls:`: TLS for application connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain (the server's certificate first).
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// Refuse every plain-text login. Default false.
    #[serde(default)]
    pub require: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Mysql,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// `mysql` (MySQL/MariaDB) or `postgres`.
    pub kind: BackendKind,
    /// `mysql://user[:password]@host[:port][/database]` or `postgres://…`.
    pub url: String,
    /// Maximum server connections Tandem opens to this backend. Default 32.
    #[serde(default = "default_pool")]
    pub pool: usize,
}

fn default_buckets() -> u32 {
    4096
}

/// `clusters.<name>`: shards that serve as one database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// The database name clients use (login, `USE`, qualified names); each
    /// shard's URL names its own physical database. Required.
    pub database: String,
    /// The shards' backend names, in order (shard index = position).
    /// Required, at least one.
    pub shards: Vec<String>,
    /// Virtual buckets of hash sharding: hash(key) -> bucket -> shard.
    /// Default 4096, at most 1048576; cannot change once data is placed.
    #[serde(default = "default_buckets")]
    pub buckets: u32,
    /// Explicit bucket owners: shard backend name -> bucket ranges
    /// (`"0-1023"`, `"2048"`). Default: none, bucket b belongs to
    /// shards[b mod N]. When given, every bucket must be listed exactly once.
    #[serde(default)]
    pub assignment: Option<BTreeMap<String, Vec<String>>>,
    /// Most bytes one merged read may hold in memory (groups that must be
    /// sorted after combining, e.g. GROUP BY … ORDER BY COUNT(*)). A read
    /// that needs more fails with a clear error. Default `64MiB`.
    #[serde(default = "default_merge_buffer")]
    pub merge_buffer: String,
    /// A transaction (or one statement) that writes more than one shard:
    /// `xa` (default) commits it atomically with two-phase commit;
    /// `reject` refuses the write that would reach a second shard.
    #[serde(default)]
    pub cross_shard_transactions: CrossShard,
}

/// How a write that spans shards commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrossShard {
    /// XA two-phase commit, all or nothing across shards.
    #[default]
    Xa,
    /// Refused with ERROR 1235; the transaction stays open.
    Reject,
}

fn default_merge_buffer() -> String {
    "64MiB".into()
}

/// Where reads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reads {
    /// Reads run on the primary only.
    #[default]
    Primary,
    /// A sampled share of reads also runs on the secondary, in the
    /// background; result checksums are compared.
    Shadow,
}

/// Which admin requests need the bearer token (`admin_token_scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminTokenScope {
    #[default]
    Posts,
    Status,
    All,
}

/// The plugin Tandem's greeting names (`auth_plugin`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthPlugin {
    #[default]
    MysqlNativePassword,
    CachingSha2Password,
}

impl AuthPlugin {
    pub fn name(self) -> &'static str {
        match self {
            AuthPlugin::MysqlNativePassword => crate::protocol::auth::NATIVE_PLUGIN,
            AuthPlugin::CachingSha2Password => crate::protocol::auth::SHA2_PLUGIN,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsafeWrites {
    Reject,
    PrimaryOnly,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMigration {
    /// Backend that serves every statement. Required.
    pub primary: String,
    /// Backend that receives mirrored writes. Default: none (no mirroring).
    /// Naming the primary itself means "the previous primary" (after the
    /// one-line cutover edit `primary: <the secondary>`).
    #[serde(default)]
    pub secondary: Option<String>,
    /// Durable mirror journal directory. Default `./var/journal`.
    #[serde(default = "default_journal")]
    pub journal: String,
    /// What to do with writes that cannot be mirrored deterministically.
    /// `reject` (default) or `primary_only`.
    #[serde(default = "default_unsafe")]
    pub unsafe_writes: UnsafeWrites,
    /// Fence + drain must finish within this, else the cutover aborts. Default `5s`.
    #[serde(default = "default_cutover_timeout")]
    pub cutover_timeout: String,
    /// `primary` (default) or `shadow`: a sampled share of reads also runs
    /// on the secondary and the results are compared.
    #[serde(default)]
    pub reads: Reads,
    /// Share of reads shadowed under `reads: shadow`, in percent (0–100).
    /// Default `10`.
    #[serde(default = "default_shadow_sample")]
    pub shadow_sample_percent: f64,
    /// A cutover is refused while mirror lag is above this. Default `1s`.
    #[serde(default = "default_cutover_max_lag")]
    pub cutover_max_lag: String,
    /// Largest size of the journal on disk (`512MiB`, `2GiB`, or bytes).
    /// Default `1GiB`.
    #[serde(default = "default_journal_max")]
    pub journal_max_size: String,
    /// When the journal is full: `block` (default: new writes wait up to
    /// `journal_full_timeout`, then get an error and do not run) or
    /// `degrade` (writes run unmirrored; their tables are marked divergent).
    #[serde(default = "default_journal_full")]
    pub journal_full: JournalFull,
    /// How long a write waits for room under `block`. Default `5s`.
    #[serde(default = "default_journal_full_timeout")]
    pub journal_full_timeout: String,
    /// Free space the journal's file system must keep; below it the
    /// journal counts as full (`journal_full` applies), so a filling disk
    /// refuses writes before an fsync can fail. `0` does not check.
    /// Default `256MiB`.
    #[serde(default = "default_journal_min_free")]
    pub journal_min_free: String,
    /// Connections that apply mirrored writes on the secondary in parallel
    /// (transactions touching the same rows stay in order on one of them).
    /// `1` applies strictly one after another. Default `4`, at most 32.
    #[serde(default = "default_apply_workers")]
    pub apply_workers: usize,
    /// How long an apply connection waits for more transactions before it
    /// applies fewer than 16 as one secondary transaction (fewer, bigger
    /// secondary commits cost the secondary less CPU; the wait adds to the
    /// lag). `0s` applies at once. Default `10ms`, at most `1s`.
    #[serde(default = "default_apply_batch_wait")]
    pub apply_batch_wait: String,
    /// Group commit of the journal: how long its fsync may wait for the
    /// intents of other sessions that are in a mirrored transaction (it
    /// ends as soon as none is left). Fewer fsyncs cost less CPU; the wait
    /// adds to those commits' latency. `0s` never waits. Default `1ms`, at
    /// most `100ms`.
    #[serde(default = "default_journal_commit_wait")]
    pub journal_commit_wait: String,
    /// A mirrored transaction the secondary refuses for good (duplicate
    /// key, unknown column): `continue` (default: dead-lettered, its tables
    /// marked divergent, the applier goes on) or `halt` (the applier stops
    /// before it until `tandem resume`; nothing is skipped).
    #[serde(default = "default_apply_errors")]
    pub apply_errors: ApplyErrors,
    /// The database on each server where Tandem keeps its bookkeeping
    /// (commit markers, apply position, backfill checkpoints), apart from
    /// the application's schema; rows are keyed by the database they
    /// track, so roles sharing a server share it. Default `tandem`.
    #[serde(default = "default_bookkeeping_database")]
    pub bookkeeping_database: String,
}

fn default_bookkeeping_database() -> String {
    "tandem".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyErrors {
    Continue,
    Halt,
}

fn default_apply_errors() -> ApplyErrors {
    ApplyErrors::Continue
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalFull {
    Block,
    Degrade,
}

fn default_journal_max() -> String {
    "1GiB".into()
}
fn default_journal_full() -> JournalFull {
    JournalFull::Block
}
fn default_journal_full_timeout() -> String {
    "5s".into()
}
fn default_journal_min_free() -> String {
    "256MiB".into()
}

fn default_apply_workers() -> usize {
    4
}

fn default_apply_batch_wait() -> String {
    "10ms".into()
}

fn default_journal_commit_wait() -> String {
    "1ms".into()
}

fn default_unsafe() -> UnsafeWrites {
    UnsafeWrites::Reject
}

/// Resource limits. All optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Maximum concurrent client connections. Default 4096.
    pub max_client_connections: usize,
    /// Largest client packet accepted, in bytes. Default 64 MiB
    /// (MySQL 8's default). Larger packets close the connection.
    pub max_allowed_packet: usize,
    /// Timeout for opening a backend connection. Default `5s`.
    pub connect_timeout: String,
    /// How long a client waits for a free pooled connection before
    /// ERR 1040. Default `10s`.
    pub pool_wait_timeout: String,
    /// Idle pooled connections older than this are closed. Default `5m`.
    pub pool_idle_timeout: String,
    /// A client must finish its handshake within this. Default `10s`.
    pub handshake_timeout: String,
    /// Connections still in their handshake at once. Past it the oldest
    /// such connection is closed, so sockets that never log in cannot
    /// keep real clients out. Default 1024; at most max_client_connections.
    pub max_unauthenticated: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_client_connections: 4096,
            max_allowed_packet: 64 * 1024 * 1024,
            connect_timeout: "5s".into(),
            pool_wait_timeout: "10s".into(),
            pool_idle_timeout: "5m".into(),
            handshake_timeout: "10s".into(),
            max_unauthenticated: 1024,
        }
    }
}

/// One file under `rules/`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRulesFile {
    #[serde(default)]
    pub tables: BTreeMap<String, RawTableRule>,
}

/// Per-table rule. Tables not listed are mirrored with defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTableRule {
    /// Auto-increment column; default: discovered from the primary's schema.
    #[serde(default)]
    pub auto_increment: Option<String>,
    /// Mirror writes to this table. Default true.
    #[serde(default)]
    pub mirror: Option<bool>,
    /// On a cluster: the column whose value picks the shard.
    #[serde(default)]
    pub shard_key: Option<String>,
    /// On a cluster: `hash` (default), `range` or `list`.
    #[serde(default)]
    pub shard_by: Option<ShardBy>,
    /// `shard_by: range`: ordered upper bounds (`below`, exclusive), the
    /// last entry without `below` takes everything above.
    #[serde(default)]
    pub ranges: Option<Vec<RawRange>>,
    /// `shard_by: list`: explicit key values per shard.
    #[serde(default)]
    pub values: Option<Vec<RawListEntry>>,
    /// `shard_by: list`: the shard for values no entry lists. Default:
    /// none (such a value is refused).
    #[serde(default)]
    pub default_shard: Option<String>,
    /// On a cluster: a full copy on every shard (reads from one, writes
    /// to all). Default false.
    #[serde(default)]
    pub reference: Option<bool>,
    /// On a cluster: a write without the shard key runs on every shard
    /// (`allow`, default) or is refused (`reject`).
    #[serde(default)]
    pub scatter_writes: Option<ScatterWrites>,
    /// On a cluster: an UPDATE that changes a row's shard key moves the
    /// row to its new shard (`move`: delete + insert in one atomic
    /// cross-shard transaction) or is refused (`reject`, default).
    #[serde(default)]
    pub shard_key_updates: Option<ShardKeyUpdates>,
    /// Moving to PostgreSQL: how values PostgreSQL cannot hold as MySQL
    /// does are mapped for this table (default: such a value is refused).
    #[serde(default)]
    pub postgres: Option<PostgresRule>,
}

/// A table's explicit mappings into PostgreSQL (docs/postgres.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresRule {
    /// Text columns that may hold NUL characters: BYTEA on PostgreSQL,
    /// holding the bytes MySQL stores.
    #[serde(default)]
    pub bytea_columns: Vec<String>,
    /// Zero dates (`0000-00-00`) in DATE/DATETIME/TIMESTAMP columns:
    /// `refuse` (default) or `infinity` (stored as `-infinity`, which no
    /// real date is). Zero-part dates (`2024-00-10`) are always refused.
    #[serde(default)]
    pub zero_dates: ZeroDates,
    /// JSON columns as `jsonb` (keys reordered, duplicate keys dropped)
    /// instead of `json` (the text as written, as MariaDB keeps it).
    #[serde(default)]
    pub jsonb: bool,
}

/// What a zero date becomes on PostgreSQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroDates {
    #[default]
    Refuse,
    Infinity,
}

/// What an UPDATE of a row's shard key does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardKeyUpdates {
    #[default]
    Reject,
    Move,
}

/// How a table's rows are placed on shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardBy {
    #[default]
    Hash,
    Range,
    List,
}

/// Whether a keyless write may run on every shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScatterWrites {
    #[default]
    Allow,
    Reject,
}

/// One range of `shard_by: range`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRange {
    /// Exclusive upper bound; absent on the last range only.
    #[serde(default)]
    pub below: Option<ScalarText>,
    pub shard: String,
}

/// One entry of `shard_by: list`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListEntry {
    pub shard: String,
    #[serde(rename = "in")]
    pub values: Vec<ScalarText>,
}

/// A YAML scalar (number or string) kept as its text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ScalarText {
    Int(i64),
    Text(String),
}

impl ScalarText {
    pub fn text(&self) -> String {
        match self {
            ScalarText::Int(i) => i.to_string(),
            ScalarText::Text(t) => t.clone(),
        }
    }
}
