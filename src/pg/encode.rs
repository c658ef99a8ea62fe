//! MySQL values (as the binary protocol returns them) in PostgreSQL's
//! binary COPY format: no text is parsed by PostgreSQL, so no DateStyle,
//! time zone or float-format setting can change a value on the way.
//!
//! A value PostgreSQL cannot hold as MySQL does (a NUL in text, a zero
//! date, a label the ENUM does not declare) is refused with the reason;
//! the caller names the row.

use super::mapping::{Column, Kind};
use bytes::{BufMut, BytesMut};
use mysql_async::Value;

/// The COPY stream's header (signature, flags, header extension length).
pub fn header(out: &mut BytesMut) {
    out.put_slice(b"PGCOPY\n\xff\r\n\0");
    out.put_i32(0);
    out.put_i32(0);
}

/// The COPY stream's trailer.
pub fn trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

/// One row's fields.
pub fn row(columns: &[Column], values: &[Value], out: &mut BytesMut) -> Result<(), String> {
    out.put_i16(columns.len() as i16);
    for (c, v) in columns.iter().zip(values) {
        field(c, v, out).map_err(|e| format!("column {}: {e}", c.name))?;
    }
    Ok(())
}

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

/// One field: its length, then its bytes (-1: NULL).
pub fn field(c: &Column, v: &Value, out: &mut BytesMut) -> Result<(), String> {
    if matches!(v, Value::NULL) {
        out.put_i32(-1);
        return Ok(());
    }
    let int = || -> Result<i128, String> {
        match v {
            Value::Int(i) => Ok(i128::from(*i)),
            Value::UInt(u) => Ok(i128::from(*u)),
            Value::Bytes(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| "not an integer".to_string()),
            _ => Err(format!("unexpected value {v:?}")),
        }
    };
    match c.kind {
        Kind::Int2 => {
            let n = i16::try_from(int()?).map_err(|_| "out of SMALLINT range")?;
            out.put_i32(2);
            out.put_i16(n);
        }
        Kind::Int4 => {
            let n = i32::try_from(int()?).map_err(|_| "out of INTEGER range")?;
            out.put_i32(4);
            out.put_i32(n);
        }
        Kind::Int8 => {
            let n = i64::try_from(int()?).map_err(|_| "out of BIGINT range")?;
            out.put_i32(8);
            out.put_i64(n);
        }
        Kind::Numeric => {
            let text = match v {
                Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                _ => int()?.to_string(),
            };
            numeric(&text, out)?;
        }
        Kind::Real => {
            let f = match v {
                Value::Float(f) => *f,
                Value::Double(d) => *d as f32,
                _ => return Err(format!("unexpected value {v:?}")),
            };
            out.put_i32(4);
            out.put_f32(f);
        }
        Kind::Double => {
            let f = match v {
                Value::Double(d) => *d,
                Value::Float(f) => f64::from(*f),
                _ => return Err(format!("unexpected value {v:?}")),
            };
            out.put_i32(8);
            out.put_f64(f);
        }
        Kind::Text | Kind::Enum | Kind::Set | Kind::Json | Kind::Jsonb => {
            let Value::Bytes(b) = v else {
                return Err(format!("unexpected value {v:?}"));
            };
            if std::str::from_utf8(b).is_err() {
                return Err("the value is not valid UTF-8".into());
            }
            if b.contains(&0) {
                return Err(
                    "the value holds a NUL character, which PostgreSQL text cannot store \
                     (the table's postgres.bytea_columns rule maps the column to BYTEA)"
                        .into(),
                );
            }
            if c.kind == Kind::Enum && !c.labels.iter().any(|l| l.as_bytes() == &b[..]) {
                return Err(format!(
                    "{:?} is not one of the ENUM's labels (MySQL's '' for an invalid value)",
                    String::from_utf8_lossy(b)
                ));
            }
            if c.kind == Kind::Jsonb {
                // jsonb's binary form: a version byte, then the text.
                out.put_i32(b.len() as i32 + 1);
                out.put_u8(1);
            } else {
                out.put_i32(b.len() as i32);
            }
            out.put_slice(b);
        }
        Kind::Bytea => {
            let Value::Bytes(b) = v else {
                return Err(format!("unexpected value {v:?}"));
            };
            out.put_i32(b.len() as i32);
            out.put_slice(b);
        }
        Kind::Date if c.zero_infinity && zero_date(v) => {
            // PostgreSQL's -infinity date.
            out.put_i32(4);
            out.put_i32(i32::MIN);
        }
        Kind::Timestamp | Kind::TimestampTz if c.zero_infinity && zero_date(v) => {
            out.put_i32(8);
            out.put_i64(i64::MIN);
        }
        Kind::Date => {
            let Value::Date(y, m, d, ..) = v else {
                return Err(format!("unexpected value {v:?}"));
            };
            let days = days(*y, *m, *d)?;
            out.put_i32(4);
            out.put_i32((days - PG_EPOCH_DAYS) as i32);
        }
        Kind::Timestamp | Kind::TimestampTz => {
            let Value::Date(y, mo, d, h, mi, s, us) = v else {
                return Err(format!("unexpected value {v:?}"));
            };
            let secs = (days(*y, *mo, *d)? - PG_EPOCH_DAYS) * 86_400
                + i64::from(*h) * 3600
                + i64::from(*mi) * 60
                + i64::from(*s);
            out.put_i32(8);
            out.put_i64(secs * 1_000_000 + i64::from(*us));
        }
        Kind::Interval => {
            let us = super::canon::time_micros(v).ok_or_else(|| format!("unexpected {v:?}"))?;
            out.put_i32(16);
            out.put_i64(us);
            out.put_i32(0);
            out.put_i32(0);
        }
        Kind::Bit(n) => {
            let bits = match v {
                Value::Bytes(b) => super::canon::be_u64(b),
                Value::UInt(u) => *u,
                Value::Int(i) => *i as u64,
                _ => return Err(format!("unexpected value {v:?}")),
            };
            let nbytes = n.div_ceil(8) as usize;
            // Left-aligned: the first bit is the high bit of the first byte.
            let aligned = if n == 0 { 0 } else { bits << (64 - n) };
            out.put_i32(4 + nbytes as i32);
            out.put_i32(n as i32);
            out.put_slice(&aligned.to_be_bytes()[..nbytes]);
        }
    }
    Ok(())
}

/// MySQL's zero date (every field zero), which `postgres.zero_dates:
/// infinity` stores as `-infinity`.
pub fn zero_date(v: &Value) -> bool {
    matches!(v, Value::Date(0, 0, 0, 0, 0, 0, 0))
}

/// Days from 1970-01-01 (proleptic Gregorian); a zero or zero-part date,
/// which MySQL may hold and PostgreSQL cannot, is refused.
pub fn days(y: u16, m: u8, d: u8) -> Result<i64, String> {
    if y == 0 || m == 0 || d == 0 {
        return Err(format!(
            "{y:04}-{m:02}-{d:02} is a zero or zero-part date, which PostgreSQL cannot hold \
             (fix the row on MySQL, leave the table out, or for zero dates set the table's \
             postgres.zero_dates: infinity rule)"
        ));
    }
    // Howard Hinnant's days_from_civil.
    let (y, m, d) = (i64::from(y), i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
}

/// NUMERIC's binary form: digit count, weight, sign, display scale, then
/// base-10000 digits.
fn numeric(text: &str, out: &mut BytesMut) -> Result<(), String> {
    let bad = || format!("{text:?} is not a decimal number");
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let dscale = frac.len();
    // Pad the integer part on the left and the fraction on the right to
    // whole groups of four digits.
    let int = int.trim_start_matches('0');
    let lead = (4 - int.len() % 4) % 4;
    let trail = (4 - frac.len() % 4) % 4;
    let digits: String = "0".repeat(lead) + int + frac + &"0".repeat(trail);
    let groups: Vec<i16> = digits
        .as_bytes()
        .chunks(4)
        .map(|g| g.iter().fold(0i16, |acc, b| acc * 10 + i16::from(b - b'0')))
        .collect();
    let int_groups = (lead + int.len()) / 4;
    let mut weight = int_groups as i32 - 1;
    let mut first = 0;
    while first < groups.len() && groups[first] == 0 {
        first += 1;
        weight -= 1;
    }
    let mut last = groups.len();
    while last > first && groups[last - 1] == 0 {
        last -= 1;
    }
    let body = &groups[first..last];
    if body.is_empty() {
        weight = 0;
    }
    out.put_i32(8 + 2 * body.len() as i32);
    out.put_i16(body.len() as i16);
    out.put_i16(weight as i16);
    out.put_u16(if neg && !body.is_empty() { 0x4000 } else { 0 });
    out.put_u16(dscale as u16);
    for g in body {
        out.put_i16(*g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(t: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        numeric(t, &mut b).unwrap();
        b[4..].to_vec()
    }

    #[test]
    fn numerics_group_by_four_digits_around_the_point() {
        // 12345.678: groups 1 | 2345 . 6780, weight 1, scale 3.
        assert_eq!(
            num("12345.678"),
            [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]
        );
        // 0.0001: one group (1) at weight -1.
        assert_eq!(num("0.0001"), [0, 1, 0xff, 0xff, 0, 0, 0, 4, 0, 1]);
        // Zero keeps its scale, no sign.
        assert_eq!(num("-0.00"), [0, 0, 0, 0, 0, 0, 0, 2]);
        assert!(numeric("1e5", &mut BytesMut::new()).is_err());
    }

    #[test]
    fn dates_count_from_1970() {
        assert_eq!(days(1970, 1, 1).unwrap(), 0);
        assert_eq!(days(2000, 1, 1).unwrap(), PG_EPOCH_DAYS);
        assert_eq!(days(1000, 1, 1).unwrap(), -354_285);
        assert!(days(2020, 0, 1).is_err());
    }
}
