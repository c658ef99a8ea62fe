//! LOAD DATA LOCAL INFILE on a cluster. The server parses the file, as it
//! would on one database: Tandem asks the client for the file (up to the
//! cluster's `merge_buffer`), loads it on one shard into a temporary
//! staging table shaped like the target (its AUTO_INCREMENT column made a
//! nullable number, so rows that leave it out get global ids), reads the
//! staged rows back and writes them as INSERT … VALUES (IGNORE or REPLACE
//! as the LOAD says): each row is placed by its shard key, one statement
//! per shard, all committed or none. The client's answer is that INSERT's.

use super::insert_select::values_text;
use super::read::Kept;
use super::{not_supported, ClusterSession};
use crate::frontend::session::link::query_packet;
use crate::frontend::session::load_stmt::{self, client_file, parse};
use crate::frontend::session::SessionError;
use crate::protocol::wire::write_frames;
use crate::protocol::ErrSpec;
use crate::router::lexer;
use crate::router::shard::route::Merge;
use crate::sql::quote;

impl ClusterSession<'_> {
    pub(super) async fn load_data(&mut self, sql: &[u8], seq: u8) -> Result<(), SessionError> {
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        let Some(load) = parse(sql, &toks) else {
            return self
                .reply_err(seq, &not_supported("this LOAD DATA on a cluster"))
                .await;
        };
        if !load.local {
            return self
                .reply_err(
                    seq,
                    &not_supported(
                        "LOAD DATA INFILE without LOCAL on a cluster (the file would be read on \
                         one shard's server); use LOAD DATA LOCAL INFILE",
                    ),
                )
                .await;
        }
        let cfg = self.shared.config.load_full();
        let Some(cluster) = cfg.cluster() else {
            return Ok(());
        };
        if !cluster.tables.contains_key(&load.table) {
            let e = not_supported(format!(
                "table `{}` has no rule on cluster {}",
                load.table, cluster.name
            ));
            return self.reply_err(seq, &e).await;
        }
        let max = cluster.merge_buffer as usize;
        if !self
            .caps
            .contains(mysql_common::constants::CapabilityFlags::CLIENT_LOCAL_FILES)
        {
            return self.reply_err(seq, &load_stmt::no_local_files()).await;
        }
        // The file, from the client.
        let (file, reply_seq) =
            client_file(&mut self.client, seq, &load.file, self.max_packet, max).await?;
        let Some(file) = file else {
            let e = not_supported(format!(
                "a LOAD DATA file larger than merge_buffer ({max} bytes)"
            ));
            return self.reply_err(reply_seq, &e).await;
        };
        let shard = self.last_shard;
        if let Err(e) = self.enter(shard).await {
            return self.backend_refused(reply_seq, e).await;
        }
        let named = format!("SELECT * FROM {}", quote(&load.table));
        let facts = match self.facts(named.as_bytes()).await {
            Ok(f) => f,
            Err(e) => return self.reply_err(reply_seq, &e).await,
        };
        let Some(table_facts) = facts.get(&load.table).cloned() else {
            let e = not_supported(format!("table `{}`: not found on the shards", load.table));
            return self.reply_err(reply_seq, &e).await;
        };
        let target = quote(&load.table);
        let setup = load_stmt::staging_setup(&target, table_facts.auto_increment.as_deref());
        for stmt in &setup {
            let text = self.text_for(shard, stmt.as_bytes()).unwrap_or_default();
            if let Some(e) = self.quiet(shard, &text).await? {
                return self.reply_err(reply_seq, &e).await;
            }
        }
        // The LOAD into the staging table, its file request answered.
        let text = load_stmt::into_staging(sql, &load);
        let text = match self.text_for(shard, &text) {
            Ok(t) => t,
            Err(e) => return self.reply_err(reply_seq, &e).await,
        };
        let loaded = self.load_on(shard, &text, &file).await?;
        drop(file);
        if loaded.first() == Some(&0xFF) {
            self.drop_staging(shard).await?;
            let mut s = reply_seq;
            write_frames(&mut self.client.wbuf, &mut s, &loaded);
            self.client.flush().await?;
            return Ok(());
        }
        // The staged rows, back.
        let merge = Merge::Concat {
            offset: 0,
            limit: None,
        };
        let names = &load.given(&table_facts.columns);
        let select = query_packet(load_stmt::select_staged(names, None).as_bytes());
        let mut answer = self
            .read_kept(&[shard], vec![select], &merge, reply_seq, max)
            .await?;
        let again = match &answer {
            Kept::Rows(p) => self
                .kept_rows(p)
                .filter(|(c, _)| load_stmt::reread(c))
                .map(|(c, _)| load_stmt::select_staged(names, Some(&c))),
            _ => None,
        };
        if let Some(exact) = again {
            let select = query_packet(exact.as_bytes());
            answer = self
                .read_kept(&[shard], vec![select], &merge, reply_seq, max)
                .await?;
        }
        self.drop_staging(shard).await?;
        let packets = match answer {
            Kept::Rows(p) => p,
            Kept::Answered => return Ok(()),
            Kept::Unreachable(why) => {
                let e = ErrSpec::new(2013, "HY000", format!("Tandem (cluster): {why}"));
                return self.reply_err(reply_seq, &e).await;
            }
            Kept::TooLarge => {
                let e = not_supported(format!(
                    "a LOAD DATA whose rows are more than merge_buffer ({max} bytes)"
                ));
                return self.reply_err(reply_seq, &e).await;
            }
        };
        let Some((columns, rows)) = self
            .kept_rows(&packets)
            .filter(|(c, _)| c.len() == names.len())
        else {
            let e = not_supported("a LOAD DATA whose staged rows Tandem cannot read");
            return self.reply_err(reply_seq, &e).await;
        };
        if rows.is_empty() {
            return self.reply_ok(reply_seq).await;
        }
        let Some(values) = values_text(&columns, rows, self.no_backslash_escapes) else {
            let e = ErrSpec::new(1105, "HY000", "Tandem: a staged row it cannot read");
            return self.reply_err(reply_seq, &e).await;
        };
        let mut insert = load_stmt::insert_head(&load, &target, names);
        insert.extend_from_slice(&values);
        self.routed(&insert, true, reply_seq).await
    }

    /// Runs a statement on `shard` whose answer the client does not get;
    /// its error, if any.
    async fn quiet(&mut self, shard: usize, sql: &[u8]) -> Result<Option<ErrSpec>, SessionError> {
        let merge = Merge::Concat {
            offset: 0,
            limit: None,
        };
        match self
            .read_kept(&[shard], vec![query_packet(sql)], &merge, 0, 1 << 20)
            .await?
        {
            Kept::Rows(p) => Ok(p
                .first()
                .filter(|p| p.first() == Some(&0xFF))
                .map(|p| load_stmt::server_error(p))),
            _ => Ok(Some(not_supported("the LOAD DATA staging table"))),
        }
    }

    async fn drop_staging(&mut self, shard: usize) -> Result<(), SessionError> {
        let text = load_stmt::staging_drop();
        self.quiet(shard, text.as_bytes()).await.map(|_| ())
    }

    /// Runs a LOAD DATA LOCAL on `shard`, sending `file` when it asks for
    /// it; its final answer (OK or ERR).
    async fn load_on(
        &mut self,
        shard: usize,
        sql: &[u8],
        file: &[u8],
    ) -> Result<Vec<u8>, SessionError> {
        self.shards.set_reusable(shard, false);
        let Some(conn) = self.shards.open(shard) else {
            return Ok(not_supported("the shard connection").encode());
        };
        let last = load_stmt::run_with_file(&mut conn.wire, sql, file).await?;
        self.shards.set_reusable(shard, true);
        Ok(last)
    }
}
