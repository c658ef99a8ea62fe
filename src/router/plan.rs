//! The plan: the router's whole decision about one packet — what its
//! statements are (`Classified`, cached by shape) and where they run
//! (`Target`), with the per-packet facts the session needs (a KILL's id).
//! Sessions act on the plan; they do not lex or parse the SQL again.

use super::lexer::{self, Kill};
use super::{Class, Classified, Router, Scratch, SessionOp};
use std::sync::Arc;

/// Where a statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The current primary backend: the session's bound connection. On a
    /// cluster the shards a statement runs on are planned per statement
    /// from its shard key (`shard::route::ShardPlan`).
    Primary,
}

/// The router's decision about one COM_QUERY packet.
#[derive(Debug, Clone)]
pub struct Plan {
    pub classified: Arc<Classified>,
    pub target: Target,
    /// `KILL [QUERY] <id>` of a numeric id (the id is a Tandem session's).
    pub kill: Option<Kill>,
}

impl Router {
    /// Plans a COM_QUERY text. `scratch.tokens` holds its tokens afterwards
    /// (for rewrites at token positions).
    pub fn plan(&self, sql: &[u8], scratch: &mut Scratch) -> Plan {
        let classified = self.route(sql, scratch);
        let kill = match classified.statements.as_slice() {
            [r] if r.class == Class::Session(SessionOp::Kill) => {
                lexer::parse_kill(sql, &scratch.tokens)
            }
            _ => None,
        };
        Plan {
            classified,
            target: Target::Primary,
            kill,
        }
    }
}

/// Calls of the server's named-lock functions in one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedLocks {
    pub get: u32,
    pub release: u32,
    /// RELEASE_ALL_LOCKS() is called.
    pub release_all: bool,
}

/// Calls of GET_LOCK, RELEASE_LOCK and RELEASE_ALL_LOCKS, or None when the
/// text names none of them (function names survive the digest, so this is
/// cached with the shape).
pub(super) fn named_lock_calls(sql: &[u8], tokens: &[lexer::Token]) -> Option<NamedLocks> {
    let (mut get, mut release, mut release_all) = (0, 0, false);
    for t in tokens {
        if t.is_word(sql, "GET_LOCK") {
            get += 1;
        } else if t.is_word(sql, "RELEASE_LOCK") {
            release += 1;
        } else if t.is_word(sql, "RELEASE_ALL_LOCKS") {
            release_all = true;
        }
    }
    (get > 0 || release > 0 || release_all).then_some(NamedLocks {
        get,
        release,
        release_all,
    })
}
