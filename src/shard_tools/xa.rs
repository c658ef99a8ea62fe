//! Atomic commits across a cluster's shards: the xids Tandem gives its XA
//! branches, the decision table, and the resolver that settles prepared
//! branches a lost session or a crashed Tandem left behind.
//!
//! The protocol (the session's side is `frontend/session/cluster/xa.rs`;
//! the argument is in `docs/sharding.md`): a transaction's first branch
//! (the anchor) is an ordinary transaction, every later branch an XA
//! branch. A commit that wrote an XA branch inserts a decision row (the
//! transaction's gtrid) in the anchor, PREPAREs the XA branches, commits
//! the anchor (the decision: its commit and the row are one), then XA
//! COMMITs the branches. A prepared branch therefore always has a decision
//! row that is committed (commit it), still locked by a live anchor (a
//! locking read waits for it), or gone with the anchor's rollback (roll it
//! back). The resolver asks exactly that, for Tandem's own xids only (by
//! format id), at start and every few seconds.

use crate::config::{BackendConfig, Config};
use crate::metrics::{Metrics, OutcomeLabel};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

/// The XA format id of Tandem's branches ("TDMX"); other xids on the
/// shards are never touched.
pub const FORMAT_ID: u32 = 0x5444_4D58;

/// Tandem's table of commit decisions, in each shard's bookkeeping
/// database.
pub const DECISIONS: &str = "xa_decision";

/// How often the resolver looks for prepared branches left behind.
const SCAN_EVERY: Duration = Duration::from_secs(10);

/// How long the resolver's locking read waits for a live anchor.
const LOCK_WAIT_SECONDS: u32 = 5;

/// The cluster's tag, the first 8 hex digits of every gtrid its sessions
/// give: the resolver settles only its own cluster's branches (two
/// clusters, or two deployments, may share a server and its bookkeeping
/// database; another cluster's decision may be on a server this one never
/// reads). From the cluster's name and its first shard's database, as the
/// recorded placement is keyed.
pub fn cluster_tag(cfg: &Config) -> String {
    let Some(c) = cfg.cluster() else {
        return "00000000".into();
    };
    let first = cfg
        .backends
        .get(&c.shards[0])
        .map(crate::mirror::bookkeeping::owner)
        .unwrap_or_default();
    tag_of(&c.name, &first)
}

/// `cluster_tag` from the cluster's name and its first shard's database
/// as an SQL literal (`bookkeeping::owner`).
pub fn tag_of(cluster: &str, first_owner: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{cluster}|{first_owner}").as_bytes());
    format!("{:08x}", h as u32)
}

/// A new global transaction id of the cluster tagged `tag`: 40 hex
/// digits, unique across Tandems.
pub fn new_gtrid(tag: &str) -> String {
    format!("{tag}{:032x}", rand::random::<u128>())
}

/// The xid of `gtrid`'s branch on shard `shard`, as XA statements take it.
pub fn xid(gtrid: &str, shard: usize) -> String {
    format!("'{gtrid}','{shard}',{FORMAT_ID}")
}

/// The decision table of backend `b`, qualified.
pub fn decisions(b: &BackendConfig) -> String {
    crate::sql::qualified(Some(&b.bookkeeping), DECISIONS)
}

/// The insert that records `gtrid`'s decision inside the anchor.
pub fn decision_insert(b: &BackendConfig, gtrid: &str) -> String {
    format!("INSERT INTO {} (gtrid) VALUES ('{gtrid}')", decisions(b))
}

/// Creates the bookkeeping database and the decision table on `b`.
pub async fn ensure_table(conn: &mut Conn, b: &BackendConfig) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        crate::sql::quote(&b.bookkeeping)
    ))
    .await?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (gtrid VARBINARY(64) NOT NULL PRIMARY KEY, \
         decided_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
        decisions(b)
    ))
    .await
}

/// Creates the decision table on every shard of the cluster `cfg` serves
/// (nothing when the primary is not a cluster).
pub async fn ensure_all(cfg: &Config) -> Result<(), String> {
    for b in shard_backends(cfg) {
        let mut conn = crate::backend::own_conn(crate::backend::own_opts(&b).await)
            .await
            .map_err(|e| format!("cannot reach shard {}: {e}", b.name))?;
        let r = ensure_table(&mut conn, &b).await;
        let _ = conn.disconnect().await;
        r.map_err(|e| {
            format!(
                "shard {}: cannot create Tandem's XA decision table {}: {e}",
                b.name,
                decisions(&b)
            )
        })?;
    }
    Ok(())
}

fn shard_backends(cfg: &Config) -> Vec<BackendConfig> {
    cfg.cluster()
        .map(|c| {
            c.shards
                .iter()
                .filter_map(|s| cfg.backends.get(s).cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the resolver did and knows, for `/status` and `/metrics`.
#[derive(Default)]
pub struct XaState {
    /// Decision rows whose branches all committed: (shard backend, gtrid),
    /// deleted by the resolver in batches.
    done: Mutex<Vec<(String, String)>>,
    last_scan: Mutex<Option<serde_json::Value>>,
}

impl XaState {
    /// Notes that every branch of `gtrid` committed: its decision row on
    /// `backend` is no longer needed.
    pub fn finished(&self, backend: &str, gtrid: String) {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((backend.to_string(), gtrid));
    }

    pub fn status(&self, m: &crate::metrics::Metrics) -> serde_json::Value {
        let resolved = |outcome| m.xa_resolved.get_or_create(&OutcomeLabel { outcome }).get();
        serde_json::json!({
            "cross_shard_commits": m.xa_commits.get(),
            "rolled_back_at_prepare": m.xa_prepare_refused.get(),
            "in_doubt_resolved": {
                "committed": resolved("committed"),
                "rolled_back": resolved("rolled_back"),
            },
            "last_scan": self.last_scan.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }
}

/// The resolver: at start and every `SCAN_EVERY`, settles Tandem's
/// prepared branches on every shard and deletes decision rows no branch
/// needs; in between, deletes the rows of finished commits.
pub async fn run_resolver(shared: std::sync::Arc<crate::state::Shared>) {
    let mut last_scan: Option<tokio::time::Instant> = None;
    loop {
        let cfg = shared.config.load_full();
        if cfg.cluster().is_some() {
            forget_finished(&shared, &cfg).await;
            if last_scan.is_none_or(|t| t.elapsed() >= SCAN_EVERY) {
                let report = match scan(&cfg, &shared.metrics).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "XA resolver: scan failed; retrying");
                        serde_json::json!({ "at_unix": crate::state::unix_now(), "error": e })
                    }
                };
                *shared
                    .xa
                    .last_scan
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(report);
                last_scan = Some(tokio::time::Instant::now());
            }
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Deletes the decision rows of commits whose branches all committed.
async fn forget_finished(shared: &crate::state::Shared, cfg: &Config) {
    let done = std::mem::take(&mut *shared.xa.done.lock().unwrap_or_else(|p| p.into_inner()));
    let mut by_backend: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (b, g) in done {
        by_backend.entry(b).or_default().push(g);
    }
    for (name, gtrids) in by_backend {
        let Some(b) = cfg.backends.get(&name) else {
            continue;
        };
        let r = async {
            let mut c = crate::backend::own_conn(crate::backend::own_opts(b).await).await?;
            delete_decisions(&mut c, b, &gtrids).await?;
            c.disconnect().await
        };
        if let Err(e) = r.await {
            // The periodic scan deletes them later.
            tracing::debug!(shard = name, error = %e, "XA decision rows not deleted yet");
        }
    }
}

async fn delete_decisions(
    c: &mut Conn,
    b: &BackendConfig,
    gtrids: &[String],
) -> Result<(), mysql_async::Error> {
    for chunk in gtrids.chunks(500) {
        let list: Vec<String> = chunk.iter().map(|g| format!("'{g}'")).collect();
        c.query_drop(format!(
            "DELETE FROM {} WHERE gtrid IN ({})",
            decisions(b),
            list.join(",")
        ))
        .await?;
    }
    Ok(())
}

/// One of Tandem's prepared branches on a shard.
struct Prepared {
    shard: usize,
    gtrid: String,
    /// The xid as XA statements take it (`XA RECOVER FORMAT='SQL'`).
    xid: String,
}

/// Settles every prepared branch of Tandem's on the cluster's shards and
/// deletes decision rows no branch needs any more.
pub async fn scan(cfg: &Config, metrics: &Metrics) -> Result<serde_json::Value, String> {
    let backends = shard_backends(cfg);
    let tag = cluster_tag(cfg);
    fn err(b: &BackendConfig) -> impl Fn(mysql_async::Error) -> String + '_ {
        move |e| format!("shard {}: {e}", b.name)
    }
    let mut conns = Vec::with_capacity(backends.len());
    for b in &backends {
        let mut c = crate::backend::own_conn(crate::backend::own_opts(b).await)
            .await
            .map_err(|e| format!("cannot reach shard {}: {e}", b.name))?;
        c.query_drop(format!(
            "SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS}"
        ))
        .await
        .map_err(err(b))?;
        conns.push(c);
    }
    // Decision rows committed before the branches are listed: every branch
    // of theirs prepared before the row committed, so a row whose gtrid is
    // in no list below is needed by no branch.
    let mut candidates: Vec<Vec<String>> = Vec::with_capacity(conns.len());
    for (c, b) in conns.iter_mut().zip(&backends) {
        let read: Result<Vec<Vec<u8>>, _> = c
            .query(format!(
                "SELECT gtrid FROM {} WHERE gtrid LIKE '{tag}%'",
                decisions(b)
            ))
            .await;
        let rows = match read {
            Ok(rows) => rows,
            // Created at start; dropped since: created again (no row,
            // so no decision, was kept there).
            Err(mysql_async::Error::Server(e))
                if crate::mirror::bookkeeping::is_missing(e.code) =>
            {
                ensure_table(c, b).await.map_err(err(b))?;
                Vec::new()
            }
            Err(e) => return Err(err(b)(e)),
        };
        candidates.push(
            rows.into_iter()
                .map(|g| String::from_utf8_lossy(&g).into_owned())
                .collect(),
        );
    }
    let mut prepared = Vec::new();
    for (i, (c, b)) in conns.iter_mut().zip(&backends).enumerate() {
        let rows: Vec<mysql_async::Row> =
            c.query("XA RECOVER FORMAT='SQL'").await.map_err(err(b))?;
        for r in rows {
            let (format, data): (Option<i64>, Option<Vec<u8>>) = (r.get(0), r.get(3));
            let (Some(format), Some(data)) = (format, data) else {
                continue;
            };
            if format != FORMAT_ID as i64 {
                continue;
            }
            let xid = String::from_utf8_lossy(&data).into_owned();
            // 'gtrid','bqual',format
            let Some(gtrid) = xid.split('\'').nth(1).map(str::to_string) else {
                continue;
            };
            if !gtrid.starts_with(&tag) {
                // Another cluster's: its own resolver settles it.
                continue;
            }
            prepared.push(Prepared {
                shard: i,
                gtrid,
                xid,
            });
        }
    }
    let listed: BTreeSet<String> = prepared.iter().map(|p| p.gtrid.clone()).collect();
    let (mut committed, mut rolled_back, mut attached, mut undecided) = (0u64, 0u64, 0u64, 0u64);
    let mut decisions_of: BTreeMap<String, Option<bool>> = BTreeMap::new();
    for p in &prepared {
        let decided = match decisions_of.get(&p.gtrid) {
            Some(d) => *d,
            None => {
                let d = decision(&mut conns, &backends, &p.gtrid).await;
                decisions_of.insert(p.gtrid.clone(), d);
                d
            }
        };
        let Some(commit) = decided else {
            undecided += 1;
            continue;
        };
        let verb = if commit { "COMMIT" } else { "ROLLBACK" };
        match conns[p.shard]
            .query_drop(format!("XA {verb} {}", p.xid))
            .await
        {
            Ok(()) => {
                tracing::warn!(
                    shard = backends[p.shard].name,
                    xid = p.xid,
                    outcome = verb,
                    "XA resolver: settled a prepared branch left behind"
                );
                let outcome = if commit {
                    committed += 1;
                    "committed"
                } else {
                    rolled_back += 1;
                    "rolled_back"
                };
                metrics
                    .xa_resolved
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc();
            }
            // Still attached to a live session (or settled meanwhile),
            // which ends it itself.
            Err(mysql_async::Error::Server(e)) if e.code == 1397 => attached += 1,
            // XA_RB*: a branch that changed nothing (or was rolled back by
            // the server) is gone with this answer, whatever the decision.
            Err(mysql_async::Error::Server(e)) if matches!(e.code, 1402 | 1613 | 1614) => {
                rolled_back += 1;
            }
            Err(e) => return Err(err(&backends[p.shard])(e)),
        }
    }
    for ((c, b), rows) in conns.iter_mut().zip(&backends).zip(candidates) {
        let unneeded: Vec<String> = rows.into_iter().filter(|g| !listed.contains(g)).collect();
        delete_decisions(c, b, &unneeded).await.map_err(err(b))?;
    }
    for c in conns {
        let _ = c.disconnect().await;
    }
    Ok(serde_json::json!({
        "at_unix": crate::state::unix_now(),
        "prepared_found": prepared.len(),
        "committed": committed,
        "rolled_back": rolled_back,
        "attached_to_live_sessions": attached,
        "undecided": undecided,
    }))
}

/// Whether `gtrid` committed: its decision row is on some shard (a locking
/// read waits for an anchor still holding it). None when a shard cannot
/// say (unreachable, or the lock wait ran out).
async fn decision(conns: &mut [Conn], backends: &[BackendConfig], gtrid: &str) -> Option<bool> {
    for (c, b) in conns.iter_mut().zip(backends) {
        let found: Result<Option<u64>, _> = c
            .query_first(format!(
                "SELECT COUNT(*) FROM {} WHERE gtrid = '{gtrid}' LOCK IN SHARE MODE",
                decisions(b)
            ))
            .await;
        match found {
            Ok(Some(n)) if n > 0 => return Some(true),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(shard = b.name, gtrid, error = %e, "XA resolver: cannot read the decision yet");
                return None;
            }
        }
    }
    Some(false)
}
