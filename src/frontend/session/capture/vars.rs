//! The session settings a write carries to the applier (`CARRIED_VARS`),
//! read from the primary once per session and again after any SET; with
//! them the isolation level, the zone offset for `time_zone = SYSTEM` and
//! the primary's auto-increment lock mode. Also the reading of text result
//! rows that capture's own queries need.

use super::super::link::{Link, Reply};
use super::super::SessionError;
use super::isolation::Isolation;
use super::{Capture, CARRIED_VARS};
use crate::protocol::packets::get_lenenc;
use crate::sql::sql_literal;
use std::sync::Arc;

impl Capture {
    /// Reads the carried session variables if they are not known.
    pub(super) async fn ensure_vars(
        &mut self,
        cx: &mut Link<'_>,
    ) -> Result<Arc<Vec<(String, String)>>, SessionError> {
        if let Some(v) = &self.vars {
            return Ok(v.clone());
        }
        // The isolation level comes along (not carried: the applier runs
        // its own transactions); MariaDB names it tx_isolation.
        let mariadb = memchr::memmem::find(&cx.binding.conn().server.version, b"MariaDB").is_some();
        let isolation_var = if mariadb {
            "tx_isolation"
        } else {
            "transaction_isolation"
        };
        // The zone's offset now, for a session whose time_zone is SYSTEM
        // (the server's own zone, which the secondary's need not be).
        let sql = format!(
            "SELECT {}, @@session.{isolation_var}, TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW()), @@global.innodb_autoinc_lock_mode",
            CARRIED_VARS
                .iter()
                .map(|v| format!("@@session.{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let reply = self.own_read(cx, sql.as_bytes()).await?;
        let row = first_row(&reply, cx.deprecate_eof()).unwrap_or_default();
        self.isolation = row
            .get(CARRIED_VARS.len())
            .cloned()
            .flatten()
            .and_then(|v| Isolation::parse(&String::from_utf8_lossy(&v)));
        self.interleaved_autoinc = row
            .get(CARRIED_VARS.len() + 2)
            .is_some_and(|v| v.as_deref() == Some(b"2".as_slice()));
        let system_offset = row
            .get(CARRIED_VARS.len() + 1)
            .cloned()
            .flatten()
            .and_then(|v| String::from_utf8_lossy(&v).parse::<i64>().ok())
            .map(offset_literal);
        let mut vars = Vec::with_capacity(CARRIED_VARS.len());
        for (name, value) in CARRIED_VARS.iter().zip(row) {
            let Some(value) = value else { continue };
            let lit = if value.iter().all(|b| b.is_ascii_digit()) && !value.is_empty() {
                String::from_utf8_lossy(&value).into_owned()
            } else if *name == "time_zone" && value.eq_ignore_ascii_case(b"SYSTEM") {
                system_offset.clone().unwrap_or_else(|| sql_literal(&value))
            } else {
                sql_literal(&value)
            };
            if *name == "sql_mode" {
                self.no_backslash_escapes = String::from_utf8_lossy(&value)
                    .to_ascii_uppercase()
                    .contains("NO_BACKSLASH_ESCAPES");
            }
            vars.push((name.to_string(), lit));
        }
        let vars = Arc::new(vars);
        self.vars = Some(vars.clone());
        Ok(vars)
    }
}

/// The first row of a text result set, as raw column values.
/// A text-result cell as an unsigned number (None: NULL or not one).
pub(super) fn number(cell: &Option<Vec<u8>>) -> Option<u64> {
    std::str::from_utf8(cell.as_deref()?).ok()?.parse().ok()
}

/// The first cell of a one-row text result as an unsigned number.
pub(super) fn first_number(reply: &Reply, deprecate_eof: bool) -> Option<u64> {
    number(first_row(reply, deprecate_eof)?.first()?)
}

pub(super) fn first_row(reply: &Reply, deprecate_eof: bool) -> Option<Vec<Option<Vec<u8>>>> {
    rows(reply, deprecate_eof)?.into_iter().next()
}

/// The rows of a text result set, as raw column values. None when the
/// reply is not a well-formed result set.
pub(super) fn rows(reply: &Reply, deprecate_eof: bool) -> Option<Vec<Vec<Option<Vec<u8>>>>> {
    if reply.err.is_some() {
        return None;
    }
    let (n, _) = get_lenenc(reply.packets.first()?)?;
    let first = 1 + n as usize + usize::from(!deprecate_eof);
    // The last packet ends the rows (EOF or OK).
    let last = reply.packets.len().checked_sub(1)?;
    let mut out = Vec::with_capacity(last.saturating_sub(first));
    for row in reply.packets.get(first..last)? {
        out.push(text_row(row, n as usize)?);
    }
    Some(out)
}

fn text_row(row: &[u8], n: usize) -> Option<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for _ in 0..n {
        if row.get(at) == Some(&0xFB) {
            out.push(None);
            at += 1;
            continue;
        }
        let (len, k) = get_lenenc(row.get(at..)?)?;
        let start = at + k;
        let end = start.checked_add(len as usize)?;
        out.push(Some(row.get(start..end)?.to_vec()));
        at = end;
    }
    Some(out)
}

/// A zone offset in seconds as a `time_zone` value: `'+05:30'`.
fn offset_literal(seconds: i64) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let m = seconds.abs() / 60;
    format!("'{sign}{:02}:{:02}'", m / 60, m % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_zone_offsets_render_as_time_zone_values() {
        assert_eq!(offset_literal(0), "'+00:00'");
        assert_eq!(offset_literal(19800), "'+05:30'");
        assert_eq!(offset_literal(-12600), "'-03:30'");
    }
}
