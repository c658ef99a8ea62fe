//! The state every part of one running Tandem shares (`Shared`): the
//! config snapshot, pools, router, session registry, metrics, mirror and
//! cutover. The listener (`frontend`), admin, reload and cutover all read
//! it; it imports none of them back except the types it holds.

use crate::backend::Pool;
use crate::config::Config;
use crate::frontend::registry::Registry;
use crate::metrics::Metrics;
use crate::router::Router;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// State shared by every session of one server.
pub struct Shared {
    pub config: ArcSwap<Config>,
    pub pools: ArcSwap<HashMap<String, Arc<Pool>>>,
    pub router: Router,
    pub registry: Registry,
    pub metrics: Metrics,
    pub(crate) conn_slots: Arc<Semaphore>,
    pub shutdown: CancellationToken,
    pub started: std::time::Instant,
    /// When the running config was loaded (seconds since the Unix epoch).
    pub loaded_at_unix: std::sync::atomic::AtomicU64,
    /// Bumped by every applied reload.
    pub config_version: std::sync::atomic::AtomicU64,
    pub reload_lock: tokio::sync::Mutex<()>,
    pub last_reload: std::sync::Mutex<Option<ReloadStatus>>,
    /// The running mirror while `migration.secondary` is set.
    pub mirror: arc_swap::ArcSwapOption<crate::mirror::runtime::Mirror>,
    /// The latest verify report (periodic, or handed in by `tandem verify`).
    pub last_verify: std::sync::Mutex<Option<serde_json::Value>>,
    /// The fence and the cutover history.
    pub cutover: crate::cutover::fence::Cutover,
    pub shadow: Arc<crate::shadow::ShadowStats>,
    /// Connections still in their handshake, oldest first (session id and
    /// its cancel token): past `limits.max_unauthenticated` the oldest is
    /// closed.
    pub(crate) pending: std::sync::Mutex<std::collections::VecDeque<(u32, CancellationToken)>>,
    /// Sessions per proxy user, for `users[].max_connections`.
    pub(crate) user_sessions: std::sync::Mutex<HashMap<String, usize>>,
    /// caching_sha2_password's verifier cache and RSA key.
    pub(crate) sha2: crate::frontend::sha2::Sha2Auth,
    /// On a cluster: what routing knows of its tables (read from the
    /// first shard; dropped after DDL and on a miss, then read again).
    pub shard_facts: ArcSwap<ShardFacts>,
    /// On a cluster: the global id sequences of its sharded tables.
    pub sequences: crate::backend::sequence::Sequences,
    /// On a cluster: the last schema drift check (`/status`).
    pub schema_drift: std::sync::Mutex<Option<serde_json::Value>>,
    /// Wakes the drift check (after DDL through Tandem).
    pub drift_check: tokio::sync::Notify,
    /// On a cluster: cross-shard commits' decision rows to delete and the
    /// XA resolver's last scan.
    pub xa: crate::shard_tools::xa::XaState,
}

/// Table name -> facts, for shard routing.
pub type ShardFacts = HashMap<String, Arc<crate::router::shard::route::TableFacts>>;

/// A session counted against its user's `max_connections` until dropped.
pub struct UserSlot<'a> {
    shared: &'a Shared,
    user: String,
}

impl Drop for UserSlot<'_> {
    fn drop(&mut self) {
        let mut m = self
            .shared
            .user_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Shared {
    /// Counts a connection in its handshake; closes the oldest one (its
    /// token cancelled) when more than `max_unauthenticated` are.
    pub(crate) fn handshake_started(&self, id: u32, cancel: CancellationToken) {
        let max = self.config.load().limits.max_unauthenticated;
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back((id, cancel));
        while q.len() > max {
            if let Some((_, oldest)) = q.pop_front() {
                self.metrics.handshakes_evicted.inc();
                oldest.cancel();
            }
        }
    }

    /// The connection's handshake ended (logged in, refused or gone).
    pub(crate) fn handshake_ended(&self, id: u32) {
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = q.iter().position(|(i, _)| *i == id) {
            q.remove(at);
        }
    }

    /// A session of `user`, if its `max_connections` allows one more.
    pub fn user_slot(&self, user: &str) -> Option<UserSlot<'_>> {
        let limit = self.config.load().user_limits.get(user).copied();
        let mut m = self.user_sessions.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(user.to_string()).or_default();
        if limit.is_some_and(|l| *n >= l) {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            shared: self,
            user: user.to_string(),
        })
    }

    /// The pool of the current primary backend.
    pub fn primary_pool(&self) -> Arc<Pool> {
        let cfg = self.config.load();
        // Config validation guarantees the primary has a pool (on a
        // cluster: its first shard, which greets clients).
        self.pools.load()[&cfg.primary_backend().name].clone()
    }
}

/// The last reload attempt, for /status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadStatus {
    pub at_unix: u64,
    pub trigger: &'static str,
    pub ok: bool,
    pub errors: Vec<String>,
    /// Config version after the attempt.
    pub version: u64,
}
