//! Schema drift between a cluster's shards: each shard's tables described
//! (columns with type, nullability, default, collation and extra; indexes
//! with their columns and uniqueness), compared table by table. A table
//! that differs, or is missing on some shards, is drift: statements fanned
//! out or merged across those shards may fail on some or answer with the
//! first shard's column definitions. Checked at start, after DDL through
//! Tandem and every minute; shown in `/status`, `/metrics` and by
//! `tandem check-config`.

use crate::config::{BackendConfig, Config};
use mysql_async::prelude::*;
use std::collections::BTreeMap;

/// One table that is not the same on every shard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    pub table: String,
    /// Groups of shards that agree on the table's definition.
    pub variants: Vec<Vec<String>>,
    /// Shards without the table.
    pub missing_on: Vec<String>,
}

/// Table -> its description on one shard.
async fn describe(b: &BackendConfig) -> Result<BTreeMap<String, String>, String> {
    let mut conn = crate::backend::own_conn(crate::backend::own_opts(b).await)
        .await
        .map_err(|e| format!("cannot reach shard {}: {e}", b.name))?;
    let read = async {
        conn.query_drop("SET SESSION group_concat_max_len = 16777216")
            .await?;
        let columns: Vec<(String, String)> = conn
            .query(
                "SELECT TABLE_NAME, GROUP_CONCAT(CONCAT_WS('|', COLUMN_NAME, COLUMN_TYPE, \
                 IS_NULLABLE, IFNULL(COLUMN_DEFAULT, '~'), IFNULL(COLLATION_NAME, '~'), EXTRA) \
                 ORDER BY ORDINAL_POSITION SEPARATOR ';') \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
                 GROUP BY TABLE_NAME",
            )
            .await?;
        let indexes: Vec<(String, String)> = conn
            .query(
                "SELECT TABLE_NAME, GROUP_CONCAT(CONCAT_WS('|', INDEX_NAME, NON_UNIQUE, \
                 SEQ_IN_INDEX, COLUMN_NAME, IFNULL(SUB_PART, '~')) \
                 ORDER BY INDEX_NAME, SEQ_IN_INDEX SEPARATOR ';') \
                 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
                 GROUP BY TABLE_NAME",
            )
            .await?;
        Ok::<_, mysql_async::Error>((columns, indexes))
    };
    let result = read.await;
    let _ = conn.disconnect().await;
    let (columns, indexes) =
        result.map_err(|e| format!("cannot read the schema of shard {}: {e}", b.name))?;
    let mut out: BTreeMap<String, String> = columns.into_iter().collect();
    for (t, i) in indexes {
        if let Some(d) = out.get_mut(&t) {
            d.push_str("\nindexes ");
            d.push_str(&i);
        }
    }
    Ok(out)
}

/// The tables that differ between the cluster's shards (empty: none).
pub async fn check(cfg: &Config) -> Result<Vec<Drift>, String> {
    let Some(c) = cfg.cluster() else {
        return Ok(Vec::new());
    };
    let mut shards = Vec::with_capacity(c.shards.len());
    for name in &c.shards {
        let b = cfg
            .backends
            .get(name)
            .ok_or_else(|| format!("shard {name} is not a backend"))?;
        shards.push((name.clone(), describe(b).await?));
    }
    Ok(compare(&shards))
}

/// Drift among described shards.
fn compare(shards: &[(String, BTreeMap<String, String>)]) -> Vec<Drift> {
    let mut tables: Vec<&String> = shards.iter().flat_map(|(_, t)| t.keys()).collect();
    tables.sort();
    tables.dedup();
    let mut out = Vec::new();
    for t in tables {
        let mut variants: Vec<(&String, Vec<String>)> = Vec::new();
        let mut missing_on = Vec::new();
        for (name, described) in shards {
            match described.get(t) {
                None => missing_on.push(name.clone()),
                Some(d) => match variants.iter_mut().find(|(v, _)| *v == d) {
                    Some((_, names)) => names.push(name.clone()),
                    None => variants.push((d, vec![name.clone()])),
                },
            }
        }
        if variants.len() > 1 || !missing_on.is_empty() {
            out.push(Drift {
                table: t.clone(),
                variants: variants.into_iter().map(|(_, n)| n).collect(),
                missing_on,
            });
        }
    }
    out
}

/// A drift as one line for operators.
pub fn describe_drift(d: &Drift) -> String {
    let mut parts = Vec::new();
    if d.variants.len() > 1 {
        let groups: Vec<String> = d.variants.iter().map(|v| v.join(", ")).collect();
        parts.push(format!("differs between shards ({})", groups.join(" vs ")));
    }
    if !d.missing_on.is_empty() {
        parts.push(format!("is missing on {}", d.missing_on.join(", ")));
    }
    format!("table `{}` {}", d.table, parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_that_differ_or_are_missing_are_drift() {
        let shard = |name: &str, tables: &[(&str, &str)]| {
            (
                name.to_string(),
                tables
                    .iter()
                    .map(|(t, d)| (t.to_string(), d.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let shards = vec![
            shard("s0", &[("a", "x"), ("b", "y")]),
            shard("s1", &[("a", "x"), ("b", "z")]),
            shard("s2", &[("a", "x"), ("b", "y"), ("c", "w")]),
        ];
        let d = compare(&shards);
        assert_eq!(
            d,
            vec![
                Drift {
                    table: "b".into(),
                    variants: vec![vec!["s0".into(), "s2".into()], vec!["s1".into()]],
                    missing_on: vec![],
                },
                Drift {
                    table: "c".into(),
                    variants: vec![vec!["s2".into()]],
                    missing_on: vec!["s0".into(), "s1".into()],
                },
            ]
        );
        assert_eq!(
            describe_drift(&d[0]),
            "table `b` differs between shards (s0, s2 vs s1)"
        );
        assert_eq!(describe_drift(&d[1]), "table `c` is missing on s0, s1");
    }
}
