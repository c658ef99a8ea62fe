//! Database renaming: the URL databases of the primary and the secondary
//! name one logical database (`shop` on one, `shop_next` on the other), so a
//! client's `USE shop_next`, `shop.t` or login database means the backend's
//! own. Pure functions of (statement, config snapshot); no I/O.

use crate::config::Config;
use crate::router::lexer;

/// The database a client's `db` selects on backend `on`: either role's URL
/// database selects `on`'s own. Other names pass unchanged.
pub fn map_db(cfg: &Config, db: &str, on: &str) -> String {
    // A cluster's database name selects each shard's own.
    if let Some(c) = cfg.cluster() {
        if db == c.database && c.shards.iter().any(|s| s == on) {
            if let Some(d) = cfg.backends.get(on).and_then(|b| b.database.clone()) {
                return d;
            }
        }
    }
    let url_db = |name: Option<&String>| {
        name.and_then(|n| cfg.backends.get(n))
            .and_then(|b| b.database.as_deref())
    };
    let roles = [url_db(Some(&cfg.primary)), url_db(cfg.secondary.as_ref())];
    match url_db(Some(&on.to_string())) {
        Some(target) if roles.contains(&Some(db)) => target.to_string(),
        _ => db.to_string(),
    }
}

/// `sql` as backend `on` should run it: names qualified with the other
/// role's URL database (`shop_next.t` while `shop` is the primary, `shop.t`
/// after a cutover to `shop_next`) name `on`'s own, as `USE` does
/// (`map_db`); otherwise a client that names its tables with the database
/// would, after a cutover, write the old database straight past the
/// mirror. Ok(None): nothing to rename (the usual case, found with one
/// substring search). Err: the other database's name also names a table,
/// alias or column here, so Tandem cannot tell which to rename.
pub fn backend_text(cfg: &Config, on: &str, sql: &[u8]) -> Result<Option<Vec<u8>>, String> {
    renamed_for(cfg, on, sql)
}

/// Whether `sql` may hold a qualified name at all (it has a dot). Callers
/// on the hot path ask this before they load a config snapshot: most
/// statements have no dot and need no renaming.
pub fn may_qualify(sql: &[u8]) -> bool {
    memchr::memchr(b'.', sql).is_some()
}

/// A statement's text for the secondary: names qualified with the primary
/// URL's database get the secondary URL's (on a secondary in the same
/// server, `shop.t` would otherwise be the primary's table, written twice;
/// see `lexer::rename_database`). The secondary is named by the same
/// config snapshot the renaming reads, so that a reload in between cannot
/// pair one config's secondary with another's databases. Ok(None): nothing
/// to rename, or no secondary. Err: why that cannot be done with certainty.
pub fn secondary_text(cfg: &Config, sql: &[u8]) -> Result<Option<Vec<u8>>, String> {
    match cfg.secondary.as_deref() {
        Some(secondary) => renamed_for(cfg, secondary, sql),
        None => Ok(None),
    }
}

/// `sql` with the other role's URL database renamed to `on`'s, under `cfg`
/// (see [`backend_text`]).
fn renamed_for(cfg: &Config, on: &str, sql: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let url_db = |name: &str| cfg.backends.get(name).and_then(|b| b.database.as_deref());
    let Some(to) = url_db(on) else {
        return Ok(None);
    };
    let Some(from) = [Some(cfg.primary.as_str()), cfg.secondary.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(url_db)
        .find(|d| *d != to)
    else {
        return Ok(None);
    };
    if memchr::memmem::find(sql, from.as_bytes()).is_none() {
        return Ok(None);
    }
    let mut toks = Vec::new();
    lexer::tokenize(sql, &mut toks);
    match lexer::rename_database(sql, &toks, from, to) {
        lexer::Renamed::Unchanged => Ok(None),
        lexer::Renamed::Text(t) => Ok(Some(t)),
        lexer::Renamed::Ambiguous => Err(format!(
            "the database name `{from}` qualifies a name here and also names a table, \
             alias or column, so Tandem cannot tell which to rename to `{to}`"
        )),
    }
}
