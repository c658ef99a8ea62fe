//! What a mirrored transaction writes, at the granularity parallel apply
//! needs: single rows of a table (by an integer primary key given as a
//! literal), whole tables, or "anything" (a barrier).
//!
//! Two transactions may be applied on different secondary connections only
//! when their write-sets cannot overlap; everything the matcher below does
//! not fully understand widens the set (row → whole table → barrier), so a
//! statement it misreads can only cost parallelism, never order.
//!
//! - Rows: a single-table `UPDATE t SET … WHERE pk = <int> [LIMIT n]` (not
//!   assigning `pk`), `DELETE FROM t WHERE pk = <int> [LIMIT n]`, or an
//!   `INSERT`/`REPLACE INTO t (…, pk, …) VALUES (…), …` whose `pk` values
//!   are integer literals, on a table whose primary key is that one integer
//!   column and that has no other unique key.
//! - Whole table: any other single-table write of a known plain table.
//! - Barrier: a statement that reads another table (any `SELECT`), joins,
//!   writes several tables, or touches a table with triggers or foreign keys
//!   (in either direction), a view, or a table the secondary does not list;
//!   DDL. A barrier runs alone, in journal order.

use crate::router::lexer::{self, Tok, Token};
use std::collections::HashMap;

/// One thing a transaction writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// One row of a table: (table id, primary key value).
    Row(u64, u64),
    /// Every row of a table.
    Table(u64),
}

/// What a transaction writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteSet {
    /// Conflicts with everything.
    Barrier,
    Accesses(Vec<Access>),
}

/// What the secondary's schema says about one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableInfo {
    /// A plain table keyed by one integer column (lower case), no other
    /// unique key, no triggers, no foreign keys.
    Rows { pk: String },
    /// A plain table without triggers or foreign keys, otherwise keyed.
    Whole,
    /// A view, a table with triggers or foreign keys, or not found.
    Barrier,
}

/// A table name as the statement wrote it: (database, table).
pub type TableName = (Option<String>, String);

/// The table id of `db.table` (case folded: two spellings of one table
/// must not look independent).
pub fn table_id(db: &str, table: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(db.to_ascii_lowercase().as_bytes());
    h.update(b"\0");
    h.update(table.to_ascii_lowercase().as_bytes());
    h.digest()
}

/// The shape of one statement, before the schema is known.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape {
    /// `UPDATE`/`DELETE` of one table; `point` = (column, values) when the
    /// WHERE is exactly `column = <int literal>` or `column IN (<int
    /// literal>, …)` (LIMIT allowed; keyed writes have this form);
    /// `assigns` = columns an UPDATE sets.
    Single {
        table: TableName,
        point: Option<(String, Vec<u64>)>,
        assigns: Vec<String>,
    },
    /// `INSERT`/`REPLACE … (columns) VALUES …`: the literal integer values
    /// of each column per row (None where a value is not one).
    Insert {
        table: TableName,
        columns: Vec<String>,
        rows: Vec<Vec<Option<u64>>>,
    },
    /// A single-table write of another form.
    WholeTable(TableName),
    /// `SET @x = <literal>, …` (user variables capture journals before a
    /// write that reads them): touches no table.
    UserVars,
    /// Anything else.
    Unknown,
}

/// A column name (case-insensitive in MySQL: lower case).
fn column(sql: &[u8], t: &Token) -> Option<String> {
    t.ident(sql).map(|c| c.to_ascii_lowercase())
}

/// An unsigned integer literal (`42` or `'42'`) as a number.
fn int_literal(sql: &[u8], t: &Token) -> Option<u64> {
    let s = t.text(sql);
    let digits = match t.kind {
        Tok::Num => s,
        Tok::Str if s.len() >= 2 && matches!(s[0], b'\'' | b'"') && s[s.len() - 1] == s[0] => {
            &s[1..s.len() - 1]
        }
        _ => return None,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn is_punct(t: Option<&Token>, c: u8) -> bool {
    t.is_some_and(|t| t.kind == Tok::Punct(c))
}

/// `name` or `db.name` at `toks[i..]`: the name and the index after it.
fn table_name(sql: &[u8], toks: &[Token], i: usize) -> Option<(TableName, usize)> {
    let first = toks.get(i)?.ident(sql)?;
    if is_punct(toks.get(i + 1), b'.') {
        let second = toks.get(i + 2)?.ident(sql)?;
        return Some(((Some(first), second), i + 3));
    }
    Some(((None, first), i + 1))
}

/// Skips the listed modifier words.
fn skip_words(sql: &[u8], toks: &[Token], mut i: usize, words: &[&str]) -> usize {
    while toks
        .get(i)
        .is_some_and(|t| words.iter().any(|w| t.is_word(sql, w)))
    {
        i += 1;
    }
    i
}

/// `col = <int>` or `col IN (<int>, …)`, then [LIMIT <int>], exactly,
/// from `i` to the end.
fn point_where(sql: &[u8], toks: &[Token], i: usize) -> Option<(String, Vec<u64>)> {
    let col = column(sql, toks.get(i)?)?;
    let mut values = Vec::new();
    let mut at = i + 2;
    if is_punct(toks.get(i + 1), b'=') {
        values.push(int_literal(sql, toks.get(at)?)?);
        at += 1;
    } else if toks.get(i + 1).is_some_and(|t| t.is_word(sql, "IN")) && is_punct(toks.get(at), b'(')
    {
        at += 1;
        loop {
            values.push(int_literal(sql, toks.get(at)?)?);
            at += 1;
            if is_punct(toks.get(at), b')') {
                at += 1;
                break;
            }
            if !is_punct(toks.get(at), b',') {
                return None;
            }
            at += 1;
        }
    } else {
        return None;
    }
    let v = values;
    let rest = &toks[at..];
    let ok = match rest {
        [] => true,
        [l, n] => l.is_word(sql, "LIMIT") && n.kind == Tok::Num,
        _ => false,
    };
    ok.then_some((col, v))
}

/// The shape of one statement (`toks` from `lexer::tokenize`).
pub fn shape(sql: &[u8], toks: &[Token]) -> Shape {
    let mut toks = toks;
    while let Some((last, rest)) = toks.split_last() {
        if last.kind == Tok::Punct(b';') {
            toks = rest;
        } else {
            break;
        }
    }
    // Reading another table, several statements, or parameters: unknown.
    if toks
        .iter()
        .any(|t| t.is_word(sql, "SELECT") || t.kind == Tok::Punct(b';') || t.kind == Tok::Param)
    {
        return Shape::Unknown;
    }
    let Some(first) = toks.first() else {
        return Shape::Unknown;
    };
    if first.is_word(sql, "SET")
        && toks.iter().all(|t| match t.kind {
            Tok::Var => !t.text(sql).starts_with(b"@@"),
            kind => kind != Tok::Punct(b'('),
        })
    {
        return Shape::UserVars;
    }
    if first.is_word(sql, "UPDATE") {
        let i = skip_words(sql, toks, 1, &["LOW_PRIORITY", "IGNORE"]);
        let Some((table, i)) = table_name(sql, toks, i) else {
            return Shape::Unknown;
        };
        if !toks.get(i).is_some_and(|t| t.is_word(sql, "SET")) {
            // Alias, join or several tables.
            return Shape::Unknown;
        }
        let mut assigns = Vec::new();
        let mut depth = 0i32;
        let mut expect_target = true;
        let mut j = i + 1;
        let mut where_at = None;
        while let Some(t) = toks.get(j) {
            match t.kind {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => depth -= 1,
                Tok::Punct(b',') if depth == 0 => {
                    expect_target = true;
                    j += 1;
                    continue;
                }
                _ if depth == 0 && t.is_word(sql, "WHERE") => {
                    where_at = Some(j);
                    break;
                }
                _ => {}
            }
            if expect_target && depth == 0 {
                // `col` or `t.col` before `=`.
                let mut k = j;
                if is_punct(toks.get(k + 1), b'.') {
                    k += 2;
                }
                if let Some(c) = toks.get(k).and_then(|t| column(sql, t)) {
                    assigns.push(c);
                }
                j = k + 1;
                expect_target = false;
                continue;
            }
            j += 1;
        }
        let point = where_at.and_then(|w| point_where(sql, toks, w + 1));
        return Shape::Single {
            table,
            point,
            assigns,
        };
    }
    if first.is_word(sql, "DELETE") {
        let i = skip_words(sql, toks, 1, &["LOW_PRIORITY", "QUICK", "IGNORE"]);
        if !toks.get(i).is_some_and(|t| t.is_word(sql, "FROM")) {
            // Multi-table DELETE.
            return Shape::Unknown;
        }
        let Some((table, i)) = table_name(sql, toks, i + 1) else {
            return Shape::Unknown;
        };
        return match toks.get(i) {
            None => Shape::WholeTable(table),
            Some(t) if t.is_word(sql, "WHERE") => Shape::Single {
                point: point_where(sql, toks, i + 1),
                table,
                assigns: Vec::new(),
            },
            Some(t) if t.is_word(sql, "ORDER") || t.is_word(sql, "LIMIT") => {
                Shape::WholeTable(table)
            }
            // USING, alias, partition list…
            Some(_) => Shape::Unknown,
        };
    }
    if first.is_word(sql, "INSERT") || first.is_word(sql, "REPLACE") {
        let mut i = skip_words(
            sql,
            toks,
            1,
            &["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"],
        );
        let Some((table, next)) = table_name(sql, toks, i) else {
            return Shape::Unknown;
        };
        i = next;
        if !is_punct(toks.get(i), b'(') {
            // INSERT … SET, or VALUES without a column list.
            return match toks.get(i) {
                Some(t) if t.is_word(sql, "SET") || t.is_word(sql, "VALUES") => {
                    Shape::WholeTable(table)
                }
                _ => Shape::Unknown,
            };
        }
        let mut columns = Vec::new();
        i += 1;
        loop {
            let Some(c) = toks.get(i).and_then(|t| column(sql, t)) else {
                return Shape::Unknown;
            };
            columns.push(c);
            match toks.get(i + 1) {
                Some(t) if t.kind == Tok::Punct(b',') => i += 2,
                Some(t) if t.kind == Tok::Punct(b')') => {
                    i += 2;
                    break;
                }
                _ => return Shape::Unknown,
            }
        }
        if !toks
            .get(i)
            .is_some_and(|t| t.is_word(sql, "VALUES") || t.is_word(sql, "VALUE"))
        {
            return Shape::Unknown;
        }
        i += 1;
        // Rows: ( v, v, … ) [, ( … )]…; a value is "one literal" or not.
        let mut rows = Vec::new();
        while is_punct(toks.get(i), b'(') {
            i += 1;
            let mut row = Vec::new();
            let mut depth = 0i32;
            let mut start = i;
            loop {
                let Some(t) = toks.get(i) else {
                    return Shape::Unknown;
                };
                match t.kind {
                    Tok::Punct(b'(') => depth += 1,
                    Tok::Punct(b')') if depth > 0 => depth -= 1,
                    Tok::Punct(b',' | b')') if depth == 0 => {
                        let value = match &toks[start..i] {
                            [one] => int_literal(sql, one),
                            _ => None,
                        };
                        row.push(value);
                        start = i + 1;
                        if t.kind == Tok::Punct(b')') {
                            i += 1;
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if row.len() != columns.len() {
                return Shape::Unknown;
            }
            rows.push(row);
            if is_punct(toks.get(i), b',') {
                i += 1;
            } else {
                break;
            }
        }
        let tail_ok = match toks.get(i) {
            None => true,
            // Only the conflicting row (the primary key is the only unique
            // key where this matters) is updated.
            Some(t) => t.is_word(sql, "ON"),
        };
        if rows.is_empty() || !tail_ok {
            return Shape::Unknown;
        }
        return Shape::Insert {
            table,
            columns,
            rows,
        };
    }
    Shape::Unknown
}

/// The accesses of one statement once its table is known; None: barrier.
pub fn accesses(shape: &Shape, info: &TableInfo, id: u64, out: &mut Vec<Access>) -> Option<()> {
    let pk = match info {
        TableInfo::Barrier => return None,
        TableInfo::Whole => None,
        TableInfo::Rows { pk } => Some(pk.as_str()),
    };
    match shape {
        Shape::Unknown => return None,
        Shape::UserVars => {}
        Shape::WholeTable(_) => out.push(Access::Table(id)),
        Shape::Single { point, assigns, .. } => match (pk, point) {
            (Some(pk), Some((col, v))) if col == pk && !assigns.iter().any(|a| a == pk) => {
                out.extend(v.iter().map(|v| Access::Row(id, *v)))
            }
            _ => out.push(Access::Table(id)),
        },
        Shape::Insert { columns, rows, .. } => {
            let at = pk.and_then(|pk| columns.iter().position(|c| c == pk));
            let keys: Option<Vec<u64>> = at.and_then(|at| rows.iter().map(|r| r[at]).collect());
            match keys {
                Some(keys) => out.extend(keys.into_iter().map(|k| Access::Row(id, k))),
                None => out.push(Access::Table(id)),
            }
        }
    }
    Some(())
}

/// Whether a statement's effect on its table may depend on rows other
/// than the ones it writes, so that replaying it on a secondary where some
/// rows are still missing or wrong (during a backfill) can leave a wrong
/// row where a right one was: anything that reads (`SELECT`, joins,
/// triggers, foreign keys), moves rows (an `UPDATE` of the primary key, or
/// of a table whose other unique keys are not known here), decides by a
/// unique-key conflict on a key other than the one integer primary key
/// (`INSERT … ON DUPLICATE KEY UPDATE`, `REPLACE`, `INSERT IGNORE`), or
/// is not understood. The rest (`UPDATE` of non-key columns and `DELETE`
/// with any WHERE, inserts into a table keyed by one integer column only)
/// change each row from that row alone.
pub fn spans(shape: &Shape, info: &TableInfo) -> bool {
    let pk = match info {
        TableInfo::Barrier => return true,
        TableInfo::Whole => None,
        TableInfo::Rows { pk } => Some(pk.as_str()),
    };
    match shape {
        Shape::UserVars => false,
        Shape::Unknown | Shape::WholeTable(_) => true,
        Shape::Single { assigns, .. } => match pk {
            Some(pk) => assigns.iter().any(|a| a == pk),
            None => !assigns.is_empty(),
        },
        Shape::Insert { .. } => pk.is_none(),
    }
}

/// The table a shape writes.
pub fn shape_table(shape: &Shape) -> Option<&TableName> {
    match shape {
        Shape::Single { table, .. } | Shape::Insert { table, .. } | Shape::WholeTable(table) => {
            Some(table)
        }
        Shape::Unknown | Shape::UserVars => None,
    }
}

/// Tokenizes and shapes one statement.
pub fn shape_of(sql: &[u8], scratch: &mut Vec<Token>) -> Shape {
    lexer::tokenize(sql, scratch);
    shape(sql, scratch)
}

/// Conflict bookkeeping of the write-sets in flight on each worker.
#[derive(Debug)]
pub struct InFlight {
    /// Per worker: transactions queued or being applied.
    load: Vec<usize>,
    /// Per worker: barriers among them.
    barriers: Vec<usize>,
    /// Per worker: DDL among them (a barrier for its tables only, which
    /// may run long): independent transactions go elsewhere.
    ddl: Vec<usize>,
    rows: HashMap<(u64, u64), (usize, usize)>,
    /// Table id → per worker: (row accesses, whole-table accesses).
    tables: HashMap<u64, Vec<(usize, usize)>>,
}

/// Transactions a worker takes on (applying and queued) before independent
/// ones go to another worker; an idle worker holding this many starts at
/// once instead of waiting `migration.apply_batch_wait` for more.
pub const FILL: usize = 16;

/// Transactions one worker holds (applying and queued) before more that
/// conflict with them wait outside its queue.
pub const CAP: usize = 64;

/// Where a transaction can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// To this worker (behind what it already holds).
    Worker(usize),
    /// Not before some transaction in flight finishes.
    Wait,
}

impl InFlight {
    pub fn new(workers: usize) -> Self {
        Self {
            load: vec![0; workers.max(1)],
            barriers: vec![0; workers.max(1)],
            ddl: vec![0; workers.max(1)],
            rows: HashMap::new(),
            tables: HashMap::new(),
        }
    }

    /// Whether `ws` conflicts with anything held.
    pub fn overlaps(&self, ws: &WriteSet) -> bool {
        self.conflicts(ws) != 0
    }

    pub fn is_idle(&self) -> bool {
        self.load.iter().all(|l| *l == 0)
    }

    /// Workers holding something `ws` conflicts with, as a bit set of at
    /// most 64 workers (callers cap the worker count).
    fn conflicts(&self, ws: &WriteSet) -> u64 {
        let mut set = 0u64;
        let busy = |set: &mut u64, w: usize| *set |= 1 << w;
        for (w, b) in self.barriers.iter().enumerate() {
            if *b > 0 {
                busy(&mut set, w);
            }
        }
        match ws {
            WriteSet::Barrier => {
                for (w, l) in self.load.iter().enumerate() {
                    if *l > 0 {
                        busy(&mut set, w);
                    }
                }
            }
            WriteSet::Accesses(acc) => {
                for a in acc {
                    match a {
                        Access::Row(t, k) => {
                            if let Some((w, _)) = self.rows.get(&(*t, *k)) {
                                busy(&mut set, *w);
                            }
                            if let Some(per) = self.tables.get(t) {
                                for (w, (_, whole)) in per.iter().enumerate() {
                                    if *whole > 0 {
                                        busy(&mut set, w);
                                    }
                                }
                            }
                        }
                        Access::Table(t) => {
                            if let Some(per) = self.tables.get(t) {
                                for (w, (rows, whole)) in per.iter().enumerate() {
                                    if *rows + *whole > 0 {
                                        busy(&mut set, w);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        set
    }

    /// Where `ws` may go: the one worker it conflicts with, else the
    /// busiest one below `FILL`, else the least loaded one (a barrier only
    /// to worker 0, once nothing else is in flight elsewhere).
    pub fn place(&self, ws: &WriteSet) -> Placement {
        let set = self.conflicts(ws);
        if matches!(ws, WriteSet::Barrier) {
            return if set & !1 == 0 {
                Placement::Worker(0)
            } else {
                Placement::Wait
            };
        }
        match set.count_ones() {
            1 => {
                let w = set.trailing_zeros() as usize;
                // Past `CAP`, later work for it waits outside its queue, so
                // independent transactions are not held up behind it (with
                // one worker there is nowhere else for them to go: journal
                // order is kept).
                if self.load[w] >= CAP && self.load.len() > 1 {
                    Placement::Wait
                } else {
                    Placement::Worker(w)
                }
            }
            0 => {
                // The busiest worker with room: its next group grows (one
                // secondary commit for many transactions) instead of every
                // transaction becoming a group of its own; past `FILL`,
                // the least loaded one, so waiting stays short.
                // Never behind a DDL when another worker has none.
                let n = self.load.len();
                let free = |w: &usize| self.ddl[*w] == 0 || self.ddl.iter().all(|d| *d > 0);
                let w = (0..n)
                    .filter(|w| self.load[*w] < FILL && free(w))
                    .max_by_key(|w| (self.load[*w], n - w))
                    .or_else(|| (0..n).filter(free).min_by_key(|w| self.load[*w]))
                    .unwrap_or(0);
                Placement::Worker(w)
            }
            _ => Placement::Wait,
        }
    }

    /// Counts a DDL on worker `w` (`held`) or its end.
    pub fn hold_ddl(&mut self, w: usize, held: bool) {
        if let Some(d) = self.ddl.get_mut(w) {
            *d = if held { *d + 1 } else { d.saturating_sub(1) };
        }
    }

    pub fn add(&mut self, w: usize, ws: &WriteSet) {
        self.change(w, ws, true);
    }

    pub fn remove(&mut self, w: usize, ws: &WriteSet) {
        self.change(w, ws, false);
    }

    fn change(&mut self, w: usize, ws: &WriteSet, add: bool) {
        let n = self.load.len();
        let step = |v: &mut usize| {
            if add {
                *v += 1
            } else {
                *v = v.saturating_sub(1)
            }
        };
        step(&mut self.load[w]);
        match ws {
            WriteSet::Barrier => step(&mut self.barriers[w]),
            WriteSet::Accesses(acc) => {
                for a in acc {
                    let (t, row) = match a {
                        Access::Row(t, k) => (*t, Some(*k)),
                        Access::Table(t) => (*t, None),
                    };
                    if let Some(k) = row {
                        if add {
                            self.rows.entry((t, k)).or_insert((w, 0)).1 += 1;
                        } else if let Some(e) = self.rows.get_mut(&(t, k)) {
                            e.1 = e.1.saturating_sub(1);
                            if e.1 == 0 {
                                self.rows.remove(&(t, k));
                            }
                        }
                    }
                    let per = self.tables.entry(t).or_insert_with(|| vec![(0, 0); n]);
                    match row {
                        Some(_) => step(&mut per[w].0),
                        None => step(&mut per[w].1),
                    }
                    if per.iter().all(|(r, wh)| r + wh == 0) {
                        self.tables.remove(&t);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
