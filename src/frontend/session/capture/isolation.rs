//! Isolation levels. Replaying a transaction's statements in the primary's
//! commit order reproduces its effect only where the primary took the
//! locks that make commit order the order that matters: REPEATABLE READ and
//! SERIALIZABLE (gap locks). Under READ COMMITTED or READ UNCOMMITTED an
//! UPDATE or DELETE matches rows as other transactions left them at the
//! moment it ran, not at commit (recipe: A updates `WHERE st = 'queued'`
//! while B inserts a queued row and commits first; replayed in commit
//! order, A also takes B's row). MySQL refuses statement-based binary logs
//! there for the same reason. A single-table UPDATE or DELETE is keyed
//! there (`keyed`: restricted to the rows it locked, by key); other writes
//! that read rows (joins, INSERT … SELECT, keyless tables) follow
//! `unsafe_writes`.
//!
//! The level that applies to a write: the one `SET TRANSACTION ISOLATION
//! LEVEL …` chose for the transaction it is in, else the session's
//! (`@@tx_isolation` / `@@transaction_isolation`, read with the carried
//! settings and again after any SET). The server drops a chosen level
//! Tandem cannot always see go: at any COMMIT or ROLLBACK (even with
//! nothing open), at `SET SESSION TRANSACTION …`, and when a statement
//! that reads a table runs in autocommit mode. So a write is judged at the
//! weaker of the chosen level and the session's: when Tandem's idea of
//! the choice is stale, the write is keyed (exact at any level) rather
//! than replayed as if its locks ordered it.

use super::Capture;
use crate::router::lexer::{self, Token};
use crate::router::{Class, Route, WriteKind};

/// The levels where replay in commit order is not exact, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Isolation {
    ReadUncommitted,
    ReadCommitted,
    /// REPEATABLE READ or SERIALIZABLE.
    Locking,
}

impl Isolation {
    /// From a variable's value (`READ-COMMITTED`) or the words of a SET
    /// TRANSACTION (`READ COMMITTED`).
    pub(super) fn parse(text: &str) -> Option<Self> {
        let t = text
            .trim_matches(['\'', '"'])
            .to_ascii_uppercase()
            .replace(' ', "-");
        match t.as_str() {
            "READ-UNCOMMITTED" => Some(Isolation::ReadUncommitted),
            "READ-COMMITTED" => Some(Isolation::ReadCommitted),
            "REPEATABLE-READ" | "SERIALIZABLE" => Some(Isolation::Locking),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "READ UNCOMMITTED",
            Isolation::ReadCommitted => "READ COMMITTED",
            Isolation::Locking => "REPEATABLE READ",
        }
    }
}

/// What a `SET … TRANSACTION ISOLATION LEVEL x` statement sets: the next
/// transaction's level (no scope word), the session's (SESSION, LOCAL), or
/// nothing for this session (GLOBAL).
pub(super) enum IsolationSet {
    NextTransaction(Isolation),
    Session,
    None,
}

pub(super) fn isolation_set(sql: &[u8], toks: &[Token]) -> IsolationSet {
    let Some(level) = toks.iter().position(|t| t.is_word(sql, "LEVEL")) else {
        return IsolationSet::None;
    };
    let words: Vec<String> = toks[level + 1..]
        .iter()
        .take(2)
        .map(|t| String::from_utf8_lossy(t.text(sql)).into_owned())
        .collect();
    let parsed = Isolation::parse(&words.join(" "))
        .or_else(|| words.first().and_then(|w| Isolation::parse(w)));
    let scope = toks.get(1);
    if scope.is_some_and(|t| t.is_word(sql, "GLOBAL")) {
        IsolationSet::None
    } else if scope.is_some_and(|t| t.is_word(sql, "TRANSACTION")) {
        // An unreadable level is taken as the weakest, to be safe.
        IsolationSet::NextTransaction(parsed.unwrap_or(Isolation::ReadUncommitted))
    } else {
        IsolationSet::Session
    }
}

impl Capture {
    /// Why `route` cannot be replayed exactly at the level it runs at, if
    /// it cannot. Plain INSERT and REPLACE … VALUES read no rows but the
    /// ones their unique keys lock, so they replay exactly at any level.
    /// `own`: the level chosen for this write's own (autocommit)
    /// transaction.
    pub(super) fn isolation_hazard(
        &self,
        route: &Route,
        sql: &[u8],
        own: Option<Isolation>,
    ) -> Option<String> {
        let session = self.isolation.unwrap_or(Isolation::Locking);
        let level = own
            .or(self.txn_isolation)
            .map_or(session, |chosen| chosen.min(session));
        if level == Isolation::Locking {
            return None;
        }
        let reads_rows = match route.class {
            Class::Write(WriteKind::Insert | WriteKind::Replace) => {
                let mut toks: Vec<Token> = Vec::new();
                lexer::tokenize(sql, &mut toks);
                toks.iter().any(|t| t.is_word(sql, "SELECT"))
            }
            Class::Write(_) => true,
            _ => false,
        };
        reads_rows.then(|| {
            format!(
                "under {} the rows it reads depend on other transactions' commits it took no lock against, so replaying it in commit order may change other rows; write such statements at REPEATABLE READ (the server default)",
                level.name()
            )
        })
    }

    /// A transaction begins (BEGIN, or a first write): it runs at the level
    /// `SET TRANSACTION` chose for it, if any.
    pub(super) fn transaction_begins(&mut self) {
        if self.txn_isolation.is_none() {
            self.txn_isolation = self.next_isolation.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(sql: &str) -> IsolationSet {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        isolation_set(sql.as_bytes(), &toks)
    }

    #[test]
    fn levels_and_scopes_are_read_from_the_statement() {
        assert_eq!(
            Isolation::parse("READ-COMMITTED"),
            Some(Isolation::ReadCommitted)
        );
        assert_eq!(
            Isolation::parse("'read-uncommitted'"),
            Some(Isolation::ReadUncommitted)
        );
        assert_eq!(
            Isolation::parse("REPEATABLE-READ"),
            Some(Isolation::Locking)
        );
        assert_eq!(Isolation::parse("SERIALIZABLE"), Some(Isolation::Locking));
        assert_eq!(Isolation::parse("sometimes"), None);
        assert!(matches!(
            set("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            IsolationSet::NextTransaction(Isolation::ReadCommitted)
        ));
        assert!(matches!(
            set("SET TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE"),
            IsolationSet::NextTransaction(Isolation::Locking)
        ));
        assert!(matches!(
            set("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED"),
            IsolationSet::Session
        ));
        assert!(matches!(
            set("SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            IsolationSet::None
        ));
        assert!(matches!(
            set("SET TRANSACTION READ ONLY"),
            IsolationSet::None
        ));
    }
}
