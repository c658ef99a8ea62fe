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
    let opts = crate::backend::own_opts(&account.on(b)).await;
    let work = async {
        let mut conn = crate::backend::own_conn(opts).await?;
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

/// What `account` may do on `from` and may not on `to` (the cutover's
/// target), as `SHOW GRANTS` lists it logged in as the account on each:
/// the `GRANT` statements `from` has and `to` lacks, with `from`'s URL
/// database named as `to`'s (the name the application's database has
/// there), password clauses and the account's host left out. A problem
/// line naming them, or None.
pub async fn compare_grants(
    from: &BackendConfig,
    to: &BackendConfig,
    account: &Account,
    timeout: Duration,
) -> Option<String> {
    let grants = |b: BackendConfig| async move {
        let mut conn =
            crate::backend::own_conn(crate::backend::own_opts(&account.on(&b)).await).await?;
        let rows: Vec<String> = conn.query("SHOW GRANTS").await?;
        let _ = conn.disconnect().await;
        Ok::<_, mysql_async::Error>(rows)
    };
    let read = async {
        Ok::<_, mysql_async::Error>((grants(from.clone()).await?, grants(to.clone()).await?))
    };
    let (on_from, on_to) = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(g)) => g,
        // Logging in is `check`'s to report.
        Ok(Err(_)) | Err(_) => return None,
    };
    let rename = |g: &str| match (from.database.as_deref(), to.database.as_deref()) {
        (Some(f), Some(t)) if f != t => g
            .replace(
                &format!("`{}`.", f.replace('_', "\\_")),
                &format!("`{}`.", t.replace('_', "\\_")),
            )
            .replace(&format!("`{f}`."), &format!("`{t}`.")),
        _ => g.to_string(),
    };
    let have: std::collections::HashSet<String> =
        on_to.iter().map(|g| normalized_grant(g)).collect();
    let missing: Vec<String> = on_from
        .iter()
        .map(|g| normalized_grant(&rename(g)))
        .filter(|g| !have.contains(g))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "account {} has on {} what it lacks on {}: {}",
            account.user,
            from.name,
            to.name,
            missing.join("; ")
        )
    })
}

/// A `SHOW GRANTS` line without what differs per server and account
/// naming: the password clause and the `TO 'user'@'host'` part.
fn normalized_grant(g: &str) -> String {
    let g = g.split(" IDENTIFIED BY ").next().unwrap_or(g);
    let g = g.split(" IDENTIFIED VIA ").next().unwrap_or(g);
    match g.rfind(" TO ") {
        Some(at) => {
            let (head, tail) = g.split_at(at);
            // `WITH GRANT OPTION` and the like after the account stay.
            let after = tail
                .trim_start_matches(" TO ")
                .split_once(' ')
                .map(|(_, rest)| format!(" {rest}"))
                .unwrap_or_default();
            format!("{head}{after}")
        }
        None => g.to_string(),
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
    let mut out = Vec::new();
    for a in distinct(accounts) {
        if let Some(problem) = check(b, a, markers, timeout).await {
            out.push(problem);
        }
    }
    out
}

/// `compare_grants` for every distinct account of `accounts`.
pub async fn compare_all_grants<'a>(
    from: &BackendConfig,
    to: &BackendConfig,
    accounts: impl IntoIterator<Item = &'a Account>,
    timeout: Duration,
) -> Vec<String> {
    let mut out = Vec::new();
    for a in distinct(accounts) {
        if let Some(problem) = compare_grants(from, to, a, timeout).await {
            out.push(problem);
        }
    }
    out
}

/// Each account once (several proxy users may act as one).
fn distinct<'a>(accounts: impl IntoIterator<Item = &'a Account>) -> Vec<&'a Account> {
    let mut seen: Vec<&Account> = Vec::new();
    for a in accounts {
        if !seen.contains(&a) {
            seen.push(a);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::normalized_grant;

    #[test]
    fn grants_compare_without_password_and_host() {
        assert_eq!(
            normalized_grant("GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*ABC'"),
            "GRANT USAGE ON *.*"
        );
        assert_eq!(
            normalized_grant(
                "GRANT SELECT, INSERT ON `shop`.* TO `app`@`localhost` WITH GRANT OPTION"
            ),
            "GRANT SELECT, INSERT ON `shop`.* WITH GRANT OPTION"
        );
    }
}
