//! A shard key left to its column default (`created_at DATETIME DEFAULT
//! CURRENT_TIMESTAMP`) is pinned before the INSERT is routed: the default
//! is evaluated once (on a shard, in the session's time zone, as the
//! shard would evaluate it) and written into every row, so the row is
//! placed by the value it will hold.

use super::read::Kept;
use super::ClusterSession;
use crate::frontend::session::link::query_packet;
use crate::frontend::session::SessionError;
use crate::router::shard::ids;
use crate::router::shard::route::Merge;
use sqlparser::ast::{SetExpr, Statement, TableObject};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

/// A default that is a constant the statement can carry as written.
fn constant(default: &str) -> bool {
    let d = default.as_bytes();
    (d.len() >= 2 && d[0] == b'\'' && d[d.len() - 1] == b'\'')
        || (!d.is_empty()
            && d.iter()
                .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'e' | b'E' | b'+')))
}

/// A default the server computes when the row is written.
fn computed(default: &str) -> bool {
    let d = default.to_ascii_lowercase();
    [
        "current_timestamp",
        "now(",
        "localtime",
        "curdate(",
        "current_date",
    ]
    .iter()
    .any(|f| d.starts_with(f))
}

impl ClusterSession<'_> {
    /// `sql` with the shard key, left out of its column list, pinned to
    /// its default. Ok(None): nothing to pin.
    pub(super) async fn pin_key_default(
        &mut self,
        sql: &[u8],
        seq: u8,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        let Some(toks) = super::exec::insert_tokens(sql) else {
            return Ok(None);
        };
        let cfg = self.shared.config.load_full();
        let Some(cluster) = cfg.cluster() else {
            return Ok(None);
        };
        let facts = match self.facts(sql).await {
            Ok(f) => f,
            Err(_) => return Ok(None),
        };
        // Only tables whose shard key has a default need the parse.
        if !facts.values().any(|f| f.key_default.is_some()) {
            return Ok(None);
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return Ok(None);
        };
        let Ok(stmts) = Parser::parse_sql(&MySqlDialect {}, text) else {
            return Ok(None);
        };
        let [Statement::Insert(i)] = stmts.as_slice() else {
            return Ok(None);
        };
        let TableObject::TableName(name) = &i.table else {
            return Ok(None);
        };
        let Some(table) = name.0.last().and_then(|p| p.as_ident()).map(|x| &x.value) else {
            return Ok(None);
        };
        let Some(key) = cluster.tables.get(table).and_then(|p| p.placement.key()) else {
            return Ok(None);
        };
        let Some(SetExpr::Values(v)) = i.source.as_deref().map(|q| q.body.as_ref()) else {
            return Ok(None);
        };
        let listed = i.columns.iter().any(|c| {
            c.0.last()
                .and_then(|p| p.as_ident())
                .is_some_and(|x| x.value.eq_ignore_ascii_case(key))
        });
        if i.columns.is_empty() || listed {
            return Ok(None);
        }
        let Some(default) = facts.get(table).and_then(|f| f.key_default.clone()) else {
            return Ok(None);
        };
        let value = if constant(&default) {
            default
        } else if computed(&default) {
            let shard = self.last_shard;
            let packet = query_packet(format!("SELECT {default}").as_bytes());
            let merge = Merge::Concat {
                offset: 0,
                limit: None,
            };
            let answer = match self
                .read_kept(&[shard], vec![packet], &merge, seq, 1 << 16)
                .await?
            {
                Kept::Rows(p) => p,
                _ => return Ok(None),
            };
            let Some(Some(v)) = self.first_row(&answer).and_then(|r| r.into_iter().next()) else {
                return Ok(None);
            };
            format!("'{}'", String::from_utf8_lossy(&v))
        } else {
            return Ok(None);
        };
        Ok(ids::append_column(sql, &toks, key, &value, v.rows.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_constants_or_computed() {
        assert!(constant("'eu'") && constant("5") && constant("-1.5"));
        assert!(!constant("NULL") && !constant("current_timestamp()"));
        assert!(computed("current_timestamp()") && computed("current_timestamp(6)"));
        assert!(computed("curdate()") && !computed("'x'"));
    }
}
