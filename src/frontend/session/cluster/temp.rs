//! Temporary tables on a cluster: a session's temporary table is created
//! on every shard connection (all opened for it) and planned as a
//! reference table of that session — writes go to every shard, reads to
//! one, joins with sharded tables run on each shard. CREATE TEMPORARY
//! TABLE … SELECT is refused (each shard would copy only its own rows).
//! Temporary-table DDL does not commit the open transaction, as on one
//! database.

use super::{not_supported, ClusterSession};
use crate::config::{ClusterConfig, Placement, TablePlacement};
use crate::frontend::session::SessionError;
use crate::router::lexer::{self, Tok, Token};
use std::borrow::Cow;

/// The tables a CREATE or DROP TEMPORARY TABLE names, and whether it
/// creates; None: not one Tandem reads.
fn named(sql: &[u8], toks: &[Token]) -> Option<(bool, Vec<String>)> {
    let create = toks.first()?.is_word(sql, "CREATE");
    if !create && !toks.first()?.is_word(sql, "DROP") {
        return None;
    }
    let mut i = toks.iter().position(|t| t.is_word(sql, "TABLE"))? + 1;
    if toks.get(i).is_some_and(|t| t.is_word(sql, "IF")) {
        i += if create { 3 } else { 2 };
    }
    let mut names = Vec::new();
    loop {
        // A qualified name's last part.
        let mut last = i;
        while toks
            .get(last + 1)
            .is_some_and(|t| t.kind == Tok::Punct(b'.'))
        {
            last += 2;
        }
        names.push(toks.get(last)?.ident(sql)?);
        i = last + 1;
        if create || !toks.get(i).is_some_and(|t| t.kind == Tok::Punct(b',')) {
            break;
        }
        i += 1;
    }
    Some((create, names))
}

impl ClusterSession<'_> {
    pub(super) async fn temp_ddl(&mut self, sql: &[u8], seq: u8) -> Result<(), SessionError> {
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        let Some((create, names)) = named(sql, &toks) else {
            return self
                .reply_err(seq, &not_supported("this temporary-table statement"))
                .await;
        };
        if create && toks.iter().any(|t| t.is_word(sql, "SELECT")) {
            return self
                .reply_err(
                    seq,
                    &not_supported(
                        "CREATE TEMPORARY TABLE … SELECT on a cluster (each shard would copy \
                         only its own rows); create it, then INSERT … SELECT into it",
                    ),
                )
                .await;
        }
        if self.fan_out(sql, seq, true).await? {
            for n in names {
                if create {
                    self.temp_tables.insert(n);
                } else {
                    self.temp_tables.remove(&n);
                }
            }
        }
        Ok(())
    }

    /// The cluster as this session plans on it: with its temporary tables
    /// as reference tables.
    pub(super) fn with_temp<'c>(&self, cluster: &'c ClusterConfig) -> Cow<'c, ClusterConfig> {
        if self.temp_tables.is_empty() {
            return Cow::Borrowed(cluster);
        }
        let mut c = cluster.clone();
        for t in &self.temp_tables {
            c.tables.insert(
                t.clone(),
                TablePlacement {
                    placement: Placement::Reference,
                    scatter_writes: crate::config::model::ScatterWrites::Allow,
                    key_updates: Default::default(),
                },
            );
        }
        Cow::Owned(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sql: &str) -> Option<(bool, Vec<String>)> {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        named(sql.as_bytes(), &toks)
    }

    #[test]
    fn the_tables_temporary_ddl_names_are_read() {
        assert_eq!(
            of("CREATE TEMPORARY TABLE IF NOT EXISTS app.t1 (id INT)"),
            Some((true, vec!["t1".into()]))
        );
        assert_eq!(
            of("CREATE TEMPORARY TABLE `t 2` LIKE users"),
            Some((true, vec!["t 2".into()]))
        );
        assert_eq!(
            of("DROP TEMPORARY TABLE IF EXISTS a, app.b"),
            Some((false, vec!["a".into(), "b".into()]))
        );
    }
}
