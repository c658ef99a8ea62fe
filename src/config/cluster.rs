//! Clusters: sets of shard backends that serve as one database, and the
//! table rules that place each table's rows on them (`shard_key` with
//! `shard_by: hash | range | list`, or `reference: true`). Validated here
//! into [`ClusterConfig`]; the shard functions that use it live in
//! `router::shard`.

use super::model::{RawCluster, RawTableRule, ScatterWrites, ShardBy};
use super::{BackendConfig, BackendKind, Rules};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Most virtual buckets a cluster may have.
pub const MAX_BUCKETS: u32 = 1 << 20;

/// A validated cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: String,
    /// The database name clients use.
    pub database: String,
    /// Shard backend names; a shard's index is its position here.
    pub shards: Vec<String>,
    /// Bucket -> shard index (`buckets` entries).
    pub owners: Arc<[u16]>,
    /// Table name -> where its rows live.
    pub tables: BTreeMap<String, TablePlacement>,
    /// Most bytes a merged read may buffer.
    pub merge_buffer: u64,
    /// How a write that spans shards commits.
    pub cross_shard: super::model::CrossShard,
}

/// Where one table's rows live on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlacement {
    pub placement: Placement,
    pub scatter_writes: ScatterWrites,
    pub key_updates: super::model::ShardKeyUpdates,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// hash(key) -> bucket -> shard (`router::shard::hash`).
    Hash { key: String },
    /// Ordered exclusive upper bounds (as written); the last has none.
    Range {
        key: String,
        ranges: Vec<(Option<String>, usize)>,
    },
    /// Explicit values -> shard, and the shard of every other value.
    List {
        key: String,
        values: Vec<(String, usize)>,
        default: Option<usize>,
    },
    /// A full copy on every shard.
    Reference,
}

impl Placement {
    /// The shard key column, when rows are spread by one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Placement::Hash { key }
            | Placement::Range { key, .. }
            | Placement::List { key, .. } => Some(key),
            Placement::Reference => None,
        }
    }
}

impl ClusterConfig {
    pub fn buckets(&self) -> u32 {
        self.owners.len() as u32
    }

    /// The shard index of backend `name`.
    pub fn shard_index(&self, name: &str) -> Option<usize> {
        self.shards.iter().position(|s| s == name)
    }
}

/// Validates `clusters:` and, when one exists, the sharding keys of every
/// table rule. Errors name their key path.
pub fn validate(
    raw: &BTreeMap<String, RawCluster>,
    backends: &BTreeMap<String, BackendConfig>,
    rules: &Rules,
    errors: &mut Vec<String>,
) -> BTreeMap<String, ClusterConfig> {
    let mut out = BTreeMap::new();
    if raw.len() > 1 {
        errors.push(format!(
            "clusters: {} clusters are defined; Tandem serves one cluster for now (moving \
             between clusters is not built yet)",
            raw.len()
        ));
    }
    for (name, c) in raw {
        let key = format!("clusters.{name}");
        let before = errors.len();
        if backends.contains_key(name) {
            errors.push(format!("{key}: a backend has the same name"));
        }
        if c.database.trim().is_empty() {
            errors.push(format!("{key}.database: required (the name clients use)"));
        }
        if c.shards.is_empty() {
            errors.push(format!("{key}.shards: at least one shard is required"));
        }
        let mut seen = BTreeSet::new();
        for s in &c.shards {
            match backends.get(s) {
                None => errors.push(format!("{key}.shards: unknown backend {s:?}")),
                Some(b) if b.kind != BackendKind::Mysql => errors.push(format!(
                    "{key}.shards: backend {s:?} is not MySQL; shards are MySQL backends"
                )),
                Some(b) if b.database.is_none() => errors.push(format!(
                    "{key}.shards: backend {s:?} names no database in its URL (each shard's URL \
                     names its physical database)"
                )),
                Some(_) => {}
            }
            if !seen.insert(s) {
                errors.push(format!("{key}.shards: {s:?} is listed twice"));
            }
        }
        if c.shards.len() > u16::MAX as usize {
            errors.push(format!("{key}.shards: too many shards"));
        }
        if c.buckets == 0 || c.buckets > MAX_BUCKETS {
            errors.push(format!(
                "{key}.buckets: {} is not between 1 and {MAX_BUCKETS}",
                c.buckets
            ));
        } else if (c.buckets as usize) < c.shards.len() {
            errors.push(format!(
                "{key}.buckets: {} buckets cannot cover {} shards",
                c.buckets,
                c.shards.len()
            ));
        }
        if errors.len() > before {
            continue;
        }
        let owners = match &c.assignment {
            None => (0..c.buckets)
                .map(|b| (b as usize % c.shards.len()) as u16)
                .collect::<Vec<_>>(),
            Some(a) => match assignment(&key, c, a, errors) {
                Some(o) => o,
                None => continue,
            },
        };
        let mut cluster = ClusterConfig {
            name: name.clone(),
            database: c.database.clone(),
            shards: c.shards.clone(),
            owners: owners.into(),
            tables: BTreeMap::new(),
            merge_buffer: match super::parse_size(&c.merge_buffer) {
                Some(n) => n,
                None => {
                    errors.push(format!(
                        "clusters.{name}.merge_buffer: {:?} is not a size (e.g. 64MiB)",
                        c.merge_buffer
                    ));
                    0
                }
            },
            cross_shard: c.cross_shard_transactions,
        };
        for (table, rule) in &rules.tables {
            if let Some(p) = placement(&cluster, table, &rule.raw, errors) {
                cluster.tables.insert(table.clone(), p);
            }
        }
        out.insert(name.clone(), cluster);
    }
    if raw.is_empty() {
        for (table, rule) in &rules.tables {
            let r = &rule.raw;
            if r.shard_key.is_some()
                || r.shard_by.is_some()
                || r.reference.is_some()
                || r.ranges.is_some()
                || r.values.is_some()
            {
                errors.push(format!(
                    "tables.{table}: has sharding keys, but no cluster is configured (clusters:)"
                ));
            }
        }
    }
    out
}

/// An explicit bucket assignment: every bucket exactly once.
fn assignment(
    key: &str,
    c: &RawCluster,
    a: &BTreeMap<String, Vec<String>>,
    errors: &mut Vec<String>,
) -> Option<Vec<u16>> {
    let mut owners: Vec<Option<u16>> = vec![None; c.buckets as usize];
    let before = errors.len();
    for (shard, ranges) in a {
        let Some(index) = c.shards.iter().position(|s| s == shard) else {
            errors.push(format!(
                "{key}.assignment: {shard:?} is not one of the cluster's shards"
            ));
            continue;
        };
        for r in ranges {
            let parsed = match r.split_once('-') {
                Some((a, b)) => a
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .zip(b.trim().parse::<u32>().ok()),
                None => r.trim().parse::<u32>().ok().map(|n| (n, n)),
            };
            match parsed {
                Some((lo, hi)) if lo <= hi && hi < c.buckets => {
                    for b in lo..=hi {
                        if owners[b as usize].replace(index as u16).is_some() {
                            errors.push(format!("{key}.assignment: bucket {b} is assigned twice"));
                            return None;
                        }
                    }
                }
                _ => errors.push(format!(
                    "{key}.assignment.{shard}: {r:?} is not a bucket or range of buckets \
                     (0-{} , e.g. \"0-1023\")",
                    c.buckets - 1
                )),
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    if let Some(b) = owners.iter().position(|o| o.is_none()) {
        errors.push(format!(
            "{key}.assignment: bucket {b} has no shard (every bucket must be assigned)"
        ));
        return None;
    }
    Some(owners.into_iter().flatten().collect())
}

/// One table rule's placement on `cluster`.
fn placement(
    cluster: &ClusterConfig,
    table: &str,
    r: &RawTableRule,
    errors: &mut Vec<String>,
) -> Option<TablePlacement> {
    let key = format!("tables.{table}");
    let shard = |name: &str, errors: &mut Vec<String>, at: &str| -> Option<usize> {
        let i = cluster.shard_index(name);
        if i.is_none() {
            errors.push(format!(
                "{key}.{at}: {name:?} is not a shard of cluster {} ({})",
                cluster.name,
                cluster.shards.join(", ")
            ));
        }
        i
    };
    let scatter_writes = r.scatter_writes.unwrap_or_default();
    if r.reference == Some(true) {
        if r.shard_key.is_some() || r.shard_by.is_some() || r.ranges.is_some() || r.values.is_some()
        {
            errors.push(format!(
                "{key}: a reference table (a full copy on every shard) has no shard_key, shard_by, ranges or values"
            ));
            return None;
        }
        return Some(TablePlacement {
            placement: Placement::Reference,
            scatter_writes,
            key_updates: Default::default(),
        });
    }
    let Some(column) = r.shard_key.clone() else {
        errors.push(format!(
            "{key}: on cluster {} every table needs shard_key (or reference: true)",
            cluster.name
        ));
        return None;
    };
    let by = r.shard_by.unwrap_or_default();
    if by != ShardBy::Range && r.ranges.is_some() {
        errors.push(format!("{key}.ranges: only for shard_by: range"));
    }
    if by != ShardBy::List && (r.values.is_some() || r.default_shard.is_some()) {
        errors.push(format!("{key}.values: only for shard_by: list"));
    }
    let placement = match by {
        ShardBy::Hash => Placement::Hash { key: column },
        ShardBy::Range => {
            let raw = r.ranges.as_deref().unwrap_or_default();
            if raw.is_empty() {
                errors.push(format!("{key}.ranges: shard_by: range needs ranges"));
                return None;
            }
            let mut ranges = Vec::new();
            for (i, range) in raw.iter().enumerate() {
                let last = i + 1 == raw.len();
                match (&range.below, last) {
                    (None, false) => {
                        errors.push(format!(
                            "{key}.ranges[{i}]: only the last range may omit `below`"
                        ));
                        return None;
                    }
                    (Some(_), true) => {
                        errors.push(format!(
                            "{key}.ranges[{i}]: the last range takes everything above the \
                             others (omit `below`), so that no key is left without a shard"
                        ));
                        return None;
                    }
                    _ => {}
                }
                let s = shard(&range.shard, errors, &format!("ranges[{i}].shard"))?;
                ranges.push((range.below.as_ref().map(|b| b.text()), s));
            }
            let bounds: Vec<&str> = ranges.iter().filter_map(|(b, _)| b.as_deref()).collect();
            if !ascending(&bounds) {
                errors.push(format!(
                    "{key}.ranges: the `below` bounds must be in ascending order"
                ));
                return None;
            }
            Placement::Range {
                key: column,
                ranges,
            }
        }
        ShardBy::List => {
            let raw = r.values.as_deref().unwrap_or_default();
            if raw.is_empty() {
                errors.push(format!("{key}.values: shard_by: list needs values"));
                return None;
            }
            let mut values = Vec::new();
            let mut seen = BTreeSet::new();
            for (i, entry) in raw.iter().enumerate() {
                let s = shard(&entry.shard, errors, &format!("values[{i}].shard"))?;
                for v in &entry.values {
                    let t = v.text();
                    if !seen.insert(t.clone()) {
                        errors.push(format!("{key}.values: {t:?} is listed twice"));
                        return None;
                    }
                    values.push((t, s));
                }
            }
            let default = match &r.default_shard {
                Some(d) => Some(shard(d, errors, "default_shard")?),
                None => None,
            };
            Placement::List {
                key: column,
                values,
                default,
            }
        }
    };
    Some(TablePlacement {
        placement,
        scatter_writes,
        key_updates: r.shard_key_updates.unwrap_or_default(),
    })
}

/// Whether range bounds ascend: as integers when all are, else as text
/// (ISO dates and datetimes order as text).
fn ascending(bounds: &[&str]) -> bool {
    let ints: Option<Vec<i128>> = bounds.iter().map(|b| b.trim().parse().ok()).collect();
    match ints {
        Some(n) => n.windows(2).all(|w| w[0] < w[1]),
        None => bounds.windows(2).all(|w| w[0] < w[1]),
    }
}
