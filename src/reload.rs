//! Config reload: every trigger (file change, SIGHUP, `POST /reload`) goes
//! through `reload`: load → validate (every error) → diff (settings that
//! cannot change live are named) → build new pools → swap the snapshot.
//! A rejected edit changes nothing; the running config stays.
//!
//! Sessions keep the backend connection they hold; a rebuilt pool serves new
//! sessions, and the old one closes its connections as they come back.

use crate::backend::Pool;
use crate::config::{self, Config, ConfigErrors};
use crate::state::{ReloadStatus, Shared};
use notify_debouncer_mini::{new_debouncer, notify::RecursiveMode, DebounceEventResult};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    File,
    Signal,
    Api,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::File => "file",
            Trigger::Signal => "signal",
            Trigger::Api => "api",
        }
    }
}

/// Reloads the config from its file. Returns the new version, or every
/// reason it was rejected.
pub async fn reload(shared: &Shared, trigger: Trigger) -> Result<u64, ConfigErrors> {
    // One reload at a time, whatever triggered it.
    let _guard = shared.reload_lock.lock().await;
    let result = apply(shared, trigger).await;
    let version = shared.config_version.load(Ordering::Relaxed);
    let status = ReloadStatus {
        at_unix: crate::state::unix_now(),
        trigger: trigger.as_str(),
        ok: result.is_ok(),
        errors: result
            .as_ref()
            .err()
            .map(|e| e.0.clone())
            .unwrap_or_default(),
        version,
    };
    match &result {
        Ok(false) => info!(trigger = trigger.as_str(), version, "config unchanged"),
        Ok(true) => {
            shared.metrics.reloads_ok.inc();
            info!(trigger = trigger.as_str(), version, "config reloaded");
        }
        Err(e) => {
            shared.metrics.reloads_failed.inc();
            for line in &e.0 {
                warn!(trigger = trigger.as_str(), error = %line, "config reload rejected");
            }
        }
    }
    *shared.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    result.map(|_| version)
}

/// `POST /cutover` and `tandem cutover`: flips the roles towards `to`
/// (default: the current secondary) through the same fenced cutover a file
/// edit runs, then records it in the config file's `migration.primary` so
/// the file keeps saying what runs.
pub async fn cutover(
    shared: &Shared,
    to: Option<String>,
    opts: crate::cutover::CutoverOptions,
) -> Result<crate::cutover::CutoverReport, String> {
    let _guard = shared.reload_lock.lock().await;
    let current = shared.config.load_full();
    let Some(to) = to.or_else(|| current.secondary.clone()) else {
        return Err("refused: no migration.secondary to cut over to".into());
    };
    let new = crate::cutover::flipped(&current, &to).map_err(|e| format!("refused: {e}"))?;
    let report = crate::cutover::run(shared, new, "api", opts).await?;
    if let Some(path) = &current.source {
        if let Err(e) = crate::cutover::record_in_file(path, &current.primary, &to) {
            warn!(
                error = %e,
                "cutover done, but the config file still names the old primary: edit \
                 migration.primary to {to} before the next reload or restart"
            );
        }
    }
    Ok(report)
}

/// A reload that adds the first secondary starts its mirror before
/// publishing (a failure leaves the running config in place); one that
/// names another secondary than the running mirror's is refused. Removing
/// the secondary stops capture at once; the running applier drains what is
/// journaled.
async fn start_or_check_mirror(
    shared: &Shared,
    current: &Config,
    new: &Config,
) -> Result<(), ConfigErrors> {
    let Some(secondary) = &new.secondary else {
        return Ok(());
    };
    match shared.mirror.load_full() {
        None => {
            let mut probe = new.clone();
            probe.primary = current.primary.clone();
            let m = crate::mirror::runtime::Mirror::start(&probe)
                .await
                .map_err(|e| ConfigErrors(vec![format!("migration.secondary: {e}")]))?;
            shared.mirror.store(Some(m));
        }
        Some(m) if !m.mirrors_to(secondary) => {
            return Err(ConfigErrors(vec![format!(
                "migration.secondary: this process mirrors to {:?} (its journal may still hold \
                 writes for it); switching to {secondary:?} needs a restart",
                m.secondary_name()
            )]));
        }
        Some(_) if current.secondary.is_none() => warn!(
            %secondary,
            "mirroring resumes; writes made while migration.secondary was unset were not \
             mirrored: run `tandem backfill` and `tandem verify` for the tables they touched"
        ),
        Some(_) => {}
    }
    Ok(())
}

/// Ok(true) when something changed.
async fn apply(shared: &Shared, trigger: Trigger) -> Result<bool, ConfigErrors> {
    let current = shared.config.load_full();
    let Some(path) = current.source.clone() else {
        return Err(ConfigErrors(vec![
            "this server was not started from a config file; nothing to reload".into(),
        ]));
    };
    let mut new = config::load(&path)?;
    if let Some(why) = new.serve_refusal() {
        return Err(ConfigErrors(vec![why]));
    }
    if let Some(unresolved) = new.unresolved_secondary.take() {
        // `secondary` names the primary: "the previous primary". For the
        // one-line cutover edit that is the running primary; with the
        // primary unchanged it is the running secondary.
        if new.primary != current.primary
            && current.secondary.as_deref() == Some(new.primary.as_str())
        {
            new.secondary = Some(current.primary.clone());
        } else if new.primary == current.primary && current.secondary.is_some() {
            new.secondary = current.secondary.clone();
        } else {
            return Err(ConfigErrors(vec![unresolved]));
        }
    }
    let changes = config::diff(&current, &new)?;
    if changes.is_empty() {
        return Ok(false);
    }
    if changes.rules {
        crate::shard_tools::record_placement(&new)
            .await
            .map_err(|e| ConfigErrors(vec![e]))?;
    }
    if changes.cutover.is_none() {
        start_or_check_mirror(shared, &current, &new).await?;
    }
    let old_pools = shared.pools.load_full();
    let mut pools: HashMap<String, Arc<Pool>> = HashMap::new();
    for b in new.backends.values() {
        if b.kind != config::BackendKind::Mysql {
            continue;
        }
        let pool = match old_pools.get(&b.name) {
            Some(p) if !changes.backends.contains(&b.name) => p.clone(),
            _ => Pool::new(b.clone(), &new.limits),
        };
        pools.insert(b.name.clone(), pool);
    }
    // Publish pools before the config that names them.
    shared.pools.store(Arc::new(pools));
    if let Some(to) = &changes.cutover {
        // The cutover publishes `new` at its swap, or leaves everything as
        // it was.
        let apply_errors = new.apply_errors;
        crate::cutover::run(shared, new, trigger.as_str(), Default::default())
            .await
            .map_err(|e| ConfigErrors(vec![format!("migration.primary: cutover to {to} {e}")]))?;
        if let Some(m) = shared.mirror.load_full() {
            m.set_apply_errors(apply_errors);
        }
        info!(?changes, "applied config changes");
        return Ok(true);
    }
    if let Some(m) = shared.mirror.load_full() {
        m.set_apply_errors(new.apply_errors);
    }
    shared.config.store(Arc::new(new));
    shared.config_version.fetch_add(1, Ordering::Relaxed);
    shared
        .loaded_at_unix
        .store(crate::state::unix_now(), Ordering::Relaxed);
    info!(?changes, "applied config changes");
    Ok(true)
}

/// Watches the config file's directory and the rules directory (so editors'
/// rename-over saves are seen) and reloads after changes settle.
pub fn watch(shared: Arc<Shared>) -> Option<impl Drop> {
    let cfg = shared.config.load();
    let source = cfg.source.clone()?;
    let config_dir = source
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                std::path::Path::new(".").to_path_buf()
            } else {
                p.to_path_buf()
            }
        })
        .unwrap_or_else(|| ".".into());
    let rules_dir = cfg.rules_dir.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut debouncer = match new_debouncer(
        Duration::from_millis(250),
        move |res: DebounceEventResult| {
            if res.is_ok() {
                let _ = tx.try_send(());
            }
        },
    ) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot watch the config for changes; SIGHUP and POST /reload still work");
            return None;
        }
    };
    for dir in [&config_dir, &rules_dir] {
        if dir.is_dir() {
            if let Err(e) = debouncer.watcher().watch(dir, RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), error = %e, "cannot watch directory");
            }
        }
    }
    let stop = shared.shutdown.clone();
    tokio::spawn(async move {
        // The watched directories may hold other files that change all the
        // time (a log written beside the config, which a reload's own log
        // line would keep changing): reload only when the config or the
        // rules read differently (also right for symlink swaps such as a
        // Kubernetes ConfigMap update, where the event names no file of ours).
        let snapshot = move || {
            let (source, rules_dir) = (source.clone(), rules_dir.clone());
            async move {
                tokio::task::spawn_blocking(move || read_inputs(&source, &rules_dir))
                    .await
                    .unwrap_or_default()
            }
        };
        let mut seen = snapshot().await;
        loop {
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        return;
                    }
                    let now = snapshot().await;
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    let _ = reload(&shared, Trigger::File).await;
                }
                _ = stop.cancelled() => return,
            }
        }
    });
    Some(debouncer)
}

/// What a reload would read: the config file and the rules files (path
/// and content; None where unreadable).
type Inputs = Vec<(std::ffi::OsString, Option<Vec<u8>>)>;

fn read_inputs(source: &std::path::Path, rules_dir: &std::path::Path) -> Inputs {
    let rules = config::rule_files(rules_dir).unwrap_or_default();
    std::iter::once(source.to_path_buf())
        .chain(rules)
        .map(|p| {
            let content = std::fs::read(&p).ok();
            (p.into_os_string(), content)
        })
        .collect()
}
