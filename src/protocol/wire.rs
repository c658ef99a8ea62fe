//! Framed MySQL packet I/O over one stream (plain TCP or TLS, `Stream`).
//!
//! A MySQL *frame* is a 3-byte little-endian length, a 1-byte sequence id and
//! up to 0xFFFFFF bytes of payload. A *packet* (logical) is one or more frames:
//! a frame of exactly 0xFFFFFF bytes is continued by the next one. `Wire`
//! reads frames into one buffer so that the relay can forward them as bytes,
//! and reassembles whole packets only where Tandem must read a command.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::Stream;

use super::ProtocolError;

/// Largest payload one frame can carry.
pub const MAX_FRAME: usize = 0xFF_FFFF;
/// Frame header size.
pub const HEADER: usize = 4;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// Flush the write buffer once it holds this much.
pub const FLUSH_AT: usize = 64 * 1024;

/// A stream with a read buffer (frames in arrival order) and a write buffer.
pub struct Wire {
    stream: Stream,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: Vec<u8>,
}

/// One logical packet read from the peer.
#[derive(Debug)]
pub struct Packet {
    /// Sequence id of the packet's last frame.
    pub last_seq: u8,
    /// Sequence id of the packet's first frame.
    pub first_seq: u8,
    pub payload: Vec<u8>,
}

impl Wire {
    pub fn new(stream: impl Into<Stream>) -> Self {
        let stream = stream.into();
        // Latency matters more than segment count for request/response traffic.
        if let Some(tcp) = stream.tcp() {
            let _ = tcp.set_nodelay(true);
        }
        Self {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(16 * 1024),
        }
    }

    /// The TCP socket underneath (plain or TLS).
    pub fn tcp(&self) -> Option<&TcpStream> {
        self.stream.tcp()
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Turns a plain client connection into TLS with Tandem as the server
    /// (after the client's SSLRequest). Bytes the client sent after that
    /// request, already read, are the start of its TLS hello and go to the
    /// TLS layer first.
    pub async fn accept_tls(
        &mut self,
        config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> std::io::Result<()> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Detached) else {
            return Err(std::io::Error::other(
                "TLS requested on a connection that is not plain TCP",
            ));
        };
        let early = self.rbuf.split().freeze();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = acceptor
            .accept_with(tcp, |conn| {
                let mut rest: &[u8] = &early;
                while !rest.is_empty() {
                    match conn.read_tls(&mut rest) {
                        Ok(0) | Err(_) => break,
                        // Processed now: the handshake then has its
                        // answer to write instead of waiting to read.
                        Ok(_) => {
                            if conn.process_new_packets().is_err() {
                                break;
                            }
                        }
                    }
                }
            })
            .await?;
        self.stream = Stream::TlsServer(Box::new(tls));
        Ok(())
    }

    /// Turns a plain backend connection into TLS with Tandem as the client
    /// (after sending its SSLRequest). The server sends nothing between the
    /// request and its TLS hello, so the read buffer is empty here.
    pub async fn connect_tls(
        &mut self,
        config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
        name: tokio_rustls::rustls::pki_types::ServerName<'static>,
    ) -> std::io::Result<()> {
        if !self.rbuf.is_empty() {
            return Err(std::io::Error::other(
                "backend sent data before its TLS handshake",
            ));
        }
        self.flush().await?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Detached) else {
            return Err(std::io::Error::other(
                "TLS requested on a connection that is not plain TCP",
            ));
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        self.stream = Stream::TlsClient(Box::new(tls));
        Ok(())
    }

    /// Reads more bytes into the read buffer. Returns false on a clean EOF.
    pub async fn fill(&mut self) -> std::io::Result<bool> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        Ok(n > 0)
    }

    /// True when a read would find the peer closed (used on idle pooled
    /// connections, which must not have anything to read).
    pub fn looks_closed(&mut self) -> bool {
        let mut probe = [0u8; 1];
        // On a TLS stream this reads the socket under the TLS layer; any
        // byte there means the connection is not idle, and it is closed.
        let Some(tcp) = self.stream.tcp() else {
            return true;
        };
        match tcp.try_read(&mut probe) {
            Ok(0) => true,
            Ok(_) => true, // unsolicited bytes: the connection is not in a known state
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(_) => true,
        }
    }

    /// Reads one logical packet, reassembling continuation frames, checking
    /// that sequence ids follow `expect_seq` and that the payload stays within
    /// `max_len` bytes.
    pub async fn read_packet(
        &mut self,
        expect_seq: Option<u8>,
        max_len: usize,
    ) -> Result<Packet, ProtocolError> {
        let mut payload: Vec<u8> = Vec::new();
        let mut expect = expect_seq;
        let mut first_seq = None;
        loop {
            while self.rbuf.len() < HEADER {
                if !self.fill().await? {
                    return Err(if self.rbuf.is_empty() && first_seq.is_none() {
                        ProtocolError::Closed
                    } else {
                        ProtocolError::Truncated
                    });
                }
            }
            let len = frame_len(&self.rbuf);
            let seq = self.rbuf[3];
            if let Some(e) = expect {
                if seq != e {
                    return Err(ProtocolError::Sequence {
                        expected: e,
                        got: seq,
                    });
                }
            }
            if payload.len() + len > max_len {
                return Err(ProtocolError::TooLarge {
                    len: payload.len() + len,
                    max: max_len,
                });
            }
            while self.rbuf.len() < HEADER + len {
                self.rbuf.reserve(HEADER + len - self.rbuf.len());
                if !self.fill().await? {
                    return Err(ProtocolError::Truncated);
                }
            }
            first_seq.get_or_insert(seq);
            payload.extend_from_slice(&self.rbuf[HEADER..HEADER + len]);
            self.rbuf.advance(HEADER + len);
            expect = Some(seq.wrapping_add(1));
            if len < MAX_FRAME {
                return Ok(Packet {
                    last_seq: seq,
                    first_seq: first_seq.unwrap_or(seq),
                    payload,
                });
            }
        }
    }

    /// Appends `payload` as one logical packet (split into frames as needed),
    /// starting at `*seq`; advances `*seq` past the frames written.
    pub fn queue_packet(&mut self, seq: &mut u8, payload: &[u8]) {
        write_frames(&mut self.wbuf, seq, payload);
    }

    /// Writes the buffered output.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            if self.wbuf.capacity() > 1024 * 1024 {
                self.wbuf.shrink_to(64 * 1024);
            }
        }
        Ok(())
    }

    /// Writes one packet and flushes.
    pub async fn send_packet(&mut self, seq: &mut u8, payload: &[u8]) -> std::io::Result<()> {
        self.queue_packet(seq, payload);
        self.flush().await
    }

    /// Releases a read buffer that grew for a large packet.
    pub fn shrink(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * READ_CHUNK {
            self.rbuf = BytesMut::with_capacity(READ_CHUNK);
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

/// Payload length of the frame whose header starts `buf`.
pub fn frame_len(buf: &[u8]) -> usize {
    buf[0] as usize | (buf[1] as usize) << 8 | (buf[2] as usize) << 16
}

/// Appends `payload` to `out` as frames starting at sequence `*seq`.
pub fn write_frames(out: &mut Vec<u8>, seq: &mut u8, payload: &[u8]) {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_FRAME);
        out.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, *seq]);
        out.extend_from_slice(&rest[..n]);
        *seq = seq.wrapping_add(1);
        rest = &rest[n..];
        // A payload that is an exact multiple of MAX_FRAME ends with an empty frame.
        if n < MAX_FRAME {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_max_and_end_with_short_frame() {
        let payload = vec![7u8; MAX_FRAME];
        let mut out = Vec::new();
        let mut seq = 0;
        write_frames(&mut out, &mut seq, &payload);
        assert_eq!(seq, 2);
        assert_eq!(out.len(), MAX_FRAME + 8);
        assert_eq!(frame_len(&out[MAX_FRAME + 4..]), 0);
        assert_eq!(out[MAX_FRAME + 7], 1);

        let mut out = Vec::new();
        let mut seq = 255;
        write_frames(&mut out, &mut seq, b"abc");
        assert_eq!(out, [3, 0, 0, 255, b'a', b'b', b'c']);
        assert_eq!(seq, 0);
    }
}
