//! The roles record: which backend is primary and which secondary as the
//! last cutover left them, kept beside the journal. Loading a config reads
//! it (a start whose config disagrees is refused); cutover writes it.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// File beside the journal recording the roles after the last cutover.
pub const ROLES_FILE: &str = "roles.json";

/// Roles as the last cutover left them. A start whose config disagrees is
/// refused (its journal and commit markers belong to the recorded primary).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolesRecord {
    pub primary: String,
    pub secondary: String,
    pub at_unix: u64,
}

impl RolesRecord {
    pub fn read(journal: &Path) -> Option<RolesRecord> {
        let bytes = std::fs::read(journal.join(ROLES_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Written atomically (temporary file, fsync, rename, fsync of the
    /// directory).
    pub fn write(&self, journal: &Path) -> std::io::Result<()> {
        use std::io::Write;
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(journal)?;
        }
        let tmp = journal.join(format!("{ROLES_FILE}.tmp"));
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, journal.join(ROLES_FILE))?;
        std::fs::File::open(journal)?.sync_all()
    }
}
