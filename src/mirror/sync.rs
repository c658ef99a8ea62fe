//! How verify and backfill see the running mirror, so a difference caused by
//! a write still in flight is never reported (or "repaired") as real.
//!
//! The one question they ask is "has the secondary applied every write that
//! committed on the primary before now?" ([`MirrorSync::settle`]). It is
//! answerable because a transaction's intent is durable, with its LSN,
//! before its COMMIT is forwarded: read the journaled LSN now, wait until
//! the applied LSN reaches it. The server's periodic verify asks its own
//! [`Mirror`]; the `tandem verify` / `tandem backfill` processes ask the
//! running server over the admin API (`GET /mirror/position`).

use super::runtime::{Mirror, Position};
use crate::config::Config;
use crate::config::Secret;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Where the mirror's position comes from.
#[derive(Clone)]
pub enum MirrorSync {
    /// No Tandem serves this config (its admin address refuses connections)
    /// or it does not mirror: no write is in flight through Tandem.
    Idle,
    /// Tandem may be running but cannot be asked (no `admin` in the
    /// config): differences are re-checked a few times, not proven.
    Unknown,
    /// Inside the server (periodic verify).
    InProcess(Arc<Mirror>),
    /// A running server's admin API (and its token, from the same config).
    Admin(SocketAddr, Option<Secret>),
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("admin API {0}: {1}")]
    Http(SocketAddr, String),
    #[error("the mirror's applier has stopped: {0}")]
    Stopped(String),
    #[error("the mirror did not apply the writes in flight within {0:?} (lag {1:.1}s)")]
    Timeout(Duration, f64),
}

impl MirrorSync {
    /// Finds the server running `cfg`, if any, through its admin address.
    pub async fn discover(cfg: &Config) -> MirrorSync {
        let Some(addr) = cfg.admin else {
            return MirrorSync::Unknown;
        };
        let token = cfg.admin_token.clone();
        match http(addr, token.as_ref(), "GET", "/mirror/position", None).await {
            Ok((200, _)) => MirrorSync::Admin(addr, token),
            // Running, not mirroring: nothing in flight.
            Ok((404, _)) => MirrorSync::Idle,
            Ok((code, _)) => {
                tracing::warn!(%addr, code, "unexpected admin answer; cannot see the mirror");
                MirrorSync::Unknown
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => MirrorSync::Idle,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "admin API unreachable; cannot see the mirror");
                MirrorSync::Unknown
            }
        }
    }

    /// One line for reports and logs.
    pub fn describe(&self) -> String {
        match self {
            MirrorSync::Idle => "no running Tandem mirrors this config: nothing in flight".into(),
            MirrorSync::Unknown => "cannot see Tandem's mirror (no reachable `admin` address): differences re-checked 3 times, not proven".into(),
            MirrorSync::InProcess(_) => "in-flight writes settled with the running mirror".into(),
            MirrorSync::Admin(a, _) => format!("in-flight writes settled with the running mirror (admin {a})"),
        }
    }

    /// True when [`settle`](Self::settle) proves what it says.
    pub fn exact(&self) -> bool {
        !matches!(self, MirrorSync::Unknown)
    }

    /// The mirror's position, when there is a mirror to ask. The caller
    /// waits for writes to be applied (`Mirror::position_to_wait_on`).
    pub async fn position(&self) -> Result<Option<Position>, SyncError> {
        match self {
            MirrorSync::Idle | MirrorSync::Unknown => Ok(None),
            MirrorSync::InProcess(m) => Ok(Some(m.position_to_wait_on())),
            MirrorSync::Admin(addr, token) => {
                let (code, body) = http(*addr, token.as_ref(), "GET", "/mirror/position", None)
                    .await
                    .map_err(|e| SyncError::Http(*addr, e.to_string()))?;
                match code {
                    200 => serde_json::from_slice(&body)
                        .map(Some)
                        .map_err(|e| SyncError::Http(*addr, format!("bad position: {e}"))),
                    404 => Ok(None),
                    c => Err(SyncError::Http(*addr, format!("HTTP {c}"))),
                }
            }
        }
    }

    /// Waits until every write that committed on the primary before this
    /// call has been applied on the secondary. Returns at once where there
    /// is no mirror to wait for.
    pub async fn settle(&self, timeout: Duration) -> Result<(), SyncError> {
        let Some(start) = self.position().await? else {
            return Ok(());
        };
        let target = start.journaled_lsn;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pos = start;
        loop {
            if let Some(why) = pos.applier_stopped {
                return Err(SyncError::Stopped(why));
            }
            if pos.applied_lsn >= target {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SyncError::Timeout(timeout, pos.lag_seconds));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            match self.position().await? {
                Some(p) => pos = p,
                None => return Ok(()),
            }
        }
    }

    /// Whether a DDL journaled so far is not applied on the secondary yet
    /// (false where there is no mirror to ask).
    pub async fn ddl_pending(&self) -> Result<bool, SyncError> {
        let Some(pos) = self.position().await? else {
            return Ok(false);
        };
        if let Some(why) = pos.applier_stopped {
            return Err(SyncError::Stopped(why));
        }
        Ok(pos.applied_lsn < pos.ddl_lsn)
    }

    /// Waits, holding nothing, until every DDL journaled so far is applied
    /// on the secondary. A re-check calls it before taking primary locks,
    /// and asks [`ddl_pending`](Self::ddl_pending) after (a DDL journaled
    /// in between: the locks are let go and it waits again), so it never
    /// holds the primary's rows (and, through them, the table's metadata
    /// lock, on which the next DDL and then every session would queue)
    /// while a secondary ALTER runs.
    pub async fn wait_for_ddl(&self, timeout: Duration) -> Result<(), SyncError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.ddl_pending().await? {
            if tokio::time::Instant::now() >= deadline {
                let lag = self.position().await?.map_or(0.0, |p| p.lag_seconds);
                return Err(SyncError::Timeout(timeout, lag));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Clears the divergent mark of repaired tables: in the running server,
    /// or in `divergent.json` beside the journal when none runs (then
    /// nothing marks meanwhile).
    /// `before`: the position's `mark_seq` read before the pass that
    /// covered the tables began (marks made later stay).
    pub async fn clear_divergent(&self, tables: &[String], journal: &Path, before: Option<u64>) {
        match self {
            MirrorSync::InProcess(m) => {
                m.clear_divergent(tables, before);
            }
            MirrorSync::Admin(addr, token) => {
                let body = serde_json::json!({ "tables": tables, "before": before }).to_string();
                let path = "/mirror/divergent/clear";
                if let Err(e) = http(*addr, token.as_ref(), "POST", path, Some(body)).await {
                    tracing::warn!(error = %e, "could not clear divergent marks in the server");
                }
            }
            MirrorSync::Idle | MirrorSync::Unknown => {
                super::runtime::clear_divergent_file(journal, tables);
            }
        }
    }

    /// Hands a verify report to the running server for `/status`.
    pub async fn publish_verify(&self, report: &serde_json::Value) {
        if let MirrorSync::Admin(addr, token) = self {
            let body = Some(report.to_string());
            let _ = http(*addr, token.as_ref(), "POST", "/verify/report", body).await;
        }
    }
}

/// A one-shot HTTP/1.1 request to the admin API (loopback, small bodies).
async fn http(
    addr: SocketAddr,
    token: Option<&Secret>,
    method: &str,
    path: &str,
    body: Option<String>,
) -> std::io::Result<(u16, Bytes)> {
    admin_request(addr, token, method, path, body, Duration::from_secs(10)).await
}

/// A one-shot HTTP/1.1 request to a running Tandem's admin API, answered
/// within `timeout` (for `tandem status`, `tandem cutover` and the tools).
pub async fn admin_request(
    addr: SocketAddr,
    token: Option<&Secret>,
    method: &str,
    path: &str,
    body: Option<String>,
    timeout: Duration,
) -> std::io::Result<(u16, Bytes)> {
    let other = |e: hyper::Error| std::io::Error::other(e.to_string());
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(other)?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", t.expose()),
        );
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let fut = async {
        let resp = sender.send_request(req).await.map_err(other)?;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(other)?.to_bytes();
        Ok((code, bytes))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "admin API timed out"))?
}
