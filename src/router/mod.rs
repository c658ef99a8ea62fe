//! The router: statement bytes in, a `Plan` out (`Route` per statement, and
//! the `Target` where it runs). Pure: no I/O, no session state. Everything
//! downstream reads the plan, never the SQL.
//!
//! Hot path: the lexer computes a digest (literals normalized); the digest
//! cache answers for every shape seen before. Only a cache miss pays for a
//! full `sqlparser` parse.

mod classify;
pub mod determinism;
pub mod keyed;
pub mod lexer;
pub mod plan;
pub mod rename;
pub mod shard;
#[cfg(test)]
mod tests;

use lexer::{Tok, Token};
use quick_cache::sync::Cache;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The decision about one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub class: Class,
    /// Tables the statement writes (writes, DDL) or reads (reads), as written
    /// (`t` or `db.t`, unquoted).
    pub tables: Vec<String>,
    /// False when sqlparser could not parse it (classified by keywords).
    pub parsed: bool,
    /// For writes: values to pin on the secondary, or why it cannot be
    /// mirrored deterministically.
    pub determinism: determinism::Determinism,
    /// For DDL on a stored object that is not a table (trigger, routine,
    /// event): which kind. Such DDL names no table.
    pub object: Option<SchemaObject>,
}

/// Stored objects that DDL creates, alters or drops besides tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaObject {
    Trigger,
    /// A stored procedure or function.
    Routine,
    /// A scheduled event: it runs by itself on the server that holds it.
    Event,
    /// CREATE/DROP TEMPORARY TABLE: the session's own table, which neither
    /// commits an open transaction nor exists for anyone else.
    TemporaryTable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Read { locking: bool },
    Write(WriteKind),
    Ddl,
    Transaction(TxnOp),
    Session(SessionOp),
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    Replace,
    Update,
    Delete,
    LoadData,
    /// CALL: the procedure's effects are unknown.
    Call,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOp {
    Begin,
    Commit,
    Rollback,
    Savepoint,
    RollbackToSavepoint,
    ReleaseSavepoint,
    /// SET TRANSACTION …, XA …
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOp {
    Use(String),
    Set,
    Kill,
    /// SQL-level PREPARE / EXECUTE / DEALLOCATE PREPARE.
    PreparedSql,
    LockTables,
    UnlockTables,
}

impl Route {
    pub fn is_write(&self) -> bool {
        matches!(self.class, Class::Write(_))
    }
}

/// A classified packet: one route per statement, plus facts the session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub statements: Vec<Route>,
    /// Some statement calls CONNECTION_ID() (the session rewrites it).
    pub calls_connection_id: bool,
    /// Named locks taken or released (they pin the session to its backend).
    pub named_locks: Option<plan::NamedLocks>,
}

/// Router with its digest cache; shared by all sessions.
pub struct Router {
    cache: Cache<u64, Arc<Classified>>,
    pub stats: RouterStats,
}

#[derive(Debug, Default)]
pub struct RouterStats {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub unparsed: AtomicU64,
}

/// Per-session scratch space so the hot path does not allocate.
#[derive(Default)]
pub struct Scratch {
    pub tokens: Vec<Token>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new(16 * 1024)
    }
}

impl Router {
    pub fn new(cache_entries: usize) -> Self {
        Self {
            cache: Cache::new(cache_entries),
            stats: RouterStats::default(),
        }
    }

    /// Classifies a COM_QUERY / COM_STMT_PREPARE text. `scratch.tokens` holds
    /// the statement's tokens afterwards (for KILL and rewrites).
    pub fn route(&self, sql: &[u8], scratch: &mut Scratch) -> Arc<Classified> {
        lexer::tokenize(sql, &mut scratch.tokens);
        let key = lexer::digest(sql, &scratch.tokens);
        if let Some(hit) = self.cache.get(&key) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            if !hit.statements.iter().all(|r| r.parsed) {
                self.stats.unparsed.fetch_add(1, Ordering::Relaxed);
            }
            return hit;
        }
        self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        let classified = Arc::new(classify_tokens(sql, &scratch.tokens));
        if !classified.statements.iter().all(|r| r.parsed) {
            self.stats.unparsed.fetch_add(1, Ordering::Relaxed);
        }
        self.cache.insert(key, classified.clone());
        classified
    }
}

/// Classifies without the cache (used by tests and on a cache miss).
pub fn classify(sql: &[u8]) -> Classified {
    let mut tokens = Vec::new();
    lexer::tokenize(sql, &mut tokens);
    classify_tokens(sql, &tokens)
}

fn classify_tokens(sql: &[u8], tokens: &[Token]) -> Classified {
    let mut statements = Vec::new();
    for range in lexer::split_statements(sql, tokens) {
        let toks = &tokens[range];
        let (Some(first), Some(last)) = (toks.first(), toks.last()) else {
            continue;
        };
        let text = &sql[first.start..last.end];
        let mut route = classify::classify_one(text, sql, toks);
        route.determinism = determinism::analyze(sql, toks, &route.class, route.parsed);
        if route.class == Class::Ddl {
            route.object = schema_object(sql, toks);
            if !route.parsed && route.tables.is_empty() && route.object.is_none() {
                match classify::ddl_keyword_tables(sql, toks) {
                    Some(tables) => route.tables = tables,
                    // Mirroring it blind could miss the tables it changes.
                    None => {
                        route.determinism.unsafe_reason = Some(determinism::UnsafeReason::Unparsed)
                    }
                }
            }
        }
        statements.push(route);
    }
    if statements.is_empty() {
        // Empty query or only comments: the server answers it (usually with
        // ER_EMPTY_QUERY); nothing to route on.
        statements.push(Route {
            class: Class::Other,
            tables: Vec::new(),
            parsed: true,
            determinism: Default::default(),
            object: None,
        });
    }
    Classified {
        statements,
        calls_connection_id: lexer::calls_connection_id(sql, tokens),
        named_locks: plan::named_lock_calls(sql, tokens),
    }
}

/// The kind of stored object a CREATE/ALTER/DROP names, when it is a
/// trigger, routine or event: the first object keyword after the verb and
/// its modifiers (`OR REPLACE`, `DEFINER = …`, `SQL SECURITY …`,
/// `AGGREGATE`). Any other object keyword (TABLE, VIEW, INDEX, …) or an
/// opening parenthesis ends the search: None.
fn schema_object(sql: &[u8], toks: &[Token]) -> Option<SchemaObject> {
    let verb = toks.first()?;
    if !["CREATE", "ALTER", "DROP"]
        .iter()
        .any(|v| verb.is_word(sql, v))
    {
        return None;
    }
    for t in toks.iter().skip(1).take(16) {
        if t.kind == Tok::Punct(b'(') {
            return None;
        }
        if t.kind != Tok::Word {
            continue;
        }
        let found = |words: &[&str]| words.iter().any(|w| t.is_word(sql, w));
        if found(&["TRIGGER"]) {
            return Some(SchemaObject::Trigger);
        }
        if found(&["PROCEDURE", "FUNCTION"]) {
            return Some(SchemaObject::Routine);
        }
        if found(&["EVENT"]) {
            return Some(SchemaObject::Event);
        }
        if found(&["TEMPORARY"]) {
            return Some(SchemaObject::TemporaryTable);
        }
        if found(&[
            "TABLE",
            "TABLES",
            "VIEW",
            "INDEX",
            "DATABASE",
            "SCHEMA",
            "USER",
            "ROLE",
            "SERVER",
            "SEQUENCE",
            "TABLESPACE",
            "LOGFILE",
            "PACKAGE",
            "ON",
            "AS",
        ]) {
            return None;
        }
    }
    None
}

/// Whether a statement of class `class` may commit an open transaction on
/// the server (so capture journals the transaction before it runs). The
/// statements MySQL documents as not committing say no: CREATE/DROP
/// TEMPORARY TABLE, DO, HANDLER, GET DIAGNOSTICS, SIGNAL/RESIGNAL, a
/// statement of comments only, and a SET that only turns autocommit off.
/// Anything else that is not a read, a write or a plain SET may commit.
/// Every table the statement `sql` names, read or written (None: it
/// cannot be parsed).
pub fn named_tables(sql: &[u8]) -> Option<Vec<String>> {
    let mut toks = Vec::new();
    lexer::tokenize(sql, &mut toks);
    classify::named_tables(sql, &toks)
}

pub fn may_commit_implicitly(route: &Route, sql: &[u8], toks: &[Token]) -> bool {
    match &route.class {
        Class::Ddl => route.object != Some(SchemaObject::TemporaryTable),
        Class::Session(SessionOp::Set) => sets_autocommit_on(sql, toks),
        Class::Session(SessionOp::LockTables | SessionOp::UnlockTables) => true,
        Class::Other => {
            let Some(first) = toks.first() else {
                return false;
            };
            !["DO", "HANDLER", "GET", "SIGNAL", "RESIGNAL"]
                .iter()
                .any(|w| first.is_word(sql, w))
        }
        _ => false,
    }
}

/// A SET that assigns autocommit anything but an explicit off (`0`, `OFF`,
/// `FALSE`): turning it on commits an open transaction, and an expression
/// might.
fn sets_autocommit_on(sql: &[u8], toks: &[Token]) -> bool {
    toks.iter().enumerate().any(|(i, t)| {
        let names_it = t.is_word(sql, "autocommit")
            || (t.kind == Tok::Var && t.text(sql).to_ascii_lowercase().ends_with(b"autocommit"));
        if !names_it {
            return false;
        }
        let value = match toks.get(i + 1).map(|t| t.kind) {
            Some(Tok::Punct(b'=')) => toks.get(i + 2),
            Some(Tok::Punct(b':')) => toks.get(i + 3),
            _ => return true,
        };
        let off = value.is_some_and(|v| {
            (v.kind == Tok::Num && v.text(sql) == b"0")
                || v.is_word(sql, "OFF")
                || v.is_word(sql, "FALSE")
        });
        let alone = toks
            .get(i + 3 + usize::from(toks.get(i + 1).map(|t| t.kind) == Some(Tok::Punct(b':'))))
            .is_none_or(|t| t.kind == Tok::Punct(b',') || t.kind == Tok::Punct(b';'));
        !(off && alone)
    })
}

/// First word of a statement, upper-cased (for keyword classification).
fn word_at(sql: &[u8], toks: &[Token], i: usize) -> Option<String> {
    toks.get(i)
        .filter(|t| t.kind == Tok::Word)
        .map(|t| String::from_utf8_lossy(t.text(sql)).to_ascii_uppercase())
}
