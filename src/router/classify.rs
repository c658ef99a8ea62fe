//! One statement → `Route`, with sqlparser (MySqlDialect) and, when it cannot
//! parse the statement, a keyword fallback marked `parsed: false`.

use super::lexer::{Tok, Token};
use super::{word_at, Class, Route, SessionOp, TxnOp, WriteKind};
use sqlparser::ast::{
    visit_relations, FromTable, ObjectName, ObjectType, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// `text` is the statement alone; `sql`/`toks` are the packet and the
/// statement's tokens (token offsets index into `sql`).
pub(super) fn classify_one(text: &[u8], sql: &[u8], toks: &[Token]) -> Route {
    // Classification only: non-UTF-8 bytes (e.g. inside _binary'…') are
    // replaced for parsing; the original bytes are what reaches the server.
    if too_deep_for_the_parser(sql, toks) {
        return fallback(sql, toks);
    }
    let text = String::from_utf8_lossy(text);
    match Parser::parse_sql(&MySqlDialect {}, &text) {
        Ok(stmts) if stmts.len() == 1 => from_ast(&stmts[0], sql, toks),
        _ => match comma_update_as_joins(sql, toks)
            .or_else(|| next_value_for_as_nextval(sql, toks))
            .and_then(|t| Parser::parse_sql(&MySqlDialect {}, &t).ok())
        {
            Some(stmts) if stmts.len() == 1 => from_ast(&stmts[0], sql, toks),
            _ => fallback(sql, toks),
        },
    }
}

/// Joins per statement beyond which sqlparser is not asked: it parses a
/// `JOIN` without `ON` by recursion, one frame of a few KB per join (tens of
/// KB unoptimized), and a few hundred of them overflow a 2 MB thread stack,
/// which aborts the whole process (found by `make fuzz`). MySQL joins at
/// most 61 tables, and a statement past this is still answered by the
/// server (only Tandem's reading of it falls back to its keywords); the
/// runtime's threads have 8 MB stacks (`main.rs`), a wide margin over this.
pub const MAX_JOINS: usize = 40;

/// Whether the statement has more joins than `MAX_JOINS` (`JOIN` words,
/// and the commas of `UPDATE a, b` that `comma_update_as_joins` makes
/// joins). Such a statement takes the keyword fallback (`parsed: false`):
/// a read reaches the server, which answers it; a write follows
/// `unsafe_writes`.
fn too_deep_for_the_parser(sql: &[u8], toks: &[Token]) -> bool {
    toks.iter().filter(|t| t.is_word(sql, "JOIN")).count() + update_table_commas(sql, toks).len()
        > MAX_JOINS
}

/// The commas (token indexes) between the tables of `UPDATE a, b, … SET`;
/// none for any other statement.
fn update_table_commas(sql: &[u8], toks: &[Token]) -> Vec<usize> {
    let mut commas = Vec::new();
    if !toks.first().is_some_and(|t| t.is_word(sql, "UPDATE")) {
        return commas;
    }
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate().skip(1) {
        match t.kind {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b',') if depth == 0 => commas.push(i),
            Tok::Word if depth == 0 && t.is_word(sql, "SET") => break,
            _ => {}
        }
    }
    commas
}

/// MySQL's multi-table `UPDATE a, b SET …`, which sqlparser does not
/// read, as `UPDATE a CROSS JOIN b SET …` (the same join), for
/// classification only: the server gets the statement as sent.
fn comma_update_as_joins(sql: &[u8], toks: &[Token]) -> Option<String> {
    let commas = update_table_commas(sql, toks);
    if commas.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len() + 16 * commas.len());
    let mut at = toks.first()?.start;
    for i in commas {
        out.extend_from_slice(&sql[at..toks[i].start]);
        out.extend_from_slice(b" CROSS JOIN ");
        at = toks[i].end;
    }
    let end = toks.last()?.end;
    out.extend_from_slice(&sql[at..end]);
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// MariaDB's `NEXT VALUE FOR s`, which sqlparser does not read in every
/// place, as the same call `NEXTVAL(s)`, for classification only (the
/// server gets the statement as sent).
fn next_value_for_as_nextval(sql: &[u8], toks: &[Token]) -> Option<String> {
    let mut out = Vec::with_capacity(sql.len());
    let mut at = toks.first()?.start;
    let mut i = 0;
    let mut changed = false;
    while i < toks.len() {
        let t = &toks[i];
        if t.is_word(sql, "NEXT")
            && toks.get(i + 1).is_some_and(|n| n.is_word(sql, "VALUE"))
            && toks.get(i + 2).is_some_and(|n| n.is_word(sql, "FOR"))
        {
            let mut last = i + 3;
            toks.get(last)?;
            if toks
                .get(last + 1)
                .is_some_and(|d| d.kind == Tok::Punct(b'.'))
            {
                last += 2;
                toks.get(last)?;
            }
            out.extend_from_slice(&sql[at..t.start]);
            out.extend_from_slice(b"NEXTVAL(");
            out.extend_from_slice(&sql[toks[i + 3].start..toks[last].end]);
            out.push(b')');
            at = toks[last].end;
            i = last + 1;
            changed = true;
            continue;
        }
        i += 1;
    }
    if !changed {
        return None;
    }
    out.extend_from_slice(&sql[at..toks.last()?.end]);
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn route(class: Class, tables: Vec<String>) -> Route {
    Route {
        class,
        tables,
        parsed: true,
        determinism: Default::default(),
        object: None,
    }
}

fn from_ast(stmt: &Statement, sql: &[u8], toks: &[Token]) -> Route {
    use Statement as S;
    match stmt {
        // `WITH … UPDATE/DELETE/INSERT`: the write is what it runs; the
        // common table expressions are only read.
        S::Query(q) => match &*q.body {
            SetExpr::Update(w) | SetExpr::Delete(w) | SetExpr::Insert(w) => from_ast(w, sql, toks),
            _ => route(
                Class::Read {
                    locking: !q.locks.is_empty() || has_lock_in_share_mode(sql, toks),
                },
                relations(stmt),
            ),
        },
        S::Insert(ins) => {
            let kind = if ins.replace_into || word_at(sql, toks, 0).as_deref() == Some("REPLACE") {
                WriteKind::Replace
            } else {
                WriteKind::Insert
            };
            let tables = match &ins.table {
                TableObject::TableName(n) => vec![name(n)],
                _ => relations(stmt),
            };
            route(Class::Write(kind), tables)
        }
        S::Update(u) => {
            let mut tables = Vec::new();
            push_table_with_joins(&mut tables, &u.table);
            route(Class::Write(WriteKind::Update), tables)
        }
        // sqlparser reads `DELETE QUICK FROM t` as a multi-table delete of
        // a table named QUICK; the keyword reading is right for these.
        S::Delete(_)
            if toks.get(1).is_some_and(|t| {
                ["QUICK", "LOW_PRIORITY", "IGNORE"]
                    .iter()
                    .any(|w| t.is_word(sql, w))
            }) =>
        {
            let class = Class::Write(WriteKind::Delete);
            let tables = keyword_tables(sql, toks, &class);
            route(class, tables)
        }
        S::Delete(d) => {
            let mut tables: Vec<String> = d.tables.iter().map(name).collect();
            if tables.is_empty() {
                let from = match &d.from {
                    FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
                };
                for t in from {
                    push_table_with_joins(&mut tables, t);
                }
            }
            route(Class::Write(WriteKind::Delete), tables)
        }
        S::LoadData { table_name, .. } => {
            route(Class::Write(WriteKind::LoadData), vec![name(table_name)])
        }
        S::Call(_) => route(Class::Write(WriteKind::Call), Vec::new()),
        S::Explain { .. } => route(Class::Read { locking: false }, Vec::new()),
        s if is_show(s) => route(Class::Read { locking: false }, Vec::new()),
        S::StartTransaction { .. } => route(Class::Transaction(TxnOp::Begin), Vec::new()),
        S::Commit { .. } => route(Class::Transaction(TxnOp::Commit), Vec::new()),
        S::Rollback { savepoint, .. } => route(
            Class::Transaction(if savepoint.is_some() {
                TxnOp::RollbackToSavepoint
            } else {
                TxnOp::Rollback
            }),
            Vec::new(),
        ),
        S::Savepoint { .. } => route(Class::Transaction(TxnOp::Savepoint), Vec::new()),
        S::ReleaseSavepoint { .. } => {
            route(Class::Transaction(TxnOp::ReleaseSavepoint), Vec::new())
        }
        S::Set(_) => {
            if toks.get(1).is_some_and(|t| t.is_word(sql, "TRANSACTION"))
                || toks.get(2).is_some_and(|t| t.is_word(sql, "TRANSACTION"))
            {
                route(Class::Transaction(TxnOp::Other), Vec::new())
            } else {
                route(Class::Session(SessionOp::Set), Vec::new())
            }
        }
        S::Use(_) => match use_db(sql, toks) {
            Some(db) => route(Class::Session(SessionOp::Use(db)), Vec::new()),
            None => fallback(sql, toks),
        },
        S::Kill { .. } => route(Class::Session(SessionOp::Kill), Vec::new()),
        S::Prepare { .. } | S::Execute { .. } | S::Deallocate { .. } => {
            route(Class::Session(SessionOp::PreparedSql), Vec::new())
        }
        S::LockTables { .. } => route(Class::Session(SessionOp::LockTables), relations(stmt)),
        S::UnlockTables => route(Class::Session(SessionOp::UnlockTables), Vec::new()),
        S::CreateTable(_)
        | S::CreateView(_)
        | S::CreateIndex(_)
        | S::CreateSchema { .. }
        | S::CreateDatabase { .. }
        | S::CreateFunction(_)
        | S::CreateProcedure { .. }
        | S::CreateTrigger(_)
        | S::CreateSequence { .. }
        | S::AlterTable(_)
        | S::AlterSchema(_)
        | S::AlterIndex { .. }
        | S::AlterView { .. }
        | S::Drop { .. }
        | S::DropFunction(_)
        | S::DropProcedure { .. }
        | S::DropTrigger(_)
        | S::Truncate(_)
        | S::RenameTable(_) => route(Class::Ddl, ddl_tables(stmt)),
        _ => keyword_route(sql, toks, true),
    }
}

/// Keyword classification for statements sqlparser cannot parse.
fn fallback(sql: &[u8], toks: &[Token]) -> Route {
    keyword_route(sql, toks, false)
}

fn keyword_route(sql: &[u8], toks: &[Token], parsed: bool) -> Route {
    let w0 = word_at(sql, toks, 0).unwrap_or_default();
    let w1 = word_at(sql, toks, 1).unwrap_or_default();
    let class = match w0.as_str() {
        "SELECT" | "SHOW" | "EXPLAIN" | "DESC" | "DESCRIBE" | "WITH" | "VALUES" | "TABLE"
        | "HELP" | "CHECKSUM" => Class::Read {
            locking: w0 == "SELECT" && has_for_update(sql, toks),
        },
        "INSERT" => Class::Write(WriteKind::Insert),
        "REPLACE" => Class::Write(WriteKind::Replace),
        "UPDATE" => Class::Write(WriteKind::Update),
        "DELETE" => Class::Write(WriteKind::Delete),
        "LOAD" => Class::Write(WriteKind::LoadData),
        "CALL" => Class::Write(WriteKind::Call),
        "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "RENAME" => match w1.as_str() {
            "USER" | "ROLE" => Class::Other,
            _ => Class::Ddl,
        },
        "BEGIN" => Class::Transaction(TxnOp::Begin),
        "START" if w1 == "TRANSACTION" => Class::Transaction(TxnOp::Begin),
        "COMMIT" => Class::Transaction(TxnOp::Commit),
        "ROLLBACK" if toks.iter().any(|t| t.is_word(sql, "TO")) => {
            Class::Transaction(TxnOp::RollbackToSavepoint)
        }
        "ROLLBACK" => Class::Transaction(TxnOp::Rollback),
        "SAVEPOINT" => Class::Transaction(TxnOp::Savepoint),
        "RELEASE" => Class::Transaction(TxnOp::ReleaseSavepoint),
        "XA" => Class::Transaction(TxnOp::Other),
        "SET" if w1 == "TRANSACTION" || word_at(sql, toks, 2).as_deref() == Some("TRANSACTION") => {
            Class::Transaction(TxnOp::Other)
        }
        "SET" => Class::Session(SessionOp::Set),
        "USE" => match use_db(sql, toks) {
            Some(db) => Class::Session(SessionOp::Use(db)),
            None => Class::Other,
        },
        "KILL" => Class::Session(SessionOp::Kill),
        "PREPARE" | "EXECUTE" | "DEALLOCATE" => Class::Session(SessionOp::PreparedSql),
        "LOCK" => Class::Session(SessionOp::LockTables),
        "UNLOCK" => Class::Session(SessionOp::UnlockTables),
        _ => Class::Other,
    };
    let tables = if parsed {
        Vec::new()
    } else {
        keyword_tables(sql, toks, &class)
    };
    Route {
        class,
        tables,
        parsed,
        determinism: Default::default(),
        object: None,
    }
}

/// Best-effort write target from tokens: INSERT/REPLACE … [INTO] t,
/// UPDATE [LOW_PRIORITY] [IGNORE] t, DELETE … FROM t.
fn keyword_tables(sql: &[u8], toks: &[Token], class: &Class) -> Vec<String> {
    let Class::Write(kind) = class else {
        return Vec::new();
    };
    let modifiers = [
        "LOW_PRIORITY",
        "DELAYED",
        "HIGH_PRIORITY",
        "IGNORE",
        "QUICK",
        "INTO",
    ];
    let start = match kind {
        WriteKind::Delete => match toks.iter().position(|t| t.is_word(sql, "FROM")) {
            Some(p) => p + 1,
            None => return Vec::new(),
        },
        WriteKind::Insert | WriteKind::Replace | WriteKind::Update => 1,
        WriteKind::LoadData => match toks
            .windows(2)
            .position(|w| w[0].is_word(sql, "INTO") && w[1].is_word(sql, "TABLE"))
        {
            Some(p) => p + 2,
            None => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    let mut i = start;
    while toks
        .get(i)
        .is_some_and(|t| modifiers.iter().any(|m| t.is_word(sql, m)))
    {
        i += 1;
    }
    let mut parts = Vec::new();
    while let Some(t) = toks.get(i) {
        match t.ident(sql) {
            Some(name) => parts.push(name),
            None => break,
        }
        if toks.get(i + 1).is_some_and(|t| t.kind == Tok::Punct(b'.')) {
            i += 2;
        } else {
            break;
        }
    }
    if parts.is_empty() {
        Vec::new()
    } else {
        vec![parts.join(".")]
    }
}

fn use_db(sql: &[u8], toks: &[Token]) -> Option<String> {
    toks.get(1)?.ident(sql)
}

fn has_for_update(sql: &[u8], toks: &[Token]) -> bool {
    toks.windows(2)
        .any(|w| w[0].is_word(sql, "FOR") && w[1].is_word(sql, "UPDATE"))
        || has_lock_in_share_mode(sql, toks)
}

fn has_lock_in_share_mode(sql: &[u8], toks: &[Token]) -> bool {
    toks.windows(4).any(|w| {
        w[0].is_word(sql, "LOCK")
            && w[1].is_word(sql, "IN")
            && w[2].is_word(sql, "SHARE")
            && w[3].is_word(sql, "MODE")
    })
}

fn name(n: &ObjectName) -> String {
    n.0.iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
        .collect::<Vec<_>>()
        .join(".")
}

fn push_table_with_joins(out: &mut Vec<String>, t: &TableWithJoins) {
    let mut push = |f: &TableFactor| {
        if let TableFactor::Table { name: n, .. } = f {
            let n = name(n);
            if !out.contains(&n) {
                out.push(n);
            }
        }
    };
    push(&t.relation);
    for j in &t.joins {
        push(&j.relation);
    }
}

/// Every table one statement names (read or written, as written: `t` or
/// `db.t`), from sqlparser with the same rewrites `classify_one` tries;
/// None when it cannot be parsed.
pub(super) fn named_tables(sql: &[u8], toks: &[Token]) -> Option<Vec<String>> {
    if too_deep_for_the_parser(sql, toks) {
        return None;
    }
    let text = String::from_utf8_lossy(sql);
    let stmts = Parser::parse_sql(&MySqlDialect {}, &text)
        .ok()
        .or_else(|| {
            comma_update_as_joins(sql, toks)
                .or_else(|| next_value_for_as_nextval(sql, toks))
                .and_then(|t| Parser::parse_sql(&MySqlDialect {}, &t).ok())
        })?;
    match stmts.as_slice() {
        [stmt] => Some(relations(stmt)),
        _ => None,
    }
}

fn relations(stmt: &Statement) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = visit_relations(stmt, |n| {
        let n = name(n);
        if !n.eq_ignore_ascii_case("dual") && !out.contains(&n) {
            out.push(n);
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

fn ddl_tables(stmt: &Statement) -> Vec<String> {
    match stmt {
        Statement::CreateTable(c) => vec![name(&c.name)],
        Statement::AlterTable(a) => vec![name(&a.name)],
        Statement::Drop {
            object_type: ObjectType::Database | ObjectType::Schema,
            ..
        }
        | Statement::CreateDatabase { .. }
        | Statement::CreateSchema { .. } => Vec::new(),
        Statement::Drop { table: Some(t), .. } => vec![name(t)],
        Statement::Drop { names, .. } => names.iter().map(name).collect(),
        Statement::CreateIndex(c) => vec![name(&c.table_name)],
        Statement::CreateSequence { name: n, .. } => vec![name(n)],
        Statement::RenameTable(r) => r
            .iter()
            .flat_map(|r| [name(&r.old_name), name(&r.new_name)])
            .collect(),
        _ => relations(stmt),
    }
}

/// The tables a DDL sqlparser could not parse names, from its tokens:
/// `ALTER|CREATE [OR REPLACE] TABLE [IF [NOT] EXISTS] t`, `DROP TABLE a, b`,
/// `TRUNCATE [TABLE] t`, `RENAME TABLE a TO b, …`, `… INDEX i ON t`,
/// `… SEQUENCE s`, `… VIEW v`. Some(empty) for a DDL on a database; None
/// when the target cannot be told (capture then refuses to guess).
pub(super) fn ddl_keyword_tables(sql: &[u8], toks: &[Token]) -> Option<Vec<String>> {
    let name_at = |i: usize| -> Option<(String, usize)> {
        let first = toks.get(i)?.ident(sql)?;
        if toks.get(i + 1).is_some_and(|t| t.kind == Tok::Punct(b'.')) {
            let second = toks.get(i + 2)?.ident(sql)?;
            return Some((format!("{first}.{second}"), i + 3));
        }
        Some((first, i + 1))
    };
    let skip_if_exists = |mut i: usize| {
        if toks.get(i).is_some_and(|t| t.is_word(sql, "IF")) {
            i += 1;
            if toks.get(i).is_some_and(|t| t.is_word(sql, "NOT")) {
                i += 1;
            }
            if toks.get(i).is_some_and(|t| t.is_word(sql, "EXISTS")) {
                i += 1;
            }
        }
        i
    };
    let verb = toks.first()?;
    if verb.is_word(sql, "TRUNCATE") {
        let at = usize::from(toks.get(1).is_some_and(|t| t.is_word(sql, "TABLE"))) + 1;
        return Some(vec![name_at(at)?.0]);
    }
    let rename = verb.is_word(sql, "RENAME");
    let (at, object) = toks
        .iter()
        .enumerate()
        .skip(1)
        .take(12)
        .find_map(|(i, t)| {
            ["TABLE", "SEQUENCE", "VIEW", "INDEX", "DATABASE", "SCHEMA"]
                .into_iter()
                .find(|w| t.is_word(sql, w))
                .map(|w| (i, w))
        })?;
    match object {
        "DATABASE" | "SCHEMA" => Some(Vec::new()),
        "INDEX" => {
            let on = toks.iter().skip(at).position(|t| t.is_word(sql, "ON"))?;
            Some(vec![name_at(at + on + 1)?.0])
        }
        _ => {
            let mut out = Vec::new();
            let mut i = skip_if_exists(at + 1);
            loop {
                let (n, next) = name_at(i)?;
                out.push(n);
                i = next;
                if rename && toks.get(i).is_some_and(|t| t.is_word(sql, "TO")) {
                    let (n, next) = name_at(i + 1)?;
                    out.push(n);
                    i = next;
                }
                let more = verb.is_word(sql, "DROP") || rename;
                if more && toks.get(i).is_some_and(|t| t.kind == Tok::Punct(b',')) {
                    i += 1;
                } else {
                    break;
                }
            }
            Some(out)
        }
    }
}

/// SHOW and DESCRIBE statements: questions about the server and the
/// schema, which read no table's rows.
pub(crate) fn is_show(s: &Statement) -> bool {
    use Statement as S;
    matches!(
        s,
        S::ExplainTable { .. }
            | S::ShowFunctions { .. }
            | S::ShowVariable { .. }
            | S::ShowStatus { .. }
            | S::ShowVariables { .. }
            | S::ShowCreate { .. }
            | S::ShowColumns { .. }
            | S::ShowCatalogs { .. }
            | S::ShowDatabases { .. }
            | S::ShowProcessList { .. }
            | S::ShowSchemas { .. }
            | S::ShowCharset(_)
            | S::ShowObjects(_)
            | S::ShowTables { .. }
            | S::ShowViews { .. }
            | S::ShowCollation { .. }
    )
}
