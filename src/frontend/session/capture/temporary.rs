//! Temporary tables while mirroring. A session's temporary table exists on
//! the primary only, for that session only: creating or dropping one does
//! not commit the open transaction and is not journaled; writes to it are
//! not mirrored; and a write to a real table that names a temporary table
//! (`INSERT INTO t SELECT … FROM tmp`) cannot be replayed from its text, so
//! it follows `unsafe_writes`. A temporary table also hides a real one of
//! the same name, so any statement naming it is judged by these rules.

use super::super::link::Link;
use super::super::SessionError;
use super::{bare, Capture};
use crate::mirror::runtime::Mirror;
use crate::protocol::response::Expect;
use crate::router::{Class, Route, SchemaObject};
use std::sync::Arc;

impl Capture {
    /// A statement while the session has temporary tables: Some(handled)
    /// when it names one (Some(false): forward it unmirrored), None to
    /// capture it as usual.
    pub(super) async fn temporary(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        payload: &[u8],
        seq: u8,
    ) -> Result<Option<bool>, SessionError> {
        if route.object == Some(SchemaObject::TemporaryTable) {
            return Ok(None);
        }
        let sql = &payload[1..];
        let named = cx
            .scratch
            .tokens
            .iter()
            .filter_map(|t| t.ident(sql))
            .find(|id| self.is_temporary(id));
        let Some(name) = named else {
            return Ok(None);
        };
        let all_temporary =
            !route.tables.is_empty() && route.tables.iter().all(|t| self.is_temporary(t));
        match route.class {
            // Only the session's own rows change: nothing to mirror.
            Class::Write(_) | Class::Ddl if all_temporary => Ok(Some(false)),
            Class::Write(_) => {
                let reason = format!(
                    "it reads the temporary table `{name}`, whose rows exist on the primary only"
                );
                let tables = route.tables.clone();
                self.unsafe_write(cx, m, &tables, &reason, payload, seq)
                    .await?;
                Ok(Some(true))
            }
            _ => Ok(None),
        }
    }

    /// CREATE/DROP TEMPORARY TABLE: forwarded (it commits nothing and is
    /// not journaled); the names are kept once the server agreed.
    pub(super) async fn temporary_table(
        &mut self,
        cx: &mut Link<'_>,
        route: &Route,
        payload: &[u8],
        seq: u8,
    ) -> Result<bool, SessionError> {
        let summary = cx.forward(payload, seq, Expect::ResultSet).await?;
        if summary.error.is_none() {
            let sql = &payload[1..];
            let creates = cx
                .scratch
                .tokens
                .first()
                .is_some_and(|t| t.is_word(sql, "CREATE"));
            // CREATE names its table first (`… AS SELECT … FROM t` names
            // more); DROP TEMPORARY TABLE names only temporary tables.
            let named = if creates {
                &route.tables[..route.tables.len().min(1)]
            } else {
                &route.tables[..]
            };
            for t in named {
                let name = bare(t).to_ascii_lowercase();
                self.temp_tables.retain(|n| *n != name);
                if creates {
                    self.temp_tables.push(name);
                }
            }
        }
        Ok(true)
    }

    fn is_temporary(&self, name: &str) -> bool {
        let name = bare(name);
        self.temp_tables
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name))
    }
}
