//! Schema questions under the cluster's name. A shard's database may be
//! named differently from the cluster's (several shards on one server):
//! SHOW, DESCRIBE, EXPLAIN, `information_schema` reads and `DATABASE()`
//! then ask the shard under its own name and answer under the cluster's,
//! as one database would — the name in the statement (as an identifier or
//! a string) becomes the shard's, and in the answer (column definitions,
//! `Tables_in_…` headings, values) the cluster's again.

use super::merge::lenenc_bytes;
use super::ClusterSession;
use crate::frontend::session::SessionError;
use crate::protocol::packets::get_lenenc;
use crate::router::lexer::{self, Tok, Token};
use crate::router::shard::route::Merge;

/// Whether a statement asks about the schema (its answer may carry the
/// shard's database name).
pub(super) fn is_metadata(sql: &[u8], toks: &[Token]) -> bool {
    let first = |w: &str| toks.first().is_some_and(|t| t.is_word(sql, w));
    if first("SHOW") || first("DESCRIBE") || first("DESC") || first("EXPLAIN") {
        return true;
    }
    toks.iter().enumerate().any(|(i, t)| {
        t.ident(sql).is_some_and(|w| {
            w.eq_ignore_ascii_case("information_schema")
                || ((w.eq_ignore_ascii_case("DATABASE") || w.eq_ignore_ascii_case("SCHEMA"))
                    && toks.get(i + 1).is_some_and(|n| n.kind == Tok::Punct(b'(')))
        })
    })
}

/// The statement with the cluster's database name, as an identifier or a
/// string, written as the shard's.
pub(super) fn to_shard(sql: &[u8], toks: &[Token], logical: &str, physical: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 16);
    let mut at = 0;
    for t in toks {
        let replace = match t.kind {
            Tok::Word | Tok::Quoted => t.ident(sql).is_some_and(|i| i == logical),
            Tok::Str => {
                let text = t.text(sql);
                text.len() == logical.len() + 2
                    && matches!(text[0], b'\'' | b'"')
                    && &text[1..text.len() - 1] == logical.as_bytes()
            }
            _ => false,
        };
        if !replace {
            continue;
        }
        out.extend_from_slice(&sql[at..t.start]);
        match t.kind {
            Tok::Str => out.extend_from_slice(format!("'{physical}'").as_bytes()),
            _ => out.extend_from_slice(format!("`{}`", physical.replace('`', "``")).as_bytes()),
        }
        at = t.end;
    }
    out.extend_from_slice(&sql[at..]);
    out
}

/// A column definition with the shard's database name (schema field,
/// `Tables_in_…` heading) written as the cluster's.
pub(super) fn rename_definition(p: &[u8], physical: &[u8], logical: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(p.len() + 16);
    let mut at = 0;
    // catalog, schema, table, org_table, name, org_name.
    for field in 0..6 {
        let (n, used) = get_lenenc(p.get(at..)?)?;
        let v = p.get(at + used..at + used + n as usize)?;
        at += used + n as usize;
        let heading = b"Tables_in_";
        let renamed = match field {
            1 if v == physical => Some(logical.to_vec()),
            4 | 5 if v.starts_with(heading) && v[heading.len()..].starts_with(physical) => {
                let mut r = heading.to_vec();
                r.extend_from_slice(logical);
                r.extend_from_slice(&v[heading.len() + physical.len()..]);
                Some(r)
            }
            _ => None,
        };
        out.extend_from_slice(&lenenc_bytes(renamed.as_deref().unwrap_or(v)));
    }
    out.extend_from_slice(p.get(at..)?);
    Some(out)
}

/// A text-protocol row with every value that is the shard's database name
/// written as the cluster's.
pub(super) fn rename_row(row: &[u8], n: usize, physical: &[u8], logical: &[u8]) -> Option<Vec<u8>> {
    let fields = super::values::fields(row, n)?;
    if !fields
        .iter()
        .any(|f| f.as_ref().is_some_and(|r| &row[r.clone()] == physical))
    {
        return None;
    }
    let mut out = Vec::with_capacity(row.len() + 16);
    for f in fields {
        match f {
            None => out.push(0xFB),
            Some(r) if &row[r.clone()] == physical => out.extend_from_slice(&lenenc_bytes(logical)),
            Some(r) => out.extend_from_slice(&lenenc_bytes(&row[r])),
        }
    }
    Some(out)
}

impl ClusterSession<'_> {
    /// The cluster's and `shard`'s database names, when they differ and
    /// `sql` asks about the schema.
    pub(super) fn renaming(&self, shard: usize, sql: &[u8]) -> Option<(String, String)> {
        // On the path of every statement one shard answers: the names are
        // compared before anything is allocated or tokenized.
        let cfg = self.shared.config.load();
        let cluster = cfg.cluster()?;
        let physical = cfg
            .backends
            .get(cluster.shards.get(shard)?)?
            .database
            .as_deref()?;
        if cluster.database == physical {
            return None;
        }
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        is_metadata(sql, &toks).then(|| (cluster.database.clone(), physical.to_string()))
    }

    /// Runs a schema question on `shard` under its database's name and
    /// answers it under the cluster's.
    pub(super) async fn relay_renamed(
        &mut self,
        shard: usize,
        sql: &[u8],
        (logical, physical): (String, String),
        seq: u8,
    ) -> Result<(), SessionError> {
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        let text = to_shard(sql, &toks, &logical, &physical);
        let packet = crate::frontend::session::link::query_packet(&text);
        let merge = Merge::Concat {
            offset: 0,
            limit: None,
        };
        let names = (physical.into_bytes(), logical.into_bytes());
        self.read_many(&[shard], vec![packet], &merge, seq, false, Some(names))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packets::put_lenenc;

    fn toks(sql: &[u8]) -> Vec<Token> {
        let mut t = Vec::new();
        lexer::tokenize(sql, &mut t);
        t
    }

    #[test]
    fn schema_questions_are_recognised() {
        for yes in [
            "SHOW TABLES",
            "describe users",
            "EXPLAIN SELECT 1",
            "SELECT * FROM information_schema.TABLES",
            "SELECT DATABASE()",
            "select schema ()",
        ] {
            assert!(is_metadata(yes.as_bytes(), &toks(yes.as_bytes())), "{yes}");
        }
        for no in ["SELECT c FROM t WHERE id = ?", "SELECT database FROM t"] {
            assert!(!is_metadata(no.as_bytes(), &toks(no.as_bytes())), "{no}");
        }
    }

    #[test]
    fn the_clusters_name_becomes_the_shards_and_back() {
        let sql = b"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app' AND x = 'apps'";
        assert_eq!(
            String::from_utf8(to_shard(sql, &toks(sql), "app", "app_s1")).unwrap(),
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app_s1' AND x = 'apps'"
        );
        let sql = b"SHOW TABLES FROM `app` LIKE 'u%'";
        assert_eq!(
            String::from_utf8(to_shard(sql, &toks(sql), "app", "app_s1")).unwrap(),
            "SHOW TABLES FROM `app_s1` LIKE 'u%'"
        );
        let mut def = Vec::new();
        for f in ["def", "app_s1", "", "", "Tables_in_app_s1 (u%)", ""] {
            put_lenenc(&mut def, f.len() as u64);
            def.extend_from_slice(f.as_bytes());
        }
        def.extend_from_slice(&[0x0c, 33, 0, 0, 1, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
        let renamed = rename_definition(&def, b"app_s1", b"app").unwrap();
        let mut want = Vec::new();
        for f in ["def", "app", "", "", "Tables_in_app (u%)", ""] {
            put_lenenc(&mut want, f.len() as u64);
            want.extend_from_slice(f.as_bytes());
        }
        want.extend_from_slice(&[0x0c, 33, 0, 0, 1, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
        assert_eq!(renamed, want);
        let row = [lenenc_bytes(b"app_s1"), vec![0xFB], lenenc_bytes(b"users")].concat();
        let want = [lenenc_bytes(b"app"), vec![0xFB], lenenc_bytes(b"users")].concat();
        assert_eq!(rename_row(&row, 3, b"app_s1", b"app"), Some(want.clone()));
        assert_eq!(rename_row(&want, 3, b"app_s1", b"app"), None);
    }
}
