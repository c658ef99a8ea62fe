//! Rewrites at token positions: pinning UUID()/SYSDATE() for the mirror,
//! placeholders and their rendering, savepoint names, and the database
//! rename of qualified names. Never re-prints SQL: the text is spliced.

use super::*;

/// Rewrites what the primary would evaluate differently from the secondary:
/// each `UUID()` call becomes a string literal from `uuid()` (the same text
/// then runs on both sides) and `SYSDATE(` becomes `NOW(` (which honours the
/// pinned statement time). Token positions only; the rest is kept byte for
/// byte. None when there is nothing to rewrite.
pub fn pin_rewrite(
    sql: &[u8],
    tokens: &[Token],
    mut uuid: impl FnMut() -> String,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(sql.len() + 64);
    let mut at = 0;
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let open = tokens
            .get(i + 1)
            .is_some_and(|n| n.kind == Tok::Punct(b'('));
        let close = tokens
            .get(i + 2)
            .is_some_and(|n| n.kind == Tok::Punct(b')'));
        if t.is_word(sql, "UUID") && open && close {
            out.extend_from_slice(&sql[at..t.start]);
            out.push(b'\'');
            out.extend_from_slice(uuid().as_bytes());
            out.push(b'\'');
            at = tokens[i + 2].end;
            changed = true;
            i += 3;
            continue;
        }
        if t.is_word(sql, "SYSDATE") && open {
            out.extend_from_slice(&sql[at..t.start]);
            out.extend_from_slice(b"NOW");
            at = t.end;
            changed = true;
        }
        i += 1;
    }
    if !changed {
        return None;
    }
    out.extend_from_slice(&sql[at..]);
    Some(out)
}

/// Number of `?` placeholders.
pub fn count_params(tokens: &[Token]) -> usize {
    tokens.iter().filter(|t| t.kind == Tok::Param).count()
}

/// Where the `?` placeholders of `sql` are, in order (for
/// [`render_params`]).
pub fn param_spans(sql: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut tokens = Vec::new();
    tokenize(sql, &mut tokens);
    tokens
        .iter()
        .filter(|t| t.kind == Tok::Param)
        .map(|t| t.start..t.end)
        .collect()
}

/// Replaces the placeholders at `spans` (from [`param_spans`]), in order,
/// with `values` (SQL literals). None when the counts differ.
pub fn render_params(
    sql: &[u8],
    spans: &[std::ops::Range<usize>],
    values: &[String],
) -> Option<Vec<u8>> {
    if spans.len() != values.len() {
        return None;
    }
    let extra: usize = values.iter().map(|v| v.len()).sum();
    let mut out = Vec::with_capacity(sql.len() + extra);
    let mut at = 0;
    for (span, v) in spans.iter().zip(values) {
        out.extend_from_slice(sql.get(at..span.start)?);
        out.extend_from_slice(v.as_bytes());
        at = span.end;
    }
    out.extend_from_slice(sql.get(at..)?);
    Some(out)
}

/// The name a SAVEPOINT / ROLLBACK TO / RELEASE SAVEPOINT statement names
/// (its last word or quoted identifier), unquoted.
pub fn savepoint_name(sql: &[u8], tokens: &[Token]) -> Option<String> {
    let name = tokens.iter().rev().find_map(|t| t.ident(sql))?;
    Some(name.to_ascii_lowercase())
}

/// What [`rename_database`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Renamed {
    /// No name is qualified with the database.
    Unchanged,
    Text(Vec<u8>),
    /// The name is also used for something else in the statement (a table,
    /// an alias or a column), so `name.x` could mean that instead.
    Ambiguous,
}

/// Renames the database `from` to `to` where it qualifies a name
/// (`from.t`, `from`.`t`, `from.t.c`, `from.f()`), at token positions; the
/// rest is kept byte for byte. Names compare exactly (database names are
/// case-sensitive on the servers Tandem targets).
///
/// `from.x` also reads as table-or-alias `from`, column `x`; that needs a
/// table or alias named `from` in the statement, written bare (`UPDATE
/// from …`, `… AS from`) or qualified (`db.from`). Any such use of the name
/// makes the result `Ambiguous` instead of guessing.
pub fn rename_database(sql: &[u8], tokens: &[Token], from: &str, to: &str) -> Renamed {
    let named = |t: &Token| t.ident(sql).is_some_and(|n| n == from);
    let dot = |i: usize| tokens.get(i).is_some_and(|t| t.kind == Tok::Punct(b'.'));
    let word = |i: usize| {
        tokens
            .get(i)
            .is_some_and(|t| matches!(t.kind, Tok::Word | Tok::Quoted))
    };
    let mut qualifiers = Vec::new();
    let mut other_use = false;
    for (i, t) in tokens.iter().enumerate() {
        if !named(t) {
            continue;
        }
        let after_dot = i > 0 && dot(i - 1);
        if !after_dot && dot(i + 1) && word(i + 2) {
            qualifiers.push(t);
        } else {
            other_use = true;
        }
    }
    if qualifiers.is_empty() {
        return Renamed::Unchanged;
    }
    if other_use {
        return Renamed::Ambiguous;
    }
    let mut out = Vec::with_capacity(sql.len() + qualifiers.len() * (to.len() + 2));
    let mut at = 0;
    for t in qualifiers {
        out.extend_from_slice(&sql[at..t.start]);
        out.extend_from_slice(crate::sql::quote(to).as_bytes());
        at = t.end;
    }
    out.extend_from_slice(&sql[at..]);
    Renamed::Text(out)
}

#[cfg(test)]
mod pin_tests {
    use super::super::*;

    pub(super) fn toks(sql: &[u8]) -> Vec<Token> {
        let mut v = Vec::new();
        tokenize(sql, &mut v);
        v
    }

    #[test]
    pub(super) fn uuid_and_sysdate_are_rewritten_at_token_positions_only() {
        let sql =
            b"INSERT INTO t (u, v, s, c) VALUES (UUID(), uuid( ), SYSDATE(6), 'UUID()') -- UUID()";
        let mut n = 0;
        let out = pin_rewrite(sql, &toks(sql), || {
            n += 1;
            format!("u{n}")
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "INSERT INTO t (u, v, s, c) VALUES ('u1', 'u2', NOW(6), 'UUID()') -- UUID()"
        );
        let plain = b"INSERT INTO t (uuid) VALUES (1)";
        assert!(pin_rewrite(plain, &toks(plain), || unreachable!()).is_none());
    }

    #[test]
    pub(super) fn params_are_rendered_in_order() {
        let sql = b"UPDATE t SET a = ?, b = '?' WHERE id = ?";
        let t = toks(sql);
        assert_eq!(count_params(&t), 2);
        let spans = param_spans(sql);
        let out = render_params(sql, &spans, &["'x'".into(), "7".into()]).unwrap();
        assert_eq!(out, b"UPDATE t SET a = 'x', b = '?' WHERE id = 7");
        assert!(render_params(sql, &spans, &["1".into()]).is_none());
    }

    #[test]
    pub(super) fn savepoint_names() {
        for (sql, name) in [
            ("SAVEPOINT a1", "a1"),
            ("ROLLBACK TO SAVEPOINT `My Sp`", "my sp"),
            ("ROLLBACK WORK TO b", "b"),
            ("RELEASE SAVEPOINT C", "c"),
        ] {
            assert_eq!(
                savepoint_name(sql.as_bytes(), &toks(sql.as_bytes())).as_deref(),
                Some(name)
            );
        }
    }
    #[test]
    pub(super) fn database_qualifiers_are_renamed_unless_the_name_means_something_else() {
        let r =
            |sql: &str| rename_database(sql.as_bytes(), &toks(sql.as_bytes()), "shop", "shop_next");
        let text = |sql: &str| match r(sql) {
            Renamed::Text(t) => String::from_utf8(t).unwrap(),
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(
            text("UPDATE shop.t SET v = v + 1 WHERE shop.t.id = 1 AND s = 'shop.t'"),
            "UPDATE `shop_next`.t SET v = v + 1 WHERE `shop_next`.t.id = 1 AND s = 'shop.t'"
        );
        assert_eq!(
            text("INSERT INTO `shop` . `t` (a) SELECT shop.f(x) FROM other.u"),
            "INSERT INTO `shop_next` . `t` (a) SELECT `shop_next`.f(x) FROM other.u"
        );
        assert_eq!(
            text("CREATE TABLE shop.q (id INT)"),
            "CREATE TABLE `shop_next`.q (id INT)"
        );
        for unchanged in [
            "UPDATE t SET v = 1",
            "UPDATE shops.t SET v = 1",
            "UPDATE SHOP.t SET v = 1",
            "INSERT INTO t VALUES ('shop.t')",
            "UPDATE t SET shop = 1 WHERE other.shop = 2",
        ] {
            assert_eq!(r(unchanged), Renamed::Unchanged, "{unchanged}");
        }
        for ambiguous in [
            "UPDATE t AS shop SET shop.v = 1",
            "UPDATE shop SET shop.v = 1",
            "UPDATE other.shop SET shop.v = 1",
            "UPDATE shop.t SET shop = 1",
            "INSERT INTO shop.t SELECT shop.* FROM u shop",
        ] {
            assert_eq!(r(ambiguous), Renamed::Ambiguous, "{ambiguous}");
        }
    }
}
