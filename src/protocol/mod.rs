//! The MySQL wire protocol: frames, the packets Tandem reads or writes, the
//! response tracker used by the relay, and password checks. No routing and no
//! knowledge of backends lives here.

pub mod auth;
pub mod drive;
pub mod packets;
pub mod response;
pub mod stream;
pub mod wire;

pub use packets::ErrSpec;
pub use wire::{Packet, Wire};

/// A connection-level protocol failure. Every variant closes only the
/// connection it happened on.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("peer closed the connection")]
    Closed,
    #[error("connection closed in the middle of a packet")]
    Truncated,
    #[error("out-of-order packet: expected sequence id {expected}, got {got}")]
    Sequence { expected: u8, got: u8 },
    #[error("packet of {len} bytes exceeds max_allowed_packet ({max})")]
    TooLarge { len: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Command bytes (first byte of a client command packet).
pub mod command {
    pub const COM_QUIT: u8 = 0x01;
    pub const COM_INIT_DB: u8 = 0x02;
    pub const COM_QUERY: u8 = 0x03;
    pub const COM_FIELD_LIST: u8 = 0x04;
    pub const COM_STATISTICS: u8 = 0x09;
    pub const COM_PROCESS_KILL: u8 = 0x0C;
    pub const COM_PING: u8 = 0x0E;
    pub const COM_CHANGE_USER: u8 = 0x11;
    pub const COM_STMT_PREPARE: u8 = 0x16;
    pub const COM_STMT_EXECUTE: u8 = 0x17;
    pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const COM_STMT_CLOSE: u8 = 0x19;
    pub const COM_STMT_RESET: u8 = 0x1A;
    pub const COM_SET_OPTION: u8 = 0x1B;
    pub const COM_STMT_FETCH: u8 = 0x1C;
    pub const COM_RESET_CONNECTION: u8 = 0x1F;
}
