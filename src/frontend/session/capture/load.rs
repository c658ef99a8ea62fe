//! `LOAD DATA LOCAL INFILE` while mirroring. The file lives on the client:
//! the secondary cannot read it, and the statement alone does not say
//! what it wrote. So Tandem asks the client for the file itself (up to
//! `MAX_FILE`), loads it on the primary into a temporary staging table
//! shaped like the target (its AUTO_INCREMENT column made a nullable
//! number, so rows that leave it out get their ids from the target), reads
//! the staged rows back and runs them as `INSERT [IGNORE] | REPLACE INTO t
//! (columns) VALUES …` through the ordinary mirrored write. The values the
//! server parsed from the file (column lists, SET expressions, defaults,
//! conversions and their warnings) are the ones both sides write; the
//! client's answer is that INSERT's (its row count; LOAD's info text says
//! `Records:`/`Duplicates:` as an INSERT's does).
//!
//! Not taken here (the unsafe-write path answers): LOAD DATA without
//! LOCAL (the file is on the server's disk), under LOCK TABLES, and into a
//! table with generated columns unless a column list leaves them out (the
//! staged copy would carry values the target computes).

use super::super::link::{query_packet, Link};
use super::super::load_stmt;
use super::super::SessionError;
use super::staged::Staged;
use super::Capture;
use crate::mirror::runtime::Mirror;
use crate::protocol::ErrSpec;
use crate::router::{lexer, Route};
use mysql_common::constants::CapabilityFlags;
use std::sync::Arc;

/// The largest file mirrored this way (it is held in memory, and its rows
/// are journaled as one INSERT).
pub(super) const MAX_FILE: usize = 64 << 20;

impl Capture {
    /// Handles a LOAD DATA LOCAL INFILE; Ok(false): not one this takes
    /// (the caller refuses it as an unsafe write).
    pub(super) async fn load_data(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        sql: &[u8],
        seq: u8,
    ) -> Result<bool, SessionError> {
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        let Some(load) = load_stmt::parse(sql, &toks) else {
            return Ok(false);
        };
        if !load.local || cx.table_locks {
            return Ok(false);
        }
        let target = String::from_utf8_lossy(&sql[load.name.0..load.name.1]).into_owned();
        let db = match target.split_once('.') {
            Some(_) => toks
                .iter()
                .find(|t| t.start == load.name.0)
                .and_then(|t| t.ident(sql)),
            None => cx.binding.conn().current_db.clone(),
        };
        let Some(db) = db else {
            return Ok(false);
        };
        // The target's columns; generated ones are computed by the target.
        let Some(columns) = self.target_columns(cx, &db, &load.table).await? else {
            return Ok(false);
        };
        let all: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
        let names = load.given(&all);
        // A generated column the LOAD fills (without a column list, every
        // column) would come back from staging as a value.
        let generated = columns
            .iter()
            .any(|(c, g)| *g && (load.columns.is_none() || names.contains(c)));
        if names.is_empty() || generated {
            return Ok(false);
        }
        if !cx.caps.contains(CapabilityFlags::CLIENT_LOCAL_FILES) {
            cx.reply_err(seq, &load_stmt::no_local_files()).await?;
            return Ok(true);
        }
        let (file, reply_seq) =
            load_stmt::client_file(&mut cx.client, seq, &load.file, cx.max_packet, MAX_FILE)
                .await?;
        let Some(file) = file else {
            let e = ErrSpec::new(
                1105,
                "HY000",
                format!(
                    "Tandem: a LOAD DATA LOCAL file larger than {} MiB is not mirrored; split it",
                    MAX_FILE >> 20
                ),
            );
            cx.reply_err(reply_seq, &e).await?;
            return Ok(true);
        };
        let one = Route {
            tables: vec![format!("{db}.{}", load.table)],
            ..route.clone()
        };
        let auto = self.table_facts(cx, m, &one).await?.auto_increment;
        let setup = load_stmt::staging_setup(&target, auto.as_deref());
        let packets: Vec<Vec<u8>> = setup.iter().map(|q| query_packet(q.as_bytes())).collect();
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let replies = self.own_reads(cx, &refs).await?;
        if let Some(bad) = replies.iter().find(|r| r.err.is_some()) {
            let e = error_of(bad.packets.last().map(Vec::as_slice));
            self.drop_staging(cx).await?;
            cx.reply_err(reply_seq, &e).await?;
            return Ok(true);
        }
        // The client's LOAD, into the staging table, its file request
        // answered from memory.
        let text = load_stmt::into_staging(sql, &load);
        let answer = load_stmt::run_with_file(&mut cx.binding.conn().wire, &text, &file).await?;
        drop(file);
        if answer.first() == Some(&0xFF) {
            self.drop_staging(cx).await?;
            cx.reply_err(reply_seq, &error_of(Some(&answer))).await?;
            return Ok(true);
        }
        let values = match self.take_staged(cx, &names, None).await? {
            Staged::Values(v) => v,
            Staged::Empty => {
                cx.reply_ok(reply_seq).await?;
                return Ok(true);
            }
            Staged::Unreadable => {
                let e = ErrSpec::new(
                    1105,
                    "HY000",
                    "Tandem: the staged LOAD DATA rows could not be read back",
                );
                cx.reply_err(reply_seq, &e).await?;
                return Ok(true);
            }
        };
        let mut insert = load_stmt::insert_head(&load, &target, &names);
        insert.extend_from_slice(&values);
        let plan = cx.shared.router.plan(&insert, &mut cx.scratch);
        let Some(route) = plan.classified.statements.first().cloned() else {
            return Ok(false);
        };
        self.mirrored_write(cx, m, &route, super::WriteSrc::Query(&insert), reply_seq)
            .await?;
        Ok(true)
    }

    pub(super) async fn drop_staging(&mut self, cx: &mut Link<'_>) -> Result<(), SessionError> {
        let text = load_stmt::staging_drop();
        self.own_read(cx, text.as_bytes()).await.map(|_| ())
    }
}

/// The server's error packet as the client's error.
fn error_of(packet: Option<&[u8]>) -> ErrSpec {
    match packet {
        Some(p) if p.first() == Some(&0xFF) => load_stmt::server_error(p),
        _ => ErrSpec::new(1105, "HY000", "Tandem: the LOAD DATA staging table failed"),
    }
}
