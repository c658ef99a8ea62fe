//! Whether the database accounts proxy users act as (`backend_user`) can
//! do what Tandem needs of them on a backend: log in, and, where writes
//! are mirrored, insert the commit marker that goes into the
//! application's own transaction. Checked at start (a warning with the
//! GRANT to run) and before a cutover, on the target (a refusal).

use crate::config::{Account, BackendConfig};
use mysql_async::prelude::Queryable;
use std::time::Duration;

/// What is wrong with `account` on `b`, if anything. With `markers` (the
/// commit-marker table, qualified), it must also be able to insert into
/// it (tried inside a transaction that is rolled back).
pub async fn check(
    b: &BackendConfig,
    account: &Account,
    markers: Option<&str>,
    timeout: Duration,
) -> Option<String> {
    let opts = crate::backend::client_opts(&account.on(b));
    let work = async {
        let mut conn = mysql_async::Conn::new(opts).await?;
        if let Some(table) = markers {
            conn.query_drop("START TRANSACTION").await?;
            let r = conn
                .query_drop(format!(
                    "INSERT INTO {table} (db, token) VALUES ('tandem-grant-check', 0)"
                ))
                .await;
            let _ = conn.query_drop("ROLLBACK").await;
            r?;
        }
        let _ = conn.disconnect().await;
        Ok::<_, mysql_async::Error>(())
    };
    let grant = || {
        format!(
            "GRANT SELECT, INSERT ON {}.* TO '{}'@'<host>'",
            crate::sql::quote(&b.bookkeeping),
            account.user
        )
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(())) => None,
        // Table or database missing: Tandem creates them when the mirror
        // starts; not the account's fault.
        Ok(Err(mysql_async::Error::Server(e)))
            if markers.is_some() && matches!(e.code, 1146 | 1049) =>
        {
            None
        }
        Ok(Err(mysql_async::Error::Server(e)))
            if markers.is_some() && matches!(e.code, 1142 | 1044) =>
        {
            Some(format!(
                "account {} cannot write Tandem's commit markers on {} ({}); run: {}",
                account.user,
                b.name,
                e.message,
                grant()
            ))
        }
        Ok(Err(e)) => Some(format!(
            "account {} cannot be used on {}: {e}",
            account.user, b.name
        )),
        Err(_) => Some(format!(
            "account {} on {}: no answer within {timeout:?}",
            account.user, b.name
        )),
    }
}

/// `check_all` of `cfg`'s accounts on its primary, with the commit markers
/// when it mirrors: what start-up warns of and `check-config` reports.
pub async fn check_primary(cfg: &crate::config::Config) -> Vec<String> {
    let primary = cfg.primary_backend();
    let markers = cfg
        .secondary
        .is_some()
        .then(|| crate::mirror::bookkeeping::table(primary, crate::mirror::bookkeeping::MARKERS));
    check_all(
        primary,
        cfg.accounts.values(),
        markers.as_deref(),
        cfg.limits.connect_timeout,
    )
    .await
}

/// `check` for every distinct account of `accounts`.
pub async fn check_all<'a>(
    b: &BackendConfig,
    accounts: impl IntoIterator<Item = &'a Account>,
    markers: Option<&str>,
    timeout: Duration,
) -> Vec<String> {
    let mut seen: Vec<&Account> = Vec::new();
    let mut out = Vec::new();
    for a in accounts {
        if seen.contains(&a) {
            continue;
        }
        seen.push(a);
        if let Some(problem) = check(b, a, markers, timeout).await {
            out.push(problem);
        }
    }
    out
}
