//! Grouped reads over several shards: GROUP BY with HAVING, DISTINCT,
//! aggregates (AVG and COUNT/SUM(DISTINCT …) included). When every group
//! lies on one shard (the shard key is a group column) the shards' answers
//! are complete and only merge. Otherwise each shard is asked for its
//! partial groups, sorted on the group columns, with helper columns
//! appended (AVG's SUM and COUNT, what HAVING and ORDER BY name that the
//! SELECT does not return) and without HAVING; the merge combines equal
//! groups as they meet in a k-way merge, then applies HAVING, ORDER BY and
//! LIMIT to the whole.

use super::route::{literal, refuse, Agg, Cx, Merge, ShardPlan, Shards, Source, R};
use super::Literal;
use crate::router::lexer;
use sqlparser::ast::{
    BinaryOperator, Distinct, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, OrderByKind, OrderBySort, Query, Select, SelectItem,
    UnaryOperator,
};

/// How one column of a grouped answer is made from its groups' rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Col {
    /// The group's first row's value (group columns; plain columns, which
    /// any row of the group may give, as the server does).
    First,
    /// An aggregate combined over the group's rows.
    Agg(Agg),
    /// AVG: SUM divided by COUNT (the columns holding them), at the
    /// column's scale.
    Avg { sum: usize, count: usize },
    /// COUNT(DISTINCT x) or SUM(DISTINCT x): each shard's value for a
    /// (group, x) row, taken once per distinct x.
    Distinct(Agg),
}

/// A comparison HAVING makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A HAVING condition over the combined columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    /// `column op constant` (NULL compares as unknown).
    Cmp {
        col: usize,
        op: Cmp,
        value: Literal,
    },
    IsNull {
        col: usize,
        negated: bool,
    },
}

/// The merge of a grouped read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouped {
    /// Columns the client gets; the rest are helpers, dropped.
    pub visible: usize,
    /// Per column of the shards' answer.
    pub cols: Vec<Col>,
    /// The group columns (empty: the whole is one group).
    pub group: Vec<usize>,
    /// The column of COUNT/SUM(DISTINCT x)'s x, added to the shards'
    /// GROUP BY.
    pub sub: Option<usize>,
    /// The order the shards sort their rows in: (column, descending).
    pub keys: Vec<(usize, bool)>,
    /// When the client's ORDER BY is not the shards' order: groups are
    /// buffered and sorted on these.
    pub order: Option<Vec<(usize, bool)>>,
    pub having: Option<Cond>,
    pub offset: u64,
    pub limit: Option<u64>,
    /// No GROUP BY: one row even when no row matches.
    pub whole: bool,
    /// Nothing to combine: every row stands alone (a plain read ordered on
    /// columns it does not return, which ride along as helpers).
    pub each_row: bool,
}

/// What a select item is to a grouped merge.
enum Item {
    Plain,
    Agg(Agg),
    Avg(String),
    Distinct(Agg, String),
}

const AGGREGATES: &[&str] = &[
    "COUNT",
    "SUM",
    "MIN",
    "MAX",
    "AVG",
    "GROUP_CONCAT",
    "STD",
    "STDDEV",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "VARIANCE",
    "VAR_POP",
    "VAR_SAMP",
    "BIT_AND",
    "BIT_OR",
    "BIT_XOR",
    "JSON_ARRAYAGG",
    "JSON_OBJECTAGG",
];

/// Whether `e` calls an aggregate or window function anywhere.
pub(super) fn contains_aggregate(e: &Expr) -> bool {
    sqlparser::ast::visit_expressions(e, |x| match x {
        Expr::Function(f)
            if f.over.is_some()
                || AGGREGATES
                    .iter()
                    .any(|a| f.name.to_string().eq_ignore_ascii_case(a)) =>
        {
            std::ops::ControlFlow::Break(())
        }
        _ => std::ops::ControlFlow::Continue(()),
    })
    .is_break()
}

/// What `e` is as a column of a grouped answer; aggregates whose
/// per-shard values do not combine are refused.
fn item_of(e: &Expr) -> R<Item> {
    let Expr::Function(f) = e else {
        return if contains_aggregate(e) {
            refuse("an expression over aggregates across shards")
        } else {
            Ok(Item::Plain)
        };
    };
    if f.over.is_some() {
        return refuse("window functions over several shards");
    }
    let name = f.name.to_string().to_ascii_uppercase();
    if !AGGREGATES.contains(&name.as_str()) {
        return if contains_aggregate(e) {
            refuse("an expression over aggregates across shards")
        } else {
            Ok(Item::Plain)
        };
    }
    let FunctionArguments::List(l) = &f.args else {
        return refuse(format!("{name} without arguments"));
    };
    if !l.clauses.is_empty() {
        return refuse(format!("{name} with clauses over several shards"));
    }
    let distinct = l.duplicate_treatment == Some(DuplicateTreatment::Distinct);
    let arg = match l.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(x))] => {
            if contains_aggregate(x) {
                return refuse("nested aggregates");
            }
            Some(x.to_string())
        }
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if name == "COUNT" => None,
        _ => return refuse(format!("{name} with these arguments over several shards")),
    };
    Ok(match (name.as_str(), distinct, arg) {
        ("MIN", _, _) => Item::Agg(Agg::Min),
        ("MAX", _, _) => Item::Agg(Agg::Max),
        ("COUNT", false, _) => Item::Agg(Agg::Count),
        ("SUM", false, _) => Item::Agg(Agg::Sum),
        ("AVG", false, Some(a)) => Item::Avg(a),
        ("COUNT", true, Some(a)) => Item::Distinct(Agg::Count, a),
        ("SUM", true, Some(a)) => Item::Distinct(Agg::Sum, a),
        _ => {
            return refuse(format!(
                "{name}{} over several shards (COUNT, SUM, MIN, MAX and AVG are combined)",
                if distinct { "(DISTINCT …)" } else { "()" }
            ))
        }
    })
}

/// The columns of a grouped answer as they are resolved.
struct Columns<'q> {
    projection: &'q [SelectItem],
    /// Columns a `*` stands for (one table's).
    star: Vec<String>,
    visible: usize,
    cols: Vec<Col>,
    /// Helper column expressions, appended to the SELECT list.
    hidden: Vec<String>,
    /// The argument of COUNT/SUM(DISTINCT …) and its column.
    sub: Option<(String, usize)>,
    /// Helpers may not be added (DISTINCT: they would change the rows).
    closed: bool,
}

impl Columns<'_> {
    fn add(&mut self, text: String, col: Col) -> R<usize> {
        if self.closed {
            return refuse(
                "DISTINCT with ORDER BY or HAVING on what the SELECT does not return, \
                 over several shards",
            );
        }
        if let Some(i) = self.hidden.iter().position(|h| *h == text) {
            return Ok(self.visible + i);
        }
        self.hidden.push(text);
        self.cols.push(col);
        Ok(self.cols.len() - 1)
    }

    fn col_of(&mut self, item: Item) -> R<Col> {
        Ok(match item {
            Item::Plain => Col::First,
            Item::Agg(a) => Col::Agg(a),
            Item::Avg(arg) => {
                let sum = self.add(format!("SUM({arg})"), Col::Agg(Agg::Sum))?;
                let count = self.add(format!("COUNT({arg})"), Col::Agg(Agg::Count))?;
                Col::Avg { sum, count }
            }
            Item::Distinct(a, arg) => {
                match &self.sub {
                    Some((s, _)) if *s != arg => {
                        return refuse(
                            "DISTINCT aggregates of different expressions over several shards",
                        )
                    }
                    Some(_) => {}
                    None => {
                        let at = self.add(arg.clone(), Col::First)?;
                        self.sub = Some((arg, at));
                    }
                }
                Col::Distinct(a)
            }
        })
    }

    /// The column `e` names: a position (`positional`), a select item
    /// (same expression, alias, or a column of `*`), or a helper added.
    fn resolve(&mut self, e: &Expr, positional: bool) -> R<usize> {
        if positional {
            if let Some(Literal::Number(n)) = literal(e) {
                return match n.parse::<usize>() {
                    Ok(i) if i >= 1 && i <= self.visible => Ok(i - 1),
                    _ => refuse(format!("unknown column position {n}")),
                };
            }
        }
        if let Some(i) = self.find(e) {
            return Ok(i);
        }
        let item = item_of(e)?;
        let col = self.col_of(item)?;
        self.add(e.to_string(), col)
    }

    fn find(&self, e: &Expr) -> Option<usize> {
        let name = match e {
            Expr::Identifier(i) => Some(&i.value),
            _ => None,
        };
        let mut at = 0;
        for item in self.projection {
            match item {
                SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. }
                    if x == e =>
                {
                    return Some(at)
                }
                SelectItem::ExprWithAlias { alias, .. }
                    if name.is_some_and(|n| alias.value.eq_ignore_ascii_case(n)) =>
                {
                    return Some(at)
                }
                SelectItem::Wildcard(_) => {
                    if let Some(p) =
                        name.and_then(|n| self.star.iter().position(|c| c.eq_ignore_ascii_case(n)))
                    {
                        return Some(at + p);
                    }
                    at += self.star.len();
                    continue;
                }
                _ => {}
            }
            at += 1;
        }
        None
    }

    fn cond(&mut self, e: &Expr) -> R<Cond> {
        let unsupported = || {
            refuse(format!(
                "HAVING {e} over several shards (Tandem evaluates AND, OR, NOT, IS [NOT] NULL \
                 and comparisons of a column or aggregate with a constant)"
            ))
        };
        match e {
            Expr::Nested(x) => self.cond(x),
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Cond::Not(Box::new(self.cond(expr)?))),
            Expr::IsNull(x) | Expr::IsNotNull(x) => Ok(Cond::IsNull {
                col: self.resolve(x, false)?,
                negated: matches!(e, Expr::IsNotNull(_)),
            }),
            Expr::BinaryOp { left, op, right } => {
                let both =
                    |s: &mut Self| -> R<(Cond, Cond)> { Ok((s.cond(left)?, s.cond(right)?)) };
                let cmp = match op {
                    BinaryOperator::And => {
                        let (a, b) = both(self)?;
                        return Ok(Cond::And(Box::new(a), Box::new(b)));
                    }
                    BinaryOperator::Or => {
                        let (a, b) = both(self)?;
                        return Ok(Cond::Or(Box::new(a), Box::new(b)));
                    }
                    BinaryOperator::Eq => Cmp::Eq,
                    BinaryOperator::NotEq => Cmp::Ne,
                    BinaryOperator::Lt => Cmp::Lt,
                    BinaryOperator::LtEq => Cmp::Le,
                    BinaryOperator::Gt => Cmp::Gt,
                    BinaryOperator::GtEq => Cmp::Ge,
                    _ => return unsupported(),
                };
                let (x, value, op) = match (literal(left), literal(right)) {
                    (None, Some(v)) => (left, v, cmp),
                    (Some(v), None) => (right, v, flip(cmp)),
                    _ => return unsupported(),
                };
                Ok(Cond::Cmp {
                    col: self.resolve(x, false)?,
                    op,
                    value,
                })
            }
            _ => unsupported(),
        }
    }
}

fn flip(c: Cmp) -> Cmp {
    match c {
        Cmp::Lt => Cmp::Gt,
        Cmp::Le => Cmp::Ge,
        Cmp::Gt => Cmp::Lt,
        Cmp::Ge => Cmp::Le,
        c => c,
    }
}

/// The GROUP BY expressions (None: no GROUP BY).
pub(super) fn group_exprs(sel: &Select) -> R<&[Expr]> {
    match &sel.group_by {
        GroupByExpr::Expressions(e, m) if m.is_empty() => Ok(e),
        _ => refuse("GROUP BY ALL or WITH ROLLUP over several shards"),
    }
}

impl Cx<'_> {
    /// Whether every group (every DISTINCT row) lies on one shard: the
    /// shard key of a sharded table is a group column (and a returned
    /// column under DISTINCT), so the shards' answers need no combining.
    pub(super) fn groups_complete(&self, sel: &Select, sources: &[Source]) -> R<bool> {
        let on_key = |e: &Expr| {
            self.key_source(e, sources)
                .is_some_and(|i| sources[i].sharded())
        };
        let group = group_exprs(sel)?;
        let grouped = !group.is_empty() || sel.having.is_some();
        if grouped && !group.iter().any(on_key) {
            return Ok(false);
        }
        if sel.distinct.is_some() {
            return Ok(sel.projection.iter().any(|i| {
                matches!(i, SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. }
                    if on_key(x))
            }));
        }
        Ok(grouped
            || !sel
                .projection
                .iter()
                .any(|i| matches!(i, SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. } if contains_aggregate(x))))
    }

    /// Plans a grouped read on several shards whose groups span shards.
    pub(super) fn grouped(
        &self,
        q: &Query,
        sel: &Select,
        sources: &[Source],
        shards: Vec<usize>,
        offset: u64,
        limit: Option<u64>,
    ) -> R<ShardPlan> {
        let by = group_exprs(sel)?;
        let distinct = match &sel.distinct {
            None => false,
            Some(Distinct::Distinct) if by.is_empty() => true,
            Some(Distinct::Distinct) => {
                return refuse("DISTINCT together with GROUP BY over several shards")
            }
            Some(_) => return refuse("DISTINCT ON"),
        };
        let star = match (
            sources,
            sel.projection.iter().any(|i| {
                !matches!(
                    i,
                    SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }
                )
            }),
        ) {
            (_, false) => Vec::new(),
            ([s], true)
                if sel
                    .projection
                    .iter()
                    .all(|i| !matches!(i, SelectItem::QualifiedWildcard(..))) =>
            {
                match &s.facts {
                    Some(f) => f.columns.clone(),
                    None => {
                        return refuse("`*` in a grouped read of a table whose columns are unknown")
                    }
                }
            }
            _ => return refuse("`*` of several tables in a grouped read over several shards"),
        };
        let mut c = Columns {
            projection: &sel.projection,
            visible: 0,
            star,
            cols: Vec::new(),
            hidden: Vec::new(),
            sub: None,
            closed: false,
        };
        let mut items = Vec::new();
        for item in &sel.projection {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    items.push(Some(item_of(e)?));
                }
                _ => items.extend((0..c.star.len()).map(|_| None)),
            }
        }
        c.visible = items.len();
        c.cols = vec![Col::First; c.visible];
        for (i, item) in items.into_iter().enumerate() {
            if let Some(item) = item {
                c.cols[i] = c.col_of(item)?;
            }
        }
        if distinct && c.cols.iter().any(|x| *x != Col::First) {
            return refuse("DISTINCT over aggregates across shards");
        }
        c.closed = distinct;
        let group: Vec<usize> = if distinct {
            (0..c.visible).collect()
        } else {
            let mut g = Vec::new();
            for e in by {
                let i = c.resolve(e, true)?;
                if c.cols[i] != Col::First {
                    return refuse("GROUP BY an aggregate");
                }
                g.push(i);
            }
            g
        };
        let having = sel.having.as_ref().map(|h| c.cond(h)).transpose()?;
        let each_row = !distinct
            && by.is_empty()
            && having.is_none()
            && c.cols.iter().all(|x| *x == Col::First);
        let mut wanted = Vec::new();
        if let Some(ob) = &q.order_by {
            let OrderByKind::Expressions(exprs) = &ob.kind else {
                return refuse("ORDER BY ALL");
            };
            for o in exprs {
                if o.options.nulls_first.is_some() {
                    return refuse("NULLS FIRST/LAST over several shards");
                }
                let i = c.resolve(&o.expr, true)?;
                wanted.push((i, matches!(o.options.sort, Some(OrderBySort::Desc))));
            }
        }
        let streams = each_row || wanted.iter().all(|(i, _)| group.contains(i));
        let mut keys: Vec<(usize, bool)> = if streams { wanted.clone() } else { Vec::new() };
        for &g in &group {
            if !keys.iter().any(|(i, _)| *i == g) {
                keys.push((g, false));
            }
        }
        let sub = c.sub.as_ref().map(|(text, at)| (text.clone(), *at));
        if let Some((_, at)) = &sub {
            keys.push((*at, false));
        }
        // A shard's first offset+limit groups hold the whole's first ones
        // when the order is the groups' and no HAVING drops some.
        let shard_limit = match limit {
            Some(l)
                if streams
                    && having.is_none()
                    && sub.is_none()
                    && (each_row || !group.is_empty()) =>
            {
                Some(offset.saturating_add(l))
            }
            _ => None,
        };
        let text = self.grouped_text(
            &c.hidden,
            sub.as_ref().map(|(t, _)| t.as_str()),
            !by.is_empty(),
            &keys,
            shard_limit,
        )?;
        let plan = Grouped {
            visible: c.visible,
            cols: c.cols,
            group,
            sub: sub.map(|(_, at)| at),
            keys,
            order: (!streams).then_some(wanted),
            having,
            offset,
            limit,
            whole: !distinct && !each_row && by.is_empty(),
            each_row,
        };
        Ok(ShardPlan {
            texts: Some(shards.iter().map(|&s| (s, text.clone())).collect()),
            shards: Shards::Set(shards),
            merge: Merge::Grouped(Box::new(plan)),
            write: false,
        })
    }

    /// The statement as each shard runs it: helpers appended to the SELECT
    /// list, `sub` added to the GROUP BY, HAVING, ORDER BY and LIMIT
    /// replaced by the shards' order (and limit).
    fn grouped_text(
        &self,
        hidden: &[String],
        sub: Option<&str>,
        has_group: bool,
        keys: &[(usize, bool)],
        limit: Option<u64>,
    ) -> R<Vec<u8>> {
        let (sql, toks) = (self.sql, self.toks);
        let depths = lexer::depths(toks);
        let top = |i: usize, w: &str| depths[i] == 0 && toks[i].is_word(sql, w);
        let Some(from) = (1..toks.len()).find(|&i| top(i, "FROM")) else {
            return refuse("a grouped read without FROM");
        };
        let tail = (from..toks.len())
            .find(|&i| {
                top(i, "FOR")
                    || top(i, "LOCK")
                    || top(i, "INTO")
                    || (depths[i] == 0 && toks[i].kind == lexer::Tok::Punct(b';'))
            })
            .unwrap_or(toks.len());
        if (from..tail).any(|i| top(i, "WINDOW")) {
            return refuse("WINDOW over several shards");
        }
        let cut = (from..tail)
            .find(|&i| top(i, "HAVING") || top(i, "ORDER") || top(i, "LIMIT"))
            .unwrap_or(tail);
        let at = |i: usize| toks.get(i).map_or(sql.len(), |t| t.start);
        let mut out = sql[..at(from)].trim_ascii_end().to_vec();
        for h in hidden {
            out.extend_from_slice(format!(", {h}").as_bytes());
        }
        out.push(b' ');
        out.extend_from_slice(sql[at(from)..at(cut)].trim_ascii_end());
        if let Some(s) = sub {
            let glue = if has_group { ", " } else { " GROUP BY " };
            out.extend_from_slice(format!("{glue}{s}").as_bytes());
        }
        if !keys.is_empty() {
            let k: Vec<String> = keys
                .iter()
                .map(|(i, d)| format!("{}{}", i + 1, if *d { " DESC" } else { "" }))
                .collect();
            out.extend_from_slice(format!(" ORDER BY {}", k.join(", ")).as_bytes());
        }
        if let Some(n) = limit {
            out.extend_from_slice(format!(" LIMIT {n}").as_bytes());
        }
        if tail < toks.len() {
            out.push(b' ');
            out.extend_from_slice(&sql[at(tail)..]);
        }
        Ok(out)
    }
}
