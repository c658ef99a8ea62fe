//! Reads over several shards: which merge answers them exactly (rows
//! concatenated, a k-way merge on the ORDER BY columns, aggregates
//! combined), with LIMIT widened to offset+limit on each shard; what no
//! merge answers exactly is refused.

use super::route::{literal, single_or};
use super::route::{refuse, Cx, Merge, Refusal, ShardPlan, Shards, Source, R};
use super::Literal;
use crate::router::lexer;
use sqlparser::ast::{
    Expr, GroupByExpr, LimitClause, OrderByKind, OrderBySort, Query, Select, SelectItem, SetExpr,
    Value,
};

impl Cx<'_> {
    pub(super) fn query(&self, q: &Query, named: usize) -> R<ShardPlan> {
        if q.with.is_some() {
            return refuse("WITH over sharded tables");
        }
        let SetExpr::Select(sel) = q.body.as_ref() else {
            return refuse("UNION and other set operations over sharded tables");
        };
        let sources = self.sources(&sel.from)?;
        self.check_named(&sources, named)?;
        let shards = self.shards_for(&sources, sel.selection.as_ref(), &sel.from)?;
        if shards.len() == 1 {
            return Ok(single_or(shards, Merge::Relay, false));
        }
        if sel.into.is_some() {
            return refuse("SELECT … INTO over several shards");
        }
        let (offset, limit) = match &q.limit_clause {
            None => (0, None),
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) if limit_by.is_empty() => {
                let off = match offset {
                    Some(o) => number(&o.value)?,
                    None => 0,
                };
                (off, limit.as_ref().map(number).transpose()?)
            }
            Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                (number(offset)?, Some(number(limit)?))
            }
            _ => return refuse("this LIMIT over several shards"),
        };
        if !self.groups_complete(sel, &sources)? {
            return self.grouped(q, sel, &sources, shards, offset, limit);
        }
        let grouping = sel.distinct.is_some()
            || sel.having.is_some()
            || !matches!(&sel.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
        match self.merged(q, sel, &sources, &shards, offset, limit) {
            // Ordered on what the SELECT does not return: the grouped merge
            // adds it as a helper column (every row its own group, or
            // complete groups).
            Err(e) => self
                .grouped(q, sel, &sources, shards, offset, limit)
                .map_err(|g| if grouping { g } else { e }),
            ok => ok,
        }
    }

    /// A read whose shards' rows need no combining: concatenated, or
    /// merged on the ORDER BY columns.
    fn merged(
        &self,
        q: &Query,
        sel: &Select,
        sources: &[Source],
        shards: &[usize],
        offset: u64,
        limit: Option<u64>,
    ) -> R<ShardPlan> {
        let text = limit
            .map(|l| self.widen_limit(offset.saturating_add(l)))
            .transpose()?;
        let texts = text.map(|t| shards.iter().map(|&s| (s, t.clone())).collect());
        let merge = match &q.order_by {
            None => Merge::Concat { offset, limit },
            Some(ob) => {
                let OrderByKind::Expressions(exprs) = &ob.kind else {
                    return refuse("ORDER BY ALL");
                };
                let mut keys = Vec::new();
                for o in exprs {
                    let idx = self.order_column(&o.expr, &sel.projection, sources)?;
                    let desc = matches!(o.options.sort, Some(OrderBySort::Desc));
                    if o.options.nulls_first.is_some() {
                        return refuse("NULLS FIRST/LAST over several shards");
                    }
                    keys.push((idx, desc));
                }
                Merge::Ordered {
                    keys,
                    offset,
                    limit,
                }
            }
        };
        Ok(ShardPlan {
            shards: Shards::Set(shards.to_vec()),
            merge,
            texts,
            write: false,
        })
    }

    /// The result column an ORDER BY expression names.
    fn order_column(&self, e: &Expr, projection: &[SelectItem], sources: &[Source]) -> R<usize> {
        if let Expr::Value(v) = e {
            if let Value::Number(n, _) = &v.value {
                if let Ok(i) = n.parse::<usize>() {
                    if i >= 1 && i <= projection.len() {
                        return Ok(i - 1);
                    }
                }
            }
        }
        let name = match e {
            Expr::Identifier(i) => Some(&i.value),
            Expr::CompoundIdentifier(p) => p.last().map(|i| &i.value),
            _ => None,
        };
        let mut at = 0;
        for item in projection {
            match item {
                SelectItem::UnnamedExpr(x) if x == e => return Ok(at),
                SelectItem::ExprWithAlias { expr, alias }
                    if expr == e || name.is_some_and(|n| alias.value.eq_ignore_ascii_case(n)) =>
                {
                    return Ok(at);
                }
                SelectItem::UnnamedExpr(Expr::Identifier(i))
                    if name.is_some_and(|n| i.value.eq_ignore_ascii_case(n))
                        && !matches!(e, Expr::CompoundIdentifier(_)) =>
                {
                    return Ok(at)
                }
                SelectItem::Wildcard(_) if sources.len() == 1 => {
                    let cols = sources[0]
                        .facts
                        .as_ref()
                        .map(|f| f.columns.clone())
                        .unwrap_or_default();
                    if let Some(p) =
                        name.and_then(|n| cols.iter().position(|c| c.eq_ignore_ascii_case(n)))
                    {
                        return Ok(at + p);
                    }
                    at += cols.len();
                    continue;
                }
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    return refuse("ORDER BY with `*` over several tables across shards")
                }
                _ => {}
            }
            at += 1;
        }
        refuse(format!(
            "ORDER BY {e} over several shards: order by a column the SELECT returns"
        ))
    }

    /// The statement with its top-level LIMIT clause replaced by `LIMIT n`.
    fn widen_limit(&self, n: u64) -> R<Vec<u8>> {
        let depths = lexer::depths(self.toks);
        let Some(at) = (0..self.toks.len())
            .rev()
            .find(|&i| depths[i] == 0 && self.toks[i].is_word(self.sql, "LIMIT"))
        else {
            return refuse("cannot find the LIMIT clause");
        };
        let mut end = at + 1;
        while end < self.toks.len()
            && depths[end] == 0
            && !["FOR", "LOCK", "INTO"]
                .iter()
                .any(|w| self.toks[end].is_word(self.sql, w))
            && self.toks[end].kind != lexer::Tok::Punct(b';')
        {
            end += 1;
        }
        let start = self.toks[at].start;
        let stop = self.toks[end - 1].end;
        let mut out = self.sql[..start].to_vec();
        out.extend_from_slice(format!("LIMIT {n}").as_bytes());
        out.extend_from_slice(&self.sql[stop..]);
        Ok(out)
    }
}

fn number(e: &Expr) -> R<u64> {
    match literal(e) {
        Some(Literal::Number(n)) => n
            .parse()
            .map_err(|_| Refusal(format!("LIMIT {n} over several shards"))),
        _ => refuse("a LIMIT that is not a number over several shards"),
    }
}
