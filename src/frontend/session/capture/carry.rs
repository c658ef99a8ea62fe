//! A write to real tables that reads the session's temporary tables
//! (`INSERT INTO t SELECT … FROM tmp`, `UPDATE t JOIN tmp …`, `DELETE … IN
//! (SELECT … FROM tmp)`). The temporary tables exist on the primary only,
//! and the applier's connections keep none across a restart; so the write
//! carries them: its journaled transaction holds, before the write, a copy
//! of each temporary table it names (`DROP TEMPORARY TABLE IF EXISTS`, the
//! primary's own `SHOW CREATE TABLE`, its rows as literals) and, after it,
//! `DROP TEMPORARY TABLE`. The secondary runs the same write over the same
//! rows, whatever its connection held before or holds after; the copy is
//! made and dropped inside the one transaction the applier replays.
//!
//! The rows are read so that their literals store exactly the primary's
//! values whatever the session's character sets and zone: strings, bytes,
//! ENUM, SET and JSON as hex (the column's own bytes), FLOAT through
//! DOUBLE (its text has six digits only), BIT as its number, TIMESTAMP as
//! the Unix instant (the copy's rows are written under `time_zone =
//! '+00:00'`, where no local hour is ambiguous), the other temporal types
//! as their text. A column of another type (spatial, INET6, UUID, …), a
//! table larger than `MAX_ROWS`/`MAX_BYTES` or one named with a database
//! is refused: the write follows `unsafe_writes`.

use super::super::link::Link;
use super::super::SessionError;
use super::vars::rows;
use super::Capture;
use crate::mirror::record::{MirrorStatement, Pins, CARRIED_COPY};
use crate::sql::{quote, sql_literal};
use std::sync::Arc;

/// At most this many rows of one temporary table are carried.
const MAX_ROWS: usize = 100_000;
/// At most this many bytes of literals are carried for one write.
const MAX_BYTES: usize = 16 << 20;
/// Rows are carried in INSERTs of about this many bytes each.
const CHUNK: usize = 1 << 20;

/// The statements journaled around the write (before and after it in its
/// transaction).
#[derive(Default)]
pub(super) struct Carried {
    pub before: Vec<MirrorStatement>,
    pub after: Vec<MirrorStatement>,
}

/// How a column is read on the primary and written in the copy.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Read {
    /// Its text is a number literal as it is.
    Number,
    /// Read as DOUBLE, written as the number.
    Float,
    /// Read as its number.
    Bit,
    /// Read as UNIX_TIMESTAMP, written with FROM_UNIXTIME under UTC.
    Instant,
    /// Its text quoted (dates and times: ASCII).
    Text,
    /// Read as HEX, written as X'…'.
    Hex,
}

/// How a column of SHOW COLUMNS type `ty` is carried; None: it is not.
fn read_of(ty: &str) -> Option<Read> {
    let ty = ty.to_ascii_lowercase();
    let base = ty.split(['(', ' ']).next().unwrap_or_default();
    Some(match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
        | "numeric" | "double" | "real" | "year" => Read::Number,
        "float" => Read::Float,
        "bit" => Read::Bit,
        "timestamp" => Read::Instant,
        "date" | "datetime" | "time" => Read::Text,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "binary"
        | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "enum" | "set"
        | "json" => Read::Hex,
        _ => return None,
    })
}

/// The select-list item reading column `c` as `how`.
fn select_item(c: &str, how: Read) -> String {
    let c = quote(c);
    match how {
        Read::Number | Read::Text => c,
        Read::Float => format!("CAST({c} AS DOUBLE)"),
        Read::Bit => format!("CAST({c} AS UNSIGNED)"),
        Read::Instant => format!("UNIX_TIMESTAMP({c})"),
        Read::Hex => format!("HEX({c})"),
    }
}

/// The literal that stores `v` (read as `how`) back exactly; None: a value
/// that does not read as it should.
fn literal(v: Option<&[u8]>, how: Read) -> Option<String> {
    let Some(v) = v else {
        return Some("NULL".into());
    };
    let text = std::str::from_utf8(v).ok()?;
    let numeric = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    };
    Some(match how {
        Read::Number | Read::Float | Read::Bit if numeric(text) => text.to_string(),
        Read::Number | Read::Float | Read::Bit => return None,
        // 0 is the zero timestamp (no real instant reads as 0).
        Read::Instant if text == "0" => "'0000-00-00 00:00:00'".into(),
        Read::Instant if numeric(text) => format!("FROM_UNIXTIME({text})"),
        Read::Instant => return None,
        Read::Text => sql_literal(v),
        Read::Hex if text.bytes().all(|b| b.is_ascii_hexdigit()) => format!("X'{text}'"),
        Read::Hex => return None,
    })
}

impl Capture {
    /// The statements that carry the temporary tables `names` (bare, as the
    /// write names them) along with a write; Err: why they cannot be.
    pub(super) async fn carry(
        &mut self,
        cx: &mut Link<'_>,
        names: &[String],
    ) -> Result<Result<Carried, String>, SessionError> {
        let vars = self.ensure_vars(cx).await?;
        // The copy's rows are written where no local hour is ambiguous and
        // no value of the primary's is refused (zero dates, id 0).
        let mut raw: Vec<(String, String)> = vars
            .iter()
            .filter(|(k, _)| k != "time_zone" && k != "sql_mode")
            .cloned()
            .collect();
        raw.push(("time_zone".into(), "'+00:00'".into()));
        raw.push(("sql_mode".into(), "'NO_AUTO_VALUE_ON_ZERO'".into()));
        let raw = Arc::new(raw);
        let db = self.mirror_db(cx);
        let statement = |sql: Vec<u8>, session: &Arc<Vec<(String, String)>>| MirrorStatement {
            db: db.clone(),
            sql,
            tables: Vec::new(),
            ddl: false,
            pins: Pins::default(),
            session: session.clone(),
        };
        let mut out = Carried::default();
        let mut bytes = 0usize;
        for name in names {
            let q = quote(name);
            let create = self
                .own_read(cx, format!("SHOW CREATE TABLE {q}").as_bytes())
                .await?;
            let Some(ddl) = rows(&create, cx.deprecate_eof())
                .and_then(|r| r.into_iter().next())
                .and_then(|r| r.into_iter().nth(1).flatten())
            else {
                return Ok(Err(format!(
                    "the temporary table `{name}` could not be read (SHOW CREATE TABLE)"
                )));
            };
            let columns = self
                .own_read(cx, format!("SHOW COLUMNS FROM {q}").as_bytes())
                .await?;
            let Some(columns) = rows(&columns, cx.deprecate_eof()) else {
                return Ok(Err(format!(
                    "the columns of the temporary table `{name}` could not be read"
                )));
            };
            let mut reads = Vec::new();
            for c in &columns {
                let text = |i: usize| {
                    String::from_utf8_lossy(
                        c.get(i).cloned().flatten().as_deref().unwrap_or_default(),
                    )
                    .into_owned()
                };
                let (field, ty, extra) = (text(0), text(1), text(5).to_ascii_uppercase());
                if extra.contains("GENERATED") {
                    continue;
                }
                let Some(how) = read_of(&ty) else {
                    return Ok(Err(format!(
                        "column `{field}` of the temporary table `{name}` has type {ty}, which Tandem does not copy"
                    )));
                };
                reads.push((field, how));
            }
            if reads.is_empty() {
                return Ok(Err(format!(
                    "the temporary table `{name}` has no column Tandem can copy"
                )));
            }
            let list: Vec<String> = reads.iter().map(|(c, h)| select_item(c, *h)).collect();
            let read = self
                .own_read(
                    cx,
                    format!("SELECT {} FROM {q} LIMIT {}", list.join(", "), MAX_ROWS + 1)
                        .as_bytes(),
                )
                .await?;
            let Some(found) = rows(&read, cx.deprecate_eof()) else {
                return Ok(Err(format!(
                    "the rows of the temporary table `{name}` could not be read"
                )));
            };
            if found.len() > MAX_ROWS {
                return Ok(Err(format!(
                    "the temporary table `{name}` holds more than {MAX_ROWS} rows, more than a write carries"
                )));
            }
            let mut create_sql = CARRIED_COPY.to_vec();
            create_sql.extend_from_slice(&ddl);
            out.before.push(statement(
                format!("DROP TEMPORARY TABLE IF EXISTS {q}").into_bytes(),
                &vars,
            ));
            out.before.push(statement(create_sql, &vars));
            let cols: Vec<String> = reads.iter().map(|(c, _)| quote(c)).collect();
            let head = format!("INSERT INTO {q} ({}) VALUES ", cols.join(", "));
            let mut insert = Vec::new();
            for row in &found {
                let mut values = Vec::with_capacity(reads.len());
                for (cell, (_, how)) in row.iter().zip(&reads) {
                    let Some(l) = literal(cell.as_deref(), *how) else {
                        return Ok(Err(format!(
                            "a value of the temporary table `{name}` could not be read back exactly"
                        )));
                    };
                    values.push(l);
                }
                if insert.is_empty() {
                    insert.extend_from_slice(head.as_bytes());
                } else {
                    insert.extend_from_slice(b", ");
                }
                let row = format!("({})", values.join(", "));
                bytes += row.len();
                insert.extend_from_slice(row.as_bytes());
                if bytes > MAX_BYTES {
                    return Ok(Err(format!(
                        "the temporary tables it reads hold more than {} MiB, more than a write carries",
                        MAX_BYTES >> 20
                    )));
                }
                if insert.len() >= CHUNK {
                    out.before
                        .push(statement(std::mem::take(&mut insert), &raw));
                }
            }
            if !insert.is_empty() {
                out.before.push(statement(insert, &raw));
            }
            out.after.push(statement(
                format!("DROP TEMPORARY TABLE {q}").into_bytes(),
                &vars,
            ));
        }
        Ok(Ok(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_read_so_their_literals_store_the_same_value() {
        assert_eq!(read_of("float(7,3) unsigned"), Some(Read::Float));
        assert_eq!(read_of("int(11) unsigned"), Some(Read::Number));
        assert_eq!(read_of("timestamp(6)"), Some(Read::Instant));
        assert_eq!(read_of("enum('a','b c')"), Some(Read::Hex));
        assert_eq!(read_of("varchar(10)"), Some(Read::Hex));
        assert_eq!(read_of("point"), None);
        assert_eq!(read_of("inet6"), None);
        assert_eq!(select_item("a`b", Read::Float), "CAST(`a``b` AS DOUBLE)");
        let l = |v: &str, h| literal(Some(v.as_bytes()), h);
        assert_eq!(
            l("1.0000001192092896", Read::Float).unwrap(),
            "1.0000001192092896"
        );
        assert_eq!(l("C3A9", Read::Hex).unwrap(), "X'C3A9'");
        assert_eq!(l("", Read::Hex).unwrap(), "X''");
        assert_eq!(l("0", Read::Instant).unwrap(), "'0000-00-00 00:00:00'");
        assert_eq!(
            l("1700000000.250000", Read::Instant).unwrap(),
            "FROM_UNIXTIME(1700000000.250000)"
        );
        assert_eq!(
            l("2024-01-02 03:04:05", Read::Text).unwrap(),
            "'2024-01-02 03:04:05'"
        );
        assert_eq!(literal(None, Read::Hex).unwrap(), "NULL");
        assert!(l("1; DROP", Read::Number).is_none());
        assert!(l("zz", Read::Hex).is_none());
    }
}
