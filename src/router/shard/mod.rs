//! Shard functions: a shard key's value → the shard that holds its rows.
//!
//! A value is first put in its canonical form for the key column's type
//! (`Canon`): integers by value whatever the literal's form (`5`, `'5'`,
//! `5.0`), strings by their collation's comparison form, dates and
//! datetimes as `YYYY-MM-DD[ hh:mm:ss.ffffff]`. Then `hash` (over virtual
//! buckets), `range` or `list` picks the shard. A value that cannot be put
//! in canonical form with certainty is `Unroutable`: a read goes to every
//! shard, an insert is refused. `route` plans whole statements on top.
//! Pure: no I/O; the column facts come from the caller.

pub mod group;
pub mod hash;
pub mod ids;
pub mod insert;
pub mod route;
mod select;

use crate::config::{ClusterConfig, Placement};
use std::cmp::Ordering;

/// The type of a shard key column, as far as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    /// Any integer type (TINYINT … BIGINT, signed or not).
    Int,
    /// A character or binary string compared as `fold` says.
    Str(Fold),
    /// DATE (`datetime: false`) or DATETIME.
    Temporal { datetime: bool },
    /// Anything else: named, for the error.
    Unsupported(String),
}

/// How a string key compares (its collation's comparison form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// BINARY/VARBINARY/BLOB: bytes as they are.
    Bytes,
    /// A `_bin` collation with PAD SPACE: bytes, trailing spaces ignored.
    BinPad,
    /// A case-insensitive collation with PAD SPACE (`utf8mb4_general_ci`,
    /// `utf8mb4_unicode_ci`, `latin1_swedish_ci`, …): ASCII letters
    /// compare without case, trailing spaces ignored. Only ASCII values
    /// can be put in this form with certainty (printable ASCII; control
    /// characters are ignorable under UCA collations).
    AsciiCi,
}

impl KeyType {
    /// From information_schema.COLUMNS: DATA_TYPE and COLLATION_NAME.
    pub fn from_schema(data_type: &str, collation: Option<&str>) -> KeyType {
        let t = data_type.to_ascii_lowercase();
        match t.as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => KeyType::Int,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                KeyType::Str(Fold::Bytes)
            }
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                match collation.map(str::to_ascii_lowercase) {
                    Some(c) if c.contains("nopad") => KeyType::Unsupported(format!("{t} {c}")),
                    Some(c) if c.ends_with("_bin") => KeyType::Str(Fold::BinPad),
                    Some(c) if c.ends_with("_ci") => KeyType::Str(Fold::AsciiCi),
                    Some(c) => KeyType::Unsupported(format!("{t} {c}")),
                    None => KeyType::Unsupported(t),
                }
            }
            "date" => KeyType::Temporal { datetime: false },
            "datetime" => KeyType::Temporal { datetime: true },
            _ => KeyType::Unsupported(t),
        }
    }
}

/// A literal as written in the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// A numeric literal's text (`5`, `-5`, `5.0`).
    Number(String),
    /// A quoted string's value (escapes resolved).
    Str(Vec<u8>),
    Null,
}

/// A key value in its canonical form for the column's type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Canon {
    Int(i128),
    Bytes(Vec<u8>),
    /// `YYYY-MM-DD` (DATE) or `YYYY-MM-DD hh:mm:ss.ffffff` (DATETIME).
    Temporal(String),
}

/// Why a value picks no single shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unroutable {
    /// MySQL would compare it in a way the shard function cannot follow
    /// (a number against a string key, a non-ASCII value under a
    /// case-insensitive collation): a read asks every shard.
    Every(String),
    /// Nothing can place it (NULL, a value outside every range or list):
    /// an insert of it is refused; a read of it matches no row.
    Nowhere(String),
}

impl Unroutable {
    pub fn reason(&self) -> &str {
        match self {
            Unroutable::Every(r) | Unroutable::Nowhere(r) => r,
        }
    }
}

/// `lit` in canonical form for a key of type `ty`.
pub fn canon(ty: &KeyType, lit: &Literal) -> Result<Canon, Unroutable> {
    match (ty, lit) {
        (_, Literal::Null) => Err(Unroutable::Nowhere("a NULL shard key".into())),
        (KeyType::Int, Literal::Number(n)) => int_text(n.as_bytes())
            .map(Canon::Int)
            .ok_or_else(|| Unroutable::Every(format!("{n} is not an integer"))),
        (KeyType::Int, Literal::Str(s)) => int_text(s)
            .map(Canon::Int)
            .ok_or_else(|| Unroutable::Every("a string that is not an integer".into())),
        (KeyType::Str(_), Literal::Number(n)) => Err(Unroutable::Every(format!(
            "{n} is compared with a string key as a number"
        ))),
        (KeyType::Str(fold), Literal::Str(s)) => fold_bytes(*fold, s).map(Canon::Bytes),
        (KeyType::Temporal { datetime }, Literal::Str(s)) => temporal(s, *datetime)
            .map(Canon::Temporal)
            .ok_or_else(|| Unroutable::Every("not a date in YYYY-MM-DD form".into())),
        (KeyType::Temporal { .. }, Literal::Number(n)) => Err(Unroutable::Every(format!(
            "{n}: a date key is routed by a quoted 'YYYY-MM-DD' literal"
        ))),
        (KeyType::Unsupported(t), _) => Err(Unroutable::Every(format!(
            "shard keys of type {t} are not supported"
        ))),
    }
}

/// The text of a config bound or list value in canonical form.
pub fn canon_text(ty: &KeyType, text: &str) -> Result<Canon, Unroutable> {
    match ty {
        KeyType::Int => canon(ty, &Literal::Number(text.trim().to_string())),
        _ => canon(ty, &Literal::Str(text.as_bytes().to_vec())),
    }
}

/// An integer written as text: optional spaces and sign, digits, an
/// optional all-zero fraction (`5`, ` -5`, `5.000`). Anything else (an
/// exponent, trailing junk, a fraction) is None: MySQL would convert it in
/// ways Tandem does not follow.
fn int_text(s: &[u8]) -> Option<i128> {
    let s = std::str::from_utf8(s).ok()?.trim_matches(' ');
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if !frac.bytes().all(|b| b == b'0') {
        return None;
    }
    let digits = int.strip_prefix(['-', '+']).unwrap_or(int);
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    int.parse().ok()
}

fn fold_bytes(fold: Fold, s: &[u8]) -> Result<Vec<u8>, Unroutable> {
    let trimmed = || {
        let end = s.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
        &s[..end]
    };
    match fold {
        Fold::Bytes => Ok(s.to_vec()),
        Fold::BinPad => Ok(trimmed().to_vec()),
        Fold::AsciiCi => {
            let t = trimmed();
            // Control characters are ignorable under UCA collations, so
            // only printable ASCII has a certain comparison form here.
            if !t.iter().all(|b| (0x20..0x7f).contains(b)) {
                return Err(Unroutable::Every(
                    "a value with non-ASCII or control characters under a case-insensitive \
                     collation"
                        .into(),
                ));
            }
            Ok(t.to_ascii_uppercase())
        }
    }
}

/// `YYYY-MM-DD` or `YYYY-MM-DD hh:mm:ss[.f…]` in canonical form (DATE keys
/// keep the date; DATETIME keys get six fraction digits).
fn temporal(s: &[u8], datetime: bool) -> Option<String> {
    let s = std::str::from_utf8(s).ok()?.trim();
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let d: Vec<&str> = date.split('-').collect();
    let ok_num = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    if d.len() != 3 || !ok_num(d[0], 4) || !ok_num(d[1], 2) || !ok_num(d[2], 2) {
        return None;
    }
    if !datetime {
        // A DATE column drops a time part only with a note: not followed.
        return time.is_none().then(|| date.to_string());
    }
    let (hms, frac) = match time {
        None => ("00:00:00", ""),
        Some(t) => t.split_once('.').unwrap_or((t, "")),
    };
    let t: Vec<&str> = hms.split(':').collect();
    if t.len() != 3 || !t.iter().all(|p| ok_num(p, 2)) || frac.len() > 6 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{date} {hms}.{frac:0<6}"))
}

/// The shard of a canonical key value of a table placed by `placement`.
pub fn shard_of(
    cluster: &ClusterConfig,
    placement: &Placement,
    ty: &KeyType,
    value: &Canon,
) -> Result<usize, Unroutable> {
    match placement {
        Placement::Hash { .. } => {
            let bytes = hash::canonical_bytes(value).ok_or_else(|| {
                Unroutable::Every("hash sharding takes integer and string keys".into())
            })?;
            Ok(cluster.owners[hash::bucket(&bytes, cluster.buckets()) as usize] as usize)
        }
        Placement::Range { ranges, .. } => {
            for (below, shard) in ranges {
                let Some(b) = below else {
                    return Ok(*shard);
                };
                let bound = canon_text(ty, b)
                    .map_err(|e| Unroutable::Every(format!("range bound {b:?}: {}", e.reason())))?;
                if compare(ty, value, &bound)? == Ordering::Less {
                    return Ok(*shard);
                }
            }
            Err(Unroutable::Nowhere("no range holds the key".into()))
        }
        Placement::List {
            values, default, ..
        } => {
            for (v, shard) in values {
                if canon_text(ty, v).ok().as_ref() == Some(value) {
                    return Ok(*shard);
                }
            }
            default.ok_or_else(|| Unroutable::Nowhere("the value is in no list".into()))
        }
        Placement::Reference => Err(Unroutable::Every("a reference table".into())),
    }
}

/// Order of two canonical values of a key of type `ty`. PAD SPACE strings
/// compare as if the shorter were padded with spaces.
fn compare(ty: &KeyType, a: &Canon, b: &Canon) -> Result<Ordering, Unroutable> {
    match (a, b) {
        (Canon::Int(x), Canon::Int(y)) => Ok(x.cmp(y)),
        (Canon::Temporal(x), Canon::Temporal(y)) => Ok(x.cmp(y)),
        (Canon::Bytes(x), Canon::Bytes(y)) if *ty == KeyType::Str(Fold::Bytes) => Ok(x.cmp(y)),
        (Canon::Bytes(x), Canon::Bytes(y)) if *ty == KeyType::Str(Fold::BinPad) => {
            let n = x.len().max(y.len());
            let at = |v: &[u8], i: usize| v.get(i).copied().unwrap_or(b' ');
            Ok((0..n)
                .map(|i| at(x, i).cmp(&at(y, i)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal))
        }
        (Canon::Bytes(_), Canon::Bytes(_)) => Err(Unroutable::Every(
            "ranges of strings under a case-insensitive collation are not supported".into(),
        )),
        _ => Err(Unroutable::Every("key and bound differ in type".into())),
    }
}

/// Whether range placement is exact for a key of type `ty`: strings only
/// under binary comparison (a case-insensitive collation orders in ways
/// beyond ASCII folding).
pub fn range_supported(ty: &KeyType) -> bool {
    !matches!(ty, KeyType::Str(Fold::AsciiCi) | KeyType::Unsupported(_))
}

#[cfg(test)]
mod tests;
