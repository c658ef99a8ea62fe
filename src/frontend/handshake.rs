//! Handshake v10 and authentication of proxy users (mysql_native_password,
//! with an auth switch for clients that start with another plugin).

use crate::backend::ServerInfo;
use crate::protocol::auth::{new_salt, NATIVE_PLUGIN, SALT_LEN, SHA2_PLUGIN};
use crate::protocol::packets::supported_client_caps;
use crate::protocol::{ErrSpec, ProtocolError, Wire};
use crate::state::Shared;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use std::net::SocketAddr;

/// Largest handshake-phase packet accepted from a client.
const MAX_AUTH_PACKET: usize = 64 * 1024;

/// A client that proved its identity.
pub(super) struct Authenticated {
    pub user: String,
    pub caps: CapabilityFlags,
    /// MariaDB extended capabilities the client chose (of those offered).
    pub ext_caps: u32,
    pub collation: u8,
    pub db: Option<String>,
    pub salt: [u8; SALT_LEN],
    /// Sequence id for the server's next packet (the OK or ERR).
    pub seq: u8,
}

/// Capabilities Tandem offers: what it supports, limited to what the primary
/// supports (so every offered flag can be honoured by the backend).
pub(super) fn offered_caps(server: &ServerInfo) -> CapabilityFlags {
    use CapabilityFlags as C;
    (supported_client_caps() & server.caps)
        | C::CLIENT_PROTOCOL_41
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_CONNECT_WITH_DB
}

/// MariaDB extended capabilities Tandem can relay: extended metadata
/// (column definitions carry `format=json`, the geometry type), relayed
/// byte for byte, when the primary offers it. Progress reports, bulk
/// execute and metadata caching change the commands or responses in ways
/// the relay and the mirror do not decode, so they are not offered.
pub(super) fn offered_ext_caps(server: &ServerInfo, offered: CapabilityFlags) -> u32 {
    if offered.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
        return 0;
    }
    server.ext_caps & crate::backend::MARIADB_EXTENDED_METADATA
}

/// Sends an ERR instead of a greeting (as servers do when they refuse a
/// connection) and closes.
pub(super) async fn refuse(stream: tokio::net::TcpStream, err: ErrSpec) {
    let mut wire = Wire::new(stream);
    let mut seq = 0;
    let _ = wire.send_packet(&mut seq, &err.encode()).await;
    wire.shutdown().await;
}

/// Greets the client and authenticates it. `Ok(None)`: authentication failed
/// and the client was told so.
pub(super) async fn greet_and_auth(
    client: &mut Wire,
    shared: &Shared,
    conn_id: u32,
    server: &ServerInfo,
    peer: SocketAddr,
) -> Result<Option<Authenticated>, ProtocolError> {
    let salt = new_salt();
    let tls = shared.config.load().tls.clone();
    let mut offered = offered_caps(server);
    if tls.is_some() {
        offered |= CapabilityFlags::CLIENT_SSL;
    }
    let mut scramble_2 = salt[8..].to_vec();
    scramble_2.push(0);
    let greeting = HandshakePacket::new(
        10,
        server.version.clone(),
        conn_id,
        salt[..8].try_into().unwrap_or([1; 8]),
        Some(scramble_2),
        offered,
        server.collation,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(shared.config.load().auth_plugin.name().as_bytes()),
    );
    let mut buf = Vec::with_capacity(128);
    greeting.serialize(&mut buf);
    // MariaDB's extended capabilities, in the reserved bytes' last 4 (the
    // primary is MariaDB: it does not set CLIENT_MYSQL, nor does Tandem).
    let offered_ext = offered_ext_caps(server, offered);
    if let Some(at) = crate::backend::greeting_reserved_at(&buf) {
        if let Some(b) = buf.get_mut(at + 6..at + 10) {
            b.copy_from_slice(&offered_ext.to_le_bytes());
        }
    }
    let mut seq = 0;
    client.send_packet(&mut seq, &buf).await?;

    let mut resp = client.read_packet(Some(seq), MAX_AUTH_PACKET).await?;
    seq = resp.last_seq.wrapping_add(1);
    let caps_of = |p: &[u8]| {
        p.get(..4)
            .map(|b| {
                CapabilityFlags::from_bits_truncate(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            })
            .ok_or(ProtocolError::Malformed("short handshake response"))
    };
    let mut client_caps = caps_of(&resp.payload)?;
    if client_caps.contains(CapabilityFlags::CLIENT_SSL) {
        let Some(tls) = tls.as_ref() else {
            // Not offered; a client asking anyway cannot be served in clear text.
            let err = ErrSpec::new(1043, "08S01", "Tandem does not offer TLS on this listener");
            client.send_packet(&mut seq, &err.encode()).await?;
            return Ok(None);
        };
        // An SSLRequest: TLS, then the real handshake response inside it.
        client
            .accept_tls(tls.config.clone())
            .await
            .map_err(ProtocolError::Io)?;
        resp = client.read_packet(Some(seq), MAX_AUTH_PACKET).await?;
        seq = resp.last_seq.wrapping_add(1);
        client_caps = caps_of(&resp.payload)?;
    }
    if !client_caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        let err = ErrSpec::new(1043, "08S01", "Bad handshake: protocol 4.1 is required");
        client.send_packet(&mut seq, &err.encode()).await?;
        return Ok(None);
    }
    let hs = HandshakeResponse::deserialize((), &mut ParseBuf(&resp.payload))
        .map_err(|_| ProtocolError::Malformed("handshake response"))?;
    let user = String::from_utf8_lossy(hs.user()).into_owned();
    let plugin = hs
        .auth_plugin()
        .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
        .unwrap_or_else(|| NATIVE_PLUGIN.to_string());
    let db = hs
        .db_name()
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).into_owned());
    let collation = hs.collation();
    let caps = client_caps & offered;
    let ext_caps = if client_caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
        0
    } else {
        resp.payload
            .get(28..32)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            & offered_ext
    };

    let ok = verify(
        client,
        shared,
        &user,
        &plugin,
        hs.scramble_buf(),
        &salt,
        &mut seq,
    )
    .await?;
    if !ok {
        shared.metrics.auth_failures.inc();
        let using_password = !hs.scramble_buf().is_empty();
        let err = ErrSpec::access_denied(&user, &peer.ip().to_string(), using_password);
        client.send_packet(&mut seq, &err.encode()).await?;
        return Ok(None);
    }
    if !client.is_tls() {
        let cfg = shared.config.load();
        let refused = if cfg.tls.as_ref().is_some_and(|t| t.require) {
            // As MySQL answers under require_secure_transport.
            Some(ErrSpec::new(
                3159,
                "HY000",
                "Connections using insecure transport are prohibited while --require_secure_transport=ON.",
            ))
        } else if cfg.users_require_tls.contains(&user) {
            // As the server answers a user created with REQUIRE SSL.
            let using_password = !hs.scramble_buf().is_empty();
            Some(ErrSpec::access_denied(
                &user,
                &peer.ip().to_string(),
                using_password,
            ))
        } else {
            None
        };
        if let Some(err) = refused {
            shared.metrics.auth_failures.inc();
            client.send_packet(&mut seq, &err.encode()).await?;
            return Ok(None);
        }
    }
    Ok(Some(Authenticated {
        user,
        caps,
        ext_caps,
        collation,
        db,
        salt,
        seq,
    }))
}

/// Checks `user`'s credentials. A client that answered with
/// mysql_native_password or caching_sha2_password is served by that
/// plugin; any other (e.g. client_ed25519) is switched to the plugin the
/// config announces, with a fresh salt.
pub(super) async fn verify(
    client: &mut Wire,
    shared: &Shared,
    user: &str,
    plugin: &str,
    data: &[u8],
    salt: &[u8; SALT_LEN],
    seq: &mut u8,
) -> Result<bool, ProtocolError> {
    let cfg = shared.config.load();
    let stored = cfg.users.get(user).cloned();
    let (plugin, salt, data) = if plugin == NATIVE_PLUGIN || plugin == SHA2_PLUGIN {
        (plugin, *salt, data.to_vec())
    } else {
        let to = cfg.auth_plugin.name();
        let fresh = new_salt();
        let mut plugin_data = fresh.to_vec();
        plugin_data.push(0);
        let switch = AuthSwitchRequest::new(to.as_bytes(), plugin_data);
        let mut buf = Vec::new();
        switch.serialize(&mut buf);
        client.send_packet(seq, &buf).await?;
        let answer = client.read_packet(Some(*seq), MAX_AUTH_PACKET).await?;
        *seq = answer.last_seq.wrapping_add(1);
        (to, fresh, answer.payload)
    };
    if plugin == SHA2_PLUGIN {
        return super::sha2::authenticate(shared, client, user, stored.as_ref(), &salt, &data, seq)
            .await;
    }
    Ok(stored.is_some_and(|s| s.verify(&salt, &data)))
}
