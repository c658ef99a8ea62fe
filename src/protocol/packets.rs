//! Small packet encoders and the few decoders Tandem needs.
//!
//! Tandem relays backend packets as bytes; it only *reads* what it must know
//! (status flags, affected rows, insert id, error code) and only *writes* the
//! packets it answers itself (handshake result, its own errors).

use mysql_common::constants::{CapabilityFlags, StatusFlags};

/// An error Tandem answers with itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrSpec {
    pub code: u16,
    pub state: &'static str,
    pub message: String,
}

impl ErrSpec {
    pub fn new(code: u16, state: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            state,
            message: message.into(),
        }
    }
    /// ER_ACCESS_DENIED_ERROR.
    pub fn access_denied(user: &str, host: &str, using_password: bool) -> Self {
        Self::new(
            1045,
            "28000",
            format!(
                "Access denied for user '{user}'@'{host}' (using password: {})",
                if using_password { "YES" } else { "NO" }
            ),
        )
    }
    /// ER_UNKNOWN_COM_ERROR.
    pub fn unknown_command() -> Self {
        Self::new(1047, "08S01", "Unknown command")
    }
    /// ER_CON_COUNT_ERROR.
    pub fn too_many_connections() -> Self {
        Self::new(1040, "08004", "Too many connections")
    }
    /// ER_NO_SUCH_THREAD.
    pub fn no_such_thread(id: u64) -> Self {
        Self::new(1094, "HY000", format!("Unknown thread id: {id}"))
    }
    /// ER_UNKNOWN_STMT_HANDLER.
    pub fn unknown_stmt(id: u32, what: &str) -> Self {
        Self::new(
            1243,
            "HY000",
            format!("Unknown prepared statement handler ({id}) given to {what}"),
        )
    }
    /// The backend could not be reached or was lost (CR_SERVER_LOST's code,
    /// which drivers already treat as "reconnect").
    pub fn backend_lost(detail: impl std::fmt::Display) -> Self {
        Self::new(
            2013,
            "HY000",
            format!("Lost connection to backend during query ({detail})"),
        )
    }
    pub fn backend_unavailable(name: &str, detail: impl std::fmt::Display) -> Self {
        Self::new(
            2003,
            "HY000",
            format!("Tandem: backend '{name}' is unavailable: {detail}"),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(9 + self.message.len());
        p.push(0xFF);
        p.extend_from_slice(&self.code.to_le_bytes());
        p.push(b'#');
        let state = self.state.as_bytes();
        let mut st = [b'H', b'Y', b'0', b'0', b'0'];
        for (i, b) in state.iter().take(5).enumerate() {
            st[i] = *b;
        }
        p.extend_from_slice(&st);
        p.extend_from_slice(self.message.as_bytes());
        p
    }
}

/// An OK packet as Tandem writes it (no info, no session state).
pub fn ok_packet(affected: u64, insert_id: u64, status: StatusFlags, warnings: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.push(0x00);
    put_lenenc(&mut p, affected);
    put_lenenc(&mut p, insert_id);
    p.extend_from_slice(&status.bits().to_le_bytes());
    p.extend_from_slice(&warnings.to_le_bytes());
    p
}

pub fn put_lenenc(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if v < 1 << 16 {
        out.push(0xFC);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < 1 << 24 {
        out.push(0xFD);
        out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
    } else {
        out.push(0xFE);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Reads a length-encoded integer; returns (value, bytes used).
pub fn get_lenenc(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    match first {
        0..=250 => Some((first as u64, 1)),
        0xFC => Some((
            u16::from_le_bytes(buf.get(1..3)?.try_into().ok()?) as u64,
            3,
        )),
        0xFD => {
            let b = buf.get(1..4)?;
            Some((b[0] as u64 | (b[1] as u64) << 8 | (b[2] as u64) << 16, 4))
        }
        0xFE => Some((u64::from_le_bytes(buf.get(1..9)?.try_into().ok()?), 9)),
        _ => None,
    }
}

/// What Tandem reads from an OK packet (or an OK-style EOF terminator).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

impl OkInfo {
    pub fn status_flags(&self) -> StatusFlags {
        StatusFlags::from_bits_truncate(self.status)
    }
}

/// Parses an OK packet (header 0x00 or 0xFE); None if malformed.
pub fn parse_ok(p: &[u8]) -> Option<OkInfo> {
    let mut at = 1;
    let (affected_rows, n) = get_lenenc(p.get(at..)?)?;
    at += n;
    let (last_insert_id, n) = get_lenenc(p.get(at..)?)?;
    at += n;
    let status = u16::from_le_bytes(p.get(at..at + 2)?.try_into().ok()?);
    let warnings = p
        .get(at + 2..at + 4)
        .map(|w| u16::from_le_bytes([w[0], w[1]]))
        .unwrap_or(0);
    Some(OkInfo {
        affected_rows,
        last_insert_id,
        status,
        warnings,
    })
}

/// Parses a classic EOF packet (0xFE, warnings, status).
pub fn parse_eof(p: &[u8]) -> Option<OkInfo> {
    let warnings = u16::from_le_bytes(p.get(1..3)?.try_into().ok()?);
    let status = u16::from_le_bytes(p.get(3..5)?.try_into().ok()?);
    Some(OkInfo {
        status,
        warnings,
        ..Default::default()
    })
}

/// Error code of an ERR packet.
pub fn err_code(p: &[u8]) -> u16 {
    p.get(1..3)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

/// Human-readable message of an ERR packet (for logs).
pub fn err_message(p: &[u8]) -> String {
    let rest = p.get(3..).unwrap_or_default();
    let msg = if rest.first() == Some(&b'#') {
        rest.get(6..).unwrap_or_default()
    } else {
        rest
    };
    String::from_utf8_lossy(msg).into_owned()
}

/// The capability flags Tandem can honour towards clients. Anything outside
/// this set changes the wire format or needs a feature Tandem does not have
/// (TLS, compression, query attributes), so it is never advertised.
pub fn supported_client_caps() -> CapabilityFlags {
    use CapabilityFlags as C;
    C::CLIENT_LONG_PASSWORD
        | C::CLIENT_FOUND_ROWS
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_CONNECT_WITH_DB
        | C::CLIENT_LOCAL_FILES
        | C::CLIENT_IGNORE_SPACE
        | C::CLIENT_PROTOCOL_41
        | C::CLIENT_INTERACTIVE
        | C::CLIENT_IGNORE_SIGPIPE
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_CONNECT_ATTRS
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | C::CLIENT_SESSION_TRACK
        | C::CLIENT_DEPRECATE_EOF
}

/// Flags that change how the backend formats responses or behaves for the
/// session; a pooled backend connection must have been opened with exactly
/// the client's choice of these for byte-for-byte relay to be correct.
pub fn backend_key_caps() -> CapabilityFlags {
    use CapabilityFlags as C;
    C::CLIENT_FOUND_ROWS
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_LOCAL_FILES
        | C::CLIENT_IGNORE_SPACE
        | C::CLIENT_INTERACTIVE
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_SESSION_TRACK
        | C::CLIENT_DEPRECATE_EOF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips() {
        for v in [
            0u64,
            250,
            251,
            65535,
            65536,
            (1 << 24) - 1,
            1 << 24,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_lenenc(&mut b, v);
            assert_eq!(get_lenenc(&b), Some((v, b.len())), "{v}");
        }
        assert_eq!(get_lenenc(&[0xFC, 1]), None);
        assert_eq!(get_lenenc(&[0xFF]), None);
    }

    #[test]
    fn ok_packet_parses_back() {
        let p = ok_packet(300, 70000, StatusFlags::SERVER_STATUS_IN_TRANS, 2);
        let ok = parse_ok(&p).unwrap();
        assert_eq!(ok.affected_rows, 300);
        assert_eq!(ok.last_insert_id, 70000);
        assert_eq!(ok.status, StatusFlags::SERVER_STATUS_IN_TRANS.bits());
        assert_eq!(ok.warnings, 2);
        assert_eq!(parse_ok(&[0x00, 0xFC]), None);
    }

    #[test]
    fn err_packet_layout() {
        let p = ErrSpec::unknown_command().encode();
        assert_eq!(p[0], 0xFF);
        assert_eq!(err_code(&p), 1047);
        assert_eq!(&p[3..9], b"#08S01");
        assert_eq!(err_message(&p), "Unknown command");
    }
}
