//! Scheduled events: one created or altered through Tandem is mirrored
//! disabled on the secondary (`DISABLE ON SLAVE`, MariaDB's status for an
//! event that runs on the primary only), so it never fires on both
//! servers; a cutover swaps them (`swap`): disabled on the old primary the
//! same way, enabled on the new one. An event's own writes never pass
//! through Tandem (the server runs it): they are writers outside Tandem,
//! listed at start, and periodic verify is the net.

use crate::router::lexer::{self, Tok, Token};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// The secondary's text of `CREATE/ALTER EVENT` (with the secondary's
/// names already): an `ENABLE` before the body becomes `DISABLE ON SLAVE`,
/// and a CREATE without a status gets one. `DROP EVENT` and a DISABLE stay
/// as they are. None when the statement's shape is not understood.
pub fn disabled_on_secondary(sql: &[u8]) -> Option<Vec<u8>> {
    let mut toks: Vec<Token> = Vec::new();
    lexer::tokenize(sql, &mut toks);
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.is_word(sql, w));
    if word(0, "DROP") {
        return Some(sql.to_vec());
    }
    let create = word(0, "CREATE");
    if !create && !word(0, "ALTER") {
        return None;
    }
    // The body starts at the first DO outside parentheses.
    let mut depth = 0i32;
    let mut body = None;
    let mut status = None;
    let mut comment = None;
    for (i, t) in toks.iter().enumerate() {
        match t.kind {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            _ if depth != 0 => {}
            _ if t.is_word(sql, "DO") => {
                body = Some(i);
                break;
            }
            _ if t.is_word(sql, "ENABLE") || t.is_word(sql, "DISABLE") => {
                status.get_or_insert(i);
            }
            _ if t.is_word(sql, "COMMENT") => {
                comment.get_or_insert(i);
            }
            _ => {}
        }
    }
    let splice = |at: usize, end: usize, with: &[u8]| {
        let mut out = Vec::with_capacity(sql.len() + with.len());
        out.extend_from_slice(&sql[..at]);
        out.extend_from_slice(with);
        out.extend_from_slice(&sql[end..]);
        out
    };
    match status {
        Some(i) if toks[i].is_word(sql, "ENABLE") => {
            Some(splice(toks[i].start, toks[i].end, b"DISABLE ON SLAVE"))
        }
        Some(_) => Some(sql.to_vec()),
        None if create => {
            let at = comment.or(body)?;
            Some(splice(toks[at].start, toks[at].start, b"DISABLE ON SLAVE "))
        }
        None => Some(sql.to_vec()),
    }
}

/// What a cutover did with the events of the migrated databases.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swapped {
    /// Enabled on the new primary, disabled on the old one.
    pub moved: Vec<String>,
    /// Enabled on the old primary with no disabled twin on the new one:
    /// left running where they are (their writes are not mirrored).
    pub left: Vec<String>,
}

/// After a cutover: every event enabled in `old_db` on the old primary
/// whose namesake in `new_db` on the new primary is `DISABLE ON SLAVE`
/// is disabled there the same way first, then enabled on the new side.
pub async fn swap(
    old: &mut Conn,
    old_db: &str,
    new: &mut Conn,
    new_db: &str,
) -> Result<Swapped, mysql_async::Error> {
    let lit = |s: &str| crate::sql::sql_literal(s.as_bytes());
    let enabled: Vec<String> = old
        .query(format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {} AND STATUS = 'ENABLED' ORDER BY 1",
            lit(old_db)
        ))
        .await?;
    let waiting: Vec<String> = new
        .query(format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {} AND STATUS = 'SLAVESIDE_DISABLED'",
            lit(new_db)
        ))
        .await?;
    let mut out = Swapped::default();
    for e in enabled {
        if !waiting.contains(&e) {
            out.left.push(e);
            continue;
        }
        old.query_drop(format!(
            "ALTER EVENT {} DISABLE ON SLAVE",
            crate::sql::qualified(Some(old_db), &e)
        ))
        .await?;
        new.query_drop(format!(
            "ALTER EVENT {} ENABLE",
            crate::sql::qualified(Some(new_db), &e)
        ))
        .await?;
        out.moved.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::disabled_on_secondary as d;

    fn s(sql: &str) -> Option<String> {
        d(sql.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn events_are_disabled_on_the_secondary() {
        assert_eq!(
            s("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO UPDATE t SET n = n + 1").as_deref(),
            Some("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DISABLE ON SLAVE DO UPDATE t SET n = n + 1")
        );
        assert_eq!(
            s("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR ENABLE COMMENT 'x' DO BEGIN UPDATE t SET n = 1; ALTER EVENT f ENABLE; END").as_deref(),
            Some("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DISABLE ON SLAVE COMMENT 'x' DO BEGIN UPDATE t SET n = 1; ALTER EVENT f ENABLE; END")
        );
        assert_eq!(
            s("CREATE EVENT e ON SCHEDULE AT NOW() + INTERVAL 1 DAY COMMENT 'do it' DO DELETE FROM t").as_deref(),
            Some("CREATE EVENT e ON SCHEDULE AT NOW() + INTERVAL 1 DAY DISABLE ON SLAVE COMMENT 'do it' DO DELETE FROM t")
        );
        assert_eq!(
            s("ALTER EVENT e ENABLE").as_deref(),
            Some("ALTER EVENT e DISABLE ON SLAVE")
        );
        assert_eq!(
            s("ALTER EVENT e DISABLE").as_deref(),
            Some("ALTER EVENT e DISABLE")
        );
        assert_eq!(
            s("ALTER EVENT e ON SCHEDULE EVERY 2 HOUR").as_deref(),
            Some("ALTER EVENT e ON SCHEDULE EVERY 2 HOUR")
        );
        assert_eq!(
            s("DROP EVENT IF EXISTS e").as_deref(),
            Some("DROP EVENT IF EXISTS e")
        );
        assert_eq!(s("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR"), None);
    }
}
