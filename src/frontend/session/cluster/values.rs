//! Values of text-protocol rows, as a merge of several shards' answers
//! needs them: the column facts that decide how values compare (from the
//! column definition packet), comparison in the server's order, and exact
//! decimal sums.

use crate::protocol::packets::get_lenenc;
use std::cmp::Ordering;
use std::ops::Range;

/// What a merge needs from one column definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub charset: u16,
    pub kind: u8,
    pub flags: u16,
    /// Fraction digits the server writes (DECIMAL scale, AVG's result).
    pub decimals: u8,
}

/// MySQL column types (the protocol's type byte).
mod ty {
    pub const DECIMAL: u8 = 0x00;
    pub const TINY: u8 = 0x01;
    pub const SHORT: u8 = 0x02;
    pub const LONG: u8 = 0x03;
    pub const FLOAT: u8 = 0x04;
    pub const DOUBLE: u8 = 0x05;
    pub const TIMESTAMP: u8 = 0x07;
    pub const LONGLONG: u8 = 0x08;
    pub const INT24: u8 = 0x09;
    pub const DATE: u8 = 0x0a;
    pub const TIME: u8 = 0x0b;
    pub const DATETIME: u8 = 0x0c;
    pub const YEAR: u8 = 0x0d;
    pub const NEWDATE: u8 = 0x0e;
    pub const VARCHAR: u8 = 0x0f;
    pub const BIT: u8 = 0x10;
    pub const NEWDECIMAL: u8 = 0xf6;
    pub const TINY_BLOB: u8 = 0xf9;
    pub const MEDIUM_BLOB: u8 = 0xfa;
    pub const LONG_BLOB: u8 = 0xfb;
    pub const BLOB: u8 = 0xfc;
    pub const VAR_STRING: u8 = 0xfd;
    pub const STRING: u8 = 0xfe;
}

const ENUM_FLAG: u16 = 0x100;
const SET_FLAG: u16 = 0x800;
/// The `binary` character set/collation.
const BINARY: u16 = 63;
/// `_bin` collations of the character sets clients use (PAD SPACE): they
/// order by code point, which is byte order in these encodings.
const BIN_COLLATIONS: &[u16] = &[46, 83, 47, 65, 84, 48];
/// `*_general_ci` collations of utf8mb3, utf8mb4 and ascii: printable
/// ASCII orders as its upper case (PAD SPACE); other characters follow
/// tables Tandem does not carry.
const GENERAL_CI: &[u16] = &[33, 45, 11];

/// Parses a column definition (protocol 4.1) packet; `extended`: the
/// connection has MariaDB's extended metadata (one more string before the
/// fixed fields).
pub fn column(p: &[u8], extended: bool) -> Option<Column> {
    let mut at = 0;
    for _ in 0..6 + usize::from(extended) {
        let (n, used) = get_lenenc(p.get(at..)?)?;
        at += used + n as usize;
    }
    // Length of the fixed fields (0x0c), then charset, length, type, flags.
    let (_, used) = get_lenenc(p.get(at..)?)?;
    at += used;
    let f = p.get(at..at + 10)?;
    Some(Column {
        charset: u16::from_le_bytes([f[0], f[1]]),
        kind: f[6],
        flags: u16::from_le_bytes([f[7], f[8]]),
        decimals: f[9],
    })
}

/// The fields of a text-protocol row: each a byte range, None for NULL.
pub fn fields(row: &[u8], n: usize) -> Option<Vec<Option<Range<usize>>>> {
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for _ in 0..n {
        if *row.get(at)? == 0xFB {
            out.push(None);
            at += 1;
            continue;
        }
        let (len, used) = get_lenenc(row.get(at..)?)?;
        let start = at + used;
        let end = start.checked_add(len as usize)?;
        if end > row.len() {
            return None;
        }
        out.push(Some(start..end));
        at = end;
    }
    Some(out)
}

/// The values of a binary-protocol row (COM_STMT_EXECUTE): each a byte
/// range of its encoding, None for NULL.
pub fn binary_fields(row: &[u8], columns: &[Column]) -> Option<Vec<Option<Range<usize>>>> {
    use ty::*;
    let n = columns.len();
    let bitmap_len = (n + 7 + 2) / 8;
    if *row.first()? != 0x00 {
        return None;
    }
    let bitmap = row.get(1..1 + bitmap_len)?;
    let mut at = 1 + bitmap_len;
    let mut out = Vec::with_capacity(n);
    for (i, c) in columns.iter().enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            out.push(None);
            continue;
        }
        let len = match c.kind {
            TINY => 1,
            SHORT | YEAR => 2,
            LONG | INT24 | FLOAT => 4,
            LONGLONG | DOUBLE => 8,
            DATE | NEWDATE | DATETIME | TIMESTAMP | TIME => 1 + *row.get(at)? as usize,
            _ => {
                let (len, used) = get_lenenc(row.get(at..)?)?;
                used + len as usize
            }
        };
        let end = at.checked_add(len)?;
        if end > row.len() {
            return None;
        }
        out.push(Some(at..end));
        at = end;
    }
    Some(out)
}

/// A binary-protocol value in its text-protocol form (what `compare` and
/// the aggregates read). None: not readable.
pub fn binary_text(c: &Column, v: &[u8]) -> Option<Vec<u8>> {
    use ty::*;
    let unsigned = c.flags & 0x20 != 0;
    let int = |b: &[u8]| -> Option<Vec<u8>> {
        let mut x = [0u8; 8];
        x.get_mut(..b.len())?.copy_from_slice(b);
        let u = u64::from_le_bytes(x);
        let bits = b.len() * 8;
        let v: i128 = if unsigned {
            u as i128
        } else if bits == 64 {
            u as i64 as i128
        } else {
            let shift = 64 - bits;
            ((u << shift) as i64 >> shift) as i128
        };
        Some(v.to_string().into_bytes())
    };
    Some(match c.kind {
        TINY | SHORT | YEAR | LONG | INT24 | LONGLONG => int(v)?,
        FLOAT => format!("{}", f32::from_le_bytes(v.try_into().ok()?)).into_bytes(),
        DOUBLE => format!("{}", f64::from_le_bytes(v.try_into().ok()?)).into_bytes(),
        DATE | NEWDATE | DATETIME | TIMESTAMP => {
            let b = &v[1..];
            let g = |i: usize| b.get(i).copied().unwrap_or(0) as u32;
            let year = b
                .get(0..2)
                .map_or(0, |y| u16::from_le_bytes([y[0], y[1]]) as u32);
            let micros = b
                .get(7..11)
                .map_or(0, |m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
            format!(
                "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}.{micros:06}",
                g(2),
                g(3),
                g(4),
                g(5),
                g(6)
            )
            .into_bytes()
        }
        TIME => {
            let b = &v[1..];
            if b.is_empty() {
                return Some(b"00:00:00.000000".to_vec());
            }
            let neg = b.first() == Some(&1);
            let days = b
                .get(1..5)
                .map_or(0, |d| u32::from_le_bytes([d[0], d[1], d[2], d[3]]));
            let g = |i: usize| b.get(i).copied().unwrap_or(0) as u32;
            let micros = b
                .get(8..12)
                .map_or(0, |m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
            format!(
                "{}{}:{:02}:{:02}.{micros:06}",
                if neg { "-" } else { "" },
                days * 24 + g(5),
                g(6),
                g(7)
            )
            .into_bytes()
        }
        _ => {
            let (len, used) = get_lenenc(v)?;
            v.get(used..used + len as usize)?.to_vec()
        }
    })
}

/// A text-form aggregate result encoded for a binary-protocol row of a
/// column of type `c` (COUNT's BIGINT, SUM's DECIMAL or DOUBLE). None: a
/// type Tandem does not encode.
pub fn text_to_binary(c: &Column, text: &[u8]) -> Option<Vec<u8>> {
    use ty::*;
    let s = std::str::from_utf8(text).ok()?;
    Some(match c.kind {
        LONGLONG => s.parse::<i64>().ok()?.to_le_bytes().to_vec(),
        DOUBLE => s.parse::<f64>().ok()?.to_le_bytes().to_vec(),
        DECIMAL | NEWDECIMAL => {
            let mut out = Vec::with_capacity(text.len() + 1);
            crate::protocol::packets::put_lenenc(&mut out, text.len() as u64);
            out.extend_from_slice(text);
            out
        }
        _ => return None,
    })
}

/// How a column's values compare, or why a merge cannot order them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Decimal,
    Float,
    /// Fixed-width text that orders as bytes (dates, datetimes).
    Bytes,
    /// Bytes with trailing spaces ignored (PAD SPACE `_bin` strings).
    PadBytes,
    /// `_general_ci`: printable ASCII by its upper case, PAD SPACE; other
    /// values cannot be ordered.
    AsciiCi,
    Time,
}

impl Column {
    pub fn order(&self) -> Result<Order, String> {
        use ty::*;
        match self.kind {
            DECIMAL | NEWDECIMAL | TINY | SHORT | LONG | LONGLONG | INT24 | YEAR => {
                Ok(Order::Decimal)
            }
            FLOAT | DOUBLE => Ok(Order::Float),
            DATE | NEWDATE | DATETIME | TIMESTAMP => Ok(Order::Bytes),
            TIME => Ok(Order::Time),
            BIT => Ok(Order::Bytes),
            VARCHAR | VAR_STRING | STRING | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | BLOB => {
                if self.flags & (ENUM_FLAG | SET_FLAG) != 0 {
                    Err("an ENUM or SET column (ordered by position, not text)".into())
                } else if self.charset == BINARY {
                    Ok(Order::Bytes)
                } else if BIN_COLLATIONS.contains(&self.charset) {
                    Ok(Order::PadBytes)
                } else if GENERAL_CI.contains(&self.charset) {
                    Ok(Order::AsciiCi)
                } else {
                    Err(format!(
                        "a string column under collation {} (binary, _bin and \
                         _general_ci collations are merged across shards)",
                        self.charset
                    ))
                }
            }
            k => Err(format!("a column of type {k:#x}")),
        }
    }
}

/// Compares two values of a column ordered by `o` (NULL first, as MySQL
/// sorts it ascending). None: a value Tandem cannot order exactly (a
/// non-ASCII string under `_general_ci`).
pub fn compare(o: Order, a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Ordering> {
    Some(match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => match o {
            Order::AsciiCi => {
                let printable = |v: &[u8]| v.iter().all(|c| (0x20..0x7f).contains(c));
                if !printable(a) || !printable(b) {
                    return None;
                }
                pad_cmp(&a.to_ascii_uppercase(), &b.to_ascii_uppercase())
            }
            Order::Decimal => match (Decimal::parse(a), Decimal::parse(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => a.cmp(b),
            },
            Order::Float => {
                let f = |v: &[u8]| {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<f64>().ok())
                };
                match (f(a), f(b)) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    _ => a.cmp(b),
                }
            }
            Order::Bytes => a.cmp(b),
            Order::PadBytes => pad_cmp(a, b),
            Order::Time => time_micros(a).cmp(&time_micros(b)),
        },
    })
}

/// PAD SPACE comparison: the shorter value is compared as if padded with
/// spaces.
fn pad_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().max(b.len());
    let at = |v: &[u8], i: usize| v.get(i).copied().unwrap_or(b' ');
    (0..n)
        .map(|i| at(a, i).cmp(&at(b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// A TIME value (`-838:59:59.000000`) in microseconds.
fn time_micros(v: &[u8]) -> i128 {
    let s = String::from_utf8_lossy(v);
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r.to_string()),
        None => (false, s.to_string()),
    };
    let (hms, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut parts = hms.split(':').map(|p| p.parse::<i128>().unwrap_or(0));
    let (h, m, sec) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    let micros: i128 = format!("{frac:0<6}")[..6].parse().unwrap_or(0);
    let t = ((h * 60 + m) * 60 + sec) * 1_000_000 + micros;
    if neg {
        -t
    } else {
        t
    }
}

/// An exact decimal: sign, digits (no leading zeros), scale. Equal by
/// value (`1.50` = `1.5`).
#[derive(Debug, Clone)]
pub struct Decimal {
    neg: bool,
    /// Most significant digit first, values 0-9.
    digits: Vec<u8>,
    scale: usize,
}

impl Decimal {
    pub fn parse(v: &[u8]) -> Option<Decimal> {
        let (neg, v) = match v.first() {
            Some(b'-') => (true, &v[1..]),
            Some(b'+') => (false, &v[1..]),
            _ => (false, v),
        };
        let (int, frac) = match v.iter().position(|&b| b == b'.') {
            Some(p) => (&v[..p], &v[p + 1..]),
            None => (v, &v[v.len()..]),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.iter().chain(frac).all(u8::is_ascii_digit) {
            return None;
        }
        let digits: Vec<u8> = int.iter().chain(frac).map(|b| b - b'0').collect();
        Some(
            Decimal {
                neg,
                digits,
                scale: frac.len(),
            }
            .normalized(),
        )
    }

    fn normalized(mut self) -> Decimal {
        let lead = self
            .digits
            .iter()
            .take(self.digits.len().saturating_sub(self.scale))
            .take_while(|&&d| d == 0)
            .count();
        self.digits.drain(..lead);
        if self.digits.iter().all(|&d| d == 0) {
            self.neg = false;
        }
        self
    }

    /// Digits at scale `s` (s >= self.scale).
    fn at_scale(&self, s: usize) -> Vec<u8> {
        let mut d = self.digits.clone();
        d.extend(std::iter::repeat_n(0, s - self.scale));
        d
    }

    pub fn add(&self, o: &Decimal) -> Decimal {
        let scale = self.scale.max(o.scale);
        let (a, b) = (self.at_scale(scale), o.at_scale(scale));
        let (digits, neg) = if self.neg == o.neg {
            (add_mag(&a, &b), self.neg)
        } else {
            match cmp_mag(&a, &b) {
                Ordering::Less => (sub_mag(&b, &a), o.neg),
                _ => (sub_mag(&a, &b), self.neg),
            }
        };
        Decimal { neg, digits, scale }.normalized()
    }

    /// The value written with exactly `scale` fraction digits (the
    /// column's), as the server writes it.
    pub fn render(&self, scale: usize) -> String {
        let mut d = self.digits.clone();
        if scale >= self.scale {
            d.extend(std::iter::repeat_n(0, scale - self.scale));
        } else {
            d.truncate(d.len() - (self.scale - scale));
        }
        while d.len() <= scale {
            d.insert(0, 0);
        }
        let int_len = d.len() - scale;
        let mut s = String::new();
        if self.neg && d.iter().any(|&x| x != 0) {
            s.push('-');
        }
        s.extend(d[..int_len].iter().map(|&x| (b'0' + x) as char));
        if scale > 0 {
            s.push('.');
            s.extend(d[int_len..].iter().map(|&x| (b'0' + x) as char));
        }
        s
    }

    pub fn scale(&self) -> usize {
        self.scale
    }

    /// self / n at `scale` fraction digits, rounded half away from zero
    /// (as the server rounds AVG to its result's scale). None: n is 0.
    pub fn div_round(&self, n: u64, scale: usize) -> Option<Decimal> {
        if n == 0 {
            return None;
        }
        // The digits as an integer at scale+1, divided digit by digit.
        let mut d = self.digits.clone();
        let target = scale + 1;
        if target >= self.scale {
            d.extend(std::iter::repeat_n(0, target - self.scale));
        } else {
            d.truncate(d.len() - (self.scale - target));
        }
        let mut q = Vec::with_capacity(d.len());
        let mut rem: u128 = 0;
        for x in d {
            let cur = rem * 10 + x as u128;
            q.push((cur / n as u128) as u8);
            rem = cur % n as u128;
        }
        // Round on the extra digit.
        let last = q.pop().unwrap_or(0);
        if last >= 5 {
            q = add_mag(&q, &[1]);
        }
        Some(
            Decimal {
                neg: self.neg,
                digits: q,
                scale,
            }
            .normalized(),
        )
    }
}

impl Ord for Decimal {
    fn cmp(&self, o: &Self) -> Ordering {
        let scale = self.scale.max(o.scale);
        let (a, b) = (self.at_scale(scale), o.at_scale(scale));
        match (self.neg, o.neg) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => cmp_mag(&a, &b),
            (true, true) => cmp_mag(&b, &a),
        }
    }
}

impl PartialEq for Decimal {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

fn strip(d: &[u8]) -> &[u8] {
    let lead = d.iter().take_while(|&&x| x == 0).count();
    &d[lead..]
}

fn cmp_mag(a: &[u8], b: &[u8]) -> Ordering {
    let (a, b) = (strip(a), strip(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn add_mag(a: &[u8], b: &[u8]) -> Vec<u8> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n + 1);
    let mut carry = 0;
    for i in 0..n {
        let x = if i < a.len() { a[a.len() - 1 - i] } else { 0 };
        let y = if i < b.len() { b[b.len() - 1 - i] } else { 0 };
        let s = x + y + carry;
        out.push(s % 10);
        carry = s / 10;
    }
    if carry > 0 {
        out.push(carry);
    }
    out.reverse();
    out
}

/// a - b for |a| >= |b|.
fn sub_mag(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0i8;
    for i in 0..a.len() {
        let x = a[a.len() - 1 - i] as i8;
        let y = if i < b.len() {
            b[b.len() - 1 - i] as i8
        } else {
            0
        };
        let mut d = x - y - borrow;
        borrow = 0;
        if d < 0 {
            d += 10;
            borrow = 1;
        }
        out.push(d as u8);
    }
    out.reverse();
    out
}

/// A DOUBLE as MariaDB writes it in the text protocol (shortest digits
/// that read back the same; exponent form for very large or small).
pub fn render_double(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e15).contains(&a) {
        let s = format!("{x:e}");
        // Rust writes `1e20` / `1.5e-7`; MariaDB `1e20` / `1.5e-7`.
        s
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn decimals_add_and_compare_exactly() {
        assert_eq!(d("1.50").add(&d("2.25")).render(2), "3.75");
        assert_eq!(d("-1.50").add(&d("2.25")).render(2), "0.75");
        assert_eq!(d("1.50").add(&d("-2.25")).render(2), "-0.75");
        assert_eq!(d("-0.50").add(&d("0.50")).render(2), "0.00");
        let big = "99999999999999999999999999999999999.999999999";
        assert_eq!(
            d(big).add(&d("0.000000001")).render(9),
            "100000000000000000000000000000000000.000000000"
        );
        assert!(d("10") > d("9.99"));
        assert!(d("-10") < d("-9.99"));
        assert!(d("0.0") == d("-0"));
        assert_eq!(d("5").render(0), "5");
        assert_eq!(d("0.5").render(3), "0.500");
        let avg = |v: &str, n, s| d(v).div_round(n, s).unwrap().render(s);
        assert_eq!(avg("10", 3, 4), "3.3333");
        assert_eq!(avg("20", 3, 4), "6.6667");
        assert_eq!(avg("-20", 3, 4), "-6.6667");
        assert_eq!(avg("1.25", 2, 6), "0.625000");
        assert_eq!(avg("0.00", 7, 6), "0.000000");
        assert_eq!(avg("5", 1, 0), "5");
        assert!(d("1").div_round(0, 4).is_none());
    }

    #[test]
    fn values_compare_in_the_servers_order() {
        use Order::*;
        let c = |o, a: &str, b: &str| compare(o, Some(a.as_bytes()), Some(b.as_bytes())).unwrap();
        assert_eq!(c(Decimal, "9", "10"), Ordering::Less);
        assert_eq!(c(Decimal, "-2", "-10"), Ordering::Greater);
        assert_eq!(c(Float, "1e3", "999.5"), Ordering::Greater);
        assert_eq!(c(PadBytes, "a", "a  "), Ordering::Equal);
        assert_eq!(c(PadBytes, "a\t", "a"), Ordering::Less);
        assert_eq!(c(Time, "-01:00:00", "00:59:59"), Ordering::Less);
        assert_eq!(c(Time, "100:00:00", "99:59:59.5"), Ordering::Greater);
        assert_eq!(compare(Decimal, None, Some(b"1")), Some(Ordering::Less));
        assert_eq!(c(AsciiCi, "a", "B"), Ordering::Less);
        assert_eq!(c(AsciiCi, "ab ", "AB"), Ordering::Equal);
        assert_eq!(compare(AsciiCi, Some("é".as_bytes()), Some(b"e")), None);
    }
}
