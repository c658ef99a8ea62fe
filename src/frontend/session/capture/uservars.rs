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

/// One literal per column of a one-row text result.
fn literals(reply: &Reply, deprecate_eof: bool, extended: bool) -> Option<Vec<String>> {
    let (n, _) = get_lenenc(reply.packets.first()?)?;
    let defs: Vec<(u16, u8)> = reply
        .packets
        .get(1..=n as usize)?
        .iter()
        .map(|p| column_type(p, extended))
        .collect::<Option<_>>()?;
    let row = rows(reply, deprecate_eof)?.into_iter().next()?;
    defs.iter()
        .zip(row)
        .map(|(&(collation, ty), v)| literal(collation, ty, v.as_deref()))
        .collect()
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
    }
}
