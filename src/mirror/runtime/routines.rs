//! Stored functions that may write, per database: a read that calls one
//! (`SELECT f()`, `DO f()`, `SET @x = f()`) writes rows the statement's
//! text does not show, and no write path journals it. Capture asks here
//! and follows `unsafe_writes` for such a call. `SQL DATA ACCESS` is
//! advisory (a function declared READS SQL DATA may still write), so the
//! bodies are read: a function writes when its body holds a writing
//! statement, calls a procedure or a writing function, or cannot be read.
//! Cached for a few seconds (functions created outside Tandem are seen
//! once it expires) and dropped when DDL passes through Tandem.

use super::Mirror;
use crate::router::lexer::{self, Tok};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A database's writing functions (lower case) and when they were read.
pub type Cached = (Instant, Arc<HashSet<String>>);

/// How long a database's list is trusted.
pub const ROUTINES_TTL: Duration = Duration::from_secs(5);

/// Statement words that make a function body a writer.
const WRITING: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "REPLACE", "CALL", "TRUNCATE", "CREATE", "DROP", "ALTER",
    "RENAME", "LOAD", "GRANT", "REVOKE", "SETVAL", "NEXTVAL", "PREPARE", "EXECUTE",
];

impl Mirror {
    /// The cached writing functions of `db` (lower case), if fresh.
    pub fn writing_functions(&self, db: &str) -> Option<Arc<HashSet<String>>> {
        let g = self.routines.lock().unwrap_or_else(|p| p.into_inner());
        let (at, set) = g.get(db)?;
        (at.elapsed() < ROUTINES_TTL).then(|| set.clone())
    }

    pub fn set_writing_functions(&self, db: &str, set: Arc<HashSet<String>>) {
        self.routines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(db.to_string(), (Instant::now(), set));
    }
}

/// From (name, body) of a database's stored functions (body None: not
/// readable), those that may write (lower case).
pub fn writers(functions: &[(String, Option<String>)]) -> HashSet<String> {
    let names: HashSet<String> = functions.iter().map(|(n, _)| n.to_lowercase()).collect();
    let mut calls: Vec<(String, Vec<String>)> = Vec::new();
    let mut out = HashSet::new();
    let mut toks = Vec::new();
    for (name, body) in functions {
        let name = name.to_lowercase();
        let Some(body) = body else {
            out.insert(name);
            continue;
        };
        let b = body.as_bytes();
        lexer::tokenize(b, &mut toks);
        if toks.iter().any(|t| WRITING.iter().any(|w| t.is_word(b, w))) {
            out.insert(name);
            continue;
        }
        let called: Vec<String> = toks
            .windows(2)
            .filter(|w| w[1].kind == Tok::Punct(b'('))
            .filter_map(|w| w[0].ident(b))
            .map(|c| c.to_lowercase())
            .filter(|c| names.contains(c) && *c != name)
            .collect();
        calls.push((name, called));
    }
    // Calling a writer writes: to a fixed point.
    loop {
        let before = out.len();
        for (name, called) in &calls {
            if called.iter().any(|c| out.contains(c)) {
                out.insert(name.clone());
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_write_or_call_writers_write() {
        let f = |n: &str, b: Option<&str>| (n.to_string(), b.map(str::to_string));
        let w = writers(&[
            f("Bump", Some("BEGIN UPDATE c SET n = n + 1; RETURN 1; END")),
            f("calls_bump", Some("RETURN bump() + 1")),
            f("pure", Some("RETURN x * 2")),
            f("reads", Some("RETURN (SELECT MAX(id) FROM t)")),
            f("hidden", None),
            f("says_update_in_a_string", Some("RETURN 'UPDATE'")),
        ]);
        let mut got: Vec<&str> = w.iter().map(String::as_str).collect();
        got.sort();
        assert_eq!(got, vec!["bump", "calls_bump", "hidden"]);
    }
}
