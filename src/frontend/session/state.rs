//! Session state Tandem replays when the session moves to another backend
//! (the SETs it ran), and the named locks that pin it to its backend
//! meanwhile. The current database and the multi-statement option live on
//! the connection itself (`BackendConn`), table locks on the `Link`
//! (capture needs them too).

use crate::router::lexer::Token;
use crate::router::{Class, Classified, SessionOp};

/// SET statements kept for replay on a move (oldest dropped beyond this).
const MAX_REPLAYED_SETS: usize = 256;

#[derive(Debug, Default)]
pub(super) struct Replay {
    /// Session-level SET statements the client ran, replayed on a move.
    pub sets: Vec<Vec<u8>>,
    /// GET_LOCK calls not yet matched by RELEASE_LOCK (no move, ticket kept).
    pub named_locks: u32,
}

impl Replay {
    /// A fresh session (COM_RESET_CONNECTION, COM_CHANGE_USER).
    pub fn reset(&mut self) {
        *self = Replay::default();
    }

    /// Keeps a successful session-level SET for replay on a move.
    pub fn remember_set(&mut self, payload: &[u8], tokens: &[Token]) {
        let sql = &payload[1..];
        let global = tokens.iter().any(|t| {
            t.is_word(sql, "GLOBAL") || t.is_word(sql, "PERSIST") || t.is_word(sql, "PERSIST_ONLY")
        }) || memchr::memmem::find(&sql.to_ascii_lowercase(), b"@@global").is_some();
        if global {
            return;
        }
        self.sets.retain(|s| s != payload);
        if self.sets.len() == MAX_REPLAYED_SETS {
            self.sets.remove(0);
        }
        self.sets.push(payload.to_vec());
    }

    /// After a COM_QUERY succeeded: remembers session SETs (replayed when
    /// the session moves). Returns whether table locks are now held, when
    /// it was LOCK or UNLOCK TABLES.
    pub fn track(
        &mut self,
        classified: &Classified,
        payload: &[u8],
        tokens: &[Token],
    ) -> Option<bool> {
        if let [r] = classified.statements.as_slice() {
            match r.class {
                Class::Session(SessionOp::Set) => self.remember_set(payload, tokens),
                Class::Session(SessionOp::LockTables) => return Some(true),
                Class::Session(SessionOp::UnlockTables) => return Some(false),
                _ => {}
            }
        }
        None
    }
}
