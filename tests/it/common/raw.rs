//! A minimal raw MySQL client for tests that need the bytes on the wire:
//! byte-for-byte comparison against a direct connection, auth switches,
//! malformed packets.

use mysql_common::constants::CapabilityFlags;
use mysql_common::scramble::{scramble_native, scramble_sha256};
use tandem::protocol::response::{Expect, Step, Tracker};
use tandem::protocol::wire::write_frames;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawClient {
    pub stream: TcpStream,
    pub caps: CapabilityFlags,
    pub handshake: Vec<u8>,
}

pub fn default_caps(deprecate_eof: bool) -> CapabilityFlags {
    use CapabilityFlags as C;
    let mut c = C::CLIENT_PROTOCOL_41
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_LONG_PASSWORD
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_CONNECT_WITH_DB
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
    if deprecate_eof {
        c |= C::CLIENT_DEPRECATE_EOF;
    }
    c
}

/// Reads one frame: (seq, payload).
pub async fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await?;
    let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await?;
    Ok((h[3], p))
}

/// Reads one logical packet (joining 0xFFFFFF continuation frames).
pub async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let (mut seq, mut payload) = read_frame(s).await?;
    let mut last = payload.len();
    while last == 0xFF_FFFF {
        let (s2, more) = read_frame(s).await?;
        seq = s2;
        last = more.len();
        payload.extend_from_slice(&more);
    }
    Ok((seq, payload))
}

pub async fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::new();
    let mut seq = seq;
    write_frames(&mut out, &mut seq, payload);
    s.write_all(&out).await
}

impl RawClient {
    /// Connects and logs in with mysql_native_password (or the given plugin
    /// name, answering one auth switch if the server asks).
    pub async fn connect(
        addr: (&str, u16),
        user: &str,
        password: &str,
        db: Option<&str>,
        caps: CapabilityFlags,
        plugin: &str,
    ) -> Result<Self, (u16, String)> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| (0, e.to_string()))?;
        let (_, hs) = read_packet(&mut stream)
            .await
            .map_err(|e| (0, e.to_string()))?;
        if hs[0] == 0xFF {
            return Err(err_of(&hs));
        }
        // Parse nonce from the handshake: version NUL, id(4), s1(8), 0, caps(2),
        // coll(1), status(2), caps(2), len(1), reserved(10), s2.
        let nul = hs[1..].iter().position(|b| *b == 0).unwrap() + 1;
        let mut at = nul + 1 + 4;
        let mut nonce = hs[at..at + 8].to_vec();
        at += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
        let s2_end = hs[at..].iter().position(|b| *b == 0).unwrap() + at;
        nonce.extend_from_slice(&hs[at..s2_end]);
        let mut caps = caps;
        if db.is_none() {
            caps.remove(CapabilityFlags::CLIENT_CONNECT_WITH_DB);
        }
        let auth = scramble(plugin, &nonce, password);
        let mut p = Vec::new();
        p.extend_from_slice(&caps.bits().to_le_bytes());
        p.extend_from_slice(&(64u32 << 20).to_le_bytes());
        p.push(45); // utf8mb4_general_ci
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        p.push(auth.len() as u8);
        p.extend_from_slice(&auth);
        if let Some(db) = db {
            p.extend_from_slice(db.as_bytes());
            p.push(0);
        }
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        write_packet(&mut stream, 1, &p)
            .await
            .map_err(|e| (0, e.to_string()))?;
        loop {
            let (seq, r) = read_packet(&mut stream)
                .await
                .map_err(|e| (0, e.to_string()))?;
            match r[0] {
                0x00 => break,
                0xFF => return Err(err_of(&r)),
                0xFE => {
                    let rest = &r[1..];
                    let nul = rest.iter().position(|b| *b == 0).unwrap();
                    let plugin = String::from_utf8_lossy(&rest[..nul]).into_owned();
                    let mut n = rest[nul + 1..].to_vec();
                    if n.last() == Some(&0) {
                        n.pop();
                    }
                    nonce = n;
                    let auth = scramble(&plugin, &nonce, password);
                    write_packet(&mut stream, seq + 1, &auth)
                        .await
                        .map_err(|e| (0, e.to_string()))?;
                }
                0x01 => {} // caching_sha2 fast-auth notice; OK follows
                other => return Err((0, format!("unexpected auth packet {other:#x}"))),
            }
        }
        Ok(Self {
            stream,
            caps,
            handshake: hs,
        })
    }

    /// Logs `user` in to `addr` with mysql_native_password and the usual
    /// capabilities (CLIENT_DEPRECATE_EOF on), in database `db`.
    pub async fn login(addr: std::net::SocketAddr, user: &str, password: &str, db: &str) -> Self {
        Self::connect(
            (&addr.ip().to_string(), addr.port()),
            user,
            password,
            Some(db),
            default_caps(true),
            "mysql_native_password",
        )
        .await
        .unwrap()
    }

    /// Sends a command and returns every response frame's payload (seq ids
    /// checked to be consecutive from 1).
    pub async fn command(&mut self, payload: &[u8], expect: Expect) -> Vec<Vec<u8>> {
        write_packet(&mut self.stream, 0, payload).await.unwrap();
        self.read_response(expect, 1).await
    }

    pub async fn read_response(&mut self, expect: Expect, first_seq: u8) -> Vec<Vec<u8>> {
        let mut tracker = Tracker::new(
            expect,
            self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF),
        );
        let mut out = Vec::new();
        let mut want = first_seq;
        loop {
            let (seq, p) = read_packet(&mut self.stream).await.unwrap();
            assert_eq!(seq, want, "sequence ids must be consecutive");
            want = seq.wrapping_add(1);
            let step = tracker.feed(&p, p.len()).unwrap();
            out.push(p);
            match step {
                Step::More => {}
                Step::Done => return out,
                Step::LocalInfile => {
                    write_packet(&mut self.stream, want, &[]).await.unwrap();
                    want = want.wrapping_add(1);
                    tracker.infile_sent();
                }
            }
        }
    }

    pub async fn query(&mut self, sql: &str) -> Vec<Vec<u8>> {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        self.command(&p, Expect::ResultSet).await
    }

    /// True if the peer closed the connection (read returns EOF or reset).
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match tokio::time::timeout(std::time::Duration::from_secs(5), self.stream.read(&mut b))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => {
                // An error packet first, then the close.
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    self.stream.read_to_end(&mut rest),
                )
                .await;
                true
            }
            Err(_) => false,
        }
    }
}

fn scramble(plugin: &str, nonce: &[u8], password: &str) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    match plugin {
        "caching_sha2_password" => scramble_sha256(nonce, password.as_bytes())
            .unwrap()
            .to_vec(),
        _ => scramble_native(nonce, password.as_bytes())
            .unwrap()
            .to_vec(),
    }
}

pub fn err_of(p: &[u8]) -> (u16, String) {
    let code = u16::from_le_bytes([p[1], p[2]]);
    (code, String::from_utf8_lossy(&p[3..]).into_owned())
}
