//! The cache of table facts capture reads from the primary's
//! information_schema (`TableFacts`), and when it goes stale: a DDL on a
//! table moves that table's generation, one on triggers or routines moves
//! them all, so facts read across a DDL are never kept.

use super::*;

impl Mirror {
    /// Cached facts of `db.table` (see `TableFacts`).
    pub fn table_facts(&self, db: &str, table: &str) -> Option<TableFacts> {
        let key = format!("{db}.{table}");
        self.table_facts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }

    /// Caches facts read while the table's schema generation was
    /// `generation` (`schema_generation` before the look-up); not if a DDL
    /// on it started or ended since, since they may describe either side.
    pub fn set_table_facts(&self, db: &str, table: &str, facts: TableFacts, generation: u64) {
        let key = format!("{db}.{table}");
        let mut cache = self.table_facts.lock().unwrap_or_else(|p| p.into_inner());
        if self.schema_generation(db, table) == generation {
            cache.insert(key, facts);
        }
    }

    pub fn schema_generation(&self, db: &str, table: &str) -> u64 {
        let own = self
            .table_generations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("{db}.{table}"))
            .copied()
            .unwrap_or(0);
        self.schema_generation.load(Ordering::SeqCst) + own
    }

    /// A DDL on these tables (`db`, `table`) is about to run, or went
    /// through: their cached facts are stale, and any being read now too.
    /// Other tables' facts stay.
    pub fn tables_changed(&self, tables: &[(String, String)]) {
        let mut gens = self
            .table_generations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut cache = self.table_facts.lock().unwrap_or_else(|p| p.into_inner());
        for (db, t) in tables {
            let key = format!("{db}.{t}");
            *gens.entry(key.clone()).or_default() += 1;
            cache.remove(&key);
        }
        drop((gens, cache));
        self.routines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A DDL is about to run, or went through: table facts cached from the
    /// schema are stale, and any being read now too.
    pub fn schema_changed(&self) {
        self.schema_generation.fetch_add(1, Ordering::SeqCst);
        self.table_facts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.routines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
