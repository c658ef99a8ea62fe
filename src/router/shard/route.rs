//! Statement → shards: which shards a read or write of a cluster's tables
//! runs on, the text each gets, and how their answers merge into the one
//! answer a single database would give. What cannot be answered exactly
//! across shards is refused with the reason (`Refusal`), never answered
//! approximately.
//!
//! A sharded table's rows are found from its shard key in the WHERE clause
//! (and INNER JOIN conditions): `key = v`, `key IN (…)`, ANDed with
//! anything (intersection), ORed (union). Several sharded tables in one
//! statement must be joined on their shard keys (co-located: same placement,
//! same key type); reference tables join anything.

use super::{canon, shard_of, KeyType, Literal, Unroutable};
use crate::config::model::ScatterWrites;
use crate::config::{ClusterConfig, Placement, TablePlacement};
use crate::router::lexer::Token;
use sqlparser::ast::{
    visit_relations, AssignmentTarget, BinaryOperator, Expr, FromTable, JoinConstraint,
    JoinOperator, ObjectName, Statement, TableFactor, TableWithJoins, UnaryOperator, Value,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

/// What routing needs to know of a table, read from a shard's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFacts {
    /// Column names in table order.
    pub columns: Vec<String>,
    /// The type of the rule's shard key column (None: no such column).
    pub key_type: Option<KeyType>,
    /// The AUTO_INCREMENT column, if any.
    pub auto_increment: Option<String>,
    /// The shard key column's default, as information_schema writes it
    /// (`'eu'`, `5`, `current_timestamp()`; None: no default).
    pub key_default: Option<String>,
}

/// Which shards a statement runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shards {
    /// Any one shard holds the answer (reference tables, no table).
    Any,
    /// These shards (sorted, at least one).
    Set(Vec<usize>),
}

/// An aggregate whose per-shard values combine into the whole's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Count,
    Sum,
    Min,
    Max,
}

/// How the shards' answers become the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// One shard: its answer as it is.
    Relay,
    /// Every shard's rows, in no particular order; `offset`/`limit` apply
    /// to the whole (each shard was asked for offset+limit rows).
    Concat { offset: u64, limit: Option<u64> },
    /// A k-way merge on (column index, descending) keys.
    Ordered {
        keys: Vec<(usize, bool)>,
        offset: u64,
        limit: Option<u64>,
    },
    /// Groups combined across shards (GROUP BY, DISTINCT, aggregates).
    Grouped(Box<super::group::Grouped>),
    /// Writes: affected rows and warnings summed; the insert id of the
    /// shard that got the statement's last row (`last`).
    Write { last: Option<usize> },
    /// A reference-table write: every shard does the same; the first
    /// shard's answer is the client's.
    Same,
    /// An UPDATE that changes rows' shard key (`shard_key_updates: move`):
    /// the rows are updated where they are, then moved to their new shard.
    KeyMove,
}

/// The plan for one statement on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    pub shards: Shards,
    pub merge: Merge,
    /// The text each shard gets, when it is not the client's (an INSERT's
    /// rows split per shard; a LIMIT widened to offset+limit).
    pub texts: Option<Vec<(usize, Vec<u8>)>>,
    /// The statement writes rows.
    pub write: bool,
}

impl ShardPlan {
    /// What `shard` runs: the plan's own text for it, else the statement
    /// (`sql`) as planned.
    pub fn text_for<'a>(&'a self, shard: usize, sql: &'a [u8]) -> &'a [u8] {
        self.texts
            .as_ref()
            .and_then(|t| t.iter().find(|(s, _)| *s == shard))
            .map_or(sql, |(_, t)| t.as_slice())
    }
}

/// Why a statement cannot run on the cluster (ER_NOT_SUPPORTED_YET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

pub(super) type R<T> = Result<T, Refusal>;

pub(super) fn refuse<T>(why: impl Into<String>) -> R<T> {
    Err(Refusal(why.into()))
}

/// One table of the statement's top-level FROM (or the table written).
pub(super) struct Source<'a> {
    pub(super) table: String,
    pub(super) alias: Option<String>,
    pub(super) placement: &'a TablePlacement,
    pub(super) facts: Option<Arc<TableFacts>>,
    /// The session's time zone (seconds east of UTC), for TIMESTAMP keys.
    pub(super) tz: Option<i32>,
}

impl Source<'_> {
    pub(super) fn sharded(&self) -> bool {
        self.placement.placement != Placement::Reference
    }
    pub(super) fn key(&self) -> Option<&str> {
        self.placement.placement.key()
    }
    fn has_column(&self, c: &str) -> bool {
        self.facts
            .as_ref()
            .is_some_and(|f| f.columns.iter().any(|x| x.eq_ignore_ascii_case(c)))
    }
    pub(super) fn key_type(&self) -> R<KeyType> {
        match self.facts.as_ref().and_then(|f| f.key_type.clone()) {
            Some(KeyType::Timestamp { .. }) => Ok(KeyType::Timestamp { offset: self.tz }),
            Some(t) => Ok(t),
            None => refuse(format!(
                "table `{}`: its shard key column `{}` was not found in the shards' schema",
                self.table,
                self.key().unwrap_or_default()
            )),
        }
    }
}

/// The tables of a cluster a statement names, by kind.
pub(super) enum TableRef<'a> {
    Cluster(String, &'a TablePlacement),
    /// Another database (information_schema, mysql, …).
    Foreign,
}

pub(super) fn table_ref<'a>(cluster: &'a ClusterConfig, n: &ObjectName) -> R<TableRef<'a>> {
    let parts: Vec<String> =
        n.0.iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
            .collect();
    let table = match parts.as_slice() {
        [t] => t.clone(),
        [db, t] if *db == cluster.database => t.clone(),
        [_, _] => return Ok(TableRef::Foreign),
        _ => return refuse(format!("cannot resolve the table name {n}")),
    };
    match cluster.tables.get(&table) {
        Some(p) => Ok(TableRef::Cluster(table, p)),
        None => refuse(format!(
            "table `{table}` has no rule on cluster {} (every table of a cluster needs \
             shard_key or reference: true in the rules)",
            cluster.name
        )),
    }
}

/// Plans `sql` (one statement; `toks` its tokens) on `cluster`.
pub fn plan(
    sql: &[u8],
    toks: &[Token],
    cluster: &ClusterConfig,
    facts: &dyn Fn(&str) -> Option<Arc<TableFacts>>,
) -> R<ShardPlan> {
    plan_in_zone(sql, toks, cluster, facts, Some(0))
}

/// `plan` for a session whose time zone is `tz` seconds east of UTC
/// (None: not a fixed offset): TIMESTAMP key literals are in that zone.
pub fn plan_in_zone(
    sql: &[u8],
    toks: &[Token],
    cluster: &ClusterConfig,
    facts: &dyn Fn(&str) -> Option<Arc<TableFacts>>,
    tz: Option<i32>,
) -> R<ShardPlan> {
    let stmt = parse(sql)?;
    let mut plan = plan_parsed(&stmt, sql, toks, cluster, facts, &[], tz)?;
    if share_lock_at(sql).is_some() {
        // Texts rendered from the parsed statement lack the clause the
        // parser could not read: each shard's read locks as the client's.
        for (_, t) in plan.texts.iter_mut().flatten() {
            if share_lock_at(t).is_none() {
                t.extend_from_slice(b" LOCK IN SHARE MODE");
            }
        }
    }
    Ok(plan)
}

/// Where a trailing `LOCK IN SHARE MODE` (MariaDB's shared locking read,
/// which the parser does not know) starts in `sql`.
fn share_lock_at(sql: &[u8]) -> Option<usize> {
    let trimmed = sql
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != b';')
        .map_or(0, |i| i + 1);
    let mut toks = Vec::new();
    crate::router::lexer::tokenize(&sql[..trimmed], &mut toks);
    let n = toks.len();
    (n >= 4
        && ["LOCK", "IN", "SHARE", "MODE"]
            .iter()
            .zip(&toks[n - 4..])
            .all(|(w, t)| t.is_word(sql, w)))
    .then(|| toks[n - 4].start)
}

/// Parses one statement to plan it (a trailing `LOCK IN SHARE MODE` is
/// left out: it changes how rows lock, not where they are).
pub fn parse(sql: &[u8]) -> R<Statement> {
    let sql = match share_lock_at(sql) {
        Some(at) => &sql[..at],
        None => sql,
    };
    let text = String::from_utf8_lossy(sql);
    let mut stmts = Parser::parse_sql(&MySqlDialect {}, &text).map_err(|e| {
        Refusal(format!(
            "Tandem cannot parse this statement to route it: {e}"
        ))
    })?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        _ => refuse("one statement at a time on a cluster"),
    }
}

/// Plans a parsed statement. `params`: the values of its placeholders
/// `?1`, `?2`, … (a prepared statement's shape, parsed once): they route
/// as the literals would; the texts of the plan are then the shape's, not
/// for running.
pub fn plan_parsed(
    stmt: &Statement,
    sql: &[u8],
    toks: &[Token],
    cluster: &ClusterConfig,
    facts: &dyn Fn(&str) -> Option<Arc<TableFacts>>,
    params: &[Literal],
    tz: Option<i32>,
) -> R<ShardPlan> {
    let one = |shards| ShardPlan {
        shards,
        merge: Merge::Relay,
        texts: None,
        write: false,
    };
    match stmt {
        // The schema is the same on every shard: any one answers.
        s if crate::router::classify::is_show(s) => return Ok(one(Shards::Any)),
        // EXPLAIN: the plan on one of the shards the statement runs on.
        Statement::Explain { statement, .. } => {
            let shards = match plan_parsed(statement, sql, toks, cluster, facts, params, tz) {
                Ok(ShardPlan {
                    shards: Shards::Set(s),
                    ..
                }) => Shards::Set(s.into_iter().take(1).collect()),
                _ => Shards::Any,
            };
            return Ok(one(shards));
        }
        _ => {}
    }
    // Every table named anywhere, by kind.
    let mut named: Vec<(String, &TablePlacement)> = Vec::new();
    let mut foreign = false;
    let mut failed = None;
    let _ = visit_relations(stmt, |n| {
        match table_ref(cluster, n) {
            Ok(TableRef::Cluster(t, p)) => named.push((t, p)),
            Ok(TableRef::Foreign) => foreign = true,
            Err(e) => {
                failed = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let any_sharded = named
        .iter()
        .any(|(_, p)| p.placement != Placement::Reference);
    if foreign && !named.is_empty() {
        return refuse("a statement joining a cluster's tables with another database's");
    }
    let write = matches!(
        stmt,
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    );
    if !any_sharded {
        if write && !named.is_empty() {
            return Ok(ShardPlan {
                shards: Shards::Set((0..cluster.shards.len()).collect()),
                merge: Merge::Same,
                texts: None,
                write,
            });
        }
        return Ok(ShardPlan {
            shards: Shards::Any,
            merge: Merge::Relay,
            texts: None,
            write,
        });
    }
    let cx = Cx {
        cluster,
        facts,
        sql,
        toks,
        params,
        tz,
    };
    match stmt {
        Statement::Query(q) => cx.query(q, named.len()),
        Statement::Insert(i) => cx.insert(i),
        Statement::Update(u) => {
            let sources = cx.sources(std::slice::from_ref(&u.table))?;
            cx.check_named(&sources, named.len())?;
            let limited = !u.order_by.is_empty() || u.limit.is_some();
            let mut moves = false;
            for a in &u.assignments {
                let cols: Vec<&ObjectName> = match &a.target {
                    AssignmentTarget::ColumnName(c) => vec![c],
                    AssignmentTarget::Tuple(cs) => cs.iter().collect(),
                };
                for c in cols {
                    let last = c.0.last().and_then(|p| p.as_ident()).map(|i| &i.value);
                    let keyed = sources.iter().find(|s| {
                        s.sharded()
                            && last
                                .is_some_and(|l| s.key().is_some_and(|k| k.eq_ignore_ascii_case(l)))
                    });
                    let Some(source) = keyed else { continue };
                    if source.placement.key_updates != crate::config::ShardKeyUpdates::Move {
                        return refuse(format!(
                            "an UPDATE that changes a row's shard key (moving the row to another \
                             shard); set `shard_key_updates: move` on table `{}` to move such rows",
                            source.table
                        ));
                    }
                    if sources.len() > 1 || limited {
                        return refuse(
                            "an UPDATE that moves rows to other shards with a join, ORDER BY or \
                             LIMIT",
                        );
                    }
                    moves = true;
                }
            }
            let mut plan = cx.write_plan(&sources, u.selection.as_ref(), &[], limited)?;
            if moves {
                plan.merge = Merge::KeyMove;
            }
            Ok(plan)
        }
        Statement::Delete(d) => {
            let from = match &d.from {
                FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
            };
            if !d.tables.is_empty() || d.using.is_some() {
                let mut all = from.clone();
                all.extend(d.using.clone().unwrap_or_default());
                let sources = cx.sources(&all)?;
                cx.check_named(&sources, named.len())?;
                let plan = cx.write_plan(&sources, d.selection.as_ref(), &all, true)?;
                return Ok(plan);
            }
            let sources = cx.sources(from)?;
            cx.check_named(&sources, named.len())?;
            let limited = !d.order_by.is_empty() || d.limit.is_some();
            cx.write_plan(&sources, d.selection.as_ref(), from, limited)
        }
        _ => refuse("this statement on a cluster's sharded tables"),
    }
}

pub(super) struct Cx<'a> {
    pub(super) cluster: &'a ClusterConfig,
    pub(super) facts: &'a dyn Fn(&str) -> Option<Arc<TableFacts>>,
    pub(super) sql: &'a [u8],
    pub(super) toks: &'a [Token],
    /// Values of the placeholders `?1`, `?2`, … (see `plan_parsed`).
    pub(super) params: &'a [Literal],
    /// The session's time zone, seconds east of UTC (None: not a fixed
    /// offset), for TIMESTAMP keys.
    pub(super) tz: Option<i32>,
}

impl<'a> Cx<'a> {
    pub(super) fn all(&self) -> Vec<usize> {
        (0..self.cluster.shards.len()).collect()
    }

    pub(super) fn source(&self, f: &TableFactor) -> R<Option<Source<'a>>> {
        match f {
            TableFactor::Table { name, alias, .. } => match table_ref(self.cluster, name)? {
                TableRef::Cluster(table, placement) => Ok(Some(Source {
                    facts: (self.facts)(&table),
                    alias: alias.as_ref().map(|a| a.name.value.clone()),
                    table,
                    placement,
                    tz: self.tz,
                })),
                TableRef::Foreign => Ok(None),
            },
            _ => refuse("a derived table or nested join over sharded tables"),
        }
    }

    pub(super) fn sources(&self, from: &[TableWithJoins]) -> R<Vec<Source<'a>>> {
        let mut out = Vec::new();
        for t in from {
            out.extend(self.source(&t.relation)?);
            for j in &t.joins {
                out.extend(self.source(&j.relation)?);
            }
        }
        Ok(out)
    }

    /// Every sharded table the statement names is one of `sources` (not
    /// in a subquery, where its rows on other shards would be missed).
    pub(super) fn check_named(&self, sources: &[Source], named: usize) -> R<()> {
        if named > sources.len() {
            return refuse(
                "a subquery or derived table over a sharded table (its rows on other shards \
                 would be missed)",
            );
        }
        Ok(())
    }

    /// Which source a column expression names, if it is that source's
    /// shard key.
    pub(super) fn key_source(&self, e: &Expr, sources: &[Source]) -> Option<usize> {
        let (qualifier, column) = match e {
            Expr::Identifier(i) => (None, &i.value),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => (
                Some(&parts[parts.len() - 2].value),
                &parts[parts.len() - 1].value,
            ),
            Expr::Nested(inner) => return self.key_source(inner, sources),
            _ => return None,
        };
        let idx = match qualifier {
            Some(q) => sources.iter().position(|s| match &s.alias {
                Some(a) => a == q,
                None => s.table == *q,
            })?,
            None if sources.len() == 1 => 0,
            None => {
                let mut having = sources
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.has_column(column));
                let (i, _) = having.next()?;
                if having.next().is_some() {
                    return None;
                }
                i
            }
        };
        let s = &sources[idx];
        (s.sharded() && s.key().is_some_and(|k| k.eq_ignore_ascii_case(column))).then_some(idx)
    }

    /// The shards holding the rows of source `src` that `e` can match
    /// (None: every shard).
    fn set_for(&self, e: &Expr, sources: &[Source], src: usize) -> Option<BTreeSet<usize>> {
        match e {
            Expr::Nested(inner) => self.set_for(inner, sources, src),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => {
                    match (
                        self.set_for(left, sources, src),
                        self.set_for(right, sources, src),
                    ) {
                        (Some(a), Some(b)) => Some(a.intersection(&b).copied().collect()),
                        (a, b) => a.or(b),
                    }
                }
                BinaryOperator::Or => {
                    let a = self.set_for(left, sources, src)?;
                    let b = self.set_for(right, sources, src)?;
                    Some(a.union(&b).copied().collect())
                }
                BinaryOperator::Eq => {
                    let (col, val) = if self.key_source(left, sources) == Some(src) {
                        (left, right)
                    } else if self.key_source(right, sources) == Some(src) {
                        (right, left)
                    } else {
                        return None;
                    };
                    let _ = col;
                    self.value_set(&sources[src], val)
                }
                _ => None,
            },
            Expr::InList {
                expr,
                list,
                negated: false,
            } if self.key_source(expr, sources) == Some(src) => {
                let mut out = BTreeSet::new();
                for v in list {
                    out.extend(self.value_set(&sources[src], v)?);
                }
                Some(out)
            }
            _ => None,
        }
    }

    /// The shard of one value compared with `s`'s key.
    fn value_set(&self, s: &Source, v: &Expr) -> Option<BTreeSet<usize>> {
        let lit = self.value(v)?;
        let ty = s.key_type().ok()?;
        match canon(&ty, &lit).and_then(|c| shard_of(self.cluster, &s.placement.placement, &ty, &c))
        {
            Ok(shard) => Some(BTreeSet::from([shard])),
            Err(Unroutable::Nowhere(_)) => Some(BTreeSet::new()),
            Err(Unroutable::Every(_)) => None,
        }
    }

    /// A constant: a literal, or a numbered placeholder's value.
    fn value(&self, e: &Expr) -> Option<Literal> {
        match e {
            Expr::Nested(inner) => self.value(inner),
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => {
                    let n: usize = p.strip_prefix('?')?.parse().ok()?;
                    self.params.get(n.checked_sub(1)?).cloned()
                }
                _ => literal(e),
            },
            _ => literal(e),
        }
    }

    /// The shards a statement over `sources` with condition `cond` (and
    /// the ON conditions of `from`'s inner joins) runs on. Several sharded
    /// sources must be co-located by key equalities.
    pub(super) fn shards_for(
        &self,
        sources: &[Source],
        cond: Option<&Expr>,
        from: &[TableWithJoins],
    ) -> R<Vec<usize>> {
        let sharded: Vec<usize> = (0..sources.len())
            .filter(|&i| sources[i].sharded())
            .collect();
        let mut filters: Vec<&Expr> = cond.into_iter().collect();
        let mut links: Vec<&Expr> = cond.into_iter().collect();
        for t in from {
            for j in &t.joins {
                let (c, inner) = match &j.join_operator {
                    JoinOperator::Join(c) | JoinOperator::Inner(c) => (c, true),
                    JoinOperator::Left(c)
                    | JoinOperator::LeftOuter(c)
                    | JoinOperator::Right(c)
                    | JoinOperator::RightOuter(c) => (c, false),
                    JoinOperator::CrossJoin(c) => (c, true),
                    _ => return refuse("this kind of join over sharded tables"),
                };
                match c {
                    JoinConstraint::On(e) => {
                        links.push(e);
                        if inner {
                            filters.push(e);
                        }
                    }
                    JoinConstraint::None => {}
                    _ => return refuse("JOIN … USING or NATURAL JOIN over sharded tables"),
                }
            }
        }
        if sharded.len() > 1 {
            self.co_located(sources, &sharded, &links)?;
        }
        let mut set: Option<BTreeSet<usize>> = None;
        for &i in &sharded {
            sources[i].key_type()?;
            for f in &filters {
                if let Some(s) = self.set_for(f, sources, i) {
                    set = Some(match set {
                        Some(prev) => prev.intersection(&s).copied().collect(),
                        None => s,
                    });
                }
            }
        }
        Ok(match set {
            Some(s) => s.into_iter().collect(),
            None => self.all(),
        })
    }

    /// Sharded sources joined pairwise on their keys (ANDed equalities),
    /// with the same placement and key type: rows that join live together.
    fn co_located(&self, sources: &[Source], sharded: &[usize], links: &[&Expr]) -> R<()> {
        let first = &sources[sharded[0]];
        for &i in &sharded[1..] {
            let s = &sources[i];
            let same_place = match (&first.placement.placement, &s.placement.placement) {
                (Placement::Hash { .. }, Placement::Hash { .. }) => true,
                (Placement::Range { ranges: a, .. }, Placement::Range { ranges: b, .. }) => a == b,
                (
                    Placement::List {
                        values: a,
                        default: da,
                        ..
                    },
                    Placement::List {
                        values: b,
                        default: db,
                        ..
                    },
                ) => a == b && da == db,
                _ => false,
            };
            if !same_place || first.key_type()? != s.key_type()? {
                return refuse(format!(
                    "a join of `{}` and `{}`, which are not placed alike (a join across shards)",
                    first.table, s.table
                ));
            }
        }
        // Union-find over key equalities.
        let mut group: Vec<usize> = (0..sources.len()).collect();
        fn root(g: &mut [usize], i: usize) -> usize {
            let mut i = i;
            while g[i] != i {
                i = g[i];
            }
            i
        }
        let mut eqs = Vec::new();
        for l in links {
            conjuncts(l, &mut eqs);
        }
        for e in eqs {
            if let Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = e
            {
                if let (Some(a), Some(b)) = (
                    self.key_source(left, sources),
                    self.key_source(right, sources),
                ) {
                    let (ra, rb) = (root(&mut group, a), root(&mut group, b));
                    group[ra] = rb;
                }
            }
        }
        let r0 = root(&mut group, sharded[0]);
        for &i in &sharded[1..] {
            if root(&mut group, i) != r0 {
                return refuse(format!(
                    "a join of `{}` and `{}` that is not on their shard keys (a join across \
                     shards)",
                    sources[sharded[0]].table, sources[i].table
                ));
            }
        }
        Ok(())
    }

    fn write_plan(
        &self,
        sources: &[Source],
        cond: Option<&Expr>,
        from: &[TableWithJoins],
        limited: bool,
    ) -> R<ShardPlan> {
        let shards = self.shards_for(sources, cond, from)?;
        if shards.len() > 1 {
            if limited {
                return refuse("UPDATE/DELETE with ORDER BY or LIMIT over several shards");
            }
            if let Some(s) = sources
                .iter()
                .find(|s| s.sharded() && s.placement.scatter_writes == ScatterWrites::Reject)
            {
                return refuse(format!(
                    "a write to `{}` without its shard key `{}` (scatter_writes: reject)",
                    s.table,
                    s.key().unwrap_or_default()
                ));
            }
            if sources.len() > 1 {
                return refuse("a multi-table write over several shards");
            }
        }
        Ok(single_or(shards, Merge::Write { last: None }, true))
    }
}

pub(super) fn single_or(shards: Vec<usize>, merge: Merge, write: bool) -> ShardPlan {
    match shards.as_slice() {
        [] => ShardPlan {
            shards: Shards::Any,
            merge: Merge::Relay,
            texts: None,
            write,
        },
        [_] => ShardPlan {
            shards: Shards::Set(shards),
            merge: Merge::Relay,
            texts: None,
            write,
        },
        _ => ShardPlan {
            shards: Shards::Set(shards),
            merge,
            texts: None,
            write,
        },
    }
}

/// The top-level conjuncts of `e`.
fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        _ => out.push(e),
    }
}

/// A literal value (None: an expression, a placeholder, a typed string).
pub(super) fn literal(e: &Expr) -> Option<Literal> {
    match e {
        Expr::Nested(inner) => literal(inner),
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(Literal::Number(n.clone())),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                Some(Literal::Str(s.clone().into_bytes()))
            }
            Value::Null => Some(Literal::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Literal::Number(n) if !n.starts_with('-') => Some(Literal::Number(format!("-{n}"))),
            _ => None,
        },
        _ => None,
    }
}
