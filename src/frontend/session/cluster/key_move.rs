//! An UPDATE that changes rows' shard key, on a table with
//! `shard_key_updates: move`: the rows are moved to the shard their new
//! key names, in one transaction across the shards (atomic under
//! `cross_shard_transactions: xa`), as one database would update them.
//!
//! On each shard the WHERE names, the matched rows are locked and their
//! primary keys read (`SELECT pk … FOR UPDATE`), copied into a temporary
//! table shaped like the table, and the client's SET runs there — the
//! server computes the new values exactly as the UPDATE would (other
//! columns, ON UPDATE CURRENT_TIMESTAMP). The new rows are read back, the
//! old ones deleted by their primary key, and the new rows inserted as
//! `INSERT … VALUES`, each placed by its new key. The client gets the
//! UPDATE's answer (rows matched and changed, summed over the shards).
//! A step that fails rolls back the whole transaction (a statement cannot
//! be undone alone on several shards) and the client gets the shard's
//! error, saying so.

use super::insert_select::values_text;
use super::read::Kept;
use super::values::Column;
use super::{not_supported, ClusterSession};
use crate::frontend::session::link::query_packet;
use crate::frontend::session::SessionError;
use crate::protocol::wire::write_frames;
use crate::protocol::ErrSpec;
use crate::router::shard::route::{self, Merge, Refusal};
use sqlparser::ast::{Statement, TableFactor};

/// The temporary table a move computes its new rows in.
const SCRATCH: &str = "`_tandem_key_move`";

/// A step's outcome: Err is the client's error.
type Step<T> = Result<Result<T, ErrSpec>, SessionError>;

/// The parts of the UPDATE a move needs.
struct Parts {
    /// The table as the statement names it (maybe qualified).
    table: String,
    /// Its bare name (information_schema) and the name SET refers to it by.
    bare: String,
    alias: String,
    assignments: String,
    selection: Option<String>,
}

fn parts(sql: &[u8]) -> Result<Parts, ErrSpec> {
    let stmt = route::parse(sql).map_err(|Refusal(why)| not_supported(why))?;
    let Statement::Update(u) = stmt else {
        return Err(not_supported(
            "a shard key move of a statement other than UPDATE",
        ));
    };
    let TableFactor::Table { name, alias, .. } = &u.table.relation else {
        return Err(not_supported("a shard key move of a derived table"));
    };
    let bare = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .unwrap_or_default();
    Ok(Parts {
        table: name.to_string(),
        alias: alias
            .as_ref()
            .map(|a| a.name.to_string())
            .unwrap_or_else(|| crate::sql::quote(&bare)),
        bare,
        assignments: u
            .assignments
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        selection: u.selection.as_ref().map(|e| e.to_string()),
    })
}

impl ClusterSession<'_> {
    /// Runs an UPDATE planned as `Merge::KeyMove` on `targets` (the shards
    /// its WHERE names) and answers the client.
    pub(super) async fn move_rows(
        &mut self,
        sql: &[u8],
        targets: &[usize],
        seq: u8,
    ) -> Result<(), SessionError> {
        let p = match parts(sql) {
            Ok(p) => p,
            Err(e) => return self.reply_err(seq, &e).await,
        };
        let wrap = !self.in_txn();
        if wrap {
            self.explicit_txn = true;
            self.begin_sql = b"BEGIN".to_vec();
        }
        let moved = self.move_in_txn(&p, targets, seq).await?;
        let reply = match moved {
            Ok(ok) => {
                if wrap {
                    match self.end_txn(b"COMMIT").await? {
                        Some(e) => Err(e),
                        None => Ok(ok),
                    }
                } else {
                    Ok(ok)
                }
            }
            Err(e) => {
                let in_txn = !wrap;
                self.end_txn(b"ROLLBACK").await?;
                Err(if in_txn {
                    ErrSpec::new(
                        e.code,
                        "HY000",
                        format!(
                            "{} (Tandem rolled back the transaction: moving rows to another \
                             shard failed part way)",
                            e.message
                        ),
                    )
                } else {
                    e
                })
            }
        };
        match reply {
            Ok(packet) => {
                let mut s = seq;
                write_frames(&mut self.client.wbuf, &mut s, &packet);
                self.client.flush().await?;
                Ok(())
            }
            Err(e) => self.reply_err(seq, &e).await,
        }
    }

    /// The move's steps inside the open transaction; the client's OK.
    async fn move_in_txn(&mut self, p: &Parts, targets: &[usize], seq: u8) -> Step<Vec<u8>> {
        let mut updated = Vec::new();
        let mut answers = Vec::new();
        let mut new_rows: Vec<Vec<u8>> = Vec::new();
        // The table's primary key, the same on every shard: read once.
        let Some(&first) = targets.first() else {
            return Ok(Ok(crate::protocol::packets::ok_packet(
                0,
                0,
                self.status(),
                0,
            )));
        };
        if let Err(e) = self.enter_step(first).await? {
            return Ok(Err(e));
        }
        let pk = match self
            .rows_on(
                first,
                &format!(
                    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {} \
                     AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                    crate::sql::sql_literal(p.bare.as_bytes())
                ),
                seq,
            )
            .await?
        {
            Ok((_, rows)) => rows
                .iter()
                .filter_map(|r| {
                    let f = super::values::fields(r, 1)?;
                    let name = f[0].clone()?;
                    Some(crate::sql::quote(&String::from_utf8_lossy(&r[name])))
                })
                .collect::<Vec<_>>(),
            Err(e) => return Ok(Err(e)),
        };
        if pk.is_empty() {
            return Ok(Err(not_supported(format!(
                "moving rows of `{}` to another shard needs a primary key to name them by",
                p.bare
            ))));
        }
        let pk = pk.join(", ");
        let filter = p
            .selection
            .as_ref()
            .map(|w| format!(" WHERE {w}"))
            .unwrap_or_default();
        for &shard in targets {
            if let Err(e) = self.enter_step(shard).await? {
                return Ok(Err(e));
            }
            let (cols, keys) = match self
                .rows_on(
                    shard,
                    &format!("SELECT {pk} FROM {}{filter} FOR UPDATE", p.table),
                    seq,
                )
                .await?
            {
                Ok((c, r)) => (c, r.to_vec()),
                Err(e) => return Ok(Err(e)),
            };
            if keys.is_empty() {
                continue;
            }
            let Some(keys) = values_text(&cols, &keys, self.no_backslash_escapes) else {
                return Ok(Err(ErrSpec::new(
                    1105,
                    "HY000",
                    "Tandem: a key it cannot read",
                )));
            };
            let keys = String::from_utf8_lossy(&keys).into_owned();
            let which = format!("({pk}) IN ({keys})");
            for stmt in [
                format!("DROP TEMPORARY TABLE IF EXISTS {SCRATCH}"),
                format!("CREATE TEMPORARY TABLE {SCRATCH} LIKE {}", p.table),
                format!(
                    "INSERT INTO {SCRATCH} SELECT * FROM {} WHERE {which}",
                    p.table
                ),
            ] {
                if let Err(e) = self.run_on(shard, &stmt).await? {
                    return Ok(Err(e));
                }
            }
            let text = self.shard_text(
                shard,
                &format!("UPDATE {SCRATCH} AS {} SET {}", p.alias, p.assignments),
            );
            let answer = match text {
                Ok(t) => self.buffered(shard, &t).await?,
                Err(e) => return Ok(Err(e)),
            };
            if let Some((code, message)) = answer.error.clone() {
                return Ok(Err(ErrSpec::new(code, "HY000", message)));
            }
            let rows = match self
                .rows_on(shard, &format!("SELECT * FROM {SCRATCH}"), seq)
                .await?
            {
                Ok((c, r)) => values_text(&c, &r, self.no_backslash_escapes),
                Err(e) => return Ok(Err(e)),
            };
            let Some(rows) = rows else {
                return Ok(Err(ErrSpec::new(
                    1105,
                    "HY000",
                    "Tandem: a row it cannot read",
                )));
            };
            for stmt in [
                format!("DELETE FROM {} WHERE {which}", p.table),
                format!("DROP TEMPORARY TABLE {SCRATCH}"),
            ] {
                if let Err(e) = self.run_on(shard, &stmt).await? {
                    return Ok(Err(e));
                }
            }
            self.wrote.insert(shard);
            new_rows.push(rows);
            updated.push(shard);
            answers.push(answer);
        }
        if !new_rows.is_empty() {
            let insert = format!(
                "INSERT INTO {} VALUES {}",
                p.table,
                new_rows
                    .iter()
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let (plan, to) = match self.plan_statement(insert.as_bytes(), true).await {
                Ok(x) => x,
                Err(e) => return Ok(Err(e)),
            };
            for &shard in &to {
                if let Err(e) = self.enter_step(shard).await? {
                    return Ok(Err(e));
                }
                let text = match self.text_for(shard, plan.text_for(shard, insert.as_bytes())) {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(e)),
                };
                let a = self.buffered(shard, &text).await?;
                if let Some((code, message)) = a.error {
                    return Ok(Err(ErrSpec::new(code, "HY000", message)));
                }
                self.wrote.insert(shard);
            }
        }
        if answers.is_empty() {
            // Nothing matched: one database's answer.
            let ok = crate::protocol::packets::ok_packet(0, 0, self.status(), 0);
            return Ok(Ok(ok));
        }
        let ok = self.summed_ok(&updated, &answers, &Merge::Write { last: None }, None);
        self.merged_count = crate::protocol::packets::parse_ok(&ok).map(|o| o.affected_rows);
        Ok(Ok(ok))
    }

    /// Enters `shard` (its connection and branch); a server's refusal is
    /// the client's error, a lost connection the session's.
    async fn enter_step(&mut self, shard: usize) -> Step<()> {
        match self.enter(shard).await {
            Ok(()) => Ok(Ok(())),
            Err(crate::backend::BackendError::Server { code, message }) => {
                Ok(Err(ErrSpec::new(code, "HY000", message)))
            }
            Err(e) => Err(SessionError::Backend(e)),
        }
    }

    /// `sql` for `shard` (the cluster's database name made the shard's).
    fn shard_text(&self, shard: usize, sql: &str) -> Result<Vec<u8>, ErrSpec> {
        self.text_for(shard, sql.as_bytes())
    }

    /// Runs one of the move's statements on `shard`.
    async fn run_on(&mut self, shard: usize, sql: &str) -> Step<()> {
        let text = match self.shard_text(shard, sql) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let a = self.buffered(shard, &text).await?;
        Ok(match a.error {
            Some((code, message)) => Err(ErrSpec::new(code, "HY000", message)),
            None => Ok(()),
        })
    }

    /// The rows `sql` reads on `shard` (column definitions and text rows).
    async fn rows_on(
        &mut self,
        shard: usize,
        sql: &str,
        seq: u8,
    ) -> Step<(Vec<Column>, Vec<Vec<u8>>)> {
        let text = match self.shard_text(shard, sql) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let max = self.merge_buffer();
        let merge = Merge::Concat {
            offset: 0,
            limit: None,
        };
        let answer = match self
            .read_kept(&[shard], vec![query_packet(&text)], &merge, seq, max)
            .await?
        {
            Kept::Rows(p) => p,
            Kept::TooLarge => {
                return Ok(Err(not_supported(format!(
                    "moving more rows than merge_buffer ({max} bytes) holds"
                ))))
            }
            Kept::Unreachable(why) => {
                return Ok(Err(ErrSpec::new(
                    2013,
                    "HY000",
                    format!("Tandem (cluster): {why}"),
                )))
            }
            // Only when the shard could not be entered, and it was.
            Kept::Answered => {
                return Err(SessionError::Backend(
                    crate::backend::BackendError::Unsupported("a move's read was answered".into()),
                ))
            }
        };
        if let Some(err) = answer.iter().find(|p| p.first() == Some(&0xFF)) {
            let code = crate::protocol::packets::err_code(err);
            let at = if err.get(3) == Some(&b'#') { 9 } else { 3 };
            let msg = String::from_utf8_lossy(err.get(at..).unwrap_or_default()).into_owned();
            return Ok(Err(ErrSpec::new(code, "HY000", msg)));
        }
        match self.kept_rows(&answer) {
            Some((c, r)) => Ok(Ok((c, r.to_vec()))),
            None => Ok(Err(ErrSpec::new(
                1105,
                "HY000",
                "Tandem: rows it cannot read",
            ))),
        }
    }
}
