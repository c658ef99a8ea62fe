//! Per-backend connection pool.
//!
//! A client session leases one backend connection for its whole life. Idle
//! connections are keyed by the response-shaping capability flags and the
//! collation they were opened with, because a connection can only relay byte
//! for byte to a client that negotiated the same flags. A connection goes back
//! to the pool only after COM_RESET_CONNECTION succeeded on it; a connection
//! whose state is unknown (client vanished mid-response) is closed instead.

use super::conn::{BackendConn, ServerInfo};
use super::BackendError;
use crate::config::{Account, BackendConfig, Limits};
use crate::protocol::packets::backend_key_caps;
use mysql_common::constants::CapabilityFlags;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a pooled connection must match to serve a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub caps: u32,
    /// MariaDB extended capabilities (they shape column definitions).
    pub ext: u32,
    pub collation: u8,
    /// The database account (hash of its credentials; 0: the URL's).
    pub account: u64,
}

impl PoolKey {
    pub fn new(
        client_caps: CapabilityFlags,
        ext: u32,
        collation: u8,
        account: Option<&Account>,
    ) -> Self {
        Self {
            caps: (client_caps & backend_key_caps()).bits(),
            ext,
            collation,
            // The password too: a connection another login's credentials
            // opened never serves one configured with others.
            account: account.map_or(0, |a| {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                h.update(a.user.as_bytes());
                h.update(&[0]);
                h.update(a.password.expose().as_bytes());
                h.digest() | 1
            }),
        }
    }
}

/// Most connections to one backend being opened at the same moment.
const MAX_CONNECTING: usize = 32;

pub struct Pool {
    cfg: BackendConfig,
    connect_timeout: Duration,
    wait_timeout: Duration,
    idle_timeout: Duration,
    /// One permit per open (leased, idle or resetting) connection.
    slots: Arc<Semaphore>,
    /// Connections being opened at once. A storm of new clients would
    /// otherwise overflow the server's accept queue (MariaDB's `back_log`
    /// is 80 by default), and the dropped SYNs are retried by the kernel
    /// only after 1 s, 3 s, 7 s: past `connect_timeout`.
    connecting: Semaphore,
    idle: Mutex<Vec<(PoolKey, BackendConn)>>,
    info: Mutex<Option<ServerInfo>>,
    open: AtomicUsize,
}

/// A leased connection. Dropping it returns the connection (after a reset)
/// when `reusable`, otherwise closes it.
pub struct Lease {
    conn: Option<BackendConn>,
    key: PoolKey,
    /// Cleared while a command is in flight; a lease dropped then is closed.
    pub reusable: bool,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Pool>,
}

impl Pool {
    pub fn new(cfg: BackendConfig, limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(cfg.pool)),
            connecting: Semaphore::new(MAX_CONNECTING),
            cfg,
            connect_timeout: limits.connect_timeout,
            wait_timeout: limits.pool_wait_timeout,
            idle_timeout: limits.pool_idle_timeout,
            idle: Mutex::new(Vec::new()),
            info: Mutex::new(None),
            open: AtomicUsize::new(0),
        })
    }

    pub fn config(&self) -> &BackendConfig {
        &self.cfg
    }

    /// Connections currently open (leased or idle).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The server's handshake facts; connects once if not yet known.
    pub async fn server_info(self: &Arc<Self>) -> Result<ServerInfo, BackendError> {
        if let Some(i) = lock(&self.info).clone() {
            return Ok(i);
        }
        let key = PoolKey::new(CapabilityFlags::empty(), 0, 0, None);
        let lease = self.acquire_with(key, None, None).await?;
        Ok(lease.server().clone())
    }

    /// Leases a connection matching the client's flags and collation,
    /// logged in as `account` (None: the URL's account).
    pub async fn acquire(
        self: &Arc<Self>,
        client_caps: CapabilityFlags,
        ext: u32,
        collation: u8,
        account: Option<&Account>,
    ) -> Result<Lease, BackendError> {
        let key = PoolKey::new(client_caps, ext, collation, account);
        self.acquire_with(key, Some(collation), account).await
    }

    async fn acquire_with(
        self: &Arc<Self>,
        key: PoolKey,
        collation: Option<u8>,
        account: Option<&Account>,
    ) -> Result<Lease, BackendError> {
        let permit = tokio::time::timeout(self.wait_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| BackendError::PoolExhausted(self.cfg.pool))?
            .map_err(|_| BackendError::PoolExhausted(self.cfg.pool))?;
        // Reuse an idle connection with the same key. Only the candidate is
        // probed for a peer close (one syscall), not every idle connection.
        let reuse = {
            let mut idle = lock(&self.idle);
            let now = Instant::now();
            let before = idle.len();
            idle.retain(|(_, c)| now.duration_since(c.last_used) <= self.idle_timeout);
            self.open.fetch_sub(before - idle.len(), Ordering::Relaxed);
            let mut found = None;
            while let Some(pos) = idle.iter().rposition(|(k, _)| *k == key) {
                let (_, mut c) = idle.swap_remove(pos);
                if c.wire.looks_closed() {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                found = Some(c);
                break;
            }
            // The permit we hold may belong to an idle connection of another
            // key: close one so the total stays within the pool size. A
            // connection about to be opened is counted now, inside the lock,
            // so concurrent acquirers see it.
            if found.is_none() {
                if self.open.load(Ordering::Relaxed) >= self.cfg.pool {
                    if let Some(pos) = idle.iter().position(|(k, _)| *k != key) {
                        idle.swap_remove(pos);
                        self.open.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                self.open.fetch_add(1, Ordering::Relaxed);
            }
            found
        };
        let conn = match reuse {
            Some(c) => c,
            None => {
                // Released on error, or if this future is dropped mid-connect.
                let mut slot = Reservation {
                    open: &self.open,
                    armed: true,
                };
                let caps = CapabilityFlags::from_bits_truncate(key.caps);
                let _connecting =
                    tokio::time::timeout(self.connect_timeout, self.connecting.acquire())
                        .await
                        .map_err(|_| BackendError::Timeout(self.connect_timeout))?
                        .map_err(|_| BackendError::Timeout(self.connect_timeout))?;
                let as_account = account.map(|a| a.on(&self.cfg));
                let cfg = as_account.as_ref().unwrap_or(&self.cfg);
                let c = BackendConn::connect(cfg, caps, key.ext, collation, self.connect_timeout)
                    .await?;
                slot.armed = false;
                *lock(&self.info) = Some(c.server.clone());
                c
            }
        };
        Ok(Lease {
            conn: Some(conn),
            key,
            reusable: true,
            permit: Some(permit),
            pool: self.clone(),
        })
    }

    fn put_back(
        self: &Arc<Self>,
        key: PoolKey,
        mut conn: BackendConn,
        permit: OwnedSemaphorePermit,
    ) {
        let pool = self.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        handle.spawn(async move {
            let ok = tokio::time::timeout(pool.connect_timeout, async {
                conn.reset().await?;
                match &pool.cfg.database {
                    Some(db) if conn.current_db.as_ref() != Some(db) => conn.init_db(db).await,
                    _ => Ok(()),
                }
            })
            .await
            .is_ok_and(|r| r.is_ok());
            let db_ok = conn.current_db == pool.cfg.database;
            let opt_ok = conn.multi_statements
                == conn.caps.contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS);
            if ok && db_ok && opt_ok {
                lock(&pool.idle).push((key, conn));
            } else {
                pool.open.fetch_sub(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
}

impl Lease {
    pub fn conn(&mut self) -> &mut BackendConn {
        // The connection is only taken out in Drop.
        self.conn
            .as_mut()
            .expect("lease holds a connection until dropped")
    }

    pub fn server(&self) -> &ServerInfo {
        &self.conn.as_ref().expect("lease holds a connection").server
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        if self.reusable {
            self.pool.put_back(self.key, conn, permit);
        } else {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
            drop(conn);
            drop(permit);
        }
    }
}

/// A slot in `open` counted for a connection being opened.
struct Reservation<'a> {
    open: &'a AtomicUsize,
    armed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent
    // (plain pushes and pops), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
