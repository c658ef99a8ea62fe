//! The offline tools of a cluster: `tandem shard-of` (where a key's rows
//! live), `tandem route` (a statement's plan) and the checks `tandem
//! check-config` runs against a reachable cluster (tables without a rule,
//! unique keys without the shard key, foreign keys across placements,
//! shard keys Tandem cannot place). They read the schema from the first
//! shard, as the running server does.

pub mod drift;
pub mod xa;

use crate::config::{ClusterConfig, Config, Placement};
use crate::router::lexer;
use crate::router::shard::route::{self, Merge, Shards, TableFacts};
use crate::router::shard::{self, hash, KeyType};
use mysql_async::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

type Facts = HashMap<String, Arc<TableFacts>>;

fn cluster(cfg: &Config) -> Result<&ClusterConfig, String> {
    cfg.cluster().ok_or_else(|| {
        format!(
            "migration.primary ({}) is not a cluster; shard tools need one",
            cfg.primary
        )
    })
}

async fn read_facts(cfg: &Config) -> Result<(mysql_async::Conn, Facts), String> {
    let c = cluster(cfg)?;
    let b = cfg.primary_backend();
    let mut conn = crate::backend::own_conn(crate::backend::own_opts(b).await)
        .await
        .map_err(|e| format!("cannot reach shard {}: {e}", b.name))?;
    let facts = crate::schema::shard_facts(&mut conn, c)
        .await
        .map_err(|e| format!("cannot read the schema of shard {}: {e}", b.name))?;
    Ok((conn, facts))
}

/// `tandem shard-of TABLE KEY`: the key's bucket (hash placement) and the
/// shard's backend name.
pub async fn shard_of(cfg: &Config, table: &str, key: &str) -> Result<String, String> {
    let c = cluster(cfg)?;
    let placement = &c
        .tables
        .get(table)
        .ok_or_else(|| format!("table `{table}` has no rule on cluster {}", c.name))?
        .placement;
    if *placement == Placement::Reference {
        return Ok(format!(
            "{table} is a reference table: every shard ({}) holds all of its rows",
            c.shards.join(", ")
        ));
    }
    let (conn, facts) = read_facts(cfg).await?;
    let _ = conn.disconnect().await;
    let ty = facts
        .get(table)
        .and_then(|f| f.key_type.clone())
        .ok_or_else(|| format!("table `{table}` or its shard key is not in the shards' schema"))?;
    let lit = match ty {
        KeyType::Int => shard::Literal::Number(key.to_string()),
        _ => shard::Literal::Str(key.as_bytes().to_vec()),
    };
    let v = shard::canon(&ty, &lit).map_err(|e| e.reason().to_string())?;
    let s = shard::shard_of(c, placement, &ty, &v).map_err(|e| e.reason().to_string())?;
    Ok(match (placement, hash::canonical_bytes(&v)) {
        (Placement::Hash { .. }, Some(bytes)) => format!(
            "bucket {} shard {}",
            hash::bucket(&bytes, c.buckets()),
            c.shards[s]
        ),
        _ => format!("shard {}", c.shards[s]),
    })
}

/// `tandem route SQL`: the shards a statement runs on, the text each
/// gets, and how the answers merge.
pub async fn route(cfg: &Config, sql: &str) -> Result<String, String> {
    let c = cluster(cfg)?;
    let (conn, facts) = read_facts(cfg).await?;
    let _ = conn.disconnect().await;
    let mut toks = Vec::new();
    lexer::tokenize(sql.as_bytes(), &mut toks);
    let plan = route::plan(sql.as_bytes(), &toks, c, &|t: &str| facts.get(t).cloned())
        .map_err(|r| format!("refused: {}", r.0))?;
    let shards = match &plan.shards {
        Shards::Any => "any one shard".to_string(),
        Shards::Set(s) => s
            .iter()
            .map(|&i| c.shards[i].clone())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let merge = match &plan.merge {
        Merge::Relay => "none (one shard's answer as it is)".to_string(),
        Merge::Concat { offset, limit } => {
            format!("rows concatenated (offset {offset}, limit {limit:?})")
        }
        Merge::Ordered {
            keys,
            offset,
            limit,
        } => {
            format!(
                "k-way merge on columns {keys:?} (index, desc) (offset {offset}, limit {limit:?})"
            )
        }
        Merge::Grouped(g) => {
            let mut s = format!(
                "groups combined on columns {:?} (shards sort on {:?})",
                g.group, g.keys
            );
            if g.visible < g.cols.len() {
                s.push_str(&format!("; helper columns {}..", g.visible + 1));
            }
            if let Some(o) = &g.order {
                s.push_str(&format!("; buffered and sorted on {o:?}"));
            }
            if g.having.is_some() {
                s.push_str("; HAVING applied after combining");
            }
            s + &format!(" (offset {}, limit {:?})", g.offset, g.limit)
        }
        Merge::Write { .. } => {
            "affected rows summed; each shard's part in its own transaction".into()
        }
        Merge::Same => "reference write: every shard, the first shard's answer".into(),
        Merge::KeyMove => "rows updated where they are, then moved to their new shard (delete + insert, one atomic transaction)".to_string(),
    };
    let mut out = format!("shards: {shards}\nmerge: {merge}\n");
    if let Some(texts) = &plan.texts {
        for (s, t) in texts {
            out.push_str(&format!(
                "{}: {}\n",
                c.shards[*s],
                String::from_utf8_lossy(t)
            ));
        }
    }
    Ok(out)
}

/// What `check-config` finds in a reachable cluster's schema, one line
/// each: (errors: statements would be refused or misplaced; warnings:
/// constraints each shard enforces only for its own rows).
pub async fn check_cluster(cfg: &Config) -> Result<(Vec<String>, Vec<String>), String> {
    let c = cluster(cfg)?;
    let (mut conn, facts) = read_facts(cfg).await?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut tables: Vec<&String> = facts.keys().collect();
    tables.sort();
    for t in &tables {
        if !c.tables.contains_key(t.as_str()) {
            problems.push(format!(
                "table `{t}` has no rule (every table of cluster {} needs shard_key or reference: true)",
                c.name
            ));
        }
    }
    for (t, p) in &c.tables {
        let Some(key) = p.placement.key() else {
            continue;
        };
        match facts.get(t).map(|f| (f, f.key_type.clone())) {
            None => warnings.push(format!(
                "table `{t}` has a rule but does not exist yet (CREATE TABLE through Tandem \
                 creates it on every shard)"
            )),
            Some((_, None)) => problems.push(format!("table `{t}`: shard key column `{key}` does not exist")),
            Some((_, Some(KeyType::Unsupported(what)))) => problems.push(format!(
                "table `{t}`: Tandem cannot place shard keys of type {what} (integers, binary strings, \
                 _bin and _ci strings; DATE/DATETIME by range or list)"
            )),
            Some((_, Some(ty))) => {
                if matches!(p.placement, Placement::Hash { .. }) && matches!(ty, KeyType::Temporal { .. } | KeyType::Timestamp { .. }) {
                    problems.push(format!("table `{t}`: hash sharding takes integer and string keys; shard a date by range"));
                }
                if matches!(p.placement, Placement::Range { .. }) && !shard::range_supported(&ty) {
                    problems.push(format!("table `{t}`: ranges of strings under a case-insensitive collation are not supported"));
                }
            }
        }
    }
    // Unique keys that do not contain the shard key: not enforceable.
    let uniques: Vec<(String, String, String)> = conn
        .query(
            "SELECT TABLE_NAME, INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND NON_UNIQUE = 0 \
             GROUP BY TABLE_NAME, INDEX_NAME ORDER BY TABLE_NAME, INDEX_NAME",
        )
        .await
        .map_err(|e| e.to_string())?;
    for (t, index, cols) in uniques {
        let Some(key) = c.tables.get(&t).and_then(|p| p.placement.key()) else {
            continue;
        };
        if !cols.split(',').any(|col| col.eq_ignore_ascii_case(key)) {
            warnings.push(format!(
                "table `{t}`: unique key {index} ({cols}) does not contain the shard key `{key}`, so \
                 each shard enforces it only for its own rows"
            ));
        }
    }
    let fks: Vec<(String, String, String, String)> = conn
        .query(
            "SELECT TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME \
             FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() \
             AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY TABLE_NAME",
        )
        .await
        .map_err(|e| e.to_string())?;
    for (t, col, rt, rcol) in fks {
        let (Some(a), Some(b)) = (c.tables.get(&t), c.tables.get(&rt)) else {
            continue;
        };
        if b.placement == Placement::Reference {
            continue;
        }
        let co_located = a
            .placement
            .key()
            .is_some_and(|k| k.eq_ignore_ascii_case(&col))
            && b.placement
                .key()
                .is_some_and(|k| k.eq_ignore_ascii_case(&rcol));
        if !co_located {
            warnings.push(format!(
                "foreign key {t}.{col} -> {rt}.{rcol}: the tables are not sharded on these columns, \
                 so the referenced row may live on another shard"
            ));
        }
    }
    let _ = conn.disconnect().await;
    // Tables that are not the same on every shard.
    for d in drift::check(cfg).await? {
        problems.push(drift::describe_drift(&d));
    }
    Ok((problems, warnings))
}

/// The placement a cluster's rows were written under, one line per fact
/// (shards, bucket owners, each table's placement), as recorded on the
/// first shard's server.
fn placement_lines(c: &ClusterConfig) -> Vec<String> {
    let mut owners = xxhash_rust::xxh3::Xxh3::new();
    for o in c.owners.iter() {
        owners.update(&o.to_le_bytes());
    }
    let mut lines = vec![
        format!("shards {}", c.shards.join(",")),
        format!("buckets {} owners {:016x}", c.buckets(), owners.digest()),
    ];
    for (t, p) in &c.tables {
        lines.push(format!("table {t} {:?}", p.placement));
    }
    lines
}

/// Records the cluster's placement in Tandem's bookkeeping database on the
/// first shard's server, or refuses when a recorded fact differs: a
/// restart or reload never places rows differently from how they were
/// written (moving rows between shards is a later feature). Tables new to
/// the record are added.
pub async fn record_placement(cfg: &Config) -> Result<(), String> {
    // Tandems starting together over one server may deadlock on the
    // record's gap locks: the loser retries.
    let mut attempt = 0;
    loop {
        match record_placement_once(cfg).await {
            Err(e) if attempt < 5 && (e.contains("ERROR 1213") || e.contains("ERROR 1205")) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            other => return other,
        }
    }
}

async fn record_placement_once(cfg: &Config) -> Result<(), String> {
    let Some(c) = cfg.cluster() else {
        return Ok(());
    };
    let b = cfg.primary_backend();
    let mut conn = crate::backend::own_conn(crate::backend::own_opts(b).await)
        .await
        .map_err(|e| format!("cannot reach shard {}: {e}", b.name))?;
    let table = crate::sql::qualified(Some(&b.bookkeeping), "cluster_placement");
    let name = crate::sql::sql_literal(c.name.as_bytes());
    // Keyed by the first shard's database too: clusters of the same name
    // over other databases are other clusters.
    let db = crate::mirror::bookkeeping::owner(b);
    let run = async {
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            crate::sql::quote(&b.bookkeeping)
        ))
        .await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {table} (cluster VARCHAR(64) NOT NULL, \
             db VARCHAR(64) NOT NULL, placement LONGTEXT NOT NULL, PRIMARY KEY (cluster, db)) \
             ENGINE=InnoDB"
        ))
        .await?;
        conn.query_drop("BEGIN").await?;
        let stored: Option<String> = conn
            .query_first(format!(
                "SELECT placement FROM {table} WHERE cluster = {name} AND db = {db} FOR UPDATE"
            ))
            .await?;
        Ok::<_, mysql_async::Error>(stored)
    };
    let stored = run.await.map_err(|e| e.to_string())?;
    let now = placement_lines(c);
    let mut record: Vec<String> = stored
        .as_deref()
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let mut changed = Vec::new();
    for line in &now {
        let key = |l: &str| -> String {
            let mut w = l.split(' ');
            match w.next() {
                Some("table") => format!("table {}", w.next().unwrap_or_default()),
                Some(k) => k.to_string(),
                None => String::new(),
            }
        };
        match record.iter().position(|r| key(r) == key(line)) {
            Some(i) if record[i] != *line => {
                changed.push(format!("recorded: {}; configured: {line}", record[i]))
            }
            Some(_) => {}
            None => record.push(line.clone()),
        }
    }
    if !changed.is_empty() {
        let _ = conn.query_drop("ROLLBACK").await;
        return Err(format!(
            "cluster {}: the configuration places rows differently from how they were written \
             (moving rows between shards is not supported yet; restore the recorded placement, \
             or delete its row from {table} if the shards are empty): {}",
            c.name,
            changed.join("; ")
        ));
    }
    let text = crate::sql::sql_literal(record.join("\n").as_bytes());
    conn.query_drop(format!(
        "REPLACE INTO {table} (cluster, db, placement) VALUES ({name}, {db}, {text})"
    ))
    .await
    .map_err(|e| e.to_string())?;
    conn.query_drop("COMMIT").await.map_err(|e| e.to_string())?;
    let _ = conn.disconnect().await;
    Ok(())
}
