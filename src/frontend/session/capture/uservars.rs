//! User variables a write reads (`SET @x := 41; INSERT … VALUES (@x + 1)`,
//! `SELECT … INTO @m; UPDATE … WHERE id = @m`): their values live in the
//! primary session only. Right before the write, capture reads them
//! (`SELECT @x, @m`, one round trip, nothing in between) and journals
//! `SET @x = <literal>, …` as a statement of the transaction just before
//! the write, so the applier's session holds the same values when it
//! replays it.
//!
//! Literals keep the value's type, from the result's column definitions:
//! integers and DECIMAL as their digits (exact), strings as hex in their
//! character set and collation (`_utf8mb4 X'…' COLLATE …`), binary strings
//! as `X'…'`, NULL as NULL. A DOUBLE's text form is not an exact literal,
//! so a write reading one follows `unsafe_writes`, as does any value the
//! rules above do not cover.

use super::super::link::{Link, Reply};
use super::super::SessionError;
use super::vars::rows;
use super::Capture;
use crate::protocol::packets::get_lenenc;
use crate::protocol::response::Expect;
use mysql_common::collations::{Collation, CollationId};

impl Capture {
    /// Reads `names` (`@x`, as written) on the primary: `Ok(Ok(set))`
    /// with the `SET` statement that gives the secondary the same values,
    /// `Ok(Err(why))` when a value cannot be written back exactly.
    pub(super) async fn user_vars(
        &mut self,
        cx: &mut Link<'_>,
        names: &[String],
    ) -> Result<Result<Vec<u8>, String>, SessionError> {
        let sql = format!("SELECT {}", names.join(", "));
        let reply = self.own_read(cx, sql.as_bytes()).await?;
        let extended = cx.binding.conn().ext_caps & crate::backend::MARIADB_EXTENDED_METADATA != 0;
        let Some(literals) = literals(&reply, cx.deprecate_eof(), extended) else {
            return Ok(Err(
                "it reads a user variable whose value (a DOUBLE, or of a type Tandem cannot write back exactly) the secondary cannot be given".into(),
            ));
        };
        let set: Vec<String> = names
            .iter()
            .zip(literals)
            .map(|(n, l)| format!("{n} = {l}"))
            .collect();
        Ok(Ok(format!("SET {}", set.join(", ")).into_bytes()))
    }
}

impl Capture {
    /// The statements that give a new connection (a move to the new
    /// primary) this session's variables by value, read on the connection
    /// it leaves: every user variable the server lists
    /// (`information_schema.USER_VARIABLES`, MariaDB) or else the ones
    /// `users` names, and the session variables `system` names (`sql_mode`,
    /// as the client's SETs assigned them). Replaying the SETs' text would
    /// evaluate their expressions again (`SET @id = LAST_INSERT_ID()`,
    /// `SET @n = @n + 1`). Also returns the names whose value cannot be
    /// written back.
    pub(in super::super) async fn carried_vars(
        &mut self,
        cx: &mut Link<'_>,
        users: &[String],
        system: &[String],
    ) -> Result<(Vec<Vec<u8>>, Vec<String>), SessionError> {
        let deprecate_eof = cx.deprecate_eof();
        let mut names: Vec<String> = users.to_vec();
        cx.send_backend(&[&super::super::link::query_packet(
            b"SELECT VARIABLE_NAME FROM information_schema.USER_VARIABLES",
        )])
        .await?;
        let listed = cx.read_reply(Expect::ResultSet).await?;
        if listed.err.is_none() {
            for row in rows(&listed, deprecate_eof).unwrap_or_default() {
                if let Some(Some(name)) = row.into_iter().next() {
                    names.push(String::from_utf8_lossy(&name).into_owned());
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.to_lowercase()));
        let quoted: Vec<String> = names
            .iter()
            .map(|n| format!("@`{}`", n.replace('`', "``")))
            .collect();
        let sys: Vec<String> = system.iter().map(|n| format!("@@session.{n}")).collect();
        let all: Vec<&String> = quoted.iter().chain(&sys).collect();
        if all.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let sql = format!(
            "SELECT {}",
            all.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Strings in their own character set (the connection is left
        // behind and reset in its pool afterwards).
        cx.send_backend(&[
            &super::super::link::query_packet(b"SET character_set_results = NULL"),
            &super::super::link::query_packet(sql.as_bytes()),
        ])
        .await?;
        cx.read_reply(Expect::ResultSet).await?;
        let reply = cx.read_reply(Expect::ResultSet).await?;
        let extended = cx.binding.conn().ext_caps & crate::backend::MARIADB_EXTENDED_METADATA != 0;
        let values = column_literals(&reply, deprecate_eof, extended, true).unwrap_or_default();
        let (mut sets, mut lost, mut user_set) = (Vec::new(), Vec::new(), Vec::new());
        for (i, name) in all.iter().enumerate() {
            match values.get(i).cloned().flatten() {
                Some(v) if i < quoted.len() => user_set.push(format!("{name} = {v}")),
                Some(v) => sets.push(format!("SET {name} = {v}").into_bytes()),
                None => lost.push(name.to_string()),
            }
        }
        if !user_set.is_empty() {
            sets.insert(0, format!("SET {}", user_set.join(", ")).into_bytes());
        }
        Ok((sets, lost))
    }
}

/// One literal per column of a one-row text result.
fn literals(reply: &Reply, deprecate_eof: bool, extended: bool) -> Option<Vec<String>> {
    column_literals(reply, deprecate_eof, extended, false)?
        .into_iter()
        .collect()
}

/// One literal per column of a one-row text result (None for a value
/// that cannot be written back exactly); `doubles`: a DOUBLE as the
/// server printed it (its shortest exact form), which is exact for a
/// session's own values but not for the mirror, whose secondary may print
/// and parse otherwise.
fn column_literals(
    reply: &Reply,
    deprecate_eof: bool,
    extended: bool,
    doubles: bool,
) -> Option<Vec<Option<String>>> {
    let (n, _) = get_lenenc(reply.packets.first()?)?;
    let defs: Vec<(u16, u8)> = reply
        .packets
        .get(1..=n as usize)?
        .iter()
        .map(|p| column_type(p, extended))
        .collect::<Option<_>>()?;
    let row = rows(reply, deprecate_eof)?.into_iter().next()?;
    Some(
        defs.iter()
            .zip(row)
            .map(|(&(collation, ty), v)| match (ty, v.as_deref()) {
                (0x04 | 0x05, Some(v)) if doubles => double_literal(v),
                (_, v) => literal(collation, ty, v),
            })
            .collect(),
    )
}

/// A DOUBLE's text as a DOUBLE literal (`1.5` → `1.5e0`).
fn double_literal(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?;
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    ok.then(|| {
        if s.contains(['e', 'E']) {
            s.to_string()
        } else {
            format!("{s}e0")
        }
    })
}

/// (collation id, type) of a column definition packet.
/// A column definition's collation and type; `extended`: it carries
/// MariaDB's extended metadata (a string after org_name).
fn column_type(p: &[u8], extended: bool) -> Option<(u16, u8)> {
    let mut at = 0;
    // catalog, schema, table, org_table, name, org_name[, extended]
    for _ in 0..6 + usize::from(extended) {
        let (len, k) = get_lenenc(p.get(at..)?)?;
        at = at.checked_add(k)?.checked_add(len as usize)?;
    }
    let (_fixed, k) = get_lenenc(p.get(at..)?)?;
    at += k;
    let collation = u16::from_le_bytes([*p.get(at)?, *p.get(at + 1)?]);
    let ty = *p.get(at + 6)?;
    Some((collation, ty))
}

fn literal(collation: u16, ty: u8, v: Option<&[u8]>) -> Option<String> {
    let Some(v) = v else {
        return Some("NULL".into());
    };
    const DECIMAL: u8 = 0x00;
    const LONGLONG: u8 = 0x08;
    const NEWDECIMAL: u8 = 0xf6;
    let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02X}")).collect::<String>();
    match ty {
        LONGLONG | DECIMAL | NEWDECIMAL => {
            let ok = !v.is_empty()
                && v.iter()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.'));
            ok.then(|| String::from_utf8_lossy(v).into_owned())
        }
        // VARCHAR, TINY/MEDIUM/LONG/BLOB, VAR_STRING, STRING.
        0x0f | 0xf9..=0xfe => {
            if collation == 63 {
                return Some(format!("X'{}'", hex(v)));
            }
            let c = Collation::from(CollationId::from(collation));
            let (cs, name) = (c.charset(), c.collation());
            let plain = |s: &str| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            (plain(cs) && plain(name)).then(|| format!("_{cs} X'{}' COLLATE {name}", hex(v)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_type() {
        assert_eq!(literal(63, 0x08, Some(b"-41")).unwrap(), "-41");
        assert_eq!(literal(63, 0xf6, Some(b"1.50")).unwrap(), "1.50");
        assert_eq!(literal(63, 0x08, None).unwrap(), "NULL");
        assert_eq!(literal(63, 0xfb, Some(b"\x00\xff")).unwrap(), "X'00FF'");
        assert_eq!(
            literal(45, 0xfd, Some("é".as_bytes())).unwrap(),
            "_utf8mb4 X'C3A9' COLLATE utf8mb4_general_ci"
        );
        assert!(literal(63, 0x05, Some(b"0.1")).is_none(), "DOUBLE");
        assert!(literal(63, 0x08, Some(b"1 OR 1")).is_none());
        assert_eq!(double_literal(b"1.5").unwrap(), "1.5e0");
        assert_eq!(double_literal(b"-1e300").unwrap(), "-1e300");
        assert!(double_literal(b"1; DROP").is_none());
    }
}
