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
    /// TIMESTAMP: placed by its UTC value. A literal is in the session's
    /// time zone, `offset` seconds east of UTC (None: not a fixed offset
    /// Tandem knows, so literals cannot be placed).
    Timestamp { offset: Option<i32> },
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
            "timestamp" => KeyType::Timestamp { offset: Some(0) },
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
        (KeyType::Temporal { .. } | KeyType::Timestamp { .. }, Literal::Number(n)) => {
            Err(Unroutable::Every(format!(
                "{n}: a date key is routed by a quoted 'YYYY-MM-DD' literal"
            )))
        }
        (KeyType::Timestamp { offset: None }, Literal::Str(_)) => Err(Unroutable::Every(
            "a TIMESTAMP key under a session time zone that is not a fixed offset (SET \
             time_zone = '+00:00', or another '+hh:mm')"
                .into(),
        )),
        (KeyType::Timestamp { offset: Some(off) }, Literal::Str(s)) => temporal(s, true)
            .and_then(|local| to_utc(&local, *off))
            .map(Canon::Temporal)
            .ok_or_else(|| Unroutable::Every("not a datetime in YYYY-MM-DD hh:mm:ss form".into())),
        (KeyType::Unsupported(t), _) => Err(Unroutable::Every(format!(
            "shard keys of type {t} are not supported"
        ))),
    }
}

/// The text of a config bound or list value in canonical form.
pub fn canon_text(ty: &KeyType, text: &str) -> Result<Canon, Unroutable> {
    match ty {
        KeyType::Int => canon(ty, &Literal::Number(text.trim().to_string())),
        // Bounds and values in the config are UTC.
        KeyType::Timestamp { .. } => canon(
            &KeyType::Timestamp { offset: Some(0) },
            &Literal::Str(text.as_bytes().to_vec()),
        ),
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

/// A canonical local datetime (`YYYY-MM-DD hh:mm:ss.ffffff`) `offset`
/// seconds east of UTC, as the UTC datetime in the same form. None: out of
/// TIMESTAMP's range.
fn to_utc(local: &str, offset: i32) -> Option<String> {
    let n = |a: usize, b: usize| local.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (h, mi, s) = (n(11, 13)?, n(14, 16)?, n(17, 19)?);
    let frac = local.get(20..)?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset as i64;
    let (days, rest) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, mo, d) = civil_from_days(days);
    if !(1970..=2038).contains(&y) {
        return None;
    }
    Some(format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}.{frac}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
