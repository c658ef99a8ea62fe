//! Session state Tandem replays when the session moves to another backend
//! (the SETs it ran), and the named locks that pin it to its backend
//! meanwhile. The current database and the multi-statement option live on
//! the connection itself (`BackendConn`), table locks on the `Link`
//! (capture needs them too).

use crate::router::lexer::{Tok, Token};
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

/// The variables a session `SET` assigns, when it is nothing but
/// assignments (`SET @a = …, sql_mode = …, @@session.x := …`): (user
/// variable names, session variable names, lower case). A move carries
/// those by value. None for every other form (`SET NAMES`, `SET
/// TRANSACTION …`, `SET ROLE`, a `@@global.` name), which is replayed as
/// sent. `sql` without the command byte.
pub(super) fn assigned(sql: &[u8], toks: &[Token]) -> Option<(Vec<String>, Vec<String>)> {
    if !toks.first()?.is_word(sql, "SET") {
        return None;
    }
    let (mut users, mut system) = (Vec::new(), Vec::new());
    let punct = |i: usize, c: u8| toks.get(i).is_some_and(|t| t.kind == Tok::Punct(c));
    let mut i = 1;
    loop {
        if toks
            .get(i)
            .is_some_and(|t| t.is_word(sql, "SESSION") || t.is_word(sql, "LOCAL"))
        {
            i += 1;
        }
        let t = toks.get(i)?;
        let text = std::str::from_utf8(t.text(sql)).ok()?;
        match t.kind {
            Tok::Var => match text.strip_prefix("@@") {
                Some(name) => {
                    let lower = name.to_ascii_lowercase();
                    let name = lower
                        .strip_prefix("session.")
                        .or_else(|| lower.strip_prefix("local."))
                        .unwrap_or(&lower);
                    if name.is_empty() || name.contains(['.', '`', '\'', '"']) {
                        return None;
                    }
                    system.push(name.to_string());
                }
                None => {
                    let name = &text[1..];
                    let name = match name.as_bytes().first() {
                        Some(q @ (b'`' | b'\'' | b'"')) if name.len() >= 2 => {
                            let q = *q as char;
                            name[1..name.len() - 1].replace(&format!("{q}{q}"), &q.to_string())
                        }
                        _ => name.to_string(),
                    };
                    users.push(name);
                }
            },
            // Statements of their own that look like an assignment.
            Tok::Word
                if [
                    "PASSWORD",
                    "NAMES",
                    "CHARSET",
                    "ROLE",
                    "DEFAULT",
                    "STATEMENT",
                ]
                .iter()
                .any(|w| text.eq_ignore_ascii_case(w)) =>
            {
                return None
            }
            Tok::Word => system.push(text.to_ascii_lowercase()),
            _ => return None,
        }
        i += 1;
        if punct(i, b'=') {
            i += 1;
        } else if punct(i, b':') && punct(i + 1, b'=') {
            i += 2;
        } else {
            return None;
        }
        let mut depth = 0i32;
        while let Some(t) = toks.get(i) {
            match t.kind {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => depth -= 1,
                Tok::Punct(b',') if depth == 0 => break,
                _ => {}
            }
            i += 1;
        }
        if toks.get(i).is_none() {
            return Some((users, system));
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::assigned;
    use crate::router::lexer;

    fn parse(sql: &str) -> Option<(Vec<String>, Vec<String>)> {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        assigned(sql.as_bytes(), &toks)
    }

    #[test]
    fn assignments_are_carried_by_value_and_other_sets_replayed() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse("SET @id = LAST_INSERT_ID(), @`a b` := CONCAT('x', ','), sql_mode = 'ANSI'"),
            Some((s(&["id", "a b"]), s(&["sql_mode"])))
        );
        assert_eq!(
            parse("SET SESSION time_zone = '+00:00', @@session.autocommit = 0, @@SQL_MODE = ''"),
            Some((s(&[]), s(&["time_zone", "autocommit", "sql_mode"])))
        );
        for verbatim in [
            "SET NAMES utf8mb4",
            "SET CHARACTER SET latin1",
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET SESSION TRANSACTION READ ONLY",
            "SET ROLE r",
            "SET @@global.x = 1",
            "SET PASSWORD = PASSWORD('x')",
        ] {
            assert_eq!(parse(verbatim), None, "{verbatim}");
        }
    }
}
