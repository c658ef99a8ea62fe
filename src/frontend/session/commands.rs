//! The commands that are neither queries nor prepared statements: database
//! selection, options, reset, change of user, and KILL by connection id.

use super::{Session, SessionError};
use crate::backend::BackendError;
use crate::frontend::handshake;
use crate::protocol::command::*;
use crate::protocol::packets::ok_packet;
use crate::protocol::response::Expect;
use crate::protocol::{ErrSpec, ProtocolError};
use crate::router::{lexer, rename};
use mysql_common::constants::{CapabilityFlags, StatusFlags};

impl Session<'_> {
    /// COM_INIT_DB: the other role's database selects the backend's own.
    pub(super) async fn init_db(&mut self, payload: Vec<u8>, seq: u8) -> Result<(), SessionError> {
        let asked = String::from_utf8_lossy(&payload[1..]).into_owned();
        let db = rename::map_db(
            &self.link.shared.config.load(),
            &asked,
            self.link.binding.backend(),
        );
        let payload = if db == asked {
            payload
        } else {
            let mut p = vec![COM_INIT_DB];
            p.extend_from_slice(db.as_bytes());
            p
        };
        let summary = self.link.forward(&payload, seq, Expect::Single).await?;
        if summary.error.is_none() {
            self.link.binding.conn().current_db = Some(db);
        }
        Ok(())
    }

    /// COM_SET_OPTION: the multi-statement option, kept for a move.
    pub(super) async fn set_option(
        &mut self,
        payload: Vec<u8>,
        seq: u8,
    ) -> Result<(), SessionError> {
        let summary = self.link.forward(&payload, seq, Expect::Single).await?;
        if summary.error.is_none() {
            let on = payload.get(1..3) == Some(&[0, 0]);
            self.link.binding.conn().multi_statements = on;
        }
        Ok(())
    }

    /// COM_RESET_CONNECTION: the session starts afresh, on the server and
    /// in Tandem.
    pub(super) async fn reset_connection(
        &mut self,
        payload: Vec<u8>,
        seq: u8,
    ) -> Result<(), SessionError> {
        let summary = self.link.forward(&payload, seq, Expect::Single).await?;
        if summary.error.is_none() {
            self.stmts.clear();
            self.capture.reset();
            self.replay.reset();
            self.link.table_locks = false;
        }
        Ok(())
    }

    /// COM_PROCESS_KILL: KILL CONNECTION by Tandem's id.
    pub(super) async fn process_kill(
        &mut self,
        payload: &[u8],
        seq: u8,
    ) -> Result<(), SessionError> {
        let id = payload
            .get(1..5)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(ProtocolError::Malformed("short COM_PROCESS_KILL"))?;
        let kill = lexer::Kill {
            query_only: false,
            id: id.into(),
        };
        self.kill(kill, seq).await
    }

    pub(super) async fn change_user(
        &mut self,
        payload: Vec<u8>,
        mut seq: u8,
    ) -> Result<(), SessionError> {
        let cu = parse_change_user(&payload, self.link.caps)
            .ok_or(ProtocolError::Malformed("COM_CHANGE_USER"))?;
        let salt = self.salt;
        let ok = handshake::verify(
            &mut self.link.client,
            self.link.shared,
            &cu.user,
            &cu.plugin,
            &cu.auth,
            &salt,
            &mut seq,
        )
        .await?;
        if !ok {
            self.link.shared.metrics.auth_failures.inc();
            let err =
                ErrSpec::access_denied(&cu.user, &self.peer.ip().to_string(), !cu.auth.is_empty());
            self.link
                .client
                .send_packet(&mut seq, &err.encode())
                .await?;
            // As MySQL does: a failed change of user ends the connection.
            return Err(ProtocolError::Closed.into());
        }
        // Another database account: a connection logged in as it.
        let cfg = self.link.shared.config.load_full();
        let account = cfg.accounts.get(&cu.user);
        if cfg.accounts.get(&self.user) != account {
            let backend = self.link.binding.backend().to_string();
            let pool = self.link.shared.pools.load().get(&backend).cloned();
            let lease = match pool {
                Some(pool) => {
                    pool.acquire(
                        self.link.caps,
                        self.link.ext_caps,
                        self.link.collation,
                        account,
                    )
                    .await
                }
                None => Err(BackendError::Protocol(ProtocolError::Malformed(
                    "the backend has no connection pool",
                ))),
            };
            match lease {
                Ok(lease) => {
                    self.link.binding.rebind(lease, &backend);
                }
                Err(e) => {
                    let err = match e {
                        BackendError::Server { code, message } => {
                            ErrSpec::new(code, "28000", message)
                        }
                        e => ErrSpec::backend_unavailable(&backend, e),
                    };
                    self.link
                        .client
                        .send_packet(&mut seq, &err.encode())
                        .await?;
                    return Err(ProtocolError::Closed.into());
                }
            }
        }
        // A new user starts with a fresh session, as on a direct connection.
        self.link.binding.set_reusable(false);
        let conn = self.link.binding.conn();
        conn.reset().await?;
        if let Some(db) = &cu.db {
            if let Err(e) = conn.init_db(db).await {
                self.link.binding.set_reusable(true);
                let (code, message) = match e {
                    BackendError::Server { code, message } => (code, message),
                    other => return Err(other.into()),
                };
                let err = ErrSpec::new(code, "42000", message);
                self.link
                    .client
                    .send_packet(&mut seq, &err.encode())
                    .await?;
                return Ok(());
            }
        }
        if let Some(collation) = cu.collation.filter(|c| *c != conn.collation as u16) {
            let c = mysql_common::collations::Collation::resolve(collation.into());
            let sql = format!("SET NAMES {} COLLATE {}", c.charset(), c.collation());
            conn.query(&sql).await?;
        }
        self.link.binding.set_reusable(true);
        self.stmts.clear();
        self.capture.reset();
        self.replay.sets.clear();
        self.link.table_locks = false;
        self.replay.named_locks = 0;
        self.user = cu.user;
        self.link.status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        self.link
            .client
            .send_packet(&mut seq, &ok_packet(0, 0, self.link.status, 0))
            .await?;
        Ok(())
    }
}

struct ChangeUser {
    user: String,
    auth: Vec<u8>,
    db: Option<String>,
    collation: Option<u16>,
    plugin: String,
}

/// COM_CHANGE_USER: user NUL, auth (u8 length), db NUL, [collation u16],
/// [plugin NUL], [attributes].
fn parse_change_user(p: &[u8], caps: CapabilityFlags) -> Option<ChangeUser> {
    let mut rest = p.get(1..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let user = String::from_utf8_lossy(&rest[..nul]).into_owned();
    rest = &rest[nul + 1..];
    let len = *rest.first()? as usize;
    let auth = rest.get(1..1 + len)?.to_vec();
    rest = &rest[1 + len..];
    let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let db = Some(String::from_utf8_lossy(&rest[..nul]).into_owned()).filter(|d| !d.is_empty());
    rest = rest.get(nul + 1..).unwrap_or_default();
    let mut collation = None;
    let mut plugin = crate::protocol::auth::NATIVE_PLUGIN.to_string();
    if rest.len() >= 2 {
        collation = Some(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
            let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            if nul > 0 {
                plugin = String::from_utf8_lossy(&rest[..nul]).into_owned();
            }
        }
    }
    Some(ChangeUser {
        user,
        auth,
        db,
        collation,
        plugin,
    })
}
