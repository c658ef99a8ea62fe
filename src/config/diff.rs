//! What a reload would change (`Changes`), and which edits cannot apply to
//! a running Tandem (`diff` refuses them, naming the key).

use super::{Config, ConfigErrors};

/// What a reload would change, once `diff` accepted it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Backends added, removed or changed: their pools are rebuilt.
    pub backends: Vec<String>,
    pub users: bool,
    pub rules: bool,
    pub secondary: bool,
    /// The new primary, when the edit is a cutover.
    pub cutover: Option<String>,
    /// Settings read where they are used (unsafe_writes, cutover_timeout,
    /// verify; apply_errors is handed to the running applier): publishing
    /// the new config applies them.
    pub settings: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// Compares the running config with a validated new one. Settings that
/// cannot change while running are named in the errors (nothing is
/// half-applied).
pub fn diff(old: &Config, new: &Config) -> Result<Changes, ConfigErrors> {
    let mut errors = Vec::new();
    let restart = "cannot change while Tandem runs (restart to apply it)";
    if old.listen != new.listen {
        errors.push(format!("listen: {restart}"));
    }
    if old.admin != new.admin {
        errors.push(format!("admin: {restart}"));
    }
    if old.limits.max_client_connections != new.limits.max_client_connections {
        errors.push(format!("limits.max_client_connections: {restart}"));
    }
    if old.primary != new.primary {
        // A cutover: the caller runs it (reload.rs); only the flip itself
        // is allowed to come with it.
        if old.secondary.as_deref() != Some(new.primary.as_str())
            || new.secondary.as_deref() != Some(old.primary.as_str())
        {
            errors.push(format!(
                "migration.primary: a cutover ({} -> {}) can only go to the current secondary, and the \
                 old primary becomes the secondary (migration.secondary: {} or {})",
                old.primary, new.primary, old.primary, new.primary
            ));
        }
        for name in [&old.primary, &new.primary] {
            if old.backends.get(name) != new.backends.get(name) {
                errors.push(format!(
                    "backends.{name}: cannot change in the same edit as a cutover"
                ));
            }
        }
    } else if let (Some(a), Some(b)) = (
        old.backends.get(&old.primary),
        new.backends.get(&new.primary),
    ) {
        if (&a.host, a.port, &a.user, &a.password, &a.database, a.kind)
            != (&b.host, b.port, &b.user, &b.password, &b.database, b.kind)
        {
            errors.push(format!(
                "backends.{}.url: the primary's address or credentials cannot change live (that would move clients without a cutover)",
                old.primary
            ));
        }
    }
    if old.journal != new.journal {
        errors.push(format!("migration.journal: {restart}"));
    }
    if old.apply_workers != new.apply_workers {
        errors.push(format!("migration.apply_workers: {restart}"));
    }
    if old.apply_batch_wait != new.apply_batch_wait {
        errors.push(format!("migration.apply_batch_wait: {restart}"));
    }
    if old.journal_commit_wait != new.journal_commit_wait {
        errors.push(format!("migration.journal_commit_wait: {restart}"));
    }
    for (name, c) in &old.clusters {
        let Some(n) = new.clusters.get(name) else {
            errors.push(format!("clusters.{name}: {restart}"));
            continue;
        };
        if (&c.database, &c.shards) != (&n.database, &n.shards) {
            errors.push(format!(
                "clusters.{name}: its database and shards {restart}"
            ));
        }
        if c.owners != n.owners {
            errors.push(format!(
                "clusters.{name}: the edit would change which shard owns some buckets; moving \
                 rows between shards is not built yet"
            ));
        }
        for (table, p) in &c.tables {
            if n.tables
                .get(table)
                .is_some_and(|q| q.placement != p.placement)
            {
                errors.push(format!(
                    "tables.{table}: the edit would change where its rows live; moving rows \
                     between shards is not built yet"
                ));
            }
        }
    }
    if new.clusters.keys().any(|k| !old.clusters.contains_key(k)) {
        errors.push(format!("clusters: a new cluster {restart}"));
    }
    let book = |c: &Config| c.primary_backend().bookkeeping.clone();
    if book(old) != book(new) {
        errors.push(format!("migration.bookkeeping_database: {restart}"));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let cutover = (old.primary != new.primary).then(|| new.primary.clone());
    let mut backends: Vec<String> = old
        .backends
        .keys()
        .chain(new.backends.keys())
        .filter(|name| old.backends.get(*name) != new.backends.get(*name))
        .cloned()
        .collect();
    if old.limits != new.limits {
        // Pools hold their timeouts: rebuild them all.
        backends = new.backends.keys().cloned().collect();
    }
    backends.sort();
    backends.dedup();
    Ok(Changes {
        backends,
        users: old.users != new.users
            || old.accounts != new.accounts
            || old.user_limits != new.user_limits,
        rules: old.rules != new.rules || old.clusters != new.clusters,
        secondary: old.secondary != new.secondary && cutover.is_none(),
        cutover,
        settings: (
            old.unsafe_writes,
            old.cutover_timeout,
            old.cutover_max_lag,
            (old.reads, old.shadow_sample_percent.to_bits()),
            &old.verify,
            (old.journal_limit, old.apply_errors),
            (&old.admin_token, old.admin_token_scope),
            (old.tls.as_ref().map(|t| t.digest), &old.users_require_tls),
        ) != (
            new.unsafe_writes,
            new.cutover_timeout,
            new.cutover_max_lag,
            (new.reads, new.shadow_sample_percent.to_bits()),
            &new.verify,
            (new.journal_limit, new.apply_errors),
            (&new.admin_token, new.admin_token_scope),
            (new.tls.as_ref().map(|t| t.digest), &new.users_require_tls),
        ),
    })
}
