//! The client-facing side: the listener (this file), the handshake and
//! authentication (`handshake`), the per-connection command loop
//! (`session`), and the registry of live sessions (`registry`).

mod handshake;
pub mod registry;
mod session;

use crate::backend::Pool;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::router::Router;
use arc_swap::ArcSwap;
use registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// State shared by every session of one server.
pub struct Shared {
    pub config: ArcSwap<Config>,
    pub pools: ArcSwap<HashMap<String, Arc<Pool>>>,
    pub router: Router,
    pub registry: Registry,
    pub metrics: Metrics,
    conn_slots: Arc<Semaphore>,
    pub shutdown: CancellationToken,
    pub started: std::time::Instant,
    /// When the running config was loaded (seconds since the Unix epoch).
    pub loaded_at_unix: std::sync::atomic::AtomicU64,
    /// Bumped by every applied reload.
    pub config_version: std::sync::atomic::AtomicU64,
    pub reload_lock: tokio::sync::Mutex<()>,
    pub last_reload: std::sync::Mutex<Option<crate::reload::ReloadStatus>>,
    /// The running mirror while `migration.secondary` is set.
    pub mirror: arc_swap::ArcSwapOption<crate::mirror::runtime::Mirror>,
    /// The latest verify report (periodic, or handed in by `tandem verify`).
    pub last_verify: std::sync::Mutex<Option<serde_json::Value>>,
    /// The fence and the cutover history.
    pub cutover: crate::cutover::Cutover,
    pub shadow: Arc<crate::shadow::ShadowStats>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Shared {
    /// The database a client's `db` selects on backend `on`: the URL
    /// databases of the primary and the secondary name one logical
    /// database (`shop` on one, `shop_next` on the other), so either name
    /// selects `on`'s own. Other names pass unchanged.
    pub fn map_db(&self, db: &str, on: &str) -> String {
        let cfg = self.config.load();
        let url_db = |name: Option<&String>| {
            name.and_then(|n| cfg.backends.get(n))
                .and_then(|b| b.database.as_deref())
        };
        let roles = [url_db(Some(&cfg.primary)), url_db(cfg.secondary.as_ref())];
        match url_db(Some(&on.to_string())) {
            Some(target) if roles.contains(&Some(db)) => target.to_string(),
            _ => db.to_string(),
        }
    }

    /// `sql` as backend `on` should run it: names qualified with the other
    /// role's URL database (`shop_next.t` while `shop` is the primary,
    /// `shop.t` after a cutover to `shop_next`) name `on`'s own, as `USE`
    /// does (`map_db`); otherwise a client that names its tables with the
    /// database would, after a cutover, write the old database straight
    /// past the mirror. Ok(None): nothing to rename (the usual case, found
    /// with one substring search). Err: the other database's name also
    /// names a table, alias or column here, so Tandem cannot tell which
    /// to rename.
    pub fn backend_text(&self, on: &str, sql: &[u8]) -> Result<Option<Vec<u8>>, String> {
        // No dot, no qualified name: most statements stop here.
        if memchr::memchr(b'.', sql).is_none() {
            return Ok(None);
        }
        renamed_for(&self.config.load(), on, sql)
    }

    /// A statement's text for the secondary: names qualified with the
    /// primary URL's database get the secondary URL's (on a secondary in
    /// the same server, `shop.t` would otherwise be the primary's table,
    /// written twice; see `lexer::rename_database`). The secondary is named
    /// by the same config snapshot the renaming reads, so that a reload in
    /// between cannot pair one config's secondary with another's databases.
    /// Ok(None): nothing to rename, or no secondary. Err: why that cannot
    /// be done with certainty.
    pub fn secondary_text(&self, sql: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if memchr::memchr(b'.', sql).is_none() {
            return Ok(None);
        }
        let cfg = self.config.load();
        match cfg.secondary.as_deref() {
            Some(secondary) => renamed_for(&cfg, secondary, sql),
            None => Ok(None),
        }
    }

    /// The pool of the current primary backend.
    pub fn primary_pool(&self) -> Arc<Pool> {
        let cfg = self.config.load();
        // Config validation guarantees the primary has a pool.
        self.pools.load()[&cfg.primary].clone()
    }
}

/// `sql` with the other role's URL database renamed to `on`'s, under `cfg`
/// (see [`Shared::backend_text`]).
fn renamed_for(cfg: &Config, on: &str, sql: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let url_db = |name: &str| cfg.backends.get(name).and_then(|b| b.database.as_deref());
    let Some(to) = url_db(on) else {
        return Ok(None);
    };
    let Some(from) = [Some(cfg.primary.as_str()), cfg.secondary.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(url_db)
        .find(|d| *d != to)
    else {
        return Ok(None);
    };
    if memchr::memmem::find(sql, from.as_bytes()).is_none() {
        return Ok(None);
    }
    let mut toks = Vec::new();
    crate::router::lexer::tokenize(sql, &mut toks);
    match crate::router::lexer::rename_database(sql, &toks, from, to) {
        crate::router::lexer::Renamed::Unchanged => Ok(None),
        crate::router::lexer::Renamed::Text(t) => Ok(Some(t)),
        crate::router::lexer::Renamed::Ambiguous => Err(format!(
            "the database name `{from}` qualifies a name here and also names a table, \
             alias or column, so Tandem cannot tell which to rename to `{to}`"
        )),
    }
}

/// A running server. Dropping it does not stop it; call `shutdown`.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where the admin API listens, if configured.
    pub admin_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// How long shutdown waits for sessions to finish the command they are running.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl RunningServer {
    /// Stops accepting; idle sessions close at once, busy ones after the
    /// command they are running (up to `SHUTDOWN_GRACE`).
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let _ = self.task.await;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self.shared.registry.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let left = self.shared.registry.len();
        if left > 0 {
            warn!(
                sessions = left,
                "shutdown grace period over; closing busy sessions"
            );
        }
        if let Some(m) = self.shared.mirror.swap(None) {
            m.stop().await;
        }
    }
}

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

/// Binds `config.listen` and serves until shut down.
pub async fn start(config: Config) -> std::io::Result<RunningServer> {
    let listener = bind(config.listen)?;
    let addr = listener.local_addr()?;
    let pools = config
        .backends
        .values()
        .filter(|b| b.kind == crate::config::BackendKind::Mysql)
        .map(|b| (b.name.clone(), Pool::new(b.clone(), &config.limits)))
        .collect();
    let shared = Arc::new(Shared {
        conn_slots: Arc::new(Semaphore::new(config.limits.max_client_connections)),
        config: ArcSwap::from_pointee(config),
        pools: ArcSwap::from_pointee(pools),
        router: Router::default(),
        registry: Registry::default(),
        metrics: Metrics::default(),
        shutdown: CancellationToken::new(),
        started: std::time::Instant::now(),
        loaded_at_unix: unix_now().into(),
        config_version: 1.into(),
        reload_lock: tokio::sync::Mutex::new(()),
        last_reload: std::sync::Mutex::new(None),
        mirror: arc_swap::ArcSwapOption::empty(),
        last_verify: std::sync::Mutex::new(None),
        cutover: crate::cutover::Cutover::default(),
        shadow: Arc::default(),
    });
    if shared.config.load().secondary.is_some() {
        let m = crate::mirror::runtime::Mirror::start(&shared.config.load())
            .await
            .map_err(std::io::Error::other)?;
        shared.mirror.store(Some(m));
    }
    let admin_addr = match shared.config.load().admin {
        Some(a) => Some(crate::admin::start(a, shared.clone()).await?),
        None => None,
    };
    // Learn the primary's version early so the first client does not wait;
    // an unreachable primary is not fatal (clients get a clear error).
    let warm = shared.clone();
    tokio::spawn(async move {
        let pool = warm.primary_pool();
        match pool.server_info().await {
            Ok(info) => info!(
                backend = %pool.config().name,
                version = %String::from_utf8_lossy(&info.version),
                "primary reachable"
            ),
            Err(e) => warn!(backend = %pool.config().name, error = %e, "primary not reachable yet"),
        }
    });
    tokio::spawn(periodic_verify(shared.clone()));
    info!(%addr, "listening for MySQL clients");
    // The watcher lives as long as the accept loop.
    let watcher = crate::reload::watch(shared.clone());
    let accept_shared = shared.clone();
    let task = tokio::spawn(async move {
        accept_loop(listener, accept_shared).await;
        drop(watcher);
    });
    Ok(RunningServer {
        addr,
        admin_addr,
        shared,
        task,
    })
}

/// Runs verify on the `verify.every` schedule while mirroring (read from the
/// live config each time, so a reload changes it); keeps the latest report.
async fn periodic_verify(shared: Arc<Shared>) {
    use crate::mirror::sync::MirrorSync;
    let mut last_run = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let cfg = shared.config.load_full();
        let Some(every) = cfg.verify.every else {
            last_run = tokio::time::Instant::now();
            continue;
        };
        let Some(mirror) = shared.mirror.load_full() else {
            continue;
        };
        if last_run.elapsed() < every {
            continue;
        }
        last_run = tokio::time::Instant::now();
        let opts = crate::verify::VerifyOptions {
            tables: cfg.verify.tables.clone(),
            chunk_size: cfg.verify.chunk_size,
            ..Default::default()
        };
        let sync = MirrorSync::InProcess(mirror);
        let run = crate::verify::run(&cfg, &opts, &sync);
        let report = tokio::select! {
            r = run => r,
            _ = shared.shutdown.cancelled() => return,
        };
        let json = match report {
            Ok(r) => {
                let divergent: Vec<&str> = r
                    .tables
                    .iter()
                    .filter(|t| !t.identical())
                    .map(|t| t.table.as_str())
                    .collect();
                if r.identical {
                    info!(tables = r.tables.len(), "periodic verify: identical");
                } else {
                    warn!(?divergent, "periodic verify: differences (or errors) found");
                }
                serde_json::to_value(&r).unwrap_or_default()
            }
            Err(e) => {
                warn!(error = %e, "periodic verify failed");
                serde_json::json!({ "error": e.to_string(), "finished_at_unix": unix_now() })
            }
        };
        *shared.last_verify.lock().unwrap_or_else(|p| p.into_inner()) = Some(json);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
