//! One mirroring Tandem per database.
//!
//! Two Tandems mirroring the same primary database (two replicas started
//! with one config, say) would mix their commit markers in one
//! `commit_marker` (each one's clean-up deleting rows the other's in-doubt
//! resolution needs) and their applied positions in one
//! `apply_position`, and nothing would order their transactions against
//! each other on the secondary. So a mirror holds a named lock
//! (`GET_LOCK`, released by the server when the connection ends, crash
//! included) for the primary's and the secondary's database, each on a
//! connection of its own, for as long as it runs. Start-up fails with the
//! holder's connection id and host when another one holds either; an
//! unreachable secondary is locked as soon as it answers. A keeper task
//! pings the connections and takes the lock again after one was lost.
//!
//! A Tandem host that dies without closing its connections (power loss, a
//! network cut) would hold the lock until the server noticed, after
//! `wait_timeout` (8 hours by default). The lock connections therefore set
//! a short session `wait_timeout` (`HOLDER_IDLE_S`, several keeper
//! periods): the server closes a silent holder's connection, and with it
//! the lock, within that time, and a replacement Tandem can start.

use crate::config::BackendConfig;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How long start-up waits for a lock (a previous process's connection may
/// still be closing).
const ACQUIRE_WAIT_S: u32 = 5;
/// Keeper period.
const TICK: Duration = Duration::from_secs(5);
/// Session `wait_timeout` of a lock connection: the server ends it (and
/// releases the lock) after this long without a ping.
pub const HOLDER_IDLE_S: u32 = 30;

/// A connection for holding a lock (see `HOLDER_IDLE_S`).
async fn lock_opts(b: &BackendConfig) -> mysql_async::OptsBuilder {
    crate::backend::own_opts(b)
        .await
        .init(vec![format!("SET SESSION wait_timeout = {HOLDER_IDLE_S}")])
}

/// The lock's name for a backend's database.
pub fn lock_name(db: &str) -> String {
    named_lock("tandem_mirror:", db)
}

/// A named lock `prefix` + `db`: MariaDB's names are at most 64 characters
/// and server-wide, so a longer one carries a hash of the database name.
pub fn named_lock(prefix: &str, db: &str) -> String {
    let name = format!("{prefix}{db}");
    if name.len() <= 64 {
        name
    } else {
        format!("{prefix}{:016x}", xxhash_rust::xxh3::xxh3_64(db.as_bytes()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "another Tandem mirrors database {db} on backend {backend}: lock '{name}' is held by {holder}. \
         Only one Tandem may mirror a database (commit markers and applied positions would mix). \
         If that process is gone, the server drops its lock after {idle} s without a ping \
         (or end its connection on {backend} with KILL); then start again",
        idle = HOLDER_IDLE_S
    )]
    Held {
        backend: String,
        db: String,
        name: String,
        holder: String,
    },
    #[error("backend {0}: {1}")]
    Backend(String, String),
}

/// One backend's lock: its connection, while held.
struct Held {
    backend: BackendConfig,
    name: String,
    conn: Option<Conn>,
}

/// The locks a running mirror holds; dropping it (or cancelling the keeper)
/// releases them.
pub struct MirrorGuard {
    held: Vec<Held>,
}

impl MirrorGuard {
    /// Takes the locks for `primary` (required) and `secondary` (when
    /// reachable; later otherwise).
    pub async fn acquire(
        primary: &BackendConfig,
        secondary: &BackendConfig,
        connect_timeout: Duration,
    ) -> Result<Self, GuardError> {
        let mut held = Vec::new();
        for (b, required) in [(primary, true), (secondary, false)] {
            let Some(db) = b.database.clone() else {
                continue;
            };
            let name = lock_name(&db);
            let conn = match lock(b, &name, ACQUIRE_WAIT_S, connect_timeout).await {
                Ok(c) => Some(c),
                Err(Failed::Held(holder)) => {
                    return Err(GuardError::Held {
                        backend: b.name.clone(),
                        db,
                        name,
                        holder,
                    })
                }
                Err(Failed::Unreachable(e)) if required => {
                    return Err(GuardError::Backend(b.name.clone(), e))
                }
                Err(Failed::Unreachable(_)) => {
                    warn!(backend = %b.name, "cannot reach it to lock its database for this mirror; retrying in the background");
                    None
                }
                Err(Failed::Error(e)) => return Err(GuardError::Backend(b.name.clone(), e)),
            };
            held.push(Held {
                backend: b.clone(),
                name,
                conn,
            });
        }
        Ok(MirrorGuard { held })
    }

    /// Keeps the locks until `stop`: pings each connection every few
    /// seconds; a lost one (or one never reached) is locked again.
    pub fn keep(mut self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = stop.cancelled() => return,
                }
                for h in &mut self.held {
                    h.tick().await;
                }
            }
        })
    }
}

impl Held {
    async fn tick(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            if let Ok(Ok(())) = tokio::time::timeout(TICK, c.query_drop("DO 0")).await {
                return;
            }
            warn!(backend = %self.backend.name, lock = %self.name, "lost the connection holding this mirror's lock; taking it again");
            self.conn = None;
        }
        match lock(&self.backend, &self.name, 0, TICK).await {
            Ok(c) => {
                info!(backend = %self.backend.name, lock = %self.name, "mirror lock held");
                self.conn = Some(c);
            }
            Err(Failed::Held(who)) => error!(
                backend = %self.backend.name,
                lock = %self.name,
                holder = %who,
                "another Tandem took this database's mirror lock: two Tandems mirror it, stop one"
            ),
            Err(Failed::Unreachable(_)) => {}
            Err(Failed::Error(e)) => {
                warn!(backend = %self.backend.name, error = %e, "mirror lock: GET_LOCK failed")
            }
        }
    }
}

/// Why [`lock`] holds no lock.
enum Failed {
    /// No connection within the timeout.
    Unreachable(String),
    /// Another connection holds it (who, see [`holder`]).
    Held(String),
    Error(String),
}

/// A connection of its own to `b` (see `HOLDER_IDLE_S`) that holds lock
/// `name`, waiting up to `wait_s` for it.
async fn lock(
    b: &BackendConfig,
    name: &str,
    wait_s: u32,
    connect_timeout: Duration,
) -> Result<Conn, Failed> {
    let mut c = match tokio::time::timeout(
        connect_timeout,
        crate::backend::own_conn(lock_opts(b).await),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(Failed::Unreachable(e.to_string())),
        Err(_) => return Err(Failed::Unreachable("connect timed out".into())),
    };
    match take(&mut c, name, wait_s).await {
        Ok(true) => Ok(c),
        Ok(false) => Err(Failed::Held(holder(&mut c, name).await)),
        Err(e) => Err(Failed::Error(e.to_string())),
    }
}

/// `GET_LOCK(name, wait)`: true when this connection holds it now.
async fn take(c: &mut Conn, name: &str, wait_s: u32) -> Result<bool, mysql_async::Error> {
    let got: Option<Option<i64>> = c
        .exec_first("SELECT GET_LOCK(?, ?)", (name, wait_s))
        .await?;
    Ok(got.flatten() == Some(1))
}

/// Who holds `name`: connection id, user, host and idle time, as far as
/// this user may see them.
async fn holder(c: &mut Conn, name: &str) -> String {
    type Holder = (Option<u64>, Option<String>, Option<String>, Option<i64>);
    let row: Result<Option<Holder>, _> = c
        .exec_first(
            "SELECT l.id, p.USER, p.HOST, p.TIME FROM (SELECT IS_USED_LOCK(?) AS id) l \
             LEFT JOIN information_schema.PROCESSLIST p ON p.ID = l.id",
            (name,),
        )
        .await;
    match row {
        Ok(Some((Some(id), user, host, time))) => {
            let mut s = format!("connection {id}");
            if let (Some(u), Some(h)) = (user, host) {
                s.push_str(&format!(" ({u}@{h})"));
            }
            if let Some(t) = time {
                // A live Tandem pings it every few seconds.
                s.push_str(&format!(", idle {t} s"));
            }
            s
        }
        _ => "a connection".to_string(),
    }
}
