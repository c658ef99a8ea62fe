//! Canonical values: one text per value that both engines agree on, so a
//! MySQL row and its PostgreSQL copy compare equal exactly when the
//! application would read the same value from each.
//!
//! DECIMAL at its scale, DATETIME/TIMESTAMP as `YYYY-MM-DD HH:MM:SS.ffffff`
//! (TIMESTAMP as the UTC instant: both sessions are pinned to UTC), TIME as
//! signed microseconds, floats by value at their stored precision, JSON as
//! data, BIT as its bit string, bytes as hex, text, ENUM and SET as text.

use super::mapping::Kind;
use mysql_async::Value;

/// The PostgreSQL expression that reads a column for [`pg`].
pub fn pg_select(kind: Kind, q: &str) -> String {
    match kind {
        Kind::Bytea => format!("encode({q}, 'hex')"),
        Kind::Interval => format!("(EXTRACT(EPOCH FROM {q}) * 1000000)::numeric(30,0)::text"),
        Kind::Timestamp | Kind::TimestampTz => format!(
            "CASE WHEN isfinite({q}) THEN to_char({q}, 'YYYY-MM-DD HH24:MI:SS.US') ELSE {q}::text END"
        ),
        _ => format!("{q}::text"),
    }
}

/// A PostgreSQL value (read by [`pg_select`]) in canonical form.
pub fn pg(kind: Kind, text: Option<&str>) -> Option<String> {
    let t = text?;
    Some(match kind {
        Kind::Real => t
            .parse::<f32>()
            .map_or_else(|_| t.to_string(), |v| v.to_string()),
        Kind::Double => t
            .parse::<f64>()
            .map_or_else(|_| t.to_string(), |v| v.to_string()),
        Kind::Numeric => numeric(t),
        Kind::Json | Kind::Jsonb => json(t.as_bytes()),
        _ => t.to_string(),
    })
}

/// A MySQL value (read through the binary protocol) in canonical form.
pub fn mysql(kind: Kind, v: &Value) -> Option<String> {
    Some(match (kind, v) {
        (_, Value::NULL) => return None,
        (Kind::Real, Value::Float(f)) => f.to_string(),
        (Kind::Real, Value::Double(f)) => (*f as f32).to_string(),
        (Kind::Double, Value::Double(f)) => f.to_string(),
        (Kind::Double, Value::Float(f)) => f64::from(*f).to_string(),
        (Kind::Numeric, Value::Bytes(b)) => numeric(&String::from_utf8_lossy(b)),
        (Kind::Bytea, Value::Bytes(b)) => hex(b),
        (Kind::Bit(n), Value::Bytes(b)) => bit_string(be_u64(b), n),
        (Kind::Bit(n), Value::UInt(u)) => bit_string(*u, n),
        (Kind::Bit(n), Value::Int(i)) => bit_string(*i as u64, n),
        (Kind::Json | Kind::Jsonb, Value::Bytes(b)) => json(b),
        // `postgres.zero_dates: infinity`.
        (Kind::Date | Kind::Timestamp | Kind::TimestampTz, Value::Date(0, 0, 0, 0, 0, 0, 0)) => {
            "-infinity".into()
        }
        (Kind::Date, Value::Date(y, m, d, ..)) => format!("{y:04}-{m:02}-{d:02}"),
        (Kind::Timestamp | Kind::TimestampTz, Value::Date(y, mo, d, h, mi, s, us)) => {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }
        (Kind::Interval, Value::Time(..)) => time_micros(v).unwrap_or_default().to_string(),
        (_, Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        (_, Value::Int(i)) => i.to_string(),
        (_, Value::UInt(u)) => u.to_string(),
        (_, other) => other.as_sql(true),
    })
}

/// MySQL TIME as signed microseconds.
pub fn time_micros(v: &Value) -> Option<i64> {
    match v {
        Value::Time(neg, days, h, m, s, us) => {
            let secs = i64::from(*days) * 86_400
                + i64::from(*h) * 3600
                + i64::from(*m) * 60
                + i64::from(*s);
            let total = secs * 1_000_000 + i64::from(*us);
            Some(if *neg { -total } else { total })
        }
        _ => None,
    }
}

/// A decimal's text at its scale, without a sign on zero or leading zeros.
pub fn numeric(t: &str) -> String {
    let t = t.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let mut out = String::new();
    if neg && !zero {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// JSON as data (object keys sorted, whitespace gone); text that does not
/// parse stays as it is.
fn json(b: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(b).map_or_else(
        |_| String::from_utf8_lossy(b).into_owned(),
        |v| v.to_string(),
    )
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A big-endian byte string (MySQL's BIT value) as a number.
pub fn be_u64(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

/// The `n` low bits of `v`, most significant first (PostgreSQL's BIT text).
pub fn bit_string(v: u64, n: u32) -> String {
    (0..n)
        .rev()
        .map(|i| if (v >> i) & 1 == 1 { '1' } else { '0' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_scale_and_lose_signed_zero() {
        assert_eq!(numeric("-0.00"), "0.00");
        assert_eq!(numeric("007.50"), "7.50");
        assert_eq!(numeric("-12"), "-12");
    }

    #[test]
    fn both_sides_agree_on_floats_and_times() {
        let f = 0.1f32;
        assert_eq!(
            mysql(Kind::Real, &Value::Float(f)),
            pg(Kind::Real, Some("0.1"))
        );
        assert_eq!(
            mysql(Kind::Interval, &Value::Time(true, 34, 22, 59, 59, 0)),
            Some("-3020399000000".into())
        );
        assert_eq!(bit_string(5, 4), "0101");
        assert_eq!(
            mysql(Kind::Json, &Value::Bytes(br#"{"b": 1, "a": [1]}"#.to_vec())),
            pg(Kind::Json, Some(r#"{"a":[1],"b":1}"#))
        );
    }
}
