//! Start-up and recovery: the journal opened under its lock, the marker
//! table, in-doubt intents settled from the primary's commit markers, and
//! the periodic clean-up of marker rows.

use super::*;

/// Opens the journal, waiting a few seconds for its lock while it is held
/// (a mirror of this process that is stopping, or a previous process
/// still exiting); then `Locked` names the holder.
pub(super) async fn open_journal(dir: &Path, segment_bytes: u64) -> Result<Journal, JournalError> {
    let deadline = tokio::time::Instant::now() + JOURNAL_LOCK_WAIT;
    loop {
        match Journal::open(dir, segment_bytes) {
            Err(JournalError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            r => return r,
        }
    }
}

/// Creates Tandem's bookkeeping database and tables on `b` (a
/// primary-to-be) if missing; its URL must name a database.
pub async fn ensure_marker_table(
    conn: &mut Conn,
    b: &BackendConfig,
) -> Result<(), mysql_async::Error> {
    if b.database.is_none() {
        return Err(mysql_async::Error::Other(
            format!(
                "backend {}: the URL must name a database (Tandem's commit markers are kept per database)",
                b.name
            )
            .into(),
        ));
    }
    super::bookkeeping::ensure(conn, b).await
}

/// An intent in the journal without an outcome.
pub(super) struct Unresolved {
    pub(super) lsn: Lsn,
    pub(super) token: u64,
    /// A DDL's database (None: the primary URL's) and the tables it names,
    /// whose definitions say whether it took effect.
    pub(super) ddl: Option<(Option<String>, Vec<String>)>,
    /// An effect's tables (`mirror::effect`): nothing settles it.
    pub(super) effect: Option<Vec<String>>,
}

/// The journal holds every mirrored value: says so at start when other
/// users may read its directory (Tandem creates it owner-only; one made
/// beforehand keeps its mode).
pub(super) fn warn_if_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(
                dir = %dir.display(),
                mode = format!("{mode:o}"),
                "the journal directory can be read by other users, and the journal holds every mirrored value: chmod 700 it"
            );
        }
    }
}

/// Intents in the journal without an outcome, with their tokens.
pub(super) fn unresolved_intents(journal: &Journal) -> Result<Vec<Unresolved>, JournalError> {
    let mut intents: BTreeMap<Lsn, Unresolved> = BTreeMap::new();
    let mut outcomes: HashMap<Lsn, bool> = HashMap::new();
    let mut reader = journal.reader(journal.first_lsn())?;
    while let Some((lsn, bytes)) = reader.next_record()? {
        match JournalRecord::decode(&bytes) {
            Ok(JournalRecord::Intent { token, txn }) if token != 0 => {
                let ddl = ddl::is_ddl_token(token)
                    .then(|| txn.statements.first())
                    .flatten()
                    .map(|s| (s.db.clone(), s.tables.clone()));
                let effect = crate::mirror::effect::is_effect_token(token)
                    .then(|| crate::mirror::record::tables_of(&txn.statements));
                intents.insert(
                    lsn,
                    Unresolved {
                        lsn,
                        token,
                        ddl,
                        effect,
                    },
                );
            }
            Ok(JournalRecord::Outcome {
                intent, committed, ..
            }) => {
                outcomes.insert(intent, committed);
            }
            Ok(JournalRecord::Effect { intent, .. }) => {
                outcomes.insert(intent, true);
            }
            _ => {}
        }
    }
    Ok(intents
        .into_values()
        .filter(|u| !outcomes.contains_key(&u.lsn))
        .collect())
}

/// The locking read of commit markers: which of `tokens` (a comma list)
/// are in `marker` for `owner`. It waits for a transaction still holding a
/// row (a commit in progress, a prepared XA branch).
pub(super) fn marker_read(marker: &str, owner: &str, tokens: &str) -> String {
    format!(
        "SELECT token FROM {marker} WHERE db = {owner} AND token IN ({tokens}) LOCK IN SHARE MODE"
    )
}

/// What start-up makes of the intents a previous run left unsettled.
pub(super) struct Settled {
    /// Outcomes to journal before anything else.
    pub(super) outcomes: Vec<JournalRecord>,
    /// Tables of writes without transactions whose answer was lost.
    pub(super) lost_effects: Vec<String>,
    /// Intents whose marker a prepared XA branch holds: (LSN, token).
    pub(super) undecided: Vec<(Lsn, u64)>,
}

/// Settles the intents a previous run left without an outcome: DDL from
/// the tables' definitions, writes without transactions as lost (marked),
/// the rest from the primary's commit markers — except those a prepared
/// XA branch holds, which wait for their decision (`xa`).
pub(super) async fn settle_at_start(
    conn: &mut Conn,
    marker: &str,
    owner: &str,
    primary: &BackendConfig,
    unresolved: Vec<Unresolved>,
) -> Result<Settled, mysql_async::Error> {
    let (effects, unresolved): (Vec<_>, Vec<_>) =
        unresolved.into_iter().partition(|u| u.effect.is_some());
    let (ddl, unresolved): (Vec<_>, Vec<_>) = unresolved
        .into_iter()
        .partition(|u| ddl::is_ddl_token(u.token));
    let mut outcomes: Vec<JournalRecord> = Vec::with_capacity(ddl.len() + effects.len());
    // Writes to tables without transactions whose answer was lost:
    // skipped, and their tables marked below.
    let mut lost_effects: Vec<String> = Vec::new();
    for u in &effects {
        warn!(
            lsn = u.lsn,
            tables = ?u.effect,
            "{}", crate::mirror::effect::UNKNOWN_ON_PRIMARY
        );
        lost_effects.extend(u.effect.clone().unwrap_or_default());
        outcomes.push(JournalRecord::Outcome {
            intent: u.lsn,
            committed: false,
            at_us: 0,
        });
    }
    for u in &ddl {
        let (db, tables) = u.ddl.clone().unwrap_or_default();
        let db = db.or_else(|| primary.database.clone());
        let took = ddl::took_effect(conn, u.token, db.as_deref(), &tables).await?;
        let committed = took.unwrap_or(true);
        info!(
            lsn = u.lsn,
            committed,
            checked = took.is_some(),
            "in-doubt DDL resolved from the primary's table definitions"
        );
        outcomes.push(JournalRecord::Outcome {
            intent: u.lsn,
            committed,
            at_us: 0,
        });
    }
    // A prepared XA branch holds its marker locked until it is
    // decided, maybe long after this start: such intents wait for a
    // watcher (`xa`) instead of holding the start up.
    conn.query_drop("SET SESSION innodb_lock_wait_timeout = 2")
        .await?;
    let mut undecided: Vec<(Lsn, u64)> = Vec::new();
    for chunk in unresolved.chunks(1000) {
        let list = chunk
            .iter()
            .map(|u| u.token.to_string())
            .collect::<Vec<_>>()
            .join(",");
        // Locking read: waits for a commit still in progress on a
        // connection the crash cut.
        let found: Vec<u64> = match conn.query(marker_read(marker, owner, &list)).await {
            Ok(found) => found,
            Err(mysql_async::Error::Server(e)) if e.code == 1205 => {
                let mut found = Vec::new();
                for u in chunk {
                    let one: Result<Option<u64>, _> = conn
                        .query_first(marker_read(marker, owner, &u.token.to_string()))
                        .await;
                    match one {
                        Ok(f) => found.extend(f),
                        Err(mysql_async::Error::Server(e)) if e.code == 1205 => {
                            undecided.push((u.lsn, u.token))
                        }
                        Err(e) => return Err(e),
                    }
                }
                found
            }
            Err(e) => return Err(e),
        };
        for Unresolved { lsn, token, .. } in chunk {
            if undecided.iter().any(|(l, _)| l == lsn) {
                info!(
                    lsn,
                    token,
                    "in-doubt intent held by a prepared XA branch; settled once it is decided"
                );
                continue;
            }
            let committed = found.contains(token);
            info!(
                lsn,
                token, committed, "in-doubt intent resolved from the primary's commit marker"
            );
            outcomes.push(JournalRecord::Outcome {
                intent: *lsn,
                committed,
                at_us: 0,
            });
        }
    }
    Ok(Settled {
        outcomes,
        lost_effects,
        undecided,
    })
}

pub(super) async fn connect_retrying(
    b: &BackendConfig,
    timeout: Duration,
) -> Result<Conn, MirrorStartError> {
    let patience = timeout.max(Duration::from_secs(10));
    let deadline = tokio::time::Instant::now() + patience;
    let mut wait = Duration::from_millis(100);
    let mut said = false;
    loop {
        let attempt = tokio::time::timeout(
            timeout,
            crate::backend::own_conn(crate::backend::own_opts(b).await),
        )
        .await;
        if !said && !matches!(attempt, Ok(Ok(_))) {
            // Say it once, at once: the wait is not silent.
            said = true;
            let why = match &attempt {
                Ok(Err(e)) => e.to_string(),
                _ => "connect timed out".into(),
            };
            tracing::warn!(
                backend = %b.name,
                error = %why,
                "the primary does not answer; mirror recovery keeps trying for up to {patience:?}"
            );
        }
        match attempt {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) if tokio::time::Instant::now() >= deadline => {
                return Err(MirrorStartError::Primary(b.name.clone(), e.to_string()))
            }
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(MirrorStartError::Primary(
                    b.name.clone(),
                    "connect timed out".into(),
                ))
            }
            _ => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Settles in-doubt intents, retrying until the primary answers.
pub(super) async fn resolve_in_doubt(
    mirror: std::sync::Weak<Mirror>,
    mut rx: mpsc::UnboundedReceiver<InDoubt>,
) {
    while let Some(d) = rx.recv().await {
        let mut wait = Duration::from_millis(100);
        loop {
            let Some(m) = mirror.upgrade() else { return };
            match m.check_marker(&d).await {
                Ok(committed) => {
                    info!(
                        lsn = d.lsn,
                        token = d.token,
                        committed,
                        "in-doubt commit resolved from the primary's marker"
                    );
                    m.outcome(d.lsn, d.token, committed);
                    break;
                }
                Err(e) => {
                    warn!(lsn = d.lsn, error = %e, ?wait, "cannot resolve in-doubt commit yet");
                    let stop = m.stop.clone();
                    drop(m);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

impl Mirror {
    /// The primary's bookkeeping table or database is gone (a marker
    /// insert said 1146/1049: someone dropped it). Creates it again on a
    /// connection of its own — DDL on the session's would commit the
    /// application's transaction — so the write that found it missing can
    /// insert its marker and go on, instead of every write failing.
    pub async fn restore_bookkeeping(&self) -> Result<(), String> {
        let _one = self.restoring.lock().await;
        let roles = self.roles();
        let mut conn = crate::backend::own_conn(crate::backend::own_opts(&roles.primary).await)
            .await
            .map_err(|e| e.to_string())?;
        let r = super::bookkeeping::ensure(&mut conn, &roles.primary).await;
        let _ = conn.disconnect().await;
        match r {
            Ok(()) => {
                error!(
                    backend = roles.primary.name,
                    database = roles.primary.bookkeeping,
                    "Tandem's bookkeeping tables on the primary were gone (dropped?); created them again"
                );
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "Tandem's bookkeeping tables on the primary are gone and cannot be created");
                Err(e.to_string())
            }
        }
    }

    pub(super) async fn check_marker(&self, d: &InDoubt) -> Result<bool, mysql_async::Error> {
        let roles = self.roles();
        let mut conn =
            crate::backend::own_conn(crate::backend::own_opts(&roles.primary).await).await?;
        if let Some(thread) = d.thread {
            // Ends the transaction if it is still open; 1094: already gone.
            match conn.query_drop(format!("KILL {thread}")).await {
                Ok(()) => {}
                Err(mysql_async::Error::Server(e)) if e.code == 1094 => {}
                Err(e) => return Err(e),
            }
        }
        if let Some((db, tables)) = &d.ddl {
            let db = db.clone().or_else(|| roles.primary.database.clone());
            let took = ddl::took_effect(&mut conn, d.token, db.as_deref(), tables).await;
            let _ = conn.disconnect().await;
            return Ok(took?.unwrap_or(true));
        }
        // A locking read waits for a commit still holding the row.
        let found: Option<u64> = conn
            .query_first(marker_read(
                &roles.marker,
                &roles.marker_owner,
                &d.token.to_string(),
            ))
            .await?;
        let _ = conn.disconnect().await;
        Ok(found.is_some())
    }
}

/// Deletes marker rows whose outcome is durable (every token below the
/// oldest one still in flight).
pub(super) async fn clean_markers(mirror: std::sync::Weak<Mirror>) {
    let mut conn: Option<(u64, Conn)> = None;
    loop {
        let stop = match mirror.upgrade() {
            Some(m) => m.stop.clone(),
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.cancelled() => return,
        }
        let Some(m) = mirror.upgrade() else { return };
        let cutoff = m.settle_deferred().await;
        let roles = m.roles();
        if conn.as_ref().is_some_and(|(g, _)| *g != roles.generation) {
            conn = None;
        }
        if conn.is_none() {
            conn = crate::backend::own_conn(crate::backend::own_opts(&roles.primary).await)
                .await
                .ok()
                .map(|c| (roles.generation, c));
        }
        if let Some((_, c)) = conn.as_mut() {
            let sql = format!(
                "DELETE FROM {} WHERE db = {} AND token < {cutoff}",
                roles.marker, roles.marker_owner
            );
            if let Err(e) = c.query_drop(sql).await {
                warn!(error = %e, "commit-marker clean-up failed; retrying later");
                conn = None;
            }
        }
    }
}

/// A connection in the primary's process list: id, user, host, database.
type Connection = (u64, String, String, Option<String>);

/// Writers the primary shows that do not go through Tandem, so their
/// writes are never journaled: enabled scheduled events (and whether the
/// scheduler runs them), and the connections of other accounts than
/// Tandem's own. Logged at start and kept for /status; a look that fails
/// says so instead.
pub(super) async fn writers_outside_tandem(conn: &mut Conn) -> serde_json::Value {
    let events: Result<Vec<(String, String)>, _> = conn
        .query(
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS \
             WHERE STATUS = 'ENABLED' ORDER BY 1, 2",
        )
        .await;
    let scheduler: Option<String> = conn
        .query_first("SELECT @@event_scheduler")
        .await
        .ok()
        .flatten();
    let others: Result<Vec<Connection>, _> = conn
        .query(
            "SELECT ID, USER, HOST, DB FROM information_schema.PROCESSLIST \
             WHERE USER NOT IN ('system user', 'event_scheduler', 'unauthenticated user') \
             AND USER <> SUBSTRING_INDEX(CURRENT_USER(), '@', 1) ORDER BY ID",
        )
        .await;
    let (events, others) = match (events, others) {
        (Ok(e), Ok(o)) => (e, o),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "cannot list the primary's scheduled events and other connections");
            return serde_json::json!({ "error": e.to_string() });
        }
    };
    if !events.is_empty() {
        warn!(
            events = ?events.iter().map(|(s, n)| format!("{s}.{n}")).collect::<Vec<_>>(),
            event_scheduler = scheduler.as_deref().unwrap_or("?"),
            "scheduled events write on the primary without Tandem: their writes are not mirrored (verify finds what they change)"
        );
    }
    if !others.is_empty() {
        warn!(
            connections = others.len(),
            "other accounts are connected to the primary directly: writes they make are not mirrored"
        );
    }
    serde_json::json!({
        "events": events.iter().map(|(s, n)| format!("{s}.{n}")).collect::<Vec<_>>(),
        "event_scheduler": scheduler,
        "other_connections": others
            .iter()
            .map(|(id, user, host, db)| serde_json::json!({ "id": id, "user": user, "host": host, "db": db }))
            .collect::<Vec<_>>(),
    })
}
