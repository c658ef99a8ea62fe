//! The running mirror that `serve` owns while `migration.secondary` is set.
//!
//! Start-up, in this order: open the journal (a torn tail is cut), lock the
//! primary's and secondary's databases for this mirror (`guard.rs`), make sure
//! the bookkeeping tables exist on the primary, resolve every intent the
//! journal holds without an outcome (a crash between "intent durable" and
//! "outcome written") by looking for its marker row on the primary, then
//! start the group-commit writer, the applier and the marker clean-up.
//!
//! Commit markers: each mirrored transaction inserts its token into
//! `commit_marker` in Tandem's bookkeeping database on the primary (keyed
//! by the primary URL's database; see `bookkeeping`), inside the transaction
//! (with its first mirrored write), before COMMIT. The row exists iff the
//! transaction committed, which is what an in-doubt intent is resolved by.
//! Cost: one small insert per mirrored transaction on the primary
//! (pipelined, no extra round trip for explicit transactions) and a
//! periodic range delete. Rows are deleted once their outcome is durable in
//! the journal.

mod admission;
mod effects;
mod facts;
mod recovery;
pub mod routines;
mod status;
mod xa;
pub use recovery::ensure_marker_table;
use recovery::*;
use status::*;
pub use status::{clear_divergent_file, table_key, Position, DIVERGENT_FILE};

use super::applier::{Applier, ApplierConfig, ApplierStats, ErrorPolicy};
use super::guard::MirrorGuard;
use super::journal::{Journal, JournalError, Lsn, DEFAULT_SEGMENT_BYTES};
use super::record::{JournalRecord, MirrorTxn};
use super::{bookkeeping, ddl, now_us, CommitWait, JournalHandle};
use crate::config::{BackendConfig, Config};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Appends that may wait for the writer thread at once.
const JOURNAL_QUEUE: usize = 16 * 1024;
/// How long start-up waits for the journal directory's lock.
const JOURNAL_LOCK_WAIT: Duration = Duration::from_secs(5);

/// What capture needs to know of a table a write goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFacts {
    /// A write may read the statement time: a column default or ON UPDATE
    /// of the clock, or a trigger (which may read anything).
    pub reads_time: bool,
    /// A column default calls RAND() (or a trigger may): seeds are pinned.
    pub reads_rand: bool,
    /// The storage engine, when it has no transactions (MyISAM, Aria,
    /// MEMORY, …): a write there is not undone by ROLLBACK.
    pub engine_without_transactions: Option<String>,
    /// Columns whose default no pin reproduces (UUID(), UUID_SHORT(),
    /// SYS_GUID()): a row that takes it gets another value on the
    /// secondary.
    pub unpinnable_defaults: Vec<String>,
    /// Columns that default to a sequence's next value, with that default
    /// as the server shows it (`nextval(`db`.`s`)`): an INSERT that leaves
    /// one out gets it written in (see `capture::seqdefault`).
    pub sequence_defaults: Vec<(String, String)>,
    /// The columns that name a row (see `rowkey`), if it has such a key.
    pub key: Option<crate::mirror::rowkey::RowKey>,
    /// Its AUTO_INCREMENT column, if any.
    pub auto_increment: Option<String>,
    /// It has triggers.
    pub triggers: bool,
}

/// Counters of the capture side (sessions).
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Transactions journaled as committed on the primary.
    pub committed: AtomicU64,
    /// Statements inside them.
    pub statements: AtomicU64,
    /// Intents whose COMMIT failed on the primary (nothing to mirror).
    pub aborted: AtomicU64,
    /// Intents whose COMMIT answer was lost; resolved from the marker.
    pub in_doubt: AtomicU64,
    /// Unsafe writes refused (`unsafe_writes: reject`).
    pub unsafe_rejected: AtomicU64,
    /// Unsafe writes run on the primary only (`unsafe_writes: primary_only`).
    pub unsafe_primary_only: AtomicU64,
    /// Committed writes that were neither journaled nor reported divergent.
    /// Nothing in Tandem increments it: it exists so that claim is visible.
    pub dropped: AtomicU64,
    /// Journal failures (the write committed; its tables marked divergent).
    pub journal_errors: AtomicU64,
    /// Writes that found the journal full and waited (`journal_full: block`).
    pub journal_full_waits: AtomicU64,
    /// Writes refused after waiting `journal_full_timeout` (nothing ran).
    pub journal_full_refused: AtomicU64,
    /// Writes run unmirrored because the journal was full
    /// (`journal_full: degrade`); their tables are marked divergent.
    pub journal_full_degraded: AtomicU64,
}

/// Whether a write may be journaled (see [`Mirror::admit`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Journal it.
    Journal,
    /// Journal full, `degrade`: run it unmirrored (tables marked divergent).
    Degraded,
    /// Journal full, `block`, no room within the timeout: do not run it.
    Refused(String),
}

/// An in-doubt intent to resolve against the primary.
struct InDoubt {
    lsn: Lsn,
    token: u64,
    /// Backend thread that ran the transaction (killed first, so the answer
    /// cannot race with a commit still in progress).
    thread: Option<u32>,
    /// A DDL: its database (None: the primary URL's) and named tables,
    /// whose definitions settle it instead of a marker.
    ddl: Option<(Option<String>, Vec<String>)>,
}

/// Which backend is primary (markers, in-doubt resolution) and which one
/// the applier writes to. Replaced as a whole by a cutover.
#[derive(Debug)]
pub struct Roles {
    pub primary: BackendConfig,
    pub secondary: BackendConfig,
    /// `tandem`.`commit_marker` on the primary (see `bookkeeping`).
    pub marker: String,
    /// The key of this mirror's marker rows (the primary's database), as
    /// an SQL literal.
    pub marker_owner: String,
    /// Bumped by every swap (connections to the old primary are dropped).
    pub generation: u64,
}

impl Roles {
    fn new(
        primary: BackendConfig,
        secondary: BackendConfig,
        generation: u64,
    ) -> Result<Self, MirrorStartError> {
        if primary.database.is_none() {
            return Err(MirrorStartError::Config(format!(
                "backend {}: the URL must name a database (Tandem's commit markers are kept per database)",
                primary.name
            )));
        }
        let marker = bookkeeping::table(&primary, bookkeeping::MARKERS);
        let marker_owner = bookkeeping::owner(&primary);
        Ok(Roles {
            primary,
            secondary,
            marker,
            marker_owner,
            generation,
        })
    }
}

pub struct Mirror {
    pub journal: JournalHandle,
    pub applier: Arc<ApplierStats>,
    pub stats: CaptureStats,
    roles: arc_swap::ArcSwap<Roles>,
    /// The applier task and the token that stops it (alone: a cutover
    /// restarts it towards the other backend).
    applier_task: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
    journal_dir: PathBuf,
    tokens: Mutex<Tokens>,
    /// How many tokens' intents are not journaled yet: the journal's
    /// group-commit `expected`.
    expected: Arc<AtomicUsize>,
    last_intent: AtomicU64,
    /// The last LSN journaled for a DDL (at start: the journal's end, as
    /// what it holds is not read here).
    last_ddl: AtomicU64,
    divergent: Mutex<BTreeMap<String, String>>,
    divergent_path: PathBuf,
    in_doubt: mpsc::UnboundedSender<InDoubt>,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// What the primary showed at start that writes without Tandem
    /// (scheduled events, other accounts' connections), for /status.
    outside_writers: serde_json::Value,
    /// `db.table` → what capture needs to know of it (read from the
    /// primary's information_schema; cleared when DDL passes).
    table_facts: Mutex<HashMap<String, TableFacts>>,
    /// Moves on with every DDL that names no table, when it starts and
    /// when it ends: facts read across one are not cached.
    schema_generation: AtomicU64,
    /// The same per table (`db.table`), for DDL that names its tables.
    table_generations: Mutex<HashMap<String, u64>>,
    /// Table name (unqualified, lower case) → LSN of the last intent that
    /// wrote it: lets backfill re-check only chunks of tables written while
    /// it copied them.
    table_writes: Mutex<HashMap<String, Lsn>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Secondary connections the applier uses.
    apply_workers: usize,
    apply_batch_wait: Duration,
    journal_commit_wait: Duration,
    /// `migration.apply_errors`, shared with the running applier.
    apply_errors: ErrorPolicy,
    /// One re-creation of the primary's bookkeeping tables at a time.
    restoring: tokio::sync::Mutex<()>,
    /// Table key → the lock that orders writes to it that have no
    /// transaction (see `effects`).
    effect_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Prepared XA transactions not decided yet: LSN → (token, xid).
    xa_prepared: Mutex<HashMap<Lsn, (u64, String)>>,
    /// Database → (when read, its stored functions that may write): see
    /// `routines`.
    routines: Mutex<HashMap<String, routines::Cached>>,
    /// Free space on the journal's file system, and when it was read
    /// (milliseconds after `started`; 0: never): see `admission`.
    disk_free: AtomicU64,
    disk_checked_ms: AtomicU64,
    started: std::time::Instant,
}

/// Commit-marker tokens and where each stands.
struct Tokens {
    next: u64,
    /// Issued and not settled (outcome durable, or abandoned): clean-up
    /// keeps their marker rows.
    in_flight: BTreeSet<u64>,
    /// Issued, intent not journaled yet: their sessions will commit soon.
    unjournaled: HashSet<u64>,
    /// Outcome queued in the journal (deferred), maybe not durable yet, in
    /// the order queued.
    deferred: Vec<u64>,
}

/// Why [`Mirror::resume_applier`] did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("the applier is running; nothing to resume")]
    Running,
    #[error("the applier is being restarted by a cutover; try again when it is done")]
    Restarting,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorStartError {
    #[error("journal {0}: {1}")]
    Journal(String, JournalError),
    #[error("primary {0}: {1}")]
    Primary(String, String),
    #[error("{0}")]
    Config(String),
}

impl Mirror {
    /// Recovers and starts mirroring to `cfg.secondary`.
    pub async fn start(cfg: &Config) -> Result<Arc<Mirror>, MirrorStartError> {
        let Some(secondary_name) = cfg.secondary.clone() else {
            return Err(MirrorStartError::Config("no migration.secondary".into()));
        };
        let secondary = cfg.backends[&secondary_name].clone();
        let primary = cfg.primary_backend().clone();
        let roles = Roles::new(primary.clone(), secondary.clone(), 0)?;
        let marker = roles.marker.clone();
        let owner = roles.marker_owner.clone();
        let dir = cfg.journal.clone();
        let jerr = |e| MirrorStartError::Journal(dir.display().to_string(), e);
        // Segments small against the size limit, so truncation after apply
        // frees room in steps well below it.
        let segment_bytes =
            (cfg.journal_limit.max_bytes / 8).clamp(64 * 1024, DEFAULT_SEGMENT_BYTES);
        let journal = open_journal(&dir, segment_bytes).await.map_err(jerr)?;
        warn_if_readable(&dir);
        let unresolved = unresolved_intents(&journal).map_err(jerr)?;

        let mut conn = connect_retrying(&primary, cfg.limits.connect_timeout).await?;
        // Before anything touches the markers: no other Tandem mirrors
        // these databases.
        let guard = MirrorGuard::acquire(&primary, &secondary, cfg.limits.connect_timeout)
            .await
            .map_err(|e| MirrorStartError::Config(e.to_string()))?;
        let perr =
            |e: mysql_async::Error| MirrorStartError::Primary(primary.name.clone(), e.to_string());
        bookkeeping::ensure(&mut conn, &primary)
            .await
            .map_err(perr)?;
        let max: Option<u64> = conn
            .query_first::<Option<u64>, _>(format!(
                "SELECT MAX(token) FROM {marker} WHERE db = {owner}"
            ))
            .await
            .map_err(perr)?
            .flatten();
        let Settled {
            outcomes,
            lost_effects,
            undecided,
        } = settle_at_start(&mut conn, &marker, &owner, &primary, unresolved)
            .await
            .map_err(perr)?;
        let outside_writers = writers_outside_tandem(&mut conn).await;
        let _ = conn.disconnect().await;

        let last_intent = journal.next_lsn().saturating_sub(1);
        let expected = Arc::new(AtomicUsize::new(0));
        let (handle, writer) = JournalHandle::spawn_with(
            journal,
            JOURNAL_QUEUE,
            CommitWait {
                max: cfg.journal_commit_wait,
                expected: expected.clone(),
            },
        );
        for o in &outcomes {
            handle.append(o.encode()).await.map_err(jerr)?;
        }
        let divergent_path = dir.join(DIVERGENT_FILE);
        let divergent = load_divergent(&divergent_path);
        let applier_stats = Arc::new(ApplierStats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let first_token = max.map_or(0, |m| m + 1).max(now_us() as u64);
        let mirror = Arc::new(Mirror {
            journal: handle,
            applier: applier_stats,
            stats: CaptureStats::default(),
            roles: arc_swap::ArcSwap::from_pointee(roles),
            applier_task: Mutex::new(None),
            journal_dir: dir.clone(),
            tokens: Mutex::new(Tokens {
                next: first_token,
                in_flight: BTreeSet::new(),
                unjournaled: HashSet::new(),
                deferred: Vec::new(),
            }),
            expected,
            last_intent: AtomicU64::new(last_intent),
            last_ddl: AtomicU64::new(last_intent),
            divergent: Mutex::new(divergent),
            divergent_path,
            in_doubt: tx,
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
            table_facts: Mutex::new(HashMap::new()),
            schema_generation: AtomicU64::new(0),
            table_generations: Mutex::new(HashMap::new()),
            apply_workers: cfg.apply_workers,
            apply_batch_wait: cfg.apply_batch_wait,
            journal_commit_wait: cfg.journal_commit_wait,
            apply_errors: ErrorPolicy::new(cfg.apply_errors),
            table_writes: Mutex::new(HashMap::new()),
            writer: Mutex::new(Some(writer)),
            outside_writers,
            restoring: tokio::sync::Mutex::new(()),
            effect_locks: Mutex::new(HashMap::new()),
            xa_prepared: Mutex::new(HashMap::new()),
            routines: Mutex::new(HashMap::new()),
            disk_free: AtomicU64::new(0),
            disk_checked_ms: AtomicU64::new(0),
            started: std::time::Instant::now(),
        });
        for (lsn, token) in undecided {
            mirror.xa_prepared(String::new(), lsn, token);
        }
        if !lost_effects.is_empty() {
            mirror.mark_divergent(&lost_effects, crate::mirror::effect::UNKNOWN_ON_PRIMARY);
        }
        mirror.start_applier(secondary);
        let resolver = tokio::spawn(resolve_in_doubt(Arc::downgrade(&mirror), rx));
        let cleaner = tokio::spawn(clean_markers(Arc::downgrade(&mirror)));
        let keeper = guard.keep(mirror.stop.child_token());
        mirror
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([resolver, cleaner, keeper]);
        info!(
            secondary = %secondary_name,
            journal = %dir.display(),
            resolved = outcomes.len(),
            "mirroring committed writes"
        );
        Ok(mirror)
    }

    /// Starts the applier towards `secondary` (from its stored position).
    fn start_applier(&self, secondary: BackendConfig) {
        let applier = Applier::with_stats(
            ApplierConfig {
                secondary,
                journal_dir: self.journal_dir.clone(),
                dead_letter: self.journal_dir.join("dead-letter.jsonl"),
                on_permanent_error: self.apply_errors.clone(),
                attempt_timeout: Duration::from_secs(30),
                workers: self.apply_workers,
                batch_wait: self.apply_batch_wait,
            },
            self.journal.clone(),
            self.applier.clone(),
        );
        let stop = self.stop.child_token();
        let token = stop.clone();
        let stats = self.applier.clone();
        *stats.stopped.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let task = tokio::spawn(async move {
            if let Err(e) = applier.run(stop).await {
                error!(error = %e, "applier stopped; writes are still journaled");
                *stats.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        });
        *self.applier_task.lock().unwrap_or_else(|p| p.into_inner()) = Some((token, task));
    }

    /// Restarts an applier that stopped on its own (halted on a
    /// transaction the secondary refused, or any other error), from the
    /// secondary's stored position: the transaction it stopped at is tried
    /// again.
    pub fn resume_applier(&self) -> Result<(), ResumeError> {
        {
            let task = self.applier_task.lock().unwrap_or_else(|p| p.into_inner());
            match task.as_ref() {
                None => return Err(ResumeError::Restarting),
                Some((_, t)) if !t.is_finished() => return Err(ResumeError::Running),
                Some(_) => {}
            }
        }
        let secondary = self.roles().secondary.clone();
        info!(secondary = %secondary.name, "resuming the applier");
        self.start_applier(secondary);
        Ok(())
    }

    /// Applies a reloaded `migration.apply_errors` to the running applier.
    pub fn set_apply_errors(&self, p: crate::config::ApplyErrors) {
        self.apply_errors.set(p);
    }

    /// Stops the applier after the transaction it is applying.
    async fn stop_applier(&self) {
        let task = self
            .applier_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((token, task)) = task {
            token.cancel();
            let _ = task.await;
        }
    }

    /// The backends in their current roles.
    pub fn roles(&self) -> Arc<Roles> {
        self.roles.load_full()
    }

    /// Name of the backend receiving mirrored writes.
    pub fn secondary_name(&self) -> String {
        self.roles.load().secondary.name.clone()
    }

    /// True while mirroring goes to the backend named `name`.
    pub fn mirrors_to(&self, name: &str) -> bool {
        self.roles.load().secondary.name == name
    }

    /// Cutover's swap: with the journal drained (every intent applied on
    /// the secondary, nothing new admitted), mirroring turns around. The
    /// old primary holds every write up to now, so its stored position is
    /// set to the journal's end; the applier then feeds it from there.
    /// On error nothing changed (the applier runs towards the old
    /// secondary again).
    pub async fn swap_roles(&self, timeout: Duration) -> Result<(), String> {
        let old = self.roles();
        let new = Roles::new(
            old.secondary.clone(),
            old.primary.clone(),
            old.generation + 1,
        )
        .map_err(|e| e.to_string())?;
        self.stop_applier().await;
        let end = match self.journal.sync().await {
            Ok(lsn) => lsn,
            Err(e) => {
                self.start_applier(old.secondary.clone());
                return Err(format!("journal: {e}"));
            }
        };
        let seeded = tokio::time::timeout(timeout, async {
            let mut conn =
                crate::backend::own_conn(crate::backend::own_opts(&new.secondary).await).await?;
            crate::mirror::applier::seed_position(&mut conn, &new.secondary, end).await?;
            let _ = conn.disconnect().await;
            Ok::<_, mysql_async::Error>(())
        })
        .await;
        let failure = match seeded {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {timeout:?}")),
        };
        if let Some(e) = failure {
            self.start_applier(old.secondary.clone());
            return Err(format!(
                "cannot store the mirror position on {} (the new secondary): {e}",
                new.secondary.name
            ));
        }
        self.table_facts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let secondary = new.secondary.clone();
        self.roles.store(Arc::new(new));
        self.start_applier(secondary);
        info!(lsn = end, "mirror turned around");
        Ok(())
    }

    /// Stops the applier (after the transaction it is applying) and the
    /// background tasks; the journal keeps everything not yet applied.
    pub async fn stop(&self) {
        self.stop_applier().await;
        self.stop.cancel();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        // Outcomes written since the last fsync (their markers would settle
        // them, but a clean stop leaves nothing in doubt).
        let _ = self.journal.sync().await;
    }

    /// A fresh marker token; it counts as in flight until its outcome is
    /// durable (or it is abandoned), so clean-up never deletes its row early.
    pub fn token(&self) -> u64 {
        self.with_tokens(|g| {
            let t = g.next;
            g.next += 1;
            g.in_flight.insert(t);
            g.unjournaled.insert(t);
            t
        })
    }

    /// Runs `f` on the tokens, then publishes how many intents are on
    /// their way to the journal writer.
    fn with_tokens<R>(&self, f: impl FnOnce(&mut Tokens) -> R) -> R {
        let mut g = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut g);
        self.expected.store(g.unjournaled.len(), Ordering::Release);
        r
    }

    /// The token's transaction wrote no intent (its statement failed).
    pub fn abandon(&self, token: u64) {
        self.with_tokens(|g| {
            g.unjournaled.remove(&token);
            g.in_flight.remove(&token);
        });
    }

    /// `INSERT` of the marker row for `token` (run inside the transaction).
    pub fn marker_insert(&self, token: u64) -> String {
        let roles = self.roles.load();
        format!(
            "INSERT INTO {} (db, token) VALUES ({}, {token})",
            roles.marker, roles.marker_owner
        )
    }

    /// Journals an intent and waits until it is durable.
    pub async fn intent(&self, token: u64, txn: MirrorTxn) -> Result<Lsn, JournalError> {
        // No longer on its way: the journal's group commit stops waiting
        // for it (before it is queued, so the fsync that takes it does not).
        self.with_tokens(|g| g.unjournaled.remove(&token));
        let tables: Vec<String> = txn
            .statements
            .iter()
            .flat_map(|s| s.tables.iter().map(|t| table_key(t)))
            .collect();
        let ddl = txn.statements.iter().any(|s| s.ddl);
        let lsn = self
            .journal
            .append(JournalRecord::Intent { token, txn }.encode())
            .await?;
        note_table_writes(
            &mut self.table_writes.lock().unwrap_or_else(|p| p.into_inner()),
            tables,
            lsn,
        );
        self.last_intent.fetch_max(lsn, Ordering::Relaxed);
        if ddl {
            self.last_ddl.fetch_max(lsn, Ordering::Relaxed);
        }
        Ok(lsn)
    }

    /// Where the mirror stands: what is journaled, what is applied, and the
    /// last LSN that wrote each table. Every transaction that committed on
    /// the primary before this call has an LSN <= `journaled` (its intent
    /// is durable before its COMMIT is sent).
    pub fn position(&self) -> Position {
        let (_, lag_seconds) = self.lag();
        Position {
            journaled_lsn: self.last_intent.load(Ordering::Relaxed),
            applied_lsn: self.applier.applied_lsn.load(Ordering::Relaxed),
            lag_seconds,
            applier_stopped: self
                .applier
                .stopped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            table_writes: self
                .table_writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            spanning_writes: self
                .applier
                .spanning_writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            spanning_since: self.applier.spanning_since.load(Ordering::Relaxed),
            mark_seq: self.applier.mark_seq.load(Ordering::Relaxed),
            ddl_lsn: self.last_ddl.load(Ordering::Relaxed),
        }
    }

    /// [`position`](Self::position) for a caller that waits until what is
    /// journaled now is applied (a cutover's drain, verify, backfill, `GET
    /// /mirror/position`): first [`hurry`](Self::hurry).
    pub fn position_to_wait_on(&self) -> Position {
        self.hurry();
        self.position()
    }

    /// The applier applies what is journaled now without waiting to fill
    /// bigger groups (`migration.apply_batch_wait`).
    fn hurry(&self) {
        let last = self.last_intent.load(Ordering::Relaxed);
        self.applier.hurry_to.fetch_max(last, Ordering::Relaxed);
        self.applier.hurry.notify_one();
    }

    /// Records the primary's answer to an intent's COMMIT: the applier
    /// learns it at once (in memory) and the journal takes it with its next
    /// batch, without an fsync or a thread switch of its own. Until it is
    /// durable its token stays in flight, so its marker row is kept and
    /// settles the intent after a crash; clean-up's fsync ends that.
    pub fn outcome(&self, lsn: Lsn, token: u64, committed: bool) {
        let at_us = now_us();
        let rec = JournalRecord::Outcome {
            intent: lsn,
            committed,
            at_us,
        };
        self.journal.append_deferred(rec.encode());
        self.with_tokens(|g| g.deferred.push(token));
        self.applier.settle(lsn, committed, at_us);
        if committed {
            self.stats.committed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.aborted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Makes the outcomes deferred so far durable, then lets their
    /// tokens leave the in-flight set (those deferred during the fsync
    /// stay for the next round). Returns the oldest token still in
    /// flight: marker rows below it can go.
    async fn settle_deferred(&self) -> u64 {
        let n = self.with_tokens(|g| g.deferred.len());
        match self.journal.sync().await {
            Ok(_) => self.with_tokens(|g| {
                for t in g.deferred.drain(..n) {
                    g.in_flight.remove(&t);
                }
            }),
            Err(e) => {
                self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "journal: outcomes not made durable; their markers are kept");
            }
        }
        self.with_tokens(|g| g.in_flight.first().copied().unwrap_or(g.next))
    }

    /// The COMMIT's answer was lost with the backend connection: settle it
    /// from the marker in the background (the applier waits for it).
    pub fn in_doubt(&self, lsn: Lsn, token: u64, thread: Option<u32>) {
        self.stats.in_doubt.fetch_add(1, Ordering::Relaxed);
        let _ = self.in_doubt.send(InDoubt {
            lsn,
            token,
            thread,
            ddl: None,
        });
    }

    /// A DDL's answer was lost with the backend connection: settle it from
    /// the named tables' definitions in the background (see `mirror::ddl`).
    pub fn in_doubt_ddl(
        &self,
        lsn: Lsn,
        token: u64,
        thread: u32,
        db: Option<String>,
        tables: Vec<String>,
    ) {
        self.stats.in_doubt.fetch_add(1, Ordering::Relaxed);
        let _ = self.in_doubt.send(InDoubt {
            lsn,
            token,
            thread: Some(thread),
            ddl: Some((db, tables)),
        });
    }

    /// Lag: journaled-but-unapplied LSNs and seconds since the primary
    /// commit of the oldest transaction not yet applied (0 when caught up).
    pub fn lag(&self) -> (u64, f64) {
        let last = self.last_intent.load(Ordering::Relaxed);
        let applied = self.applier.applied_lsn.load(Ordering::Relaxed);
        let behind = last.saturating_sub(applied);
        let waiting = self.applier.waiting.load(Ordering::Relaxed);
        if behind == 0 && waiting == 0 {
            return (0, 0.0);
        }
        let at = self.applier.last_committed_at_us.load(Ordering::Relaxed);
        let secs = if at > 0 {
            ((now_us() - at).max(0) as f64) / 1e6
        } else {
            0.0
        };
        (behind, secs)
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.cancel();
        // The writer thread ends when the last handle is gone.
        drop(self.writer.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// Notes `lsn` as the last intent that wrote `tables`. Never lowers an
/// entry: an intent appended earlier whose thread gets here later must not
/// hide a later intent's LSN (backfill would take a chunk a write raced
/// for a quiet one and keep a stale row).
fn note_table_writes(writes: &mut HashMap<String, Lsn>, tables: Vec<String>, lsn: Lsn) {
    for t in tables {
        let last = writes.entry(t).or_insert(lsn);
        *last = (*last).max(lsn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_older_intent_does_not_lower_a_tables_last_write() {
        let mut w = HashMap::new();
        note_table_writes(&mut w, vec!["big".into()], 11);
        note_table_writes(&mut w, vec!["big".into(), "kv".into()], 10);
        assert_eq!(w["big"], 11);
        assert_eq!(w["kv"], 10);
    }
}
