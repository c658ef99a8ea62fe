//! Schema objects besides tables — views, stored procedures and functions,
//! triggers and events — compared between the primary's database and the
//! secondary's (`tandem verify`, the cutover preflight) and created on the
//! secondary by `tandem backfill --create-tables`.
//!
//! Objects created through a mirroring Tandem are mirrored as DDL; these
//! are the ones that existed before, or were made on the primary directly.
//! A definition is compared as `SHOW CREATE …` prints it, with the
//! primary's database name mapped to the secondary's (`router::rename`),
//! the `DEFINER` clause left out (accounts may differ per server) and, for
//! events, the status left out (an event is `DISABLE ON SLAVE` on the
//! secondary until a cutover moves it). An event is created on the
//! secondary that way too.

use crate::config::Config;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use serde::Serialize;
use std::collections::BTreeMap;

/// The kinds, in the order they are created (a view may call a function,
/// a trigger a procedure; views may read views).
const KINDS: [&str; 5] = ["FUNCTION", "PROCEDURE", "VIEW", "TRIGGER", "EVENT"];

/// One object as a server holds it.
#[derive(Debug, Clone)]
struct Object {
    /// Its `CREATE` statement as `SHOW CREATE` prints it.
    create: String,
    /// The `sql_mode` it was created under (routines, triggers, events).
    sql_mode: Option<String>,
}

/// An object that is missing on the secondary or differs there.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectDiff {
    /// VIEW, PROCEDURE, FUNCTION, TRIGGER or EVENT.
    pub kind: String,
    pub name: String,
    /// "missing on the secondary", "differs", "only on the secondary".
    pub state: String,
    /// The statement that creates the primary's version on the secondary
    /// (its database named as the secondary's); None for objects only the
    /// secondary has.
    pub create: Option<String>,
    #[serde(skip)]
    sql_mode: Option<String>,
}

/// Every object of the connection's current database.
async fn read(c: &mut Conn) -> Result<BTreeMap<(String, String), Object>, mysql_async::Error> {
    let names: Vec<(String, String)> = c
        .query(
            "SELECT 'VIEW', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()
             UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES
               WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION')
             UNION ALL SELECT 'TRIGGER', TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()
             UNION ALL SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()",
        )
        .await?;
    let mut out = BTreeMap::new();
    for (kind, name) in names {
        let row: Option<Row> = c
            .query_first(format!("SHOW CREATE {kind} {}", crate::sql::quote(&name)))
            .await?;
        let Some(row) = row else { continue };
        let column = match kind.as_str() {
            "VIEW" => "Create View",
            "PROCEDURE" => "Create Procedure",
            "FUNCTION" => "Create Function",
            "TRIGGER" => "SQL Original Statement",
            _ => "Create Event",
        };
        let text = |col: &str| -> Option<String> {
            let i = row.columns_ref().iter().position(|c| c.name_str() == col)?;
            match row.as_ref(i)? {
                mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            }
        };
        // A routine the account may not read the body of shows NULL.
        let Some(create) = text(column) else { continue };
        out.insert(
            (kind, name),
            Object {
                create,
                sql_mode: text("sql_mode"),
            },
        );
    }
    Ok(out)
}

/// What a definition is compared by: no `DEFINER=…` clause, no event
/// status, whitespace collapsed.
fn normalized(kind: &str, create: &str) -> String {
    let mut words: Vec<&str> = create.split_whitespace().collect();
    words.retain(|w| !w.starts_with("DEFINER="));
    if kind == "EVENT" {
        let mut out = Vec::with_capacity(words.len());
        let mut i = 0;
        while i < words.len() {
            match words[i] {
                // A schedule's start defaults to the moment of creation,
                // which differs per server.
                "STARTS" => {
                    i += 1;
                    while i < words.len() && !words[i].ends_with('\'') {
                        i += 1;
                    }
                }
                "ENABLE" => {}
                "DISABLE"
                    if words.get(i + 1) == Some(&"ON") && words.get(i + 2) == Some(&"SLAVE") =>
                {
                    i += 2
                }
                "DISABLE" => {}
                w => out.push(w),
            }
            i += 1;
        }
        words = out;
    }
    words.join(" ")
}

/// The primary's `create` as the secondary runs it: its database renamed
/// to the secondary's, an event disabled there.
fn for_secondary(cfg: &Config, kind: &str, create: &str) -> String {
    let renamed = crate::router::rename::secondary_text(cfg, create.as_bytes())
        .ok()
        .flatten()
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .unwrap_or_else(|| create.to_string());
    if kind == "EVENT" {
        if let Some(t) = crate::mirror::events::disabled_on_secondary(renamed.as_bytes()) {
            return String::from_utf8_lossy(&t).into_owned();
        }
    }
    renamed
}

/// Objects missing on the secondary, different there, or only there
/// (`p` and `s` have their URL databases selected).
pub async fn diff(
    cfg: &Config,
    p: &mut Conn,
    s: &mut Conn,
) -> Result<Vec<ObjectDiff>, mysql_async::Error> {
    let (on_p, on_s) = (read(p).await?, read(s).await?);
    let mut out = Vec::new();
    for kind in KINDS {
        for ((k, name), o) in on_p.iter().filter(|((k, _), _)| k == kind) {
            let create = for_secondary(cfg, k, &o.create);
            let state = match on_s.get(&(k.clone(), name.clone())) {
                None => "missing on the secondary",
                Some(theirs) if normalized(k, &theirs.create) != normalized(k, &create) => {
                    "differs"
                }
                Some(_) => continue,
            };
            out.push(ObjectDiff {
                kind: k.clone(),
                name: name.clone(),
                state: state.into(),
                create: Some(create),
                sql_mode: o.sql_mode.clone(),
            });
        }
    }
    for (k, name) in on_s.keys().filter(|key| !on_p.contains_key(*key)) {
        out.push(ObjectDiff {
            kind: k.clone(),
            name: name.clone(),
            state: "only on the secondary".into(),
            create: None,
            sql_mode: None,
        });
    }
    Ok(out)
}

/// Creates the objects missing on the secondary, in dependency order (a
/// view that reads a view not created yet is tried again after it).
/// Returns one line per object: created, or why not.
pub async fn create_missing(s: &mut Conn, diffs: &[ObjectDiff]) -> Vec<String> {
    let mut todo: Vec<&ObjectDiff> = diffs
        .iter()
        .filter(|d| d.state == "missing on the secondary")
        .collect();
    let mut lines = Vec::new();
    loop {
        let mut failed = Vec::new();
        let before = todo.len();
        for d in todo {
            let Some(create) = &d.create else { continue };
            let mode = d.sql_mode.as_deref().map(|m| {
                format!(
                    "SET SESSION sql_mode = {}",
                    crate::sql::sql_literal(m.as_bytes())
                )
            });
            let r = async {
                if let Some(mode) = &mode {
                    s.query_drop(mode).await?;
                }
                s.query_drop(create.as_str()).await
            }
            .await;
            match r {
                Ok(()) => lines.push(format!("{} {}: created", d.kind.to_lowercase(), d.name)),
                Err(e) => failed.push((d, e.to_string())),
            }
        }
        if failed.is_empty() || failed.len() == before {
            for (d, e) in failed {
                lines.push(format!(
                    "{} {}: NOT created: {e}",
                    d.kind.to_lowercase(),
                    d.name
                ));
            }
            break;
        }
        todo = failed.into_iter().map(|(d, _)| d).collect();
    }
    lines
}

/// One line per difference, with the statement to run where there is one.
pub fn render(diffs: &[ObjectDiff]) -> String {
    let mut out = String::new();
    for d in diffs {
        out.push_str(&format!(
            "  {} {}: {}\n",
            d.kind.to_lowercase(),
            d.name,
            d.state
        ));
        if let Some(c) = &d.create {
            out.push_str(&format!("    on the secondary run: {c};\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn definers_and_event_status_are_not_compared() {
        assert_eq!(
            normalized("VIEW", "CREATE ALGORITHM=UNDEFINED DEFINER=`a`@`%` SQL SECURITY DEFINER VIEW `v` AS select 1"),
            normalized("VIEW", "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost`  SQL SECURITY DEFINER VIEW `v` AS select 1"),
        );
        assert_eq!(
            normalized("EVENT", "CREATE DEFINER=`root`@`localhost` EVENT `e` ON SCHEDULE EVERY 1 HOUR ON COMPLETION NOT PRESERVE ENABLE DO DELETE FROM t"),
            normalized("EVENT", "CREATE DEFINER=`root`@`localhost` EVENT `e` ON SCHEDULE EVERY 1 HOUR STARTS '2026-12-06 07:30:01' ON COMPLETION NOT PRESERVE DISABLE ON SLAVE DO DELETE FROM t"),
        );
        assert_ne!(
            normalized("VIEW", "CREATE VIEW `v` AS select 1"),
            normalized("VIEW", "CREATE VIEW `v` AS select 2"),
        );
    }
}
