//! The bound values of a COM_STMT_EXECUTE as SQL literals, rendered into
//! the prepared text for the mirror.

use super::super::prepared::Prepared;

/// Bound values of a COM_STMT_EXECUTE as SQL literals. The packet holds the
/// statement id (4), flags (1), iteration count (4), NULL bitmap,
/// new-params-bound flag, types (when bound), then the non-NULL values that
/// were not sent as long data. The parameter types are `p.types`, which
/// `carry_param_types` (`session/prepared.rs`) recorded from this execute
/// or an earlier one.
pub(super) fn decode_params(payload: &[u8], p: &Prepared, nbe: bool) -> Option<Vec<String>> {
    bound_literals(payload, p.params, &p.types, &p.long_data, nbe)
}

/// [`decode_params`] for a statement with `params` parameters of `types`
/// and the long data it was sent.
/// Where COM_STMT_EXECUTE's `new_params_bound_flag` is, for `n`
/// parameters (after the command, id, flags, iteration count and null
/// bitmap).
pub(in crate::frontend::session) fn types_flag_at(n: usize) -> usize {
    10 + n.div_ceil(8)
}

/// The parameter types (type, unsigned) an execute of `n` parameters
/// sends, when it sends them.
pub(in crate::frontend::session) fn sent_types(
    payload: &[u8],
    n: usize,
) -> Option<Vec<(u8, bool)>> {
    let at = types_flag_at(n);
    if n == 0 || payload.get(at) != Some(&1) {
        return None;
    }
    let types = payload.get(at + 1..at + 1 + 2 * n)?;
    Some(types.chunks(2).map(|c| (c[0], c[1] & 0x80 != 0)).collect())
}

pub(in crate::frontend::session) fn bound_literals(
    payload: &[u8],
    params: u16,
    types: &[(u8, bool)],
    long_data: &std::collections::HashMap<u16, Vec<u8>>,
    nbe: bool,
) -> Option<Vec<String>> {
    use mysql_common::constants::{ColumnFlags, ColumnType};
    use mysql_common::io::ParseBuf;
    use mysql_common::value::{BinValue, Value, ValueDeserializer};
    let n = params as usize;
    if n == 0 {
        return Some(Vec::new());
    }
    let mut at = types_flag_at(n);
    let bitmap = payload.get(10..at)?;
    let bound = *payload.get(at)?;
    at += 1;
    if bound == 1 {
        at += 2 * n;
    }
    if types.len() != n {
        return None;
    }
    let mut buf = ParseBuf(payload.get(at..)?);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(d) = long_data.get(&(i as u16)) {
            out.push(Value::Bytes(d.clone()).as_sql(nbe));
            continue;
        }
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            out.push("NULL".into());
            continue;
        }
        let (t, unsigned) = types[i];
        let ct = ColumnType::try_from(t).ok()?;
        let flags = if unsigned {
            ColumnFlags::UNSIGNED_FLAG
        } else {
            ColumnFlags::empty()
        };
        let v: ValueDeserializer<BinValue> = buf.parse((ct, flags)).ok()?;
        out.push(match v.0 {
            // The server widens a FLOAT parameter exactly; print that value.
            Value::Float(f) => format!("{}", f as f64),
            // A DECIMAL parameter is an exact number on the primary; quoted,
            // the secondary would compute with it as a string (a DOUBLE).
            Value::Bytes(b)
                if matches!(
                    ct,
                    ColumnType::MYSQL_TYPE_NEWDECIMAL | ColumnType::MYSQL_TYPE_DECIMAL
                ) && is_decimal_literal(&b) =>
            {
                String::from_utf8_lossy(&b).into_owned()
            }
            other => other.as_sql(nbe),
        });
    }
    Some(out)
}

/// `[-+]digits[.digits]` with at least one digit: safe to print unquoted as
/// an exact DECIMAL literal.
fn is_decimal_literal(b: &[u8]) -> bool {
    let digits = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    let (int, frac) = match digits.iter().position(|c| *c == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &digits[..0]),
    };
    (!int.is_empty() || !frac.is_empty()) && int.iter().chain(frac).all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::is_decimal_literal;

    #[test]
    fn only_plain_decimal_numbers_print_unquoted() {
        for ok in [
            "0",
            "-1.5",
            "+3.25",
            "12345678901234567890.000000000001",
            ".5",
            "5.",
        ] {
            assert!(is_decimal_literal(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "-",
            ".",
            "1e5",
            "1.2.3",
            "1 ",
            "0x10",
            "1;DROP TABLE t",
            "NaN",
        ] {
            assert!(!is_decimal_literal(bad.as_bytes()), "{bad}");
        }
    }
}
