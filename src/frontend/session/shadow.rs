//! Shadow reads (`migration.reads: shadow`): which reads are sampled, and
//! handing them to the background comparison once the client has its
//! answer.

use super::Session;
use crate::router::{rename, Class, Classified};
use mysql_common::constants::StatusFlags;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Session<'_> {
    /// Whether to shadow this read (`migration.reads: shadow`, sampled): the
    /// tables it reads and the running mirror, when it qualifies.
    pub(super) fn shadow_plan(
        &self,
        classified: &Classified,
        packet: &[u8],
    ) -> Option<(
        crate::shadow::TableMarks,
        Arc<crate::mirror::runtime::Mirror>,
    )> {
        let cfg = self.link.shared.config.load();
        if cfg.reads != crate::config::Reads::Shadow
            || self.in_txn()
            || !self
                .link
                .status
                .contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
            || rand::random::<f64>() * 100.0 >= cfg.shadow_sample_percent
        {
            return None;
        }
        let [route] = classified.statements.as_slice() else {
            return None;
        };
        if !matches!(route.class, Class::Read { .. }) || !route.parsed {
            return None;
        }
        let sql = &packet[1..];
        if !crate::shadow::eligible(sql, &self.link.scratch.tokens, &route.tables, |t| {
            cfg.rules.mirrored(t)
        }) {
            return None;
        }
        // `shop.t` on the secondary's connection would read the primary's
        // database again (same server) or none: not compared.
        if rename::may_qualify(sql) && !matches!(rename::secondary_text(&cfg, sql), Ok(None)) {
            return None;
        }
        let m = self.link.capturing()?;
        match crate::shadow::quiet_tables(&m, &route.tables) {
            Some(tables) => Some((tables, m)),
            None => {
                self.link
                    .shared
                    .shadow
                    .skipped
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Hands a shadowed read to the background (the client has its answer).
    pub(super) fn shadow_send(
        &mut self,
        packet: &[u8],
        tables: crate::shadow::TableMarks,
        mirror: Arc<crate::mirror::runtime::Mirror>,
        primary: crate::shadow::RowDigest,
    ) {
        let cfg = self.link.shared.config.load();
        let Some(secondary) = cfg.secondary.clone() else {
            return;
        };
        let Some(pool) = self.link.shared.pools.load().get(&secondary).cloned() else {
            return;
        };
        let db = self.link.current_db_on(&cfg, &secondary);
        let job = crate::shadow::Job {
            packet: packet.to_vec(),
            db,
            sets: self.replay.sets.clone(),
            caps: self.link.caps,
            ext_caps: self.link.ext_caps,
            collation: self.link.collation,
            tables,
            primary,
        };
        crate::shadow::spawn(job, pool, mirror, self.link.shared.shadow.clone());
    }
}
