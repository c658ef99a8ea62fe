//! `CALL` of a stored procedure while mirroring, replayed with pinned
//! values when its body is known to do the same on the secondary. The
//! body is read from the primary's catalog and judged by its tokens,
//! conservatively (`judge`): it may run INSERT/REPLACE … VALUES, UPDATE
//! and DELETE of one table each, INSERT … SELECT that order cannot change,
//! SELECT … INTO locals under `FOR UPDATE` or `LOCK IN SHARE MODE`, local
//! variables, conditions, loops and handlers. It may not end or begin
//! transactions, run DDL, dynamic SQL or cursors, read rows without locks
//! (a consistent read may see another snapshot than replay), return rows,
//! use LIMIT, user or system variables, functions whose value no pin
//! reproduces, stored functions, other databases or the session's
//! temporary tables; nor insert into a table that hands out ids, defaults
//! to a value no pin reproduces, or has no transactions.
//!
//! Such a CALL is a write like any other (`mirrored_write`): the time is
//! pinned (`NOW()` inside reads it), it is journaled as its text, and the
//! tables its body writes are its tables. Before it the journal holds a
//! guard that fails the apply, loudly, when the secondary's procedure is
//! not the primary's (its body's MD5). Inside a transaction it runs after
//! a savepoint, so a CALL that fails half-way leaves none of its writes
//! (directly, the statements before the failing one would stand): the
//! journal has nothing of it, and neither has the primary.

use super::super::link::{query_packet, Link};
use super::super::SessionError;
use super::carry::Carried;
use super::vars::rows;
use super::Capture;
use crate::mirror::record::{MirrorStatement, Pins};
use crate::mirror::runtime::Mirror;
use crate::router::determinism::UNSAFE_FUNCS;
use crate::router::lexer::{self, Tok, Token};
use crate::router::{Route, WriteKind};
use crate::sql::sql_literal;
use std::sync::Arc;

/// Statement words a replayable body never holds.
const STATEMENTS: &[&str] = &[
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "START",
    "XA",
    "UNLOCK",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "RENAME",
    "GRANT",
    "REVOKE",
    "LOAD",
    "CURSOR",
    "CALL",
    "LIMIT",
    "OUTFILE",
    "DUMPFILE",
    "FLUSH",
    "KILL",
];

/// Functions a statement's pins cover but a body's statements do not
/// (each would draw or read anew), besides the router's `UNSAFE_FUNCS`.
const BODY_FUNCTIONS: &[&str] = &[
    "RAND",
    "UUID",
    "SYSDATE",
    "CONNECTION_ID",
    "LAST_INSERT_ID",
    "DATABASE",
    "SCHEMA",
];

/// A table the body writes, and how.
#[derive(Debug, PartialEq)]
pub(super) struct Written {
    pub table: String,
    pub insert: bool,
    /// An INSERT … SELECT (its order must not matter).
    pub select: bool,
}

/// What a body replayed alike does.
#[derive(Debug, Default)]
pub(super) struct Judged {
    pub written: Vec<Written>,
    /// It returns rows to the client (a CALL answered with result sets).
    pub returns_rows: bool,
}

/// The tables a procedure body writes, or why replaying it could give
/// other rows. `functions`: the database's stored functions; `temps`: the
/// session's temporary tables; `databases`: the server's databases; all
/// lower case.
pub(super) fn judge(
    body: &str,
    functions: &[String],
    temps: &[String],
    databases: &[String],
) -> Result<Judged, String> {
    let b = body.as_bytes();
    let mut toks = Vec::new();
    lexer::tokenize(b, &mut toks);
    let next = |i: usize| toks.get(i + 1);
    for (i, t) in toks.iter().enumerate() {
        if t.kind == Tok::Var {
            return Err("it uses a user or system variable".into());
        }
        if let Some(w) = STATEMENTS.iter().find(|w| t.is_word(b, w)) {
            return Err(format!("its body holds {w}"));
        }
        // LOCK IN SHARE MODE locks; LOCK TABLES is a statement.
        if t.is_word(b, "LOCK") && !next(i).is_some_and(|n| n.is_word(b, "IN")) {
            return Err("its body holds LOCK TABLES".into());
        }
        let called = next(i).is_some_and(|n| n.kind == Tok::Punct(b'('));
        if called {
            let unpinned = UNSAFE_FUNCS.iter().chain(BODY_FUNCTIONS);
            if let Some(f) = unpinned.into_iter().find(|f| t.is_word(b, f)) {
                return Err(format!("it calls {f}(), whose value no pin reproduces"));
            }
            if let Some(f) = t.ident(b).filter(|f| functions.contains(&f.to_lowercase())) {
                return Err(format!("it calls stored function `{f}`"));
            }
        }
        let Some(id) = t.ident(b).map(|i| i.to_lowercase()) else {
            continue;
        };
        if temps.contains(&id) {
            return Err(format!("it names `{id}`, a temporary table of the session"));
        }
        let dotted = next(i).is_some_and(|n| n.kind == Tok::Punct(b'.'));
        if dotted && databases.contains(&id) {
            return Err(format!("it names a table with its database `{id}`"));
        }
    }
    let mut judged = Judged::default();
    for piece in toks.split(|t| t.kind == Tok::Punct(b';')) {
        match statement(b, piece)? {
            Piece::Writes(w) if !judged.written.contains(&w) => judged.written.push(w),
            Piece::Rows => judged.returns_rows = true,
            _ => {}
        }
    }
    Ok(judged)
}

/// What one statement of a body does.
enum Piece {
    Nothing,
    /// Returns rows to the client.
    Rows,
    Writes(Written),
}

/// What one statement of the body does, or why it is refused.
fn statement(b: &[u8], piece: &[Token]) -> Result<Piece, String> {
    let has = |w: &str| piece.iter().any(|t| t.is_word(b, w));
    let for_update = |i: usize| i > 0 && piece[i - 1].is_word(b, "FOR");
    let write_at = piece.iter().enumerate().position(|(i, t)| {
        ["INSERT", "REPLACE", "DELETE"]
            .iter()
            .any(|w| t.is_word(b, w))
            || (t.is_word(b, "UPDATE") && !for_update(i))
    });
    let select_at = piece.iter().position(|t| t.is_word(b, "SELECT"));
    let locks = piece
        .iter()
        .enumerate()
        .any(|(i, t)| t.is_word(b, "UPDATE") && for_update(i))
        || (has("SHARE") && has("MODE"));
    match (select_at, write_at) {
        (None, None) => return Ok(Piece::Nothing),
        // A read of its own (SELECT … INTO, a subquery in SET or IF).
        (Some(s), w) if w.is_none_or(|w| s < w) => {
            // Rows for the client only (a SELECT that feeds no variable,
            // condition or write) do not change what replay writes.
            let feeds = [
                "INTO", "SET", "IF", "ELSEIF", "WHILE", "UNTIL", "WHEN", "RETURN", "CASE",
                "DECLARE", "DEFAULT",
            ]
            .iter()
            .any(|w| has(w));
            if !feeds && w.is_none() {
                return Ok(Piece::Rows);
            }
            if !locks {
                return Err(
                    "it reads rows without FOR UPDATE or LOCK IN SHARE MODE into what it writes, and a consistent read may see another snapshot than replay".into(),
                );
            }
            if w.is_some() {
                return Err("a condition of its body reads rows before a write".into());
            }
            return Ok(Piece::Nothing);
        }
        _ => {}
    }
    let at = write_at.expect("a write, the read case returned");
    let kind = &piece[at];
    let insert = kind.is_word(b, "INSERT") || kind.is_word(b, "REPLACE");
    let skip: &[&str] = &[
        "LOW_PRIORITY",
        "HIGH_PRIORITY",
        "DELAYED",
        "QUICK",
        "IGNORE",
        "INTO",
        "FROM",
    ];
    let mut i = at + 1;
    while piece
        .get(i)
        .is_some_and(|t| skip.iter().any(|w| t.is_word(b, w)))
    {
        i += 1;
    }
    let table = piece
        .get(i)
        .and_then(|t| t.ident(b))
        .ok_or("a statement of its body names no table Tandem can read")?;
    if piece.get(i + 1).is_some_and(|t| t.kind == Tok::Punct(b'.')) {
        return Err("it names a table with its database".into());
    }
    let single = match piece.get(i + 1) {
        None => true,
        Some(t) if insert => {
            t.kind == Tok::Punct(b'(')
                || ["VALUES", "VALUE", "SET", "SELECT"]
                    .iter()
                    .any(|w| t.is_word(b, w))
        }
        Some(t) => ["SET", "WHERE", "ORDER"].iter().any(|w| t.is_word(b, w)),
    };
    if !single || has("JOIN") || has("USING") {
        return Err("it writes with a join or several tables".into());
    }
    let select = insert && select_at.is_some();
    if select && (kind.is_word(b, "REPLACE") || has("IGNORE") || has("DUPLICATE")) {
        return Err(
            "an INSERT … SELECT in its body keeps or replaces rows by the order it reads them"
                .into(),
        );
    }
    Ok(Piece::Writes(Written {
        table,
        insert,
        select,
    }))
}

/// Why a CALL that is not replayed follows `unsafe_writes`.
pub(super) fn refusal(why: &str) -> String {
    format!(
        "{}, and {why}",
        crate::router::determinism::UnsafeReason::Call
    )
}

/// `CALL [db.]name [(args)]`: the name (None: another shape, or a
/// database named).
fn called(sql: &[u8], toks: &[Token]) -> Option<String> {
    if !toks.first()?.is_word(sql, "CALL") {
        return None;
    }
    let name = toks.get(1)?.ident(sql)?;
    match toks.get(2) {
        None => Some(name),
        Some(t) if t.kind == Tok::Punct(b'(') || t.kind == Tok::Punct(b';') => Some(name),
        _ => None,
    }
}

impl Capture {
    /// A CALL: mirrored by replay when its procedure is known to do the
    /// same on the secondary (Ok(Ok)), else why not (Ok(Err)); nothing
    /// ran then. `for_execute`: the text of a prepared CALL, which runs in
    /// its place and so must answer with an OK only (no rows, which the
    /// client would read in the binary protocol).
    pub(super) async fn call(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        (sql, for_execute): (&[u8], bool),
        seq: u8,
    ) -> Result<Result<(), String>, SessionError> {
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        let Some(name) = called(sql, &toks) else {
            return Ok(Err(
                "only `CALL name(…)` of the current database's procedure is replayed".into(),
            ));
        };
        if toks.iter().any(|t| t.is_word(sql, "SELECT")) {
            return Ok(Err(
                "its arguments read rows (a subquery), which replay may read otherwise".into(),
            ));
        }
        let Some(db) = cx.binding.conn().current_db.clone() else {
            return Ok(Err("no database is selected".into()));
        };
        let catalog = format!(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION, MD5(ROUTINE_DEFINITION) \
             FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {}",
            sql_literal(db.as_bytes())
        );
        // Both catalog reads in one round trip.
        let schemata = query_packet(b"SELECT LOWER(SCHEMA_NAME) FROM information_schema.SCHEMATA");
        let mut replies = self
            .own_reads(cx, &[&query_packet(catalog.as_bytes()), &schemata])
            .await?;
        let schemata = replies.pop().expect("own_reads answers every packet");
        let reply = replies.pop().expect("own_reads answers every packet");
        let routines = rows(&reply, cx.deprecate_eof()).unwrap_or_default();
        let text = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let functions: Vec<String> = routines
            .iter()
            .filter(|r| text(&r[0]).as_deref() == Some("FUNCTION"))
            .filter_map(|r| text(&r[1]).map(|n| n.to_lowercase()))
            .collect();
        let procedure = routines.iter().find(|r| {
            text(&r[0]).as_deref() == Some("PROCEDURE")
                && text(&r[1]).is_some_and(|n| n.eq_ignore_ascii_case(&name))
        });
        let Some((body, digest)) = procedure.and_then(|r| Some((text(&r[2])?, text(&r[3])?)))
        else {
            return Ok(Err(format!(
                "the body of procedure `{name}` cannot be read from the catalog"
            )));
        };
        let databases: Vec<String> = rows(&schemata, cx.deprecate_eof())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| text(&r[0]))
            .collect();
        let written = match judge(&body, &functions, &self.temp_tables, &databases) {
            Ok(j) if j.returns_rows && for_execute => {
                return Ok(Err(format!(
                    "procedure `{name}` returns rows, which a prepared CALL run as text would answer in the wrong protocol"
                )))
            }
            Ok(j) => j.written,
            Err(why) => return Ok(Err(format!("procedure `{name}`: {why}"))),
        };
        for w in &written {
            let one = Route {
                tables: vec![format!("{db}.{}", w.table)],
                ..route.clone()
            };
            let facts = self.table_facts(cx, m, &one).await?;
            let why = if let Some(engine) = &facts.engine_without_transactions {
                Some(format!("it writes `{}`, a {engine} table", w.table))
            } else if w.insert && facts.auto_increment.is_some() {
                Some(format!(
                    "it inserts into `{}`, whose AUTO_INCREMENT ids replay would hand out anew",
                    w.table
                ))
            } else if w.insert
                && (!facts.unpinnable_defaults.is_empty()
                    || !facts.sequence_defaults.is_empty()
                    || facts.reads_rand)
            {
                Some(format!(
                    "it inserts into `{}`, whose defaults no pin reproduces",
                    w.table
                ))
            } else if w.select && facts.triggers {
                Some(format!(
                    "its INSERT … SELECT into `{}` feeds triggers in the order it reads rows",
                    w.table
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return Ok(Err(format!("procedure `{name}`: {why}")));
            }
        }
        // The guard: the secondary's procedure must be this one.
        let vars = self.ensure_vars(cx).await?;
        let guard = format!(
            "/* tandem: procedure {name} must be the primary's */ SELECT IF((SELECT MD5(ROUTINE_DEFINITION) \
             FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_NAME = {} \
             AND ROUTINE_TYPE = 'PROCEDURE') <=> {}, 0, (SELECT 1 UNION ALL SELECT 2)) INTO @tandem_call_guard",
            sql_literal(name.as_bytes()),
            sql_literal(digest.as_bytes())
        );
        self.carried = Some(Carried {
            before: vec![MirrorStatement {
                db: self.mirror_db(cx),
                sql: guard.into_bytes(),
                tables: Vec::new(),
                ddl: false,
                pins: Pins::default(),
                session: vars,
            }],
            after: Vec::new(),
        });
        let mut call = route.clone();
        call.tables = written
            .into_iter()
            .map(|w| format!("{db}.{}", w.table))
            .collect();
        call.determinism.unsafe_reason = None;
        call.determinism.uses.time = true;
        debug_assert_eq!(call.class, crate::router::Class::Write(WriteKind::Call));
        // (A prepared CALL comes here as its rendered text.)
        lexer::tokenize(sql, &mut cx.scratch.tokens);
        self.mirrored_write(cx, m, &call, super::WriteSrc::Query(sql), seq)
            .await?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(body: &str) -> Result<Vec<(String, bool, bool)>, String> {
        let s = |v: &str| vec![v.to_string()];
        judge(body, &s("twice"), &s("tmp"), &s("otherdb")).map(|j| {
            j.written
                .into_iter()
                .map(|w| (w.table, w.insert, w.select))
                .collect()
        })
    }

    #[test]
    fn bodies_that_replay_alike_are_told_from_those_that_may_not() {
        let ok = judged(
            "BEGIN DECLARE b INT; DECLARE CONTINUE HANDLER FOR NOT FOUND SET b = 0; \
             SELECT balance INTO b FROM acct WHERE id = a FOR UPDATE; \
             IF b >= amt THEN UPDATE acct SET balance = balance - amt, at = NOW() WHERE id = a; \
             INSERT INTO ledger (id, acct, amount) VALUES (ref, a, -amt); \
             ELSE DELETE FROM pending WHERE id = ref; END IF; \
             INSERT INTO audit (acct, n) SELECT id, balance FROM acct WHERE id = a; END",
        )
        .unwrap();
        assert_eq!(
            ok,
            vec![
                ("acct".to_string(), false, false),
                ("ledger".to_string(), true, false),
                ("pending".to_string(), false, false),
                ("audit".to_string(), true, true),
            ]
        );
        let rows = judge(
            "BEGIN UPDATE t SET v = v + 1 WHERE id = a; SELECT id, v FROM t WHERE id = a; END",
            &[],
            &[],
            &[],
        )
        .unwrap();
        assert!(rows.returns_rows && rows.written.len() == 1);
        for (body, why) in [
            ("BEGIN UPDATE t SET v = 1; COMMIT; END", "COMMIT"),
            (
                "BEGIN SELECT v INTO x FROM t WHERE id = 1; UPDATE t SET v = x; END",
                "without FOR UPDATE",
            ),
            (
                "BEGIN IF (SELECT COUNT(*) FROM t) > 0 THEN DELETE FROM t; END IF; END",
                "consistent read",
            ),
            (
                "BEGIN IF (SELECT v FROM t FOR UPDATE) THEN UPDATE u SET v = 1; END IF; END",
                "before a write",
            ),
            ("BEGIN DELETE FROM t ORDER BY id LIMIT 1; END", "LIMIT"),
            ("BEGIN INSERT INTO t VALUES (UUID()); END", "UUID()"),
            ("BEGIN UPDATE t SET v = RAND(); END", "RAND()"),
            ("BEGIN SET @x = 1; END", "variable"),
            ("BEGIN UPDATE t SET v = twice(v); END", "stored function"),
            ("BEGIN INSERT INTO t SELECT * FROM tmp; END", "temporary"),
            ("BEGIN UPDATE otherdb.t SET v = 1; END", "database"),
            (
                "BEGIN UPDATE t JOIN u ON u.id = t.id SET t.v = u.v; END",
                "join",
            ),
            ("BEGIN INSERT IGNORE INTO t SELECT id FROM u; END", "order"),
            (
                "BEGIN PREPARE s FROM 'DELETE FROM t'; EXECUTE s; END",
                "PREPARE",
            ),
            ("BEGIN LOCK TABLES t WRITE; END", "LOCK TABLES"),
            ("BEGIN DECLARE c CURSOR FOR SELECT id FROM t; END", "CURSOR"),
            ("BEGIN CREATE TEMPORARY TABLE x (i INT); END", "CREATE"),
            ("BEGIN UPDATE t SET v = DATABASE(); END", "DATABASE()"),
        ] {
            let err = judged(body).unwrap_err();
            assert!(err.contains(why), "{body}: {err}");
        }
    }
}
