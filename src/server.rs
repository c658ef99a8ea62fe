//! One running Tandem: `start` builds the shared state (`crate::state`) and
//! wires the listener, the admin API, the mirror, the reload watcher and the
//! periodic verify around it; `RunningServer::shutdown` stops them.

use crate::backend::Pool;
use crate::config::Config;
use crate::frontend::registry::Registry;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::state::{unix_now, Shared};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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

/// Binds `config.listen` and serves until shut down.
pub async fn start(config: Config) -> std::io::Result<RunningServer> {
    // A cluster's rows stay where they were written: the placement is
    // recorded, and a config that would place them differently refused.
    crate::shard_tools::record_placement(&config)
        .await
        .map_err(std::io::Error::other)?;
    // Cross-shard commits record their decision on a shard: the table is
    // there before the first client.
    crate::shard_tools::xa::ensure_all(&config)
        .await
        .map_err(std::io::Error::other)?;
    let listener = crate::frontend::bind(config.listen)?;
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
        pending: std::sync::Mutex::default(),
        user_sessions: std::sync::Mutex::default(),
        sha2: Default::default(),
        shard_facts: Default::default(),
        sequences: Default::default(),
        schema_drift: Default::default(),
        drift_check: Default::default(),
        xa: Default::default(),
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
        let cfg = warm.config.load();
        // The accounts users act as: can they log in, and write the commit
        // markers mirrored transactions insert?
        for problem in crate::backend::accounts::check_primary(&cfg).await {
            warn!("{problem}");
        }
        let mut shared_account: Vec<&String> = cfg
            .users
            .keys()
            .filter(|u| !cfg.accounts.contains_key(*u))
            .collect();
        shared_account.sort();
        if !shared_account.is_empty() {
            warn!(
                users = ?shared_account,
                account = %pool.config().user,
                "these proxy users act on the backends as the URL's account (no backend_user): its GRANTs, not theirs, apply"
            );
        }
    });
    tokio::spawn(periodic_verify(shared.clone()));
    tokio::spawn(idle_ticks(shared.clone()));
    tokio::spawn(watch_drift(shared.clone()));
    tokio::spawn(crate::shard_tools::xa::run_resolver(shared.clone()));
    info!(%addr, "listening for MySQL clients");
    // The watcher lives as long as the accept loop.
    let watcher = crate::reload::watch(shared.clone());
    let accept_shared = shared.clone();
    let task = tokio::spawn(async move {
        crate::frontend::accept_loop(listener, accept_shared).await;
        drop(watcher);
    });
    Ok(RunningServer {
        addr,
        admin_addr,
        shared,
        task,
    })
}

/// How often idle sessions are told to watch their backend for a close: a
/// client idle longer than this hears of a server-side close within about
/// as long again.
pub const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// One timer for the whole server, instead of one per command: every
/// `IDLE_TICK` each session's idle tick is notified.
async fn idle_ticks(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(IDLE_TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => shared.registry.tick(),
            _ = shared.shutdown.cancelled() => return,
        }
    }
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

/// On a cluster: compares the shards' schemas at start, after DDL through
/// Tandem and every minute; the outcome is in `/status` and
/// `tandem_shard_schema_drift_tables`.
async fn watch_drift(shared: Arc<Shared>) {
    loop {
        let cfg = shared.config.load_full();
        if cfg.cluster().is_some() {
            let report = match crate::shard_tools::drift::check(&cfg).await {
                Ok(drift) => {
                    shared.metrics.schema_drift.set(drift.len() as i64);
                    for d in &drift {
                        warn!(
                            "schema drift: {}",
                            crate::shard_tools::drift::describe_drift(d)
                        );
                    }
                    serde_json::json!({ "checked_at_unix": unix_now(), "drift": drift })
                }
                Err(e) => serde_json::json!({ "checked_at_unix": unix_now(), "error": e }),
            };
            *shared
                .schema_drift
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(report);
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.drift_check.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
    }
}
