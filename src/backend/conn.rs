//! One raw connection to a MySQL/MariaDB server, opened with exactly the
//! capability flags and collation the client session needs, so responses can
//! be relayed to that client byte for byte.

use super::BackendError;
use crate::config::BackendConfig;
use crate::protocol::drive::{drive, Consumer, Discard};
use crate::protocol::packets::{err_code, err_message, OkInfo};
use crate::protocol::response::Expect;
use crate::protocol::wire::Wire;
use crate::protocol::{command, ProtocolError};
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MyDeserialize;
use mysql_common::scramble::{scramble_native, scramble_sha256};
use std::time::{Duration, Instant};

/// Largest packet Tandem accepts from a backend during its own exchanges.
const MAX_CONTROL_PACKET: usize = 16 * 1024 * 1024;

/// What the server announced in its handshake.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: Vec<u8>,
    pub caps: CapabilityFlags,
    pub collation: u8,
    /// MariaDB's extended capabilities (0 from a MySQL server).
    pub ext_caps: u32,
}

/// MariaDB's extended capability: column definitions carry the type's
/// extended metadata (`json` format, geometry type).
pub const MARIADB_EXTENDED_METADATA: u32 = 1 << 3;

/// An authenticated backend connection.
pub struct BackendConn {
    pub wire: Wire,
    /// The server's thread id for this connection (what CONNECTION_ID() returns).
    pub thread_id: u32,
    /// Capability flags in effect on this connection.
    pub caps: CapabilityFlags,
    /// MariaDB extended capabilities in effect on this connection.
    pub ext_caps: u32,
    pub collation: u8,
    pub server: ServerInfo,
    /// Database currently selected, as far as Tandem knows.
    pub current_db: Option<String>,
    /// Multi-statement option as set by COM_SET_OPTION (starts per caps).
    pub multi_statements: bool,
    pub last_used: Instant,
}

impl BackendConn {
    /// Connects and authenticates. `want` are the client-chosen flags that
    /// shape responses; Tandem adds what it needs for the handshake itself.
    pub async fn connect(
        cfg: &BackendConfig,
        want: CapabilityFlags,
        want_ext: u32,
        collation: Option<u8>,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        tokio::time::timeout(timeout, Self::connect_inner(cfg, want, want_ext, collation))
            .await
            .map_err(|_| BackendError::Timeout(timeout))?
    }

    async fn connect_inner(
        cfg: &BackendConfig,
        want: CapabilityFlags,
        want_ext: u32,
        collation: Option<u8>,
    ) -> Result<Self, BackendError> {
        let stream = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
        let mut wire = Wire::new(stream);
        let hello = wire.read_packet(Some(0), MAX_CONTROL_PACKET).await?;
        if hello.payload.first() == Some(&0xFF) {
            return Err(BackendError::Server {
                code: err_code(&hello.payload),
                message: err_message(&hello.payload),
            });
        }
        let hs = parse_greeting(&hello.payload)?;
        let server = ServerInfo {
            version: hs.server_version_ref().to_vec(),
            caps: hs.capabilities(),
            collation: hs.default_collation(),
            ext_caps: greeting_ext_caps(&hello.payload),
        };
        if !server.caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return Err(BackendError::Unsupported(
                "server does not speak protocol 4.1".into(),
            ));
        }
        use CapabilityFlags as C;
        let mut caps = (want
            | C::CLIENT_PROTOCOL_41
            | C::CLIENT_SECURE_CONNECTION
            | C::CLIENT_PLUGIN_AUTH
            | C::CLIENT_LONG_PASSWORD
            | C::CLIENT_TRANSACTIONS
            | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
            & server.caps;
        caps.remove(C::CLIENT_SSL | C::CLIENT_COMPRESS | C::CLIENT_CONNECT_ATTRS);
        if cfg.tls.is_some() {
            if !server.caps.contains(C::CLIENT_SSL) {
                return Err(BackendError::Unsupported(format!(
                    "{}:{} does not offer TLS, and its URL asks for ssl-mode={}",
                    cfg.host,
                    cfg.port,
                    cfg.tls.as_ref().map_or("", |t| t.mode.as_str())
                )));
            }
            caps.insert(C::CLIENT_SSL);
        }
        if cfg.database.is_some() {
            caps.insert(C::CLIENT_CONNECT_WITH_DB);
        } else {
            caps.remove(C::CLIENT_CONNECT_WITH_DB);
        }
        let collation = collation.unwrap_or(server.collation);
        let mut plugin = hs
            .auth_plugin_name_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_else(|| "mysql_native_password".into());
        let mut nonce = hs.nonce();
        let password = cfg.password.as_bytes();

        let mut resp = Vec::with_capacity(128);
        resp.extend_from_slice(&caps.bits().to_le_bytes());
        resp.extend_from_slice(&(MAX_CONTROL_PACKET as u32).to_le_bytes());
        resp.push(collation);
        // MariaDB: the filler's last 4 bytes carry the extended
        // capabilities, when the client does not claim to be MySQL.
        let ext_caps = if caps.contains(C::CLIENT_LONG_PASSWORD) {
            0
        } else {
            want_ext & server.ext_caps
        };
        resp.extend_from_slice(&[0u8; 19]);
        resp.extend_from_slice(&ext_caps.to_le_bytes());
        let mut seq = hello.last_seq.wrapping_add(1);
        if let Some(tls) = &cfg.tls {
            // SSLRequest: the response's fixed part alone, then TLS, then
            // the whole response inside it.
            wire.send_packet(&mut seq, &resp).await?;
            wire.connect_tls(
                tls.config.clone(),
                crate::config::BackendTls::server_name(&cfg.host),
            )
            .await
            .map_err(|e| {
                BackendError::Io(std::io::Error::other(format!(
                    "TLS to {}:{} (ssl-mode={}): {e}",
                    cfg.host,
                    cfg.port,
                    tls.mode.as_str()
                )))
            })?;
        }
        resp.extend_from_slice(cfg.user.as_bytes());
        resp.push(0);
        let data = auth_data(&plugin, &nonce, password)?;
        crate::protocol::packets::put_lenenc(&mut resp, data.len() as u64);
        resp.extend_from_slice(&data);
        if let Some(db) = &cfg.database {
            resp.extend_from_slice(db.as_bytes());
            resp.push(0);
        }
        resp.extend_from_slice(plugin.as_bytes());
        resp.push(0);
        wire.send_packet(&mut seq, &resp).await?;

        loop {
            let p = wire.read_packet(Some(seq), MAX_CONTROL_PACKET).await?;
            seq = p.last_seq.wrapping_add(1);
            let payload = p.payload;
            match payload.first() {
                Some(0x00) => break,
                Some(0xFF) => {
                    return Err(BackendError::Server {
                        code: err_code(&payload),
                        message: err_message(&payload),
                    })
                }
                Some(0xFE) => {
                    // Auth switch: plugin name NUL, new nonce (NUL-terminated).
                    let rest = &payload[1..];
                    let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                    plugin = String::from_utf8_lossy(&rest[..nul]).into_owned();
                    let mut n = rest.get(nul + 1..).unwrap_or_default().to_vec();
                    // The scramble plugins' 20 bytes end in a NUL; ed25519's
                    // 32 random bytes do not (and may end in a zero byte).
                    if n.last() == Some(&0) && plugin != "client_ed25519" {
                        n.pop();
                    }
                    nonce = n;
                    let data = auth_data(&plugin, &nonce, password)?;
                    wire.send_packet(&mut seq, &data).await?;
                }
                Some(0x01) if plugin == "caching_sha2_password" => {
                    match payload.get(1) {
                        Some(3) => {} // fast auth succeeded; OK follows
                        Some(4) if wire.is_tls() => {
                            // Full auth over TLS: the password itself.
                            let mut pass = password.to_vec();
                            pass.push(0);
                            wire.send_packet(&mut seq, &pass).await?;
                        }
                        Some(4) => {
                            // Full auth without TLS: fetch the server's RSA key.
                            wire.send_packet(&mut seq, &[2]).await?;
                            let key = wire.read_packet(Some(seq), MAX_CONTROL_PACKET).await?;
                            seq = key.last_seq.wrapping_add(1);
                            let pem = key.payload.get(1..).unwrap_or_default();
                            let mut pass = password.to_vec();
                            pass.push(0);
                            for (i, b) in pass.iter_mut().enumerate() {
                                *b ^= nonce[i % nonce.len().max(1)];
                            }
                            let enc = mysql_common::crypto::encrypt(&pass, pem);
                            wire.send_packet(&mut seq, &enc).await?;
                        }
                        _ => return Err(ProtocolError::Malformed("auth more-data").into()),
                    }
                }
                _ => {
                    return Err(BackendError::Unsupported(format!(
                        "authentication exchange for plugin {plugin}"
                    )))
                }
            }
        }
        let thread_id = hs.connection_id();
        Ok(Self {
            wire,
            thread_id,
            caps,
            ext_caps,
            collation,
            server,
            current_db: cfg.database.clone(),
            multi_statements: caps.contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS),
            last_used: Instant::now(),
        })
    }

    pub fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// Runs one of Tandem's own commands and reads its whole response,
    /// discarding rows. Returns the final OK info or the server's error.
    pub async fn run(&mut self, payload: &[u8], expect: Expect) -> Result<OkInfo, BackendError> {
        self.run_tracked(payload, expect).await.map(|(ok, _)| ok)
    }

    /// COM_STMT_PREPARE of `sql`: the server's statement id.
    pub async fn prepare(&mut self, sql: &[u8]) -> Result<u32, BackendError> {
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(command::COM_STMT_PREPARE);
        p.extend_from_slice(sql);
        let (_, summary) = self.run_tracked(&p, Expect::Prepare).await?;
        summary
            .prepared
            .map(|(id, _, _)| id)
            .ok_or(BackendError::Protocol(
                crate::protocol::ProtocolError::Malformed(
                    "prepare answered without a statement id",
                ),
            ))
    }

    async fn run_tracked(
        &mut self,
        payload: &[u8],
        expect: Expect,
    ) -> Result<(OkInfo, crate::protocol::response::Summary), BackendError> {
        let summary = self.run_into(payload, expect, &mut Discard).await?;
        Ok((summary.last_ok.unwrap_or_default(), summary))
    }

    /// Sends one command and drives its response into `c`; the server's
    /// ERR becomes `BackendError::Server`.
    pub async fn run_into<C: Consumer>(
        &mut self,
        payload: &[u8],
        expect: Expect,
        c: &mut C,
    ) -> Result<crate::protocol::response::Summary, BackendError> {
        let mut seq = 0u8;
        self.wire.send_packet(&mut seq, payload).await?;
        let deprecate_eof = self.deprecate_eof();
        let driven = drive(&mut self.wire, expect, deprecate_eof, 1, c).await?;
        self.last_used = Instant::now();
        match driven.summary.error {
            Some(code) => Err(BackendError::Server {
                code,
                message: driven.error_message.unwrap_or_default(),
            }),
            None => Ok(driven.summary),
        }
    }

    pub async fn query(&mut self, sql: &str) -> Result<OkInfo, BackendError> {
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(command::COM_QUERY);
        p.extend_from_slice(sql.as_bytes());
        self.run(&p, Expect::ResultSet).await
    }

    pub async fn init_db(&mut self, db: &str) -> Result<(), BackendError> {
        let mut p = vec![command::COM_INIT_DB];
        p.extend_from_slice(db.as_bytes());
        self.run(&p, Expect::Single).await?;
        self.current_db = Some(db.to_string());
        Ok(())
    }

    /// COM_RESET_CONNECTION: rolls back, drops temporary tables, user
    /// variables and prepared statements, restores session variables.
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        self.run(&[command::COM_RESET_CONNECTION], Expect::Single)
            .await
            .map(|_| ())
    }
}

/// Parses a server greeting. mysql_common 0.37's parser overflows on an
/// auth-data length byte of 0x80 or more (a panic in debug builds), so that
/// byte is checked first: a backend that is not a sane MySQL server gets a
/// protocol error, never a panic.
pub fn parse_greeting(payload: &[u8]) -> Result<HandshakePacket<'_>, ProtocolError> {
    let bad = ProtocolError::Malformed("backend handshake");
    let version_end = payload
        .get(1..)
        .and_then(|rest| rest.iter().position(|b| *b == 0))
        .ok_or(ProtocolError::Malformed("backend handshake"))?;
    // protocol(1) version NUL, id(4), scramble(8), filler(1), caps(2),
    // collation(1), status(2), caps(2), then the auth-data length.
    let len_at = 1 + version_end + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2;
    if payload.get(len_at).is_some_and(|b| *b >= 0x80) {
        return Err(bad);
    }
    HandshakePacket::deserialize((), &mut ParseBuf(payload)).map_err(|_| bad)
}

/// Where a v10 greeting's reserved bytes start (after the auth-data
/// length): MariaDB puts its extended capabilities in the last 4 of them.
pub fn greeting_reserved_at(payload: &[u8]) -> Option<usize> {
    let version_end = payload.get(1..)?.iter().position(|b| *b == 0)?;
    Some(1 + version_end + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1)
}

/// MariaDB's extended capabilities from a greeting: present when the
/// server does not set CLIENT_MYSQL (CLIENT_LONG_PASSWORD); else 0.
fn greeting_ext_caps(payload: &[u8]) -> u32 {
    let Some(at) = greeting_reserved_at(payload) else {
        return 0;
    };
    let caps_at = at - 1 - 2 - 2 - 1 - 2;
    let mysql = payload
        .get(caps_at..caps_at + 2)
        .is_some_and(|b| b[0] & 1 == 1);
    match payload.get(at + 6..at + 10) {
        Some(b) if !mysql => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        _ => 0,
    }
}

fn auth_data(plugin: &str, nonce: &[u8], password: &[u8]) -> Result<Vec<u8>, BackendError> {
    // ed25519 signs the nonce even with an empty password.
    if password.is_empty() && plugin != "client_ed25519" {
        return Ok(Vec::new());
    }
    match plugin {
        "mysql_native_password" => Ok(scramble_native(nonce, password)
            .map(|s| s.to_vec())
            .unwrap_or_default()),
        "caching_sha2_password" => Ok(scramble_sha256(nonce, password)
            .map(|s| s.to_vec())
            .unwrap_or_default()),
        "client_ed25519" => {
            Ok(mysql_common::scramble::create_response_for_ed25519(password, nonce).to_vec())
        }
        "mysql_clear_password" => {
            let mut p = password.to_vec();
            p.push(0);
            Ok(p)
        }
        other => Err(BackendError::Unsupported(format!(
            "backend authentication plugin {other}"
        ))),
    }
}
