//! Ending the sessions that hold a cutover's fence after its grace period
//! (`CutoverOptions::end_holders_after`): each one's backend connection is
//! killed on the primary (`KILL CONNECTION`: the server rolls its open
//! transaction back and frees its table and named locks) and its client
//! connection is closed, which is what its client would see had the
//! server killed it. Nothing it had not committed was journaled (intents
//! are written at COMMIT), and a COMMIT cut short is settled by its
//! marker like any other.

use crate::config::Config;
use crate::state::Shared;
use mysql_async::prelude::*;
use std::sync::atomic::Ordering;
use tracing::warn;

/// Ends every session holding the fence now; returns a line per session
/// for the cutover's report.
pub async fn end(shared: &Shared, current: &Config) -> Vec<String> {
    let holders = shared.registry.holders();
    if holders.is_empty() {
        return Vec::new();
    }
    let mut conn = match current.backends.get(&current.primary) {
        Some(b) => crate::backend::own_conn(crate::backend::own_opts(b).await)
            .await
            .map_err(|e| e.to_string()),
        None => Err(format!("no backend {}", current.primary)),
    };
    let mut out = Vec::with_capacity(holders.len());
    for h in holders {
        let Some(entry) = shared.registry.get(u64::from(h.id)) else {
            continue; // ended meanwhile
        };
        let thread = entry.backend_thread.load(Ordering::Relaxed);
        let killed = match (&mut conn, thread) {
            (_, 0) => Ok(()),
            (Ok(c), t) => match c.query_drop(format!("KILL CONNECTION {t}")).await {
                // Gone already (1094: unknown thread): nothing to free.
                Err(mysql_async::Error::Server(e)) if e.code == 1094 => Ok(()),
                r => r.map_err(|e| e.to_string()),
            },
            (Err(e), _) => Err(e.clone()),
        };
        entry.cancel.cancel();
        let line = h.to_string();
        match killed {
            Ok(()) => {
                warn!(session = h.id, who = %h.who, why = h.why, "cutover: ended a session holding the fence after the grace period");
                out.push(line);
            }
            Err(e) => {
                warn!(session = h.id, who = %h.who, error = %e, "cutover: could not kill a holding session's backend connection; its client connection is closed");
                out.push(format!(
                    "{line} (its backend connection could not be killed: {e})"
                ));
            }
        }
    }
    if let Ok(c) = conn {
        let _ = c.disconnect().await;
    }
    out
}
