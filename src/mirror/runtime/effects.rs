//! The capture side of effects (`mirror::effect`): the per-table order,
//! the intent before the write and its answer after.

use super::*;
use crate::mirror::effect::{EFFECT_TOKEN, UNKNOWN_ON_PRIMARY};

/// Held while a write without transactions runs: its tables' locks.
pub struct EffectGuard {
    _held: Vec<tokio::sync::OwnedMutexGuard<()>>,
}

impl Mirror {
    /// Takes the locks of `tables` (keys in a fixed order, so two writes
    /// never wait on each other crosswise), waiting at most `patience`.
    pub async fn effect_lock(&self, tables: &[String], patience: Duration) -> Option<EffectGuard> {
        let mut keys: Vec<String> = tables.iter().map(|t| table_key(t)).collect();
        keys.sort();
        keys.dedup();
        let locks: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut m = self.effect_locks.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter()
                .map(|k| m.entry(k.clone()).or_default().clone())
                .collect()
        };
        let take = async {
            let mut held = Vec::with_capacity(locks.len());
            for l in locks {
                held.push(l.lock_owned().await);
            }
            held
        };
        let held = tokio::time::timeout(patience, take).await.ok()?;
        Some(EffectGuard { _held: held })
    }

    /// Journals an effect's intent (durable before the write runs).
    pub async fn effect_intent(&self, txn: MirrorTxn) -> Result<Lsn, JournalError> {
        self.intent(EFFECT_TOKEN, txn).await
    }

    /// The primary answered: durable at once (a crash before it would
    /// leave the write unsettled and its tables marked).
    pub async fn effect_answered(
        &self,
        lsn: Lsn,
        insert_id: Option<u64>,
        error: Option<u16>,
    ) -> Result<(), JournalError> {
        let rec = JournalRecord::Effect {
            intent: lsn,
            insert_id,
            error,
            at_us: now_us(),
        };
        self.journal.append(rec.encode()).await?;
        self.stats.committed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The answer was lost: the write is skipped and its tables marked.
    pub fn effect_lost(&self, lsn: Lsn, tables: &[String]) {
        self.outcome(lsn, EFFECT_TOKEN, false);
        self.mark_divergent(tables, UNKNOWN_ON_PRIMARY);
    }
}
