//! The global id sequences of a cluster's sharded tables: one row per
//! table in Tandem's bookkeeping database on the first shard's server
//! (`sequences`, keyed by cluster, the first shard's database and the
//! table), handed out in blocks so that most inserts cost no round trip.
//! A sequence starts above the largest id on any shard; an explicit id
//! above what was handed out raises it, as it raises AUTO_INCREMENT.
//! Several Tandems over one cluster get disjoint blocks (the row is
//! updated atomically).

use crate::config::Config;
use mysql_async::prelude::*;
use std::collections::HashMap;

/// Ids taken from the sequence row at once.
pub const BLOCK: u64 = 100;

#[derive(Default)]
pub struct Sequences {
    inner: tokio::sync::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conn: Option<mysql_async::Conn>,
    /// Table -> the block in hand: [next, end).
    blocks: HashMap<String, (u64, u64)>,
    /// Tables whose sequence row is known to exist.
    ready: std::collections::HashSet<String>,
}

impl Sequences {
    /// Takes `n` consecutive ids of `table`'s sequence (the first is
    /// returned; None when `n` is 0), after raising it above
    /// `explicit_max`.
    pub async fn take(
        &self,
        cfg: &Config,
        table: &str,
        column: &str,
        n: u64,
        explicit_max: Option<u64>,
    ) -> Result<Option<u64>, String> {
        let mut inner = self.inner.lock().await;
        let result = inner.take(cfg, table, column, n, explicit_max).await;
        if result.is_err() {
            // The connection may be broken: a fresh one next time.
            inner.conn = None;
        }
        result.map_err(|e| format!("Tandem (cluster): the id sequence of `{table}`: {e}"))
    }

    /// Forgets the blocks in hand (after DDL: a table may be new).
    pub async fn forget(&self) {
        let mut inner = self.inner.lock().await;
        inner.blocks.clear();
        inner.ready.clear();
    }
}

impl Inner {
    async fn take(
        &mut self,
        cfg: &Config,
        table: &str,
        column: &str,
        n: u64,
        explicit_max: Option<u64>,
    ) -> Result<Option<u64>, String> {
        let c = cfg.cluster().ok_or("the primary is not a cluster")?;
        let b = cfg.primary_backend();
        let seq = crate::sql::qualified(Some(&b.bookkeeping), "sequences");
        let key = format!(
            "cluster = {} AND db = {} AND name = {}",
            crate::sql::sql_literal(c.name.as_bytes()),
            crate::mirror::bookkeeping::owner(b),
            crate::sql::sql_literal(table.as_bytes())
        );
        if self.conn.is_none() {
            let mut conn = crate::backend::own_conn(crate::backend::own_opts(b).await)
                .await
                .map_err(|e| e.to_string())?;
            conn.query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                crate::sql::quote(&b.bookkeeping)
            ))
            .await
            .map_err(|e| e.to_string())?;
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {seq} (cluster VARCHAR(64) NOT NULL, \
                 db VARCHAR(64) NOT NULL, name VARCHAR(64) NOT NULL, \
                 next_id BIGINT UNSIGNED NOT NULL, PRIMARY KEY (cluster, db, name)) ENGINE=InnoDB"
            ))
            .await
            .map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        if !self.ready.contains(table) {
            // A new sequence starts above every shard's largest id.
            let mut max = 0u64;
            for s in &c.shards {
                let sb = cfg
                    .backends
                    .get(s)
                    .ok_or_else(|| format!("no backend {s}"))?;
                let mut sc = crate::backend::own_conn(crate::backend::own_opts(sb).await)
                    .await
                    .map_err(|e| format!("shard {s}: {e}"))?;
                let m: Option<Option<u64>> = sc
                    .query_first(format!(
                        "SELECT MAX({}) FROM {}",
                        crate::sql::quote(column),
                        crate::sql::quote(table)
                    ))
                    .await
                    .map_err(|e| format!("shard {s}: {e}"))?;
                let _ = sc.disconnect().await;
                max = max.max(m.flatten().unwrap_or(0));
            }
            let conn = self.conn.as_mut().ok_or("no connection")?;
            conn.query_drop(format!(
                "INSERT INTO {seq} (cluster, db, name, next_id) VALUES ({}, {}, {}, {}) \
                 ON DUPLICATE KEY UPDATE next_id = GREATEST(next_id, VALUES(next_id))",
                crate::sql::sql_literal(c.name.as_bytes()),
                crate::mirror::bookkeeping::owner(b),
                crate::sql::sql_literal(table.as_bytes()),
                max + 1
            ))
            .await
            .map_err(|e| e.to_string())?;
            self.ready.insert(table.to_string());
        }
        let conn = self.conn.as_mut().ok_or("no connection")?;
        if let Some(v) = explicit_max {
            match self.blocks.get_mut(table) {
                Some((next, end)) if v >= *next && v < *end => *next = v + 1,
                Some((next, _)) if v < *next => {}
                _ => {
                    self.blocks.remove(table);
                    conn.query_drop(format!(
                        "UPDATE {seq} SET next_id = GREATEST(next_id, {}) WHERE {key}",
                        v + 1
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
                }
            }
        }
        if n == 0 {
            return Ok(None);
        }
        if let Some((next, end)) = self.blocks.get_mut(table) {
            if *end - *next >= n {
                let first = *next;
                *next += n;
                return Ok(Some(first));
            }
        }
        let take = n.max(BLOCK);
        conn.query_drop(format!(
            "UPDATE {seq} SET next_id = LAST_INSERT_ID(next_id + {take}) WHERE {key}"
        ))
        .await
        .map_err(|e| e.to_string())?;
        let end: Option<u64> = conn
            .query_first("SELECT LAST_INSERT_ID()")
            .await
            .map_err(|e| e.to_string())?;
        let end = end.ok_or("the sequence row is missing")?;
        let first = end - take;
        self.blocks.insert(table.to_string(), (first + n, end));
        Ok(Some(first))
    }
}
