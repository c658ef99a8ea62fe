//! How the applier reads a secondary's errors: which are worth the same
//! transaction again (per server flavour), a DDL found already done, and
//! how long to wait between attempts.

use super::*;

pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(7)).min(5_000))
}

/// Errors after which the same transaction can simply be tried again, on
/// a MariaDB secondary (`mariadb`) or another MySQL server: the codes
/// that differ between the two are read per flavour.
pub(super) fn is_transient(e: &mysql_async::Error, mariadb: bool) -> bool {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            1205 // lock wait timeout
            | 1213 // deadlock
            | 1040 // too many connections
            | 1053 // server shutdown in progress
            | 1927 // connection killed
            | 1290 // running with --read-only (a managed failover in progress)
            | 1836 // read-only mode
            | 2006 | 2013 => true,
            // MySQL 8: the server closed an idle session; MariaDB: a
            // trigger referenced by FOLLOWS/PRECEDES does not exist.
            4031 => !mariadb,
            _ => false,
        },
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        _ => false,
    }
}

/// Errors a replayed DDL gives when it already ran.
pub(super) fn is_replayed_ddl(code: u16) -> bool {
    matches!(
        code,
        1050 // table exists
            | 1051 // unknown table (DROP)
            | 1060 // duplicate column
            | 1061 // duplicate key name
            | 1091 // can't drop field or key
            | 1007 // database exists
            | 1008 // database does not exist
            | 1304 // procedure/function exists
            | 1305 // procedure/function does not exist
            | 1359 // trigger exists
            | 1360 // trigger does not exist
    )
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    fn server(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: String::new(),
            state: "HY000".into(),
        })
    }

    #[test]
    fn errors_are_classified_per_server_flavour() {
        for code in [1205, 1213, 1040, 1053, 1927, 1290, 1836, 2006, 2013] {
            assert!(is_transient(&server(code), true), "{code}");
            assert!(is_transient(&server(code), false), "{code}");
        }
        // 4031: an idle disconnect on MySQL 8, a missing trigger on MariaDB.
        assert!(is_transient(&server(4031), false));
        assert!(!is_transient(&server(4031), true));
        for code in [1062, 1146, 1054, 1064, 1452] {
            assert!(!is_transient(&server(code), true), "{code}");
            assert!(!is_transient(&server(code), false), "{code}");
        }
    }
}
