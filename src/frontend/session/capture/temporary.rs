//! Temporary tables while mirroring. A session's temporary table exists on
//! the primary only, for that session only: creating or dropping one does
//! not commit the open transaction and is not journaled; writes to it are
//! not mirrored; and a write to a real table that names a temporary table
//! (`INSERT INTO t SELECT … FROM tmp`) carries a copy of it to the
//! secondary (see `carry`). A temporary table also hides a real one of the
//! same name, so any statement naming it is judged by these rules.

use super::super::link::Link;
use super::super::SessionError;
use super::{bare, Capture};
use crate::mirror::runtime::Mirror;
use crate::protocol::response::Expect;
use crate::router::lexer::Tok;
use crate::router::{Class, Route, SchemaObject};
use std::sync::Arc;

/// What a statement naming a temporary table comes to.
pub(super) enum Temporary {
    /// Not one that names a temporary table: capture it as usual.
    Usual,
    /// Handled (false: forward it unmirrored).
    Done(bool),
    /// A write to real tables that reads temporary ones: capture it as
    /// usual, as this route (the real tables only), with the copies
    /// `carry` made waiting in `Capture::carried`.
    Carried(Route),
}

impl Capture {
    /// A statement while the session has temporary tables (see
    /// `Temporary`): `sql` its text (tokens in `cx.scratch`), `packet`
    /// what the client sent (a query or an execute).
    pub(super) async fn temporary(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        (sql, packet): (&[u8], &[u8]),
        seq: u8,
    ) -> Result<Temporary, SessionError> {
        if route.object == Some(SchemaObject::TemporaryTable) {
            return Ok(Temporary::Usual);
        }
        let toks = &cx.scratch.tokens;
        let mut named: Vec<String> = Vec::new();
        let mut qualified = None;
        for (i, t) in toks.iter().enumerate() {
            let Some(id) = t.ident(sql) else { continue };
            if !self.is_temporary(&id) {
                continue;
            }
            let dotted = |j: Option<usize>| {
                j.and_then(|j| toks.get(j))
                    .is_some_and(|t| t.kind == Tok::Punct(b'.'))
            };
            // `db.tmp` (not `tmp.col`): another database's table, maybe.
            if dotted(i.checked_sub(1)) && !dotted(i.checked_add(1)) {
                qualified = Some(id.clone());
            }
            let id = id.to_ascii_lowercase();
            if !named.contains(&id) {
                named.push(id);
            }
        }
        let Some(name) = named.first().cloned() else {
            return Ok(Temporary::Usual);
        };
        let all_temporary =
            !route.tables.is_empty() && route.tables.iter().all(|t| self.is_temporary(t));
        match route.class {
            // Only the session's own rows change: nothing to mirror.
            Class::Write(_) | Class::Ddl if all_temporary => Ok(Temporary::Done(false)),
            Class::Write(_) => {
                let carried = match qualified {
                    Some(q) => Err(format!(
                        "it names the temporary table `{q}` with a database, which Tandem does not copy"
                    )),
                    None => self.carry(cx, &named).await?,
                };
                match carried {
                    Ok(c) => {
                        self.carried = Some(c);
                        let real = Route {
                            tables: route
                                .tables
                                .iter()
                                .filter(|t| !self.is_temporary(t))
                                .cloned()
                                .collect(),
                            ..route.clone()
                        };
                        Ok(Temporary::Carried(real))
                    }
                    Err(why) => {
                        let reason = format!(
                            "it reads the temporary table `{name}`, whose rows exist on the primary only, and {why}"
                        );
                        let tables = route.tables.clone();
                        self.unsafe_write(cx, m, &tables, &reason, packet, seq)
                            .await?;
                        Ok(Temporary::Done(true))
                    }
                }
            }
            _ => Ok(Temporary::Usual),
        }
    }

    /// CREATE/DROP TEMPORARY TABLE (`sql`, its tokens in `cx.scratch`;
    /// `packet` a query or an execute): forwarded (it commits nothing and
    /// is not journaled); the names are kept once the server agreed.
    pub(super) async fn temporary_table(
        &mut self,
        cx: &mut Link<'_>,
        route: &Route,
        (sql, packet): (&[u8], &[u8]),
        seq: u8,
    ) -> Result<bool, SessionError> {
        let summary = cx.forward(packet, seq, Expect::ResultSet).await?;
        if summary.error.is_none() {
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

    pub(super) fn is_temporary(&self, name: &str) -> bool {
        let name = bare(name);
        self.temp_tables
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name))
    }
}
