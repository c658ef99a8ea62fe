//! The grouped merge: the shards' partial groups, each shard's sorted on
//! the group columns, k-way merged so that equal groups meet; each group's
//! rows combined (COUNT and SUM added exactly, MIN and MAX picked, AVG as
//! SUM / COUNT at the column's scale, COUNT/SUM(DISTINCT x) once per x);
//! HAVING applied; then sent as they come when the client's order is the
//! groups', or buffered (up to the cluster's `merge_buffer`) and sorted.
//! Helper columns the plan appended are dropped from what the client gets.

use super::merge::{keep_end, lenenc_bytes, not_supported, Out, Reply, M};
use super::values::{self, Column, Decimal, Order};
use crate::protocol::packets::put_lenenc;
use crate::router::shard::group::{Cmp, Col, Cond, Grouped};
use crate::router::shard::route::Agg;
use crate::router::shard::Literal;
use std::cmp::Ordering;

/// A value in text form, and in the encoding the client gets (None: NULL).
type Value = (Option<Vec<u8>>, Option<Vec<u8>>);

/// One row as the merge reads it: its bytes, and each value in text form.
#[derive(Default)]
struct Row {
    raw: Vec<u8>,
    text: Vec<Option<Vec<u8>>>,
    /// Binary protocol: each value's bytes in `raw`.
    ranges: Vec<Option<std::ops::Range<usize>>>,
}

/// A running sum.
enum Sum {
    None,
    Exact(Decimal, usize),
    Float(f64),
}

impl Sum {
    fn add(&mut self, v: &[u8], float: bool) -> Result<(), String> {
        if float {
            let x = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or("a SUM that is not a number")?;
            *self = match self {
                Sum::Float(s) => Sum::Float(*s + x),
                _ => Sum::Float(x),
            };
            return Ok(());
        }
        let d = Decimal::parse(v).ok_or("a SUM that is not a number")?;
        *self = match std::mem::replace(self, Sum::None) {
            Sum::Exact(s, scale) => {
                let scale = scale.max(d.scale());
                Sum::Exact(s.add(&d), scale)
            }
            _ => {
                let scale = d.scale();
                Sum::Exact(d, scale)
            }
        };
        Ok(())
    }

    fn text(&self) -> Option<Vec<u8>> {
        match self {
            Sum::None => None,
            Sum::Exact(d, scale) => Some(d.render(*scale).into_bytes()),
            Sum::Float(f) => Some(values::render_double(*f).into_bytes()),
        }
    }
}

/// A column's state within one group.
enum Acc {
    First,
    Sum(Sum),
    /// MIN/MAX: the best value so far (never NULL).
    Best(Option<Value>),
}

/// The group being combined.
struct Group {
    /// Its first row (group and plain columns take their values from it).
    first: Row,
    acc: Vec<Acc>,
    /// COUNT/SUM(DISTINCT x): the last x counted.
    last_sub: Option<Option<Vec<u8>>>,
}

/// A finished group: its values (text form) and the row the client gets.
struct Done {
    text: Vec<Option<Vec<u8>>>,
    row: Vec<u8>,
}

struct Merger<'a> {
    g: &'a Grouped,
    columns: &'a [Column],
    orders: Vec<Option<Order>>,
    binary: bool,
}

impl Merger<'_> {
    fn order(&self, i: usize) -> Result<Order, String> {
        match self.orders.get(i).copied().flatten() {
            Some(o) => Ok(o),
            None => Err(self.columns[i]
                .order()
                .err()
                .unwrap_or_else(|| "an unknown column".into())),
        }
    }

    fn cmp_on(
        &self,
        keys: &[(usize, bool)],
        a: &[Option<Vec<u8>>],
        b: &[Option<Vec<u8>>],
    ) -> Result<Ordering, String> {
        for &(i, desc) in keys {
            let c = values::compare(self.order(i)?, a[i].as_deref(), b[i].as_deref()).ok_or(
                "a string with characters beyond printable ASCII under a _general_ci collation",
            )?;
            let c = if desc { c.reverse() } else { c };
            if c.is_ne() {
                return Ok(c);
            }
        }
        Ok(Ordering::Equal)
    }

    fn same_group(&self, a: &Row, b: &Row) -> Result<bool, String> {
        let keys: Vec<(usize, bool)> = self.g.group.iter().map(|&i| (i, false)).collect();
        Ok(self.cmp_on(&keys, &a.text, &b.text)? == Ordering::Equal)
    }

    fn read(&self, raw: Vec<u8>) -> Result<Row, String> {
        let n = self.columns.len();
        let mut ranges = Vec::new();
        let text: Option<Vec<Option<Vec<u8>>>> = if self.binary {
            ranges = values::binary_fields(&raw, self.columns).ok_or("a row Tandem cannot read")?;
            ranges
                .iter()
                .zip(self.columns)
                .map(|(r, c)| match r {
                    None => Some(None),
                    Some(r) => values::binary_text(c, &raw[r.clone()]).map(Some),
                })
                .collect()
        } else {
            values::fields(&raw, n)
                .map(|f| f.into_iter().map(|r| r.map(|r| raw[r].to_vec())).collect())
        };
        let text = text.ok_or("a row Tandem cannot read")?;
        Ok(Row { raw, text, ranges })
    }

    /// A group whose first row is `row`, nothing folded in yet.
    fn open(&self, row: Row) -> Group {
        Group {
            first: row,
            acc: self
                .g
                .cols
                .iter()
                .map(|c| match c {
                    Col::First | Col::Avg { .. } => Acc::First,
                    Col::Agg(Agg::Min | Agg::Max) => Acc::Best(None),
                    Col::Agg(_) | Col::Distinct(_) => Acc::Sum(Sum::None),
                })
                .collect(),
            last_sub: None,
        }
    }

    fn start(&self, row: Row) -> Result<Group, String> {
        let mut g = self.open(Row::default());
        self.fold(&mut g, &row)?;
        g.first = row;
        Ok(g)
    }

    fn fold(&self, g: &mut Group, row: &Row) -> Result<(), String> {
        let new_sub = match self.g.sub {
            None => false,
            Some(s) => match &g.last_sub {
                None => true,
                Some(last) => {
                    values::compare(self.order(s)?, last.as_deref(), row.text[s].as_deref())
                        .ok_or("a DISTINCT value Tandem cannot compare")?
                        .is_ne()
                }
            },
        };
        if let Some(s) = self.g.sub {
            g.last_sub = Some(row.text[s].clone());
        }
        for (i, col) in self.g.cols.iter().enumerate() {
            let v = row.text[i].as_deref();
            match (&mut g.acc[i], col) {
                (Acc::Sum(s), Col::Agg(_)) | (Acc::Sum(s), Col::Distinct(_))
                    if v.is_some() && (new_sub || matches!(col, Col::Agg(_))) =>
                {
                    let float = self.columns[i].order() == Ok(Order::Float);
                    s.add(v.unwrap_or_default(), float)?;
                }
                (Acc::Best(best), Col::Agg(agg)) => {
                    let Some(v) = v else { continue };
                    let better = match best {
                        None => true,
                        Some((b, _)) => {
                            let c = values::compare(self.order(i)?, Some(v), b.as_deref()).ok_or(
                                "MIN/MAX of a string beyond printable ASCII under _general_ci",
                            )?;
                            (*agg == Agg::Min && c.is_lt()) || (*agg == Agg::Max && c.is_gt())
                        }
                    };
                    if better {
                        *best = Some(self.pick(row, i));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The group's values: text form, and the encoding the client gets
    /// (None: NULL).
    fn finish(&self, g: &Group) -> Result<Option<Done>, String> {
        let mut text = Vec::with_capacity(self.g.cols.len());
        let mut enc: Vec<Option<Vec<u8>>> = Vec::with_capacity(self.g.visible);
        for (i, col) in self.g.cols.iter().enumerate() {
            let (t, e) = match (col, &g.acc[i]) {
                (Col::First, _) => self.pick(&g.first, i),
                (_, Acc::Best(None)) => (None, None),
                (_, Acc::Best(Some(v))) => v.clone(),
                (Col::Avg { sum, count }, _) => {
                    let t = avg(self.columns[i], &g.acc[*sum], &g.acc[*count])?;
                    let e = self.encode(i, t.as_deref())?;
                    (t, e)
                }
                (Col::Agg(Agg::Count) | Col::Distinct(Agg::Count), Acc::Sum(s)) => {
                    let t = s.text().unwrap_or_else(|| b"0".to_vec());
                    let e = self.encode(i, Some(&t))?;
                    (Some(t), e)
                }
                (_, Acc::Sum(s)) => {
                    let t = s.text();
                    let e = self.encode(i, t.as_deref())?;
                    (t, e)
                }
                _ => (None, None),
            };
            text.push(t);
            if i < self.g.visible {
                enc.push(e);
            }
        }
        if let Some(h) = &self.g.having {
            if eval(self, h, &text)? != Some(true) {
                return Ok(None);
            }
        }
        Ok(Some(Done {
            row: self.row(&enc),
            text,
        }))
    }

    /// Column `i` of `row`: text, and the client's encoding.
    fn pick(&self, row: &Row, i: usize) -> Value {
        let Some(t) = row.text.get(i).cloned().flatten() else {
            return (None, None);
        };
        if !self.binary {
            let e = lenenc_bytes(&t);
            return (Some(t), Some(e));
        }
        let bytes = row
            .ranges
            .get(i)
            .cloned()
            .flatten()
            .map(|r| row.raw[r].to_vec());
        (Some(t), bytes)
    }

    /// A combined value (text form) encoded for the client.
    fn encode(&self, i: usize, t: Option<&[u8]>) -> Result<Option<Vec<u8>>, String> {
        let Some(t) = t else { return Ok(None) };
        if !self.binary {
            return Ok(Some(lenenc_bytes(t)));
        }
        values::text_to_binary(&self.columns[i], t)
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "an aggregate of column type {:#x} in a prepared statement",
                    self.columns[i].kind
                )
            })
    }

    /// The row packet of the visible values.
    fn row(&self, vals: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut row = Vec::new();
        if self.binary {
            let mut nulls = vec![0u8; (vals.len() + 7 + 2) / 8];
            for (i, v) in vals.iter().enumerate() {
                if v.is_none() {
                    nulls[(i + 2) / 8] |= 1 << ((i + 2) % 8);
                }
            }
            row.push(0x00);
            row.extend_from_slice(&nulls);
        }
        for v in vals {
            match v {
                Some(v) => row.extend_from_slice(v),
                None if !self.binary => row.push(0xFB),
                None => {}
            }
        }
        row
    }

    /// The one row of a query without GROUP BY over no rows: COUNT 0,
    /// everything else NULL.
    fn empty(&self) -> Result<Option<Done>, String> {
        self.finish(&self.open(Row::default()))
    }
}

/// AVG from its SUM and COUNT: the column's scale, rounded half away from
/// zero (DECIMAL), or a DOUBLE division.
fn avg(col: Column, sum: &Acc, count: &Acc) -> Result<Option<Vec<u8>>, String> {
    let (Acc::Sum(sum), Acc::Sum(count)) = (sum, count) else {
        return Err("an AVG without its SUM and COUNT".into());
    };
    let n: u64 = match count.text() {
        Some(t) => std::str::from_utf8(&t)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a COUNT that is not a number")?,
        None => 0,
    };
    if n == 0 {
        return Ok(None);
    }
    Ok(match sum {
        Sum::None => None,
        Sum::Float(f) => Some(values::render_double(f / n as f64).into_bytes()),
        Sum::Exact(d, _) if col.order() == Ok(Order::Float) => {
            let f: f64 = d.render(d.scale()).parse().map_err(|_| "an AVG sum")?;
            Some(values::render_double(f / n as f64).into_bytes())
        }
        Sum::Exact(d, _) => {
            let scale = col.decimals as usize;
            d.div_round(n, scale).map(|q| q.render(scale).into_bytes())
        }
    })
}

/// HAVING over a group's values: Some(true), Some(false) or None (unknown).
fn eval(m: &Merger, c: &Cond, vals: &[Option<Vec<u8>>]) -> Result<Option<bool>, String> {
    Ok(match c {
        Cond::And(a, b) => match (eval(m, a, vals)?, eval(m, b, vals)?) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Cond::Or(a, b) => match (eval(m, a, vals)?, eval(m, b, vals)?) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Cond::Not(a) => eval(m, a, vals)?.map(|x| !x),
        Cond::IsNull { col, negated } => Some(vals[*col].is_none() != *negated),
        Cond::Cmp { col, op, value } => {
            let Some(v) = vals[*col].as_deref() else {
                return Ok(None);
            };
            let lit: &[u8] = match value {
                Literal::Null => return Ok(None),
                Literal::Number(n) => n.as_bytes(),
                Literal::Str(s) => s,
            };
            let order = m.order(*col)?;
            let ord = match order {
                Order::Decimal => {
                    let d = |x: &[u8]| {
                        Decimal::parse(x)
                            .ok_or("HAVING compares a number with a constant that is not one")
                    };
                    d(v)?.cmp(&d(lit)?)
                }
                Order::Bytes if v.len() != lit.len() => {
                    return Err(
                        "HAVING compares a date or bit value with a constant of another form"
                            .into(),
                    )
                }
                o => values::compare(o, Some(v), Some(lit))
                    .ok_or("HAVING compares a value Tandem cannot compare exactly")?,
            };
            Some(match op {
                Cmp::Eq => ord.is_eq(),
                Cmp::Ne => ord.is_ne(),
                Cmp::Lt => ord.is_lt(),
                Cmp::Le => ord.is_le(),
                Cmp::Gt => ord.is_gt(),
                Cmp::Ge => ord.is_ge(),
            })
        }
    })
}

/// Reads every shard's rows (after their heads) and sends the client the
/// grouped answer `g` describes: `head` is the first shard's column count,
/// definitions and EOF; `cap` the bytes the merge may buffer.
pub(super) async fn grouped(
    replies: &mut [Reply<'_>],
    out: &mut Out<'_>,
    columns: &[Column],
    head: &[Vec<u8>],
    g: &Grouped,
    cap: u64,
) -> M<()> {
    let m = Merger {
        g,
        columns,
        orders: columns.iter().map(|c| c.order().ok()).collect(),
        binary: out.binary,
    };
    if columns.len() != g.cols.len() {
        return fail(
            replies,
            out,
            "a grouped answer of an unexpected shape".into(),
        )
        .await;
    }
    // The client sees the visible columns only.
    let mut count = Vec::new();
    put_lenenc(&mut count, g.visible as u64);
    out.send(&count).await?;
    for p in head.iter().skip(1).take(g.visible) {
        out.send(p).await?;
    }
    for p in head.iter().skip(1 + columns.len()) {
        out.send(p).await?;
    }
    let mut current: Vec<Option<Row>> = Vec::with_capacity(replies.len());
    let mut end: Option<Vec<u8>> = None;
    let mut failure: Option<String> = None;
    for r in replies.iter_mut() {
        match r.row().await? {
            Ok(raw) => match m.read(raw) {
                Ok(row) => current.push(Some(row)),
                Err(e) => {
                    failure.get_or_insert(e);
                    current.push(None);
                }
            },
            Err(p) => {
                keep_end(&mut end, p);
                current.push(None);
            }
        }
    }
    let mut sink = Sink {
        buffer: g.order.as_ref().map(|_| Vec::new()),
        held: 0,
        cap,
        skipped: 0,
        sent: 0,
        any: false,
    };
    let mut group: Option<Group> = None;
    while failure.is_none() && end.as_ref().is_none_or(|p| p.first() != Some(&0xFF)) {
        // The least current row.
        let mut best: Option<usize> = None;
        for i in 0..current.len() {
            let Some(row) = &current[i] else { continue };
            best = match best {
                None => Some(i),
                Some(b) => {
                    let other = current[b].as_ref().map(|r| &r.text[..]).unwrap_or_default();
                    match m.cmp_on(&g.keys, &row.text, other) {
                        Ok(Ordering::Less) => Some(i),
                        Ok(_) => Some(b),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
            };
        }
        if failure.is_some() {
            break;
        }
        let Some(b) = best else { break };
        let Some(row) = current[b].take() else { break };
        let step = match group.as_mut() {
            Some(open) => match m.same_group(&open.first, &row).map(|s| s && !g.each_row) {
                Ok(true) => m.fold(open, &row),
                Ok(false) => match group.take().map(|done| m.finish(&done)).transpose() {
                    Ok(done) => {
                        if let Err(e) = sink.put(&m, out, done.flatten()).await {
                            failure = Some(e?);
                        }
                        m.start(row).map(|s| group = Some(s))
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            None => m.start(row).map(|s| group = Some(s)),
        };
        if let Err(e) = step {
            failure = Some(e);
            break;
        }
        match replies[b].row().await? {
            Ok(raw) => match m.read(raw) {
                Ok(row) => current[b] = Some(row),
                Err(e) => failure = Some(e),
            },
            Err(p) => keep_end(&mut end, p),
        }
    }
    for r in replies.iter_mut() {
        r.drain().await?;
    }
    if end.as_ref().is_some_and(|p| p.first() == Some(&0xFF)) {
        return out.finish(end.unwrap_or_default()).await;
    }
    if failure.is_none() {
        let last = match group.take() {
            Some(open) => m.finish(&open).map(Some),
            None if g.whole && !sink.any => m.empty().map(Some),
            None => Ok(None),
        };
        match last {
            Ok(done) => {
                if let Err(e) = sink.put(&m, out, done.flatten()).await {
                    failure = Some(e?);
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    if failure.is_none() {
        if let Err(e) = sink.flush(&m, out).await {
            failure = Some(e?);
        }
    }
    match (failure, end) {
        (Some(why), _) => out.error(&not_supported(why)).await,
        (None, Some(p)) => out.finish(p).await,
        (None, None) => Ok(()),
    }
}

async fn fail(replies: &mut [Reply<'_>], out: &mut Out<'_>, why: String) -> M<()> {
    for r in replies.iter_mut() {
        r.drain().await?;
    }
    out.error(&not_supported(why)).await
}

/// Where finished groups go: to the client in turn, or into the buffer
/// that is sorted at the end.
struct Sink {
    buffer: Option<Vec<Done>>,
    held: u64,
    cap: u64,
    skipped: u64,
    sent: u64,
    /// A group was finished (HAVING or not).
    any: bool,
}

/// A sink's failure: the client's connection (M's error) or the reason
/// the answer cannot be given.
type Put = Result<(), M<String>>;

impl Sink {
    async fn put(&mut self, m: &Merger<'_>, out: &mut Out<'_>, done: Option<Done>) -> Put {
        self.any = true;
        let Some(done) = done else { return Ok(()) };
        match &mut self.buffer {
            Some(b) => {
                self.held += (done.row.len()
                    + done
                        .text
                        .iter()
                        .map(|t| t.as_ref().map_or(8, |t| t.len() + 24))
                        .sum::<usize>()
                    + 64) as u64;
                if self.held > self.cap {
                    return Err(Ok(format!(
                        "a grouped read that must hold more than merge_buffer ({} bytes) to \
                         sort; narrow it or order by the GROUP BY columns",
                        self.cap
                    )));
                }
                b.push(done);
                Ok(())
            }
            None => self.send(m, out, &done.row).await,
        }
    }

    async fn send(&mut self, m: &Merger<'_>, out: &mut Out<'_>, row: &[u8]) -> Put {
        if self.skipped < m.g.offset {
            self.skipped += 1;
        } else if m.g.limit.is_none_or(|l| self.sent < l) {
            out.send(row).await.map_err(Err)?;
            out.rows += 1;
            self.sent += 1;
        }
        Ok(())
    }

    async fn flush(&mut self, m: &Merger<'_>, out: &mut Out<'_>) -> Put {
        let (Some(mut rows), Some(order)) = (self.buffer.take(), m.g.order.as_ref()) else {
            return Ok(());
        };
        let mut why = None;
        rows.sort_by(|a, b| match m.cmp_on(order, &a.text, &b.text) {
            Ok(o) => o,
            Err(e) => {
                why.get_or_insert(e);
                Ordering::Equal
            }
        });
        if let Some(e) = why {
            return Err(Ok(e));
        }
        for d in rows {
            self.send(m, out, &d.row).await?;
        }
        Ok(())
    }
}
