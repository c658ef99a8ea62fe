//! Running one statement on a cluster: on one shard (its answer relayed
//! byte for byte), on every open shard (session state), on every shard
//! (DDL), or on several shards with their answers merged (reads) or
//! summed (writes, each shard's part in a transaction of its own unless
//! the client's transaction holds them).

use super::{not_supported, ClusterSession};
use crate::backend::BackendError;
use crate::frontend::session::link::query_packet;
use crate::frontend::session::relay::Relay;
use crate::frontend::session::SessionError;
use crate::protocol::drive::{drive, Buffer};
use crate::protocol::packets::{get_lenenc, parse_ok, put_lenenc};
use crate::protocol::response::Expect;
use crate::protocol::wire::write_frames;
use crate::protocol::ErrSpec;
use crate::router::lexer::{self, Renamed};
use crate::router::shard::ids;
use crate::router::shard::route::{self, Merge, Shards};
use mysql_common::constants::CapabilityFlags;
use std::sync::Arc;

/// One shard's whole answer to a write.
pub(super) struct Answer {
    pub(super) packet: Vec<u8>,
    pub(super) error: Option<(u16, String)>,
}

impl ClusterSession<'_> {
    /// Opens `shard`'s connection if needed and, inside a transaction,
    /// its branch.
    pub(super) async fn enter(&mut self, shard: usize) -> Result<(), BackendError> {
        let pools = self.shared.pools.load();
        let dbs = self.physical_dbs();
        self.shards.conn(&pools, &dbs, shard).await?;
        if self.in_txn() && !self.branches.contains(&shard) {
            self.open_branch(shard).await?;
        }
        Ok(())
    }

    /// `sql` as `shard` runs it: names qualified with the cluster's
    /// database name the shard's own.
    pub(super) fn text_for(&self, shard: usize, sql: &[u8]) -> Result<Vec<u8>, ErrSpec> {
        let cfg = self.shared.config.load();
        let (Some(cluster), Some(Some(db))) =
            (cfg.cluster(), self.physical_dbs().get(shard).cloned())
        else {
            return Ok(sql.to_vec());
        };
        if memchr::memmem::find(sql, cluster.database.as_bytes()).is_none() {
            return Ok(sql.to_vec());
        }
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        match lexer::rename_database(sql, &toks, &cluster.database, &db) {
            Renamed::Unchanged => Ok(sql.to_vec()),
            Renamed::Text(t) => Ok(t),
            Renamed::Ambiguous => Err(not_supported(format!(
                "`{}` qualifies a name here and also names a table, alias or column",
                cluster.database
            ))),
        }
    }

    /// Sends `payload` to `shard` and relays its answer.
    pub(super) async fn relay_one(
        &mut self,
        shard: usize,
        payload: &[u8],
        seq: u8,
        expect: Expect,
    ) -> Result<(), SessionError> {
        self.relay_with(shard, payload, seq, expect, None)
            .await
            .map(|_| ())
    }

    /// `relay_one`, giving the client `prepare_id` in a PREPARE_OK; the
    /// answer's summary (None: the client got an error of Tandem's).
    pub(super) async fn relay_with(
        &mut self,
        shard: usize,
        payload: &[u8],
        seq: u8,
        expect: Expect,
        prepare_id: Option<u32>,
    ) -> Result<Option<crate::protocol::response::Summary>, SessionError> {
        if let Err(e) = self.enter(shard).await {
            return self.backend_refused(seq, e).await.map(|_| None);
        }
        let deprecate_eof = self.deprecate_eof();
        self.shards.set_reusable(shard, false);
        let Some(conn) = self.shards.open(shard) else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let relay = Relay {
            client: &mut self.client,
            max_packet: self.max_packet,
            collector: None,
            prepare_id,
            more_results: false,
            deprecate_eof,
            last_seq: seq.wrapping_sub(1),
        };
        let (summary, _) = relay.command(&mut conn.wire, payload, seq, expect).await?;
        self.shards.set_reusable(shard, true);
        self.observe_shard(shard, started);
        if summary.error == Some(1213) {
            // A deadlock rolls back the whole transaction, as on one
            // database: every other branch too.
            self.abort_txn().await?;
        }
        if let Some(ok) = summary.last_ok {
            self.server_status = ok.status;
            self.no_backslash_escapes = ok.status
                & mysql_common::constants::StatusFlags::SERVER_STATUS_NO_BACKSLASH_ESCAPES.bits()
                != 0;
        }
        Ok(Some(summary))
    }

    /// Runs `sql` on `shard` (renamed for it) and relays the answer.
    pub(super) async fn relay_text(
        &mut self,
        shard: usize,
        sql: &[u8],
        seq: u8,
    ) -> Result<(), SessionError> {
        if let Some(names) = self.renaming(shard, sql) {
            return self.relay_renamed(shard, sql, names, seq).await;
        }
        match self.text_for(shard, sql) {
            Ok(t) => {
                self.relay_one(shard, &query_packet(&t), seq, Expect::ResultSet)
                    .await
            }
            Err(e) => self.reply_err(seq, &e).await,
        }
    }

    /// Runs a session statement on every open shard connection; the first
    /// shard's answer is the client's. `remember`: replay it on shard
    /// connections opened later.
    pub(super) async fn everywhere(
        &mut self,
        payload: &[u8],
        seq: u8,
        remember: bool,
    ) -> Result<(), SessionError> {
        for shard in self.shards.open_shards().into_iter().filter(|&s| s != 0) {
            if let Some(conn) = self.shards.open(shard) {
                if let Err(e) = conn.run(payload, Expect::ResultSet).await {
                    return self.backend_refused(seq, e).await;
                }
            }
        }
        self.relay_one(0, payload, seq, Expect::ResultSet).await?;
        if remember {
            self.shards
                .remember(crate::backend::shards::Prelude::Sql(payload[1..].to_vec()));
        }
        Ok(())
    }

    /// DDL: on every shard, after the open transaction commits (as DDL
    /// commits it). A partial failure names the shards.
    pub(super) async fn ddl(&mut self, sql: &[u8], seq: u8) -> Result<(), SessionError> {
        if let Some(e) = self.end_txn(b"COMMIT").await? {
            return self.reply_err(seq, &e).await;
        }
        self.fan_out(sql, seq, false).await.map(|_| ())
    }

    /// Runs DDL on every shard; the client gets the answer all gave, or an
    /// error naming where it failed. `temporary`: a temporary table's DDL
    /// (no implicit commit, the shared schema unchanged). Whether it was
    /// applied everywhere.
    pub(super) async fn fan_out(
        &mut self,
        sql: &[u8],
        seq: u8,
        temporary: bool,
    ) -> Result<bool, SessionError> {
        let n = self.shards.len();
        let mut answers = Vec::with_capacity(n);
        for shard in 0..n {
            let text = match self.text_for(shard, sql) {
                Ok(t) => t,
                Err(e) => return self.reply_err(seq, &e).await.map(|_| false),
            };
            if let Err(e) = self.enter(shard).await {
                return self.backend_refused(seq, e).await.map(|_| false);
            }
            answers.push(self.buffered(shard, &text).await?);
        }
        if !temporary {
            self.shared.shard_facts.store(Default::default());
            self.shared.sequences.forget().await;
            self.shared.drift_check.notify_one();
        }
        let failed: Vec<usize> = (0..n).filter(|&i| answers[i].error.is_some()).collect();
        if failed.is_empty() || failed.len() == n {
            let first = answers.swap_remove(0);
            let mut s = seq;
            write_frames(&mut self.client.wbuf, &mut s, &first.packet);
            self.client.flush().await?;
            return Ok(failed.is_empty());
        }
        let names = |v: &[usize]| {
            v.iter()
                .map(|&i| self.shards.name(i).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ok: Vec<usize> = (0..n).filter(|i| !failed.contains(i)).collect();
        let (code, msg) = answers[failed[0]].error.clone().unwrap_or_default();
        let e = ErrSpec::new(
            1105,
            "HY000",
            format!(
                "Tandem (cluster): the DDL failed on shard(s) {} (ERROR {code}: {msg}) and was \
                 applied on {}; the shards' schemas now differ",
                names(&failed),
                names(&ok)
            ),
        );
        self.reply_err(seq, &e).await.map(|_| false)
    }

    pub(super) fn observe_shard(&self, shard: usize, started: std::time::Instant) {
        self.shared
            .metrics
            .shard_latency
            .get_or_create(&crate::metrics::ShardLabel {
                shard: self.shards.name(shard).to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Runs `sql` on `shard` and keeps its whole answer.
    pub(super) async fn buffered(
        &mut self,
        shard: usize,
        sql: &[u8],
    ) -> Result<Answer, SessionError> {
        let deprecate_eof = self.deprecate_eof();
        self.shards.set_reusable(shard, false);
        let Some(conn) = self.shards.open(shard) else {
            return Err(SessionError::Backend(BackendError::Unsupported(
                "shard connection not open".into(),
            )));
        };
        let mut bseq = 0;
        conn.wire
            .send_packet(&mut bseq, &query_packet(sql))
            .await
            .map_err(|e| SessionError::Backend(e.into()))?;
        let started = std::time::Instant::now();
        let mut buffer = Buffer::new(1 << 26);
        let driven = drive(
            &mut conn.wire,
            Expect::ResultSet,
            deprecate_eof,
            1,
            &mut buffer,
        )
        .await?;
        self.shards.set_reusable(shard, true);
        self.observe_shard(shard, started);
        let packet = buffer.packets.pop().unwrap_or_default();
        Ok(Answer {
            error: driven
                .summary
                .error
                .map(|c| (c, driven.error_message.unwrap_or_default())),
            packet,
        })
    }

    /// What routing knows of the cluster's tables, read again when a
    /// table of the statement that has a rule is missing (new, or after
    /// DDL).
    pub(super) async fn facts(&self, sql: &[u8]) -> Result<Arc<crate::state::ShardFacts>, ErrSpec> {
        let facts = self.shared.shard_facts.load_full();
        let cfg = self.shared.config.load();
        let Some(cluster) = cfg.cluster() else {
            return Ok(facts);
        };
        if cluster.tables.keys().all(|t| facts.contains_key(t)) {
            // Every table with a rule is known: nothing to look up.
            return Ok(facts);
        }
        let named = crate::router::named_tables(sql).unwrap_or_default();
        let missing = named.iter().any(|t| {
            let t = t.rsplit('.').next().unwrap_or(t);
            cluster.tables.contains_key(t) && !facts.contains_key(t)
        });
        if !missing {
            return Ok(facts);
        }
        let b = cfg.primary_backend().clone();
        let opts = crate::backend::own_opts(&b).await;
        let read = async {
            let mut c = crate::backend::own_conn(opts).await?;
            let f = crate::schema::shard_facts(&mut c, cluster).await;
            let _ = c.disconnect().await;
            f
        };
        match read.await {
            Ok(f) => {
                let f = Arc::new(f);
                self.shared.shard_facts.store(f.clone());
                Ok(f)
            }
            Err(e) => Err(ErrSpec::new(
                1105,
                "HY000",
                format!("Tandem (cluster): cannot read the shards' schema: {e}"),
            )),
        }
    }

    /// A read or write of the cluster's tables: planned, then run where
    /// the plan says.
    /// The plan of `sql` on the cluster and its target shards, or the
    /// client's error (a refusal, a write to a second shard of the open
    /// transaction).
    pub(super) async fn plan_statement(
        &mut self,
        sql: &[u8],
        is_write: bool,
    ) -> Result<(route::ShardPlan, Vec<usize>), ErrSpec> {
        let cfg = self.shared.config.load_full();
        let Some(cluster) = cfg.cluster() else {
            return Err(not_supported("the primary is no longer a cluster"));
        };
        let cluster = &*self.with_temp(cluster);
        let facts = self.facts(sql).await?;
        let tz = self.time_zone(&facts).await?;
        lexer::tokenize(sql, &mut self.scratch.tokens);
        let plan = route::plan_in_zone(
            sql,
            &self.scratch.tokens,
            cluster,
            &|t: &str| facts.get(t).cloned(),
            tz,
        )
        .map_err(|route::Refusal(why)| not_supported(why))?;
        if is_write && !plan.write {
            return Err(not_supported("a write Tandem cannot route"));
        }
        let targets = match &plan.shards {
            Shards::Any => vec![self.last_shard],
            Shards::Set(s) => s.clone(),
        };
        self.count_route(&plan.shards, targets.len(), cluster.shards.len());
        if plan.write {
            self.may_write(&targets)?;
        }
        self.last_shard = targets[0];
        Ok((plan, targets))
    }

    /// Counts a statement's route: one shard, any, several or all.
    pub(super) fn count_route(&self, shards: &Shards, targets: usize, of: usize) {
        let route = match (shards, targets) {
            (Shards::Any, _) => "any",
            (_, 1) => "one",
            (_, n) if n == of => "all",
            _ => "several",
        };
        self.shared
            .metrics
            .shard_routes
            .get_or_create(&crate::metrics::RouteLabel { route })
            .inc();
    }

    /// An INSERT's rows that leave the AUTO_INCREMENT column to the server
    /// get ids from the table's global sequence, written into the text
    /// (and explicit ids raise it): the new text and the first id given.
    async fn assign_ids(&mut self, sql: &[u8]) -> Result<Option<(Vec<u8>, Option<u64>)>, ErrSpec> {
        let Some(toks) = insert_tokens(sql) else {
            return Ok(None);
        };
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let facts = self.facts(sql).await?;
        let Some(need) = ids::id_need(sql, &cluster, &|t: &str| facts.get(t).cloned()) else {
            return Ok(None);
        };
        let n = need.generated.len() as u64;
        let cfg = self.shared.config.load_full();
        let first = self
            .shared
            .sequences
            .take(&cfg, &need.table, &need.column, n, need.explicit_max)
            .await
            .map_err(|e| ErrSpec::new(1105, "HY000", e))?;
        let ids: Vec<u64> = first.map_or_else(Vec::new, |f| (f..f + n).collect());
        let text = ids::with_ids(sql, &toks, &need, &ids)
            .ok_or_else(|| not_supported("an INSERT whose ids Tandem cannot write in"))?;
        Ok(Some((text, first)))
    }

    pub(super) async fn routed(
        &mut self,
        sql: &[u8],
        is_write: bool,
        seq: u8,
    ) -> Result<(), SessionError> {
        let (rewritten, from_select, pinned);
        let mut sql = sql;
        let mut generated = None;
        if is_write {
            match self.insert_values(sql, seq).await? {
                Some(Some(text)) => {
                    from_select = text;
                    sql = &from_select;
                }
                Some(None) => return Ok(()),
                None => {}
            }
            if let Some(text) = self.pin_key_default(sql, seq).await? {
                pinned = text;
                sql = &pinned;
            }
            match self.assign_ids(sql).await {
                Ok(Some((text, first))) => {
                    rewritten = text;
                    sql = &rewritten;
                    generated = first;
                }
                Ok(None) => {}
                Err(e) => return self.reply_err(seq, &e).await,
            }
        }
        let (plan, targets) = match self.plan_statement(sql, is_write).await {
            Ok(p) => p,
            Err(e) => return self.reply_err(seq, &e).await,
        };
        if plan.merge == Merge::KeyMove {
            return self.move_rows(sql, &targets, seq).await;
        }
        if let ([shard], None) = (targets.as_slice(), generated) {
            let shard = *shard;
            self.relay_text(shard, plan.text_for(shard, sql), seq)
                .await?;
            if plan.write && self.in_txn() {
                self.wrote.insert(shard);
            }
            return Ok(());
        }
        let mut texts = Vec::with_capacity(targets.len());
        for &t in &targets {
            match self.text_for(t, plan.text_for(t, sql)) {
                Ok(x) => texts.push(x),
                Err(e) => return self.reply_err(seq, &e).await,
            }
        }
        if plan.write {
            self.write_many(&targets, &texts, &plan.merge, seq, generated)
                .await
        } else {
            let packets = texts.iter().map(|t| query_packet(t)).collect();
            self.read_many(&targets, packets, &plan.merge, seq, false, None)
                .await
        }
    }

    /// A write on several shards. Outside a transaction its parts run as
    /// one transaction across those shards (atomic under `xa`), committed
    /// only when every part succeeded; otherwise all roll back and the
    /// failing shard's error is the client's.
    async fn write_many(
        &mut self,
        targets: &[usize],
        texts: &[Vec<u8>],
        merge: &Merge,
        seq: u8,
        generated: Option<u64>,
    ) -> Result<(), SessionError> {
        let wrap = !self.in_txn() && targets.len() > 1;
        if wrap {
            self.explicit_txn = true;
            self.begin_sql = b"BEGIN".to_vec();
        }
        let mut answers = Vec::with_capacity(targets.len());
        let mut refused = None;
        for (&t, text) in targets.iter().zip(texts) {
            if let Err(e) = self.enter(t).await {
                refused = Some(e);
                break;
            }
            answers.push(self.buffered(t, text).await?);
        }
        let failed = answers.iter().position(|a| a.error.is_some());
        if self.in_txn() {
            self.wrote.extend(targets.iter().copied());
        }
        if wrap {
            let verb: &[u8] = if failed.is_some() || refused.is_some() {
                b"ROLLBACK"
            } else {
                b"COMMIT"
            };
            let ended = self.end_txn(verb).await?;
            if let Some(e) = refused {
                return self.backend_refused(seq, e).await;
            }
            if let (None, Some(e)) = (failed, ended) {
                return self.reply_err(seq, &e).await;
            }
        } else if let Some(e) = refused {
            return self.backend_refused(seq, e).await;
        }
        if let Some(i) = failed {
            if answers[i].error.as_ref().is_some_and(|(c, _)| *c == 1213) {
                // A deadlock rolls back the whole transaction.
                self.abort_txn().await?;
            }
        }
        let packet = match failed {
            Some(i) => answers.swap_remove(i).packet,
            None => {
                let ok = self.summed_ok(targets, &answers, merge, generated);
                self.merged_count = parse_ok(&ok).map(|o| o.affected_rows);
                if generated.is_some() {
                    self.last_insert_id = generated;
                }
                ok
            }
        };
        let mut s = seq;
        write_frames(&mut self.client.wbuf, &mut s, &packet);
        self.client.flush().await?;
        Ok(())
    }

    /// The OK one database would have sent for the shards' OKs: affected
    /// rows and warnings summed, the numbers of the info text summed, the
    /// insert id of the shard that got the statement's last row.
    pub(super) fn summed_ok(
        &self,
        targets: &[usize],
        answers: &[Answer],
        merge: &Merge,
        generated: Option<u64>,
    ) -> Vec<u8> {
        let track = self.caps.contains(CapabilityFlags::CLIENT_SESSION_TRACK);
        let oks: Vec<_> = answers
            .iter()
            .map(|a| {
                (
                    parse_ok(&a.packet).unwrap_or_default(),
                    ok_info(&a.packet, track),
                )
            })
            .collect();
        let (affected, insert_id, warnings, info) = match merge {
            Merge::Same => {
                let (o, info) = oks[0].clone();
                (o.affected_rows, o.last_insert_id, o.warnings, info)
            }
            _ => {
                let last = match merge {
                    Merge::Write { last: Some(l) } => targets.iter().position(|t| t == l),
                    _ => None,
                };
                let insert_id = last
                    .map(|i| oks[i].0.last_insert_id)
                    .unwrap_or_else(|| oks.iter().map(|o| o.0.last_insert_id).max().unwrap_or(0));
                let infos: Vec<&str> = oks.iter().map(|o| o.1.as_str()).collect();
                (
                    oks.iter().map(|o| o.0.affected_rows).sum(),
                    insert_id,
                    oks.iter()
                        .map(|o| o.0.warnings)
                        .fold(0u16, |a, b| a.saturating_add(b)),
                    sum_info(&infos),
                )
            }
        };
        // Ids the sequence gave: the first, as the server reports the
        // first id it generates.
        let insert_id = generated.unwrap_or(insert_id);
        let mut p = vec![0x00];
        put_lenenc(&mut p, affected);
        put_lenenc(&mut p, insert_id);
        p.extend_from_slice(&self.status().bits().to_le_bytes());
        p.extend_from_slice(&warnings.to_le_bytes());
        if !info.is_empty() {
            if track {
                put_lenenc(&mut p, info.len() as u64);
            }
            p.extend_from_slice(info.as_bytes());
        }
        p
    }
}

/// The info text of an OK packet (`Rows matched: 1  Changed: 1  Warnings: 0`).
fn ok_info(p: &[u8], track: bool) -> String {
    let mut at = 1;
    for _ in 0..2 {
        match p.get(at..).and_then(get_lenenc) {
            Some((_, n)) => at += n,
            None => return String::new(),
        }
    }
    at += 4;
    let Some(rest) = p.get(at..) else {
        return String::new();
    };
    if track {
        match get_lenenc(rest) {
            Some((n, used)) => rest
                .get(used..used + n as usize)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
            None => String::new(),
        }
    } else {
        String::from_utf8_lossy(rest).into_owned()
    }
}

/// The tokens of an INSERT or REPLACE statement (None: another one).
pub(super) fn insert_tokens(sql: &[u8]) -> Option<Vec<lexer::Token>> {
    let mut toks = Vec::new();
    lexer::tokenize(sql, &mut toks);
    toks.first()
        .is_some_and(|t| t.is_word(sql, "INSERT") || t.is_word(sql, "REPLACE"))
        .then_some(toks)
}

/// Info texts of the same shape with their numbers summed; otherwise the
/// first text.
fn sum_info(infos: &[&str]) -> String {
    let split = |s: &str| -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, t)) if *d == digit => t.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    };
    let Some(first) = infos.first() else {
        return String::new();
    };
    let mut parts = split(first);
    for other in &infos[1..] {
        let o = split(other);
        let same = o.len() == parts.len()
            && o.iter()
                .zip(&parts)
                .all(|(a, b)| a.0 == b.0 && (a.0 || a.1 == b.1));
        if !same {
            return first.to_string();
        }
        for (p, q) in parts.iter_mut().zip(o) {
            if p.0 {
                let sum = p.1.parse::<u64>().unwrap_or(0) + q.1.parse::<u64>().unwrap_or(0);
                p.1 = sum.to_string();
            }
        }
    }
    parts.into_iter().map(|p| p.1).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_numbers_are_summed_when_the_texts_agree() {
        assert_eq!(
            super::sum_info(&[
                "Rows matched: 2  Changed: 1  Warnings: 0",
                "Rows matched: 3  Changed: 3  Warnings: 1"
            ]),
            "Rows matched: 5  Changed: 4  Warnings: 1"
        );
        assert_eq!(super::sum_info(&["Records: 2", "other 1"]), "Records: 2");
    }
}
