//! The coordinator: reads the journal in LSN order, pairs intents with their
//! outcomes and hands committed transactions to the workers by write-set;
//! and the secondary's schema facts the write-sets need.

use super::*;

/// Schema facts of the secondary's tables, read on a connection of its own
/// and kept until DDL is applied.
#[derive(Default)]
pub(super) struct Schema {
    pub(super) conn: Option<Conn>,
    pub(super) tables: HashMap<(String, String), TableInfo>,
}

impl Schema {
    /// None when the secondary could not be asked (asked again later:
    /// nothing can be applied meanwhile anyway).
    pub(super) async fn info(
        &mut self,
        b: &BackendConfig,
        db: &str,
        table: &str,
        timeout: Duration,
    ) -> Option<TableInfo> {
        let key = (db.to_string(), table.to_string());
        if let Some(i) = self.tables.get(&key) {
            return Some(i.clone());
        }
        let r = match tokio::time::timeout(timeout, self.lookup(b, db, table)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        match r {
            Ok(info) => {
                self.tables.insert(key, info.clone());
                Some(info)
            }
            Err(e) => {
                warn!(error = %e, db, table, "secondary schema lookup failed; retrying");
                self.conn = None;
                None
            }
        }
    }

    pub(super) async fn lookup(
        &mut self,
        b: &BackendConfig,
        db: &str,
        table: &str,
    ) -> Result<TableInfo, mysql_async::Error> {
        if self.conn.is_none() {
            self.conn = Some(crate::backend::own_conn(crate::backend::own_opts(b).await).await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let lit = |s: &str| crate::sql::sql_literal(s.as_bytes());
        let (d, t) = (lit(db), lit(table));
        // Every subquery names the schema as a constant, so
        // information_schema opens one table or one database's tables,
        // never every table of the server (foreign keys from another
        // database into this table are not seen).
        let sql = format!(
            "SELECT \
               (SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t}), \
               (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = {d} AND EVENT_OBJECT_TABLE = {t}), \
               (SELECT COUNT(*) FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = {d} AND REFERENCED_TABLE_NAME IS NOT NULL \
                  AND (TABLE_NAME = {t} OR (REFERENCED_TABLE_SCHEMA = {d} AND REFERENCED_TABLE_NAME = {t}))), \
               (SELECT GROUP_CONCAT(CONCAT(INDEX_NAME, '/', COLUMN_NAME) SEPARATOR '\\n') FROM information_schema.STATISTICS \
                  WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} AND NON_UNIQUE = 0), \
               (SELECT GROUP_CONCAT(DATA_TYPE) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} AND COLUMN_KEY = 'PRI')"
        );
        type Row = (Option<String>, u64, u64, Option<String>, Option<String>);
        let row: Option<Row> = conn.query_first(sql).await?;
        let Some((kind, triggers, fks, unique, pk_type)) = row else {
            return Ok(TableInfo::Barrier);
        };
        if kind.as_deref() != Some("BASE TABLE") || triggers > 0 || fks > 0 {
            return Ok(TableInfo::Barrier);
        }
        let unique: Vec<(&str, &str)> = unique
            .as_deref()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('/'))
            .collect();
        let integer = matches!(
            pk_type.as_deref().map(str::to_ascii_lowercase).as_deref(),
            Some("tinyint" | "smallint" | "mediumint" | "int" | "bigint")
        );
        Ok(match unique.as_slice() {
            [("PRIMARY", col)] if integer => TableInfo::Rows {
                pk: col.to_ascii_lowercase(),
            },
            _ => TableInfo::Whole,
        })
    }
}

/// Reads the journal, resolves outcomes and hands transactions to workers.
pub(super) struct Coordinator {
    pub(super) cfg: Arc<ApplierConfig>,
    pub(super) journal: JournalHandle,
    pub(super) stats: Arc<ApplierStats>,
    pub(super) visible: tokio::sync::watch::Receiver<Lsn>,
    pub(super) jobs: Vec<mpsc::UnboundedSender<Job>>,
    pub(super) done: mpsc::UnboundedReceiver<Finished>,
    /// Intents read, not yet handed out, by LSN (Err: undecodable).
    pub(super) pending: BTreeMap<Lsn, Result<MirrorTxn, String>>,
    pub(super) outcomes: HashMap<Lsn, bool>,
    /// Outcomes settled in memory for intents not read yet.
    pub(super) early: HashMap<Lsn, (bool, i64)>,
    /// Intents above the stored position that are already applied.
    pub(super) applied: HashSet<Lsn>,
    pub(super) inflight: InFlight,
    /// Per worker: handed out, waiting for the worker to be free.
    pub(super) queued: Vec<VecDeque<(Lsn, MirrorTxn, WriteSet)>>,
    /// Per worker: when its oldest queued transaction was handed to it.
    pub(super) since: Vec<Option<Instant>>,
    /// Per worker: the job it is applying.
    pub(super) running: Vec<Option<Vec<(Lsn, WriteSet)>>>,
    /// A job that must run alone (DDL, dead letter) is running.
    pub(super) exclusive: bool,
    /// Resolved intents that wait for a worker, in LSN order, and their
    /// write-sets (later intents that overlap them wait too).
    pub(super) blocked: VecDeque<(Lsn, MirrorTxn, WriteSet)>,
    pub(super) waiting: InFlight,
    pub(super) read_to: Lsn,
    /// Highest position stored on the secondary.
    pub(super) stored: Lsn,
    pub(super) truncated: Lsn,
    pub(super) truncated_at: Instant,
    pub(super) cleaned: Lsn,
    pub(super) first_after_start: bool,
    pub(super) schema: Schema,
    /// The head waits for a schema lookup to be retried.
    pub(super) schema_retry: bool,
    pub(super) toks: Vec<crate::router::lexer::Token>,
    /// Tables (ids) with a DDL handed out and not finished, and how many:
    /// transactions on them take the whole table in their write-set (the
    /// schema facts of it are stale until the DDL is applied).
    pub(super) ddl_tables: HashMap<u64, usize>,
    /// DDL handed out as a barrier for its tables only, by LSN.
    pub(super) table_ddl: HashMap<Lsn, Vec<u64>>,
    /// The last LSN visible when this applier started: a DDL at or below
    /// it may have been applied by the previous process just before its
    /// position was stored (its replay's "already done" error is taken as
    /// done, as for the first job after a start).
    pub(super) start_end: Lsn,
    /// Effect intents (writes to tables without transactions, see
    /// `mirror::effect`) read and not handed out, with the error their
    /// statement ended in on the primary once their answer is read.
    pub(super) effects: HashMap<Lsn, Option<u16>>,
}

impl Coordinator {
    pub(super) async fn run(&mut self, stop: &CancellationToken) -> Result<(), ApplierError> {
        // One tailing reader for the whole run (reopening would rescan the
        // segment from its start every time).
        let mut reader: Option<Reader> = None;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let target = *self.visible.borrow_and_update();
            let mut stalled = false;
            if target > self.read_to {
                let before = self.read_to;
                let r = match reader.as_mut() {
                    Some(r) => r,
                    None => reader.insert(Reader::open(&self.cfg.journal_dir, self.read_to + 1)?),
                };
                self.read(r, target)?;
                stalled = self.read_to == before;
            }
            for (lsn, committed, at_us) in self.stats.take_settled() {
                self.resolve(lsn, committed, at_us);
            }
            // Appends the journal answered with an error: their callers
            // went on without them.
            for lsn in self.journal.take_void() {
                self.resolve(lsn, false, 0);
            }
            while let Ok((w, r)) = self.done.try_recv() {
                self.finished(w, r)?;
            }
            self.schema_retry = false;
            self.dispatch().await?;
            self.publish().await;
            if self.read_to < *self.visible.borrow() && !stalled {
                continue;
            }
            let start_at = self.next_start();
            let stats = self.stats.clone();
            tokio::select! {
                r = self.visible.changed() => if r.is_err() { return Ok(()) },
                _ = stats.settled_ready.notified() => {}
                d = self.done.recv() => match d {
                    Some((w, r)) => self.finished(w, r)?,
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(start_at.unwrap_or_else(Instant::now).into()), if start_at.is_some() => {}
                _ = stats.hurry.notified(), if start_at.is_some() => {}
                // Written but not readable yet (should not happen): do not spin.
                _ = tokio::time::sleep(Duration::from_millis(5)), if stalled => {}
                _ = tokio::time::sleep(Duration::from_millis(200)), if self.schema_retry => {}
                // A truncation held back by TRUNCATE_EVERY still happens
                // when nothing else wakes the loop (a full disk waits
                // for exactly that).
                _ = tokio::time::sleep(TRUNCATE_EVERY), if self.stored > self.truncated => {}
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Reads records up to `target` (never past it: beyond, the writer may
    /// be mid-write into zero-filled space).
    pub(super) fn read(&mut self, r: &mut Reader, target: Lsn) -> Result<(), ApplierError> {
        r.drop_buffer()?;
        while self.read_to < target {
            let Some((lsn, bytes)) = r.next_record()? else {
                break;
            };
            self.read_to = lsn;
            match JournalRecord::decode(&bytes) {
                Ok(JournalRecord::Intent { token, txn }) => {
                    let early = self.early.remove(&lsn);
                    if self.applied.remove(&lsn) {
                        // Applied before the restart (parallel apply).
                        continue;
                    }
                    if crate::mirror::effect::is_effect_token(token) {
                        self.effects.insert(lsn, None);
                    }
                    self.pending.insert(lsn, Ok(txn));
                    if token == 0 {
                        self.outcomes.insert(lsn, true);
                    }
                    if let Some((committed, at_us)) = early {
                        self.resolve(lsn, committed, at_us);
                    }
                }
                Ok(JournalRecord::Outcome {
                    intent,
                    committed,
                    at_us,
                }) => self.resolve(intent, committed, at_us),
                Ok(JournalRecord::Effect {
                    intent,
                    insert_id,
                    error,
                    at_us,
                }) => {
                    // The id the primary generated is known only now.
                    if let (Some(id), Some(Ok(txn))) = (insert_id, self.pending.get_mut(&intent)) {
                        if let Some(st) = txn.statements.last_mut() {
                            st.pins.insert_id = Some(id);
                        }
                    }
                    if let Some(e) = self.effects.get_mut(&intent) {
                        *e = error;
                    }
                    self.resolve(intent, true, at_us);
                }
                Err(e) => {
                    // Dead-lettered in its place in the order.
                    self.early.remove(&lsn);
                    self.pending.insert(lsn, Err(e.to_string()));
                    self.outcomes.insert(lsn, true);
                }
            }
        }
        Ok(())
    }

    /// An intent's outcome, from its journal record or settled in memory
    /// (which comes first varies). One for an intent not read yet waits in
    /// `early`; one for an intent already handed out or skipped (the other
    /// copy of the same outcome) is ignored.
    pub(super) fn resolve(&mut self, lsn: Lsn, committed: bool, at_us: i64) {
        if let Some(entry) = self.pending.get_mut(&lsn) {
            self.outcomes.insert(lsn, committed);
            if let (true, Ok(txn)) = (at_us > 0, entry) {
                // Lag counts from the primary's answer.
                txn.committed_at_us = at_us;
            }
        } else if lsn > self.read_to {
            self.early.insert(lsn, (committed, at_us));
        }
    }

    /// Hands out resolved intents in LSN order. One that cannot be placed
    /// yet (it conflicts with two workers, or its worker already holds
    /// `writeset::CAP`) waits in `blocked`, and so does every later one that
    /// conflicts with a waiting one; the others go on to the workers.
    pub(super) async fn dispatch(&mut self) -> Result<(), ApplierError> {
        if self.exclusive {
            return Ok(());
        }
        self.place_blocked();
        while !self.exclusive {
            let Some((&lsn, entry)) = self.pending.first_key_value() else {
                break;
            };
            let Some(&committed) = self.outcomes.get(&lsn) else {
                break;
            };
            if !committed {
                self.outcomes.remove(&lsn);
                self.pending.pop_first();
                self.effects.remove(&lsn);
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let effect = self.effects.contains_key(&lsn);
            let alone = match entry {
                Err(_) => true,
                Ok(txn) => effect || txn.statements.iter().any(|s| s.ddl),
            };
            if let (true, false, Ok(txn)) = (alone, effect, entry) {
                let txn = txn.clone();
                // A DDL rewrites its tables' rows from their old ones.
                self.note_spanning(
                    lsn,
                    txn.statements
                        .iter()
                        .flat_map(|s| s.tables.iter().map(String::as_str)),
                );
                let Some(ws) = self.table_ddl_write_set(&txn).await else {
                    // Asked again shortly; the intent keeps its place.
                    self.schema_retry = true;
                    break;
                };
                if let Some((ids, ws)) = ws {
                    self.pending.pop_first();
                    self.outcomes.remove(&lsn);
                    for id in &ids {
                        *self.ddl_tables.entry(*id).or_default() += 1;
                    }
                    self.table_ddl.insert(lsn, ids);
                    self.place(lsn, txn, ws);
                    continue;
                }
            }
            if alone {
                if !self.inflight.is_idle() || !self.blocked.is_empty() {
                    break;
                }
                let Some((_, entry)) = self.pending.pop_first() else {
                    break;
                };
                self.outcomes.remove(&lsn);
                let effect = self.effects.remove(&lsn);
                let (txns, dead) = match entry {
                    Ok(txn) => (vec![(lsn, txn)], None),
                    Err(reason) => {
                        if lsn > self.journal.durable_lsn() {
                            // Only a durable LSN may become the position.
                            self.journal.sync().await?;
                        }
                        (Vec::new(), Some((lsn, reason)))
                    }
                };
                self.exclusive = true;
                self.inflight.add(0, &WriteSet::Barrier);
                self.running[0] = Some(vec![(lsn, WriteSet::Barrier)]);
                self.send(
                    0,
                    Job {
                        txns,
                        dead,
                        position: Position::Contiguous,
                        first_after_start: self.first_after_start,
                        cleanup: None,
                        effect,
                    },
                );
                return Ok(());
            }
            let Some((_, Ok(txn))) = self.pending.pop_first() else {
                break;
            };
            let Some(ws) = self.write_set(lsn, &txn).await else {
                // Asked again shortly; the intent keeps its place.
                self.pending.insert(lsn, Ok(txn));
                self.schema_retry = true;
                break;
            };
            self.outcomes.remove(&lsn);
            self.place(lsn, txn, ws);
        }
        for w in 0..self.jobs.len() {
            if self.ready(w) {
                self.start(w);
            }
        }
        Ok(())
    }

    /// Queues a transaction on its worker, or makes it wait behind the
    /// waiting ones it conflicts with.
    pub(super) fn place(&mut self, lsn: Lsn, txn: MirrorTxn, ws: WriteSet) {
        let w = if self.waiting.overlaps(&ws) {
            None
        } else {
            match self.inflight.place(&ws) {
                Placement::Worker(w) => Some(w),
                Placement::Wait => None,
            }
        };
        match w {
            Some(w) => {
                self.inflight.add(w, &ws);
                if self.table_ddl.contains_key(&lsn) {
                    self.inflight.hold_ddl(w, true);
                }
                // In LSN order: a waiting intent placed now may be older
                // than what the worker already holds (it overlaps none of
                // those, or they would have waited behind it). Positions
                // and the low-water mark read each queue's front as its
                // lowest LSN.
                let q = &mut self.queued[w];
                let at = q.partition_point(|(l, _, _)| *l < lsn);
                q.insert(at, (lsn, txn, ws));
                self.since[w].get_or_insert_with(Instant::now);
            }
            None => {
                self.waiting.add(0, &ws);
                self.blocked.push_back((lsn, txn, ws));
            }
        }
    }

    /// Places waiting transactions that can go now (in LSN order).
    pub(super) fn place_blocked(&mut self) {
        if self.blocked.is_empty() {
            return;
        }
        let blocked = std::mem::take(&mut self.blocked);
        self.waiting = InFlight::new(1);
        for (lsn, txn, ws) in blocked {
            self.place(lsn, txn, ws);
        }
    }

    /// Whether worker `w` should start on what it holds now: it is idle
    /// and holds `FILL` transactions, or the oldest has waited
    /// `batch_wait`, or something waits for them (blocked transactions, or
    /// a caller of `Mirror::hurry`).
    pub(super) fn ready(&self, w: usize) -> bool {
        if self.running[w].is_some() || self.queued[w].is_empty() {
            return false;
        }
        let hurry = self.stats.hurry_to.load(Ordering::Relaxed);
        self.queued[w].len() >= writeset::FILL
            || !self.blocked.is_empty()
            || self.queued[w].front().is_some_and(|(l, _, _)| *l <= hurry)
            || self.since[w].is_none_or(|t| t.elapsed() >= self.cfg.batch_wait)
    }

    /// When the next idle worker's wait for a fuller group ends.
    pub(super) fn next_start(&self) -> Option<Instant> {
        (0..self.jobs.len())
            .filter(|w| self.running[*w].is_none() && !self.queued[*w].is_empty())
            .filter_map(|w| self.since[w])
            .min()
            .map(|t| t + self.cfg.batch_wait)
    }

    /// Starts worker `w` on what is queued for it (one group).
    pub(super) fn start(&mut self, w: usize) {
        let mut txns = Vec::new();
        let mut keys = Vec::new();
        let mut bytes = 0usize;
        while let Some((lsn, txn, _)) = self.queued[w].front() {
            if !txns.is_empty() && (txns.len() >= MAX_GROUP || bytes >= MAX_GROUP_BYTES) {
                break;
            }
            // A DDL is applied as a group of its own.
            let ddl = self.table_ddl.contains_key(lsn);
            if !txns.is_empty() && ddl {
                break;
            }
            bytes += txn.statements.iter().map(|s| s.sql.len()).sum::<usize>();
            let Some((lsn, txn, ws)) = self.queued[w].pop_front() else {
                break;
            };
            txns.push((lsn, txn));
            keys.push((lsn, ws));
            if ddl {
                break;
            }
        }
        if self.queued[w].is_empty() {
            self.since[w] = None;
        }
        let Some(&(last, _)) = txns.last() else {
            return;
        };
        debug_assert!(txns.windows(2).all(|p| p[0].0 < p[1].0));
        // Counted as outstanding from here on (the low-water mark below
        // must stay under this job's LSNs).
        self.running[w] = Some(keys);
        let busy = self.running.iter().filter(|r| r.is_some()).count() as u64;
        self.stats.parallel_peak.fetch_max(busy, Ordering::Relaxed);
        // Contiguous when nothing below `last` is outstanding elsewhere.
        let others = self.outstanding_min(Some(w));
        let position = match others {
            Some(m) if m < last => Position::Sparse { lwm: self.lwm() },
            _ => Position::Contiguous,
        };
        let replayed_ddl =
            txns.len() == 1 && self.table_ddl.contains_key(&last) && last <= self.start_end;
        let cleanup = (self.stored >= self.cleaned + CLEANUP_EVERY).then(|| {
            self.cleaned = self.stored;
            self.stored
        });
        self.send(
            w,
            Job {
                txns,
                dead: None,
                position,
                first_after_start: self.first_after_start || replayed_ddl,
                cleanup,
                effect: None,
            },
        );
    }

    pub(super) fn send(&mut self, w: usize, job: Job) {
        // A worker only goes away with the applier.
        let _ = self.jobs[w].send(job);
    }

    /// Lowest LSN not yet applied among intents read (pending, queued,
    /// running), leaving out worker `except`'s queue and job.
    pub(super) fn outstanding_min(&self, except: Option<usize>) -> Option<Lsn> {
        let workers = (0..self.queued.len())
            .filter(|w| Some(*w) != except)
            .flat_map(|w| {
                let queued = self.queued[w].front().map(|(l, _, _)| *l);
                let running = self.running[w].as_ref().and_then(|j| j.first());
                [queued, running.map(|(l, _)| *l)]
            })
            .flatten();
        self.pending
            .first_key_value()
            .map(|(l, _)| *l)
            .into_iter()
            .chain(self.blocked.front().map(|(l, _, _)| *l))
            .chain(workers)
            .min()
    }

    /// Every intent at or below this is applied (or skipped).
    pub(super) fn lwm(&self) -> Lsn {
        match self.outstanding_min(None) {
            Some(m) => m - 1,
            None => self.read_to,
        }
    }

    pub(super) fn finished(
        &mut self,
        w: usize,
        r: Result<(Outcome, Lsn), ApplierError>,
    ) -> Result<(), ApplierError> {
        let (outcome, pos) = r?;
        if outcome == Outcome::Stopped {
            return Ok(());
        }
        if let Some(keys) = self.running[w].take() {
            for (lsn, ws) in &keys {
                self.inflight.remove(w, ws);
                if let Some(ids) = self.table_ddl.remove(lsn) {
                    self.inflight.hold_ddl(w, false);
                    // DDL changes what tables look like.
                    self.schema.tables.clear();
                    for id in ids {
                        if let Some(n) = self.ddl_tables.get_mut(&id) {
                            *n -= 1;
                            if *n == 0 {
                                self.ddl_tables.remove(&id);
                            }
                        }
                    }
                }
            }
        }
        if self.exclusive {
            // DDL changes what tables look like.
            self.schema.tables.clear();
            self.exclusive = false;
        }
        self.first_after_start = false;
        self.stored = self.stored.max(pos);
        if self.ready(w) {
            self.start(w);
        }
        Ok(())
    }

    /// Counters, and the journal truncated below the stored position.
    pub(super) async fn publish(&mut self) {
        let waiting = self.pending.len()
            + self.blocked.len()
            + self.queued.iter().map(VecDeque::len).sum::<usize>();
        self.stats.waiting.store(waiting as u64, Ordering::Relaxed);
        self.stats.applied_lsn.store(self.lwm(), Ordering::Relaxed);
        // Segments are deleted whole: asking after every group would only
        // cost the writer thread a wake-up each time.
        if self.stored > self.truncated && self.truncated_at.elapsed() >= TRUNCATE_EVERY {
            self.truncated = self.stored;
            self.truncated_at = Instant::now();
            self.journal.truncate_before(self.stored + 1).await;
        }
    }

    /// What `txn` writes (see `writeset`); None when the secondary's schema
    /// could not be read. Notes, at `lsn`, the tables it writes in ways
    /// that may carry other rows' values (`writeset::spans`).
    pub(super) async fn write_set(&mut self, lsn: Lsn, txn: &MirrorTxn) -> Option<WriteSet> {
        let mut acc = Vec::new();
        let mut spanning: Vec<&str> = Vec::new();
        let mut barrier = false;
        for st in &txn.statements {
            if barrier {
                spanning.extend(st.tables.iter().map(String::as_str));
                continue;
            }
            let shape = writeset::shape_of(&st.sql, &mut self.toks);
            if shape == writeset::Shape::UserVars {
                continue;
            }
            let db_table = writeset::shape_table(&shape).and_then(|(db, table)| {
                db.clone()
                    .or_else(|| st.db.clone())
                    .or_else(|| self.cfg.secondary.database.clone())
                    .map(|db| (db, table.clone()))
            });
            let Some((db, table)) = db_table else {
                barrier = true;
                spanning.extend(st.tables.iter().map(String::as_str));
                continue;
            };
            let id = writeset::table_id(&db, &table);
            if self.ddl_tables.contains_key(&id) {
                acc.push(Access::Table(id));
                spanning.extend(st.tables.iter().map(String::as_str));
                continue;
            }
            let info = self
                .schema
                .info(
                    &self.cfg.secondary,
                    &db,
                    &table,
                    self.cfg.attempt_timeout.min(Duration::from_secs(5)),
                )
                .await?;
            if writeset::spans(&shape, &info) {
                spanning.extend(st.tables.iter().map(String::as_str));
            }
            if writeset::accesses(&shape, &info, id, &mut acc).is_none() {
                barrier = true;
            }
        }
        self.note_spanning(lsn, spanning);
        if barrier {
            return Some(WriteSet::Barrier);
        }
        acc.sort_unstable_by_key(|a| match a {
            Access::Row(t, k) => (*t, 1, *k),
            Access::Table(t) => (*t, 0, 0),
        });
        acc.dedup();
        Some(WriteSet::Accesses(acc))
    }

    /// Records that the transaction at `lsn` wrote `tables` in a way that
    /// may carry other rows' values (read by backfill through `/mirror/position`).
    pub(super) fn note_spanning<'t>(&self, lsn: Lsn, tables: impl IntoIterator<Item = &'t str>) {
        let mut tables = tables.into_iter().peekable();
        if tables.peek().is_none() {
            return;
        }
        let mut w = self
            .stats
            .spanning_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for t in tables {
            let at = w.entry(crate::mirror::runtime::table_key(t)).or_default();
            *at = (*at).max(lsn);
        }
    }
}

impl Coordinator {
    /// A DDL that changes only the tables it names (ALTER TABLE, CREATE or
    /// DROP INDEX, TRUNCATE, DROP TABLE) on tables without triggers or
    /// foreign keys: a barrier for those tables only, so one long ALTER
    /// does not stall the apply of every other table. Some((ids, write-set))
    /// then; Some(None) when it must run alone; None when the secondary's
    /// schema could not be read (asked again).
    pub(super) async fn table_ddl_write_set(
        &mut self,
        txn: &MirrorTxn,
    ) -> Option<Option<(Vec<u64>, WriteSet)>> {
        let [st] = txn.statements.as_slice() else {
            return Some(None);
        };
        if !st.ddl || st.tables.is_empty() || !table_only_ddl(&st.sql, &mut self.toks) {
            return Some(None);
        }
        let Some(db) = st
            .db
            .clone()
            .or_else(|| self.cfg.secondary.database.clone())
        else {
            return Some(None);
        };
        let mut ids = Vec::with_capacity(st.tables.len());
        for t in &st.tables {
            if t.contains('.') {
                // Named with the primary's database: its secondary name is
                // not at hand here.
                return Some(None);
            }
            let id = writeset::table_id(&db, t);
            // A table with a DDL in flight is not looked up while that DDL
            // runs (information_schema against a table being altered is
            // where MariaDB 10.11 was seen to crash); it had neither
            // triggers nor foreign keys when that DDL was placed, and only
            // such DDL has been placed on it since.
            if !self.ddl_tables.contains_key(&id) {
                let info = self
                    .schema
                    .info(
                        &self.cfg.secondary,
                        &db,
                        t,
                        self.cfg.attempt_timeout.min(Duration::from_secs(5)),
                    )
                    .await?;
                if info == TableInfo::Barrier {
                    return Some(None);
                }
            }
            ids.push(id);
        }
        let mut acc: Vec<Access> = ids.iter().map(|id| Access::Table(*id)).collect();
        acc.sort_unstable_by_key(|a| match a {
            Access::Table(t) => *t,
            Access::Row(t, _) => *t,
        });
        acc.dedup();
        Some(Some((ids, WriteSet::Accesses(acc))))
    }
}

/// ALTER TABLE, CREATE/DROP INDEX, TRUNCATE or DROP TABLE, naming no other
/// table (no foreign key, rename or partition exchange).
fn table_only_ddl(sql: &[u8], toks: &mut Vec<crate::router::lexer::Token>) -> bool {
    crate::router::lexer::tokenize(sql, toks);
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.is_word(sql, w));
    let head = if word(0, "TRUNCATE") {
        true
    } else if word(0, "ALTER") {
        (1..4).any(|i| word(i, "TABLE"))
    } else if word(0, "DROP") {
        word(1, "TABLE") || word(1, "INDEX")
    } else if word(0, "CREATE") {
        (1..4).any(|i| word(i, "INDEX"))
    } else {
        false
    };
    let others = [
        "REFERENCES",
        "FOREIGN",
        "RENAME",
        "EXCHANGE",
        "SELECT",
        "LIKE",
        "TEMPORARY",
    ];
    head && !toks
        .iter()
        .any(|t| others.iter().any(|w| t.is_word(sql, w)))
}
