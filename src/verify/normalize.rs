//! Engine-neutral value normalization for verify: a value that is equal on
//! both sides hashes equal, whatever each engine's display form.
//!
//! Deliberate choices: NULL and '' differ; DECIMAL compares by numeric value
//! (`1.50` = `1.5`, `-0.0` = `0`); FLOAT/DOUBLE compare as f64 with -0.0 =
//! 0.0; DATETIME/TIME compare with trailing zeros of the fraction dropped
//! (`12:00:00.000000` = `12:00:00`, `.500` = `.500000`); everything else compares as bytes
//! (text arrives in the connection character set, utf8mb4 on both sides).

use xxhash_rust::xxh3::Xxh3;

/// How a column's text-protocol values are normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Decimal,
    Float,
    Temporal,
    Bytes,
}

impl Kind {
    pub fn of(column_type: mysql_common::constants::ColumnType) -> Self {
        use mysql_common::constants::ColumnType as T;
        match column_type {
            T::MYSQL_TYPE_DECIMAL | T::MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
            T::MYSQL_TYPE_FLOAT | T::MYSQL_TYPE_DOUBLE => Kind::Float,
            T::MYSQL_TYPE_DATETIME
            | T::MYSQL_TYPE_DATETIME2
            | T::MYSQL_TYPE_TIMESTAMP
            | T::MYSQL_TYPE_TIMESTAMP2
            | T::MYSQL_TYPE_TIME
            | T::MYSQL_TYPE_TIME2 => Kind::Temporal,
            _ => Kind::Bytes,
        }
    }
}

/// Canonical bytes of one value (None = NULL).
pub fn canonical(kind: Kind, value: Option<&[u8]>) -> Vec<u8> {
    let Some(v) = value else {
        return vec![0];
    };
    let mut out = vec![1];
    match kind {
        Kind::Bytes => out.extend_from_slice(v),
        Kind::Decimal => out.extend_from_slice(decimal(v).as_bytes()),
        Kind::Float => match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            // -0.0 == 0.0, so both zeros normalize to "0".
            Some(f) => {
                let text = if f == 0.0 {
                    "0".to_string()
                } else {
                    format!("{f:e}")
                };
                out.extend_from_slice(text.as_bytes());
            }
            None => out.extend_from_slice(v),
        },
        Kind::Temporal => out.extend_from_slice(temporal(v)),
    }
    out
}

/// `-012.3400` → `-12.34`; `-0.00` → `0`; non-numbers unchanged.
fn decimal(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return s.to_string();
    }
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    if neg && body != "0" {
        format!("-{body}")
    } else {
        body
    }
}

/// Drops trailing zeros of the fractional seconds (and a bare dot), so
/// DATETIME(0)/(3)/(6) renderings of the same instant are equal.
fn temporal(v: &[u8]) -> &[u8] {
    match v.iter().rposition(|b| *b == b'.') {
        Some(dot) if v[dot + 1..].iter().all(|b| b.is_ascii_digit()) => {
            let mut end = v.len();
            while end > dot + 1 && v[end - 1] == b'0' {
                end -= 1;
            }
            if end == dot + 1 {
                &v[..dot]
            } else {
                &v[..end]
            }
        }
        _ => v,
    }
}

/// Hash of a whole row (values in column order).
pub fn row_hash(kinds: &[Kind], values: &[Option<&[u8]>]) -> u64 {
    let mut h = Xxh3::new();
    for (k, v) in kinds.iter().zip(values) {
        let c = canonical(*k, *v);
        h.update(&(c.len() as u32).to_le_bytes());
        h.update(&c);
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(kind: Kind, a: Option<&str>, b: Option<&str>) -> bool {
        canonical(kind, a.map(str::as_bytes)) == canonical(kind, b.map(str::as_bytes))
    }

    #[test]
    fn normalization_table() {
        let cases: &[(Kind, Option<&str>, Option<&str>, bool)] = &[
            (Kind::Bytes, None, Some(""), false),
            (Kind::Bytes, Some("a"), Some("a"), true),
            (Kind::Bytes, Some("a"), Some("A"), false),
            (Kind::Decimal, Some("1.50"), Some("1.5"), true),
            (Kind::Decimal, Some("1.500"), Some("1.50"), true),
            (Kind::Decimal, Some("-0.00"), Some("0"), true),
            (Kind::Decimal, Some("010.0"), Some("10"), true),
            (Kind::Decimal, Some("1.51"), Some("1.5"), false),
            (Kind::Decimal, Some("-1.5"), Some("1.5"), false),
            (Kind::Float, Some("-0"), Some("0"), true),
            (Kind::Float, Some("2.5"), Some("2.50"), true),
            (Kind::Float, Some("1e300"), Some("1E+300"), true),
            (Kind::Float, Some("0.1"), Some("0.2"), false),
            (
                Kind::Temporal,
                Some("2024-01-01 00:00:00.000000"),
                Some("2024-01-01 00:00:00"),
                true,
            ),
            (
                Kind::Temporal,
                Some("12:00:00.500"),
                Some("12:00:00.500000"),
                true,
            ),
            (
                Kind::Temporal,
                Some("12:00:00.5"),
                Some("12:00:00.05"),
                false,
            ),
            (
                Kind::Temporal,
                Some("2024-01-01 00:00:00.1"),
                Some("2024-01-01 00:00:00"),
                false,
            ),
            (Kind::Decimal, None, Some("0"), false),
        ];
        for (k, a, b, want) in cases {
            assert_eq!(eq(*k, *a, *b), *want, "{k:?} {a:?} vs {b:?}");
        }
    }

    #[test]
    fn row_hash_separates_columns() {
        let k = [Kind::Bytes, Kind::Bytes];
        assert_ne!(
            row_hash(&k, &[Some(b"ab"), Some(b"c")]),
            row_hash(&k, &[Some(b"a"), Some(b"bc")])
        );
        assert_ne!(
            row_hash(&k, &[None, Some(b"")]),
            row_hash(&k, &[Some(b""), None])
        );
    }
}
