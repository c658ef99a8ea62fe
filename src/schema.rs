//! Schema facts read from a MySQL/MariaDB backend's information_schema, for
//! the offline tools (verify, backfill). Engine-specific by nature.

use crate::config::{BackendConfig, Config};
use crate::sql::quote;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// A failed connection to a named backend.
#[derive(Debug, thiserror::Error)]
#[error("{backend}: {source}")]
pub struct ConnectError {
    pub backend: String,
    pub source: mysql_async::Error,
}

/// Opens a plain mysql_async connection to a backend (offline tools).
///
/// The session is pinned to UTC: TIMESTAMP values are read, copied and
/// compared as the instants they are, whatever each server's default zone
/// (two servers in different zones would otherwise shift copied values,
/// and verify, rendering each side in its own zone, could not see it).
pub async fn connect(b: &BackendConfig) -> Result<Conn, ConnectError> {
    crate::backend::own_conn(
        crate::backend::own_opts(b)
            .await
            .setup(vec!["SET time_zone = '+00:00'"]),
    )
    .await
    .map_err(|source| ConnectError {
        backend: b.name.clone(),
        source,
    })
}

/// How a table is walked in primary-key order, read from the primary.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub table: String,
    /// Quoted table name.
    pub quoted: String,
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    /// Quoted, comma-separated column list (table order).
    pub column_list: String,
    /// Quoted, comma-separated primary-key columns (key order).
    pub key_list: String,
    /// Position of each key column in `columns`.
    pub key_positions: Vec<usize>,
}

impl TablePlan {
    /// Reads the plan; a table without a primary key is refused.
    pub async fn load(c: &mut Conn, table: &str) -> Result<Self, String> {
        let err = |e: mysql_async::Error| e.to_string();
        let primary_key = primary_key(c, table).await.map_err(err)?;
        if primary_key.is_empty() {
            return Err(no_primary_key(table));
        }
        let columns = columns(c, table).await.map_err(err)?;
        Ok(Self::new(table, columns, primary_key))
    }

    /// The plan of `table` with these columns (table order) and primary
    /// key (key order), already read.
    pub fn new(table: &str, columns: Vec<String>, primary_key: Vec<String>) -> Self {
        let list = |names: &[String]| {
            names
                .iter()
                .map(|n| quote(n))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let key_positions = primary_key
            .iter()
            .map(|k| columns.iter().position(|c| c == k).unwrap_or(0))
            .collect();
        Self {
            table: table.to_string(),
            quoted: quote(table),
            column_list: list(&columns),
            key_list: list(&primary_key),
            columns,
            primary_key,
            key_positions,
        }
    }
}

/// The tables to work on: `wanted` (each must exist), or every base table
/// the rules mirror (Tandem's own `_tandem*` tables excluded).
pub async fn select_tables(
    p: &mut Conn,
    cfg: &Config,
    wanted: Option<&[String]>,
) -> Result<Result<Vec<String>, Vec<String>>, mysql_async::Error> {
    let all: Vec<String> = p
        .query(
            "SELECT TABLE_NAME FROM information_schema.TABLES
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        )
        .await?;
    Ok(match wanted {
        Some(w) => {
            let unknown: Vec<String> = w.iter().filter(|t| !all.contains(t)).cloned().collect();
            if unknown.is_empty() {
                Ok(w.to_vec())
            } else {
                Err(unknown)
            }
        }
        None => Ok(all
            .into_iter()
            .filter(|t| !t.starts_with("_tandem") && cfg.rules.mirrored(t))
            .collect()),
    })
}

/// Primary-key columns in key order (empty: no primary key).
pub async fn primary_key(c: &mut Conn, table: &str) -> Result<Vec<String>, mysql_async::Error> {
    c.exec(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'
         ORDER BY ORDINAL_POSITION",
        (table,),
    )
    .await
}

/// All columns in table order.
pub async fn columns(c: &mut Conn, table: &str) -> Result<Vec<String>, mysql_async::Error> {
    c.exec(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (table,),
    )
    .await
}

/// The message for a table without a primary key.
pub fn no_primary_key(table: &str) -> String {
    format!("table {table} has no primary key; verify and backfill need one to walk it in chunks")
}

/// What shard routing needs of every table of a cluster's database, read
/// from information_schema on one shard (`c` connected to its database):
/// column order, the type of each rule's shard key, the AUTO_INCREMENT
/// column.
pub async fn shard_facts(
    c: &mut Conn,
    cluster: &crate::config::ClusterConfig,
) -> Result<
    std::collections::HashMap<String, std::sync::Arc<crate::router::shard::route::TableFacts>>,
    mysql_async::Error,
> {
    use crate::router::shard::{route::TableFacts, KeyType};
    type ColumnRow = (
        String,
        String,
        String,
        Option<String>,
        String,
        Option<String>,
    );
    let rows: Vec<ColumnRow> = c
        .query(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLLATION_NAME, EXTRA, COLUMN_DEFAULT \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             ORDER BY TABLE_NAME, ORDINAL_POSITION",
        )
        .await?;
    let mut out: std::collections::HashMap<String, TableFacts> = Default::default();
    for (table, column, data_type, collation, extra, default) in rows {
        let f = out.entry(table.clone()).or_insert_with(|| TableFacts {
            columns: Vec::new(),
            key_type: None,
            auto_increment: None,
            key_default: None,
        });
        let key = cluster.tables.get(&table).and_then(|p| p.placement.key());
        if key.is_some_and(|k| k.eq_ignore_ascii_case(&column)) {
            f.key_type = Some(KeyType::from_schema(&data_type, collation.as_deref()));
            f.key_default = default;
        }
        if extra.to_ascii_lowercase().contains("auto_increment") {
            f.auto_increment = Some(column.clone());
        }
        f.columns.push(column);
    }
    Ok(out
        .into_iter()
        .map(|(k, v)| (k, std::sync::Arc::new(v)))
        .collect())
}
