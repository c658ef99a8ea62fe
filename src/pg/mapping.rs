//! The PostgreSQL table a MySQL/MariaDB table maps to, read from the
//! primary's information_schema (docs/postgres.md has the table of types).
//!
//! Invariants: every value MySQL can hold in a mapped column is held by
//! PostgreSQL and read back as the same value (`canon` compares them);
//! range CHECKs make PostgreSQL refuse what MySQL would refuse; whatever
//! cannot be mapped (a type, a generated column, an expression default,
//! a CHECK constraint, a FULLTEXT index) refuses the table with the reason.

use super::{quote_ident, quote_literal};
use crate::config::model::{PostgresRule, ZeroDates};
use mysql_async::prelude::*;
use mysql_async::Conn;

/// How a column's values travel and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int2,
    Int4,
    Int8,
    /// NUMERIC: DECIMAL, BIGINT UNSIGNED.
    Numeric,
    Real,
    Double,
    Text,
    Bytea,
    Date,
    /// DATETIME: wall-clock time.
    Timestamp,
    /// MySQL TIMESTAMP: an instant.
    TimestampTz,
    /// MySQL TIME: a signed duration up to ±838:59:59.
    Interval,
    Bit(u32),
    Enum,
    Set,
    Json,
    /// JSON as `jsonb`, by a table's `postgres.jsonb` rule.
    Jsonb,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// MySQL's `COLUMN_TYPE`, for messages and comments.
    pub mysql_type: String,
    pub kind: Kind,
    /// The PostgreSQL type as DDL writes it.
    pub pg_type: String,
    /// CHECK expressions that keep MySQL's range.
    pub checks: Vec<String>,
    pub not_null: bool,
    pub default: Option<String>,
    pub identity: bool,
    /// A case-insensitive (`_ci`) collation: unique keys are also enforced
    /// on the folded value (see docs/postgres.md, collations).
    pub fold: Option<String>,
    /// ENUM/SET labels in declaration order.
    pub labels: Vec<String>,
    /// Things the DDL keeps as a column comment (ON UPDATE CURRENT_TIMESTAMP).
    pub notes: Vec<String>,
    /// A zero date is stored as `-infinity` (`postgres.zero_dates`).
    pub zero_infinity: bool,
}

#[derive(Debug, Clone)]
pub struct Index {
    pub name: String,
    pub unique: bool,
    /// Column and prefix length (MySQL `SUB_PART`).
    pub columns: Vec<(String, Option<u32>)>,
}

#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
    pub on_delete: String,
    pub on_update: String,
}

/// A MySQL table as PostgreSQL will hold it.
#[derive(Debug, Clone)]
pub struct TableMap {
    pub table: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub indexes: Vec<Index>,
    pub foreign_keys: Vec<ForeignKey>,
    /// MySQL's next AUTO_INCREMENT value.
    pub auto_increment: Option<u64>,
}

/// Reads `table`'s mapping from the MySQL side: `Ok(Err(reasons))` when it
/// cannot be mapped.
pub async fn load(
    c: &mut Conn,
    table: &str,
    rule: Option<&PostgresRule>,
) -> Result<Result<TableMap, Vec<String>>, String> {
    let err = |e: mysql_async::Error| e.to_string();
    type ColRow = (
        String,
        String,
        String,
        String,
        Option<String>,
        String,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<String>,
    );
    let rows: Vec<ColRow> = c
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA,
                    NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, COLLATION_NAME
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?
             ORDER BY ORDINAL_POSITION",
            (table,),
        )
        .await
        .map_err(err)?;
    if rows.is_empty() {
        return Err(format!("table {table} does not exist on the primary"));
    }
    // MariaDB's JSON is LONGTEXT with a json_valid() CHECK named after the
    // column; any other CHECK is MySQL SQL that is not translated.
    let checks: Vec<(String, String)> = c
        .exec(
            "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .map_err(err)?;
    let mut reasons = Vec::new();
    let mut json_columns = Vec::new();
    for (name, clause) in &checks {
        if clause.replace(' ', "") == format!("json_valid(`{name}`)") {
            json_columns.push(name.clone());
        } else {
            reasons.push(format!(
                "CHECK constraint {name} ({clause}) is MySQL SQL Tandem does not translate"
            ));
        }
    }
    let mut columns = Vec::new();
    for (name, data_type, column_type, nullable, default, extra, prec, scale, fsp, collation) in
        rows
    {
        let json = json_columns.contains(&name);
        let facts = Facts {
            data_type: &data_type.to_ascii_lowercase(),
            column_type: &column_type,
            precision: prec.unwrap_or(0),
            scale: scale.unwrap_or(0),
            fsp: fsp.unwrap_or(0),
            json,
        };
        match map_column(&name, &facts, collation.as_deref()) {
            Ok(mut col) => {
                col.not_null = nullable == "NO";
                let extra_l = extra.to_ascii_lowercase();
                if extra_l.contains("generated") || extra_l.contains("virtual") {
                    reasons.push(format!(
                        "column {name} is generated ({extra}); its expression is MySQL SQL"
                    ));
                }
                col.identity = extra_l.contains("auto_increment");
                if extra_l.contains("on update") {
                    col.notes.push(
                        "MySQL: ON UPDATE CURRENT_TIMESTAMP (the mirror writes the value)".into(),
                    );
                }
                if let Some(rule) = rule {
                    if let Err(e) = apply_rule(&mut col, rule) {
                        reasons.push(e);
                    }
                }
                match map_default(&col, default.as_deref()) {
                    Ok(d) => col.default = d,
                    Err(e) => reasons.push(format!("column {name}: {e}")),
                }
                columns.push(col);
            }
            Err(e) => reasons.push(format!("column {name} ({column_type}): {e}")),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for c in &columns {
        if !seen.insert(c.name.to_lowercase()) {
            reasons.push(format!(
                "two columns are named {} apart from case; PostgreSQL's unquoted names fold them",
                c.name
            ));
        }
    }
    let (primary_key, indexes) = load_indexes(c, table, &mut reasons).await?;
    if primary_key.is_empty() {
        reasons.push("no primary key (backfill and verify walk tables by it)".into());
    }
    let foreign_keys = load_foreign_keys(c, table).await?;
    let auto_increment: Option<u64> = c
        .exec_first(
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .map_err(err)?
        .flatten();
    if !reasons.is_empty() {
        return Ok(Err(reasons));
    }
    Ok(Ok(TableMap {
        table: table.to_string(),
        columns,
        primary_key,
        indexes,
        foreign_keys,
        auto_increment,
    }))
}

/// What information_schema says of one column.
pub struct Facts<'a> {
    pub data_type: &'a str,
    pub column_type: &'a str,
    pub precision: u64,
    pub scale: u64,
    pub fsp: u64,
    pub json: bool,
}

/// The PostgreSQL column for a MySQL one, or why there is none.
pub fn map_column(name: &str, f: &Facts<'_>, collation: Option<&str>) -> Result<Column, String> {
    let q = quote_ident(name);
    let unsigned = f.column_type.contains("unsigned");
    let between = |lo: &str, hi: &str| format!("{q} BETWEEN {lo} AND {hi}");
    let (kind, pg_type, mut checks) = match f.data_type {
        "tinyint" if unsigned => (Kind::Int2, "SMALLINT".into(), vec![between("0", "255")]),
        "tinyint" => (Kind::Int2, "SMALLINT".into(), vec![between("-128", "127")]),
        "smallint" if unsigned => (Kind::Int4, "INTEGER".into(), vec![between("0", "65535")]),
        "smallint" => (Kind::Int2, "SMALLINT".into(), vec![]),
        "mediumint" if unsigned => (Kind::Int4, "INTEGER".into(), vec![between("0", "16777215")]),
        "mediumint" => (
            Kind::Int4,
            "INTEGER".into(),
            vec![between("-8388608", "8388607")],
        ),
        "int" | "integer" if unsigned => (
            Kind::Int8,
            "BIGINT".into(),
            vec![between("0", "4294967295")],
        ),
        "int" | "integer" => (Kind::Int4, "INTEGER".into(), vec![]),
        "bigint" if unsigned => (
            Kind::Numeric,
            "NUMERIC(20,0)".into(),
            vec![between("0", "18446744073709551615")],
        ),
        "bigint" => (Kind::Int8, "BIGINT".into(), vec![]),
        "year" => (
            Kind::Int2,
            "SMALLINT".into(),
            vec![format!("{q} = 0 OR {}", between("1901", "2155"))],
        ),
        "decimal" | "numeric" => {
            let mut c = vec![];
            if unsigned {
                c.push(format!("{q} >= 0"));
            }
            (
                Kind::Numeric,
                format!("NUMERIC({},{})", f.precision, f.scale),
                c,
            )
        }
        "float" => (Kind::Real, "REAL".into(), unsigned_check(&q, unsigned)),
        "double" | "double precision" | "real" => (
            Kind::Double,
            "DOUBLE PRECISION".into(),
            unsigned_check(&q, unsigned),
        ),
        "bit" => {
            let n = f.precision.clamp(1, 64) as u32;
            (Kind::Bit(n), format!("BIT({n})"), vec![])
        }
        // MySQL strips CHAR's trailing spaces on store and read;
        // PostgreSQL's CHARACTER pads them back on read. VARCHAR holding
        // the stripped value reads back as MySQL's.
        "char" => (
            Kind::Text,
            format!("VARCHAR({})", length(f)?),
            vec![format!("{q} = rtrim({q}, ' ')")],
        ),
        "varchar" => (Kind::Text, format!("VARCHAR({})", length(f)?), vec![]),
        "tinytext" | "text" | "mediumtext" | "longtext" if f.json => {
            (Kind::Json, "JSON".into(), vec![])
        }
        "json" => (Kind::Json, "JSON".into(), vec![]),
        "tinytext" => (Kind::Text, "TEXT".into(), vec![octets(&q, "<=", 255)]),
        "text" => (Kind::Text, "TEXT".into(), vec![octets(&q, "<=", 65535)]),
        "mediumtext" => (Kind::Text, "TEXT".into(), vec![octets(&q, "<=", 16777215)]),
        "longtext" => (Kind::Text, "TEXT".into(), vec![]),
        "binary" => (
            Kind::Bytea,
            "BYTEA".into(),
            vec![octets(&q, "=", length(f)?)],
        ),
        "varbinary" => (
            Kind::Bytea,
            "BYTEA".into(),
            vec![octets(&q, "<=", length(f)?)],
        ),
        "tinyblob" => (Kind::Bytea, "BYTEA".into(), vec![octets(&q, "<=", 255)]),
        "blob" => (Kind::Bytea, "BYTEA".into(), vec![octets(&q, "<=", 65535)]),
        "mediumblob" => (
            Kind::Bytea,
            "BYTEA".into(),
            vec![octets(&q, "<=", 16777215)],
        ),
        "longblob" => (Kind::Bytea, "BYTEA".into(), vec![]),
        "date" => (Kind::Date, "DATE".into(), vec![]),
        "datetime" => (Kind::Timestamp, format!("TIMESTAMP({})", f.fsp), vec![]),
        "timestamp" => (Kind::TimestampTz, format!("TIMESTAMPTZ({})", f.fsp), vec![]),
        "time" => (
            Kind::Interval,
            format!("INTERVAL({})", f.fsp),
            vec![format!(
                "{q} BETWEEN INTERVAL '-838:59:59.999999' AND INTERVAL '838:59:59.999999'"
            )],
        ),
        "enum" => (Kind::Enum, String::new(), vec![]),
        "set" => (Kind::Set, "TEXT".into(), vec![]),
        other => {
            return Err(format!(
                "type {other} has no PostgreSQL mapping (docs/postgres.md lists the mapped ones)"
            ))
        }
    };
    let labels = match kind {
        Kind::Enum | Kind::Set => labels(f.column_type)?,
        _ => vec![],
    };
    if kind == Kind::Set {
        let list = labels
            .iter()
            .map(|l| quote_literal(l))
            .collect::<Vec<_>>()
            .join(", ");
        checks.push(format!(
            "{q} = '' OR string_to_array({q}, ',') <@ ARRAY[{list}]::text[]"
        ));
    }
    if matches!(kind, Kind::Enum | Kind::Set) && labels.iter().any(|l| l.contains('\0')) {
        return Err("a label holds a NUL character, which PostgreSQL text cannot".into());
    }
    let fold = match (kind, collation) {
        (Kind::Text | Kind::Enum | Kind::Set, Some(c)) if c.ends_with("_ci") => {
            // PAD SPACE collations ignore trailing spaces (CHARACTER does
            // by itself); NO PAD ones (`_nopad_`) do not.
            let pad = !c.contains("_nopad_") && !c.contains("0900");
            Some(if pad {
                format!("lower(rtrim({q}::text, ' '))")
            } else {
                format!("lower({q}::text)")
            })
        }
        _ => None,
    };
    Ok(Column {
        name: name.to_string(),
        mysql_type: f.column_type.to_string(),
        kind,
        pg_type,
        checks,
        not_null: false,
        default: None,
        identity: false,
        fold,
        labels,
        notes: vec![],
        zero_infinity: false,
    })
}

/// `table`'s mapping under its `postgres:` rule, or why it has none (the
/// copy's and verify's error for the table).
pub async fn load_for(
    c: &mut Conn,
    cfg: &crate::config::Config,
    table: &str,
) -> Result<TableMap, String> {
    load(c, table, rule_of(cfg, table))
        .await?
        .map_err(|reasons| format!("cannot be mapped to PostgreSQL: {}", reasons.join("; ")))
}

/// A table's `postgres:` rule, if its rules file has one.
pub fn rule_of<'a>(cfg: &'a crate::config::Config, table: &str) -> Option<&'a PostgresRule> {
    cfg.rules
        .tables
        .get(table)
        .and_then(|r| r.raw.postgres.as_ref())
}

/// Applies a table's explicit PostgreSQL mappings to one column.
pub fn apply_rule(col: &mut Column, rule: &PostgresRule) -> Result<(), String> {
    if rule
        .bytea_columns
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&col.name))
    {
        if col.kind != Kind::Text {
            return Err(format!(
                "postgres.bytea_columns names {}, which is not a text column ({})",
                col.name, col.mysql_type
            ));
        }
        col.kind = Kind::Bytea;
        col.pg_type = "BYTEA".into();
        col.checks.clear();
        col.fold = None;
        col.notes.push(format!(
            "MySQL: {} (postgres.bytea_columns)",
            col.mysql_type
        ));
    }
    if rule.jsonb && col.kind == Kind::Json {
        col.kind = Kind::Jsonb;
        col.pg_type = "JSONB".into();
    }
    col.zero_infinity = rule.zero_dates == ZeroDates::Infinity
        && matches!(col.kind, Kind::Date | Kind::Timestamp | Kind::TimestampTz);
    Ok(())
}

fn unsigned_check(q: &str, unsigned: bool) -> Vec<String> {
    if unsigned {
        vec![format!("{q} >= 0")]
    } else {
        vec![]
    }
}

fn octets(q: &str, op: &str, n: u64) -> String {
    format!("octet_length({q}) {op} {n}")
}

/// The declared length of CHAR/VARCHAR/BINARY/VARBINARY, from `COLUMN_TYPE`.
fn length(f: &Facts<'_>) -> Result<u64, String> {
    f.column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(n, _)| n.trim().parse().ok())
        .ok_or_else(|| format!("cannot read the length of {}", f.column_type))
}

/// The labels of `enum('a','b''c')` / `set(...)` in declaration order.
pub fn labels(column_type: &str) -> Result<Vec<String>, String> {
    let bad = || format!("cannot read the labels of {column_type}");
    let inner = column_type
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .ok_or_else(bad)?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        match chars.next() {
            None => break,
            Some('\'') => {}
            Some(',') => continue,
            Some(_) => return Err(bad()),
        }
        let mut label = String::new();
        loop {
            match chars.next() {
                None => return Err(bad()),
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                Some('\'') => break,
                Some('\\') => match chars.next() {
                    Some('\\') => label.push('\\'),
                    Some(c) => label.push(c),
                    None => return Err(bad()),
                },
                Some(c) => label.push(c),
            }
        }
        out.push(label);
    }
    Ok(out)
}

/// The PostgreSQL DEFAULT for MariaDB's `COLUMN_DEFAULT` (an expression
/// since 10.2: `NULL`, a quoted literal, a number, `current_timestamp()`).
fn map_default(col: &Column, default: Option<&str>) -> Result<Option<String>, String> {
    let Some(d) = default.map(str::trim) else {
        return Ok(None);
    };
    if d.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    let lower = d.to_ascii_lowercase();
    if lower.starts_with("current_timestamp") || lower.starts_with("now(") {
        let fsp = lower
            .split_once('(')
            .and_then(|(_, r)| r.trim_end_matches(')').parse::<u8>().ok())
            .unwrap_or(0);
        return match col.kind {
            Kind::TimestampTz => Ok(Some(format!("CURRENT_TIMESTAMP({fsp})"))),
            Kind::Timestamp => Ok(Some(format!("LOCALTIMESTAMP({fsp})"))),
            _ => Err(format!("default {d} on a {} column", col.mysql_type)),
        };
    }
    if let Some(lit) = d.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        if lit.contains('\\') {
            return Err(format!("default {d} holds a backslash escape"));
        }
        let value = lit.replace("''", "'");
        if matches!(col.kind, Kind::Date | Kind::Timestamp | Kind::TimestampTz)
            && (value.starts_with("0000") || value.contains("-00"))
        {
            return Err(format!(
                "default {d} is a zero date, which PostgreSQL cannot hold"
            ));
        }
        if col.kind == Kind::Bytea {
            let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
            return Ok(Some(format!("'\\x{hex}'::bytea")));
        }
        return Ok(Some(quote_literal(&value)));
    }
    if let Some(bits) = lower.strip_prefix("b'").and_then(|r| r.strip_suffix('\'')) {
        if let Kind::Bit(n) = col.kind {
            let v = u64::from_str_radix(bits, 2).map_err(|_| format!("default {d}"))?;
            return Ok(Some(format!("B'{}'", super::canon::bit_string(v, n))));
        }
    }
    let numeric = !d.is_empty()
        && d.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'));
    if numeric {
        return Ok(Some(match col.kind {
            Kind::Bit(n) => {
                let v: u64 = d.parse().map_err(|_| format!("default {d}"))?;
                format!("B'{}'", super::canon::bit_string(v, n))
            }
            _ => d.to_string(),
        }));
    }
    Err(format!(
        "default {d} is an expression Tandem does not translate"
    ))
}

async fn load_indexes(
    c: &mut Conn,
    table: &str,
    reasons: &mut Vec<String>,
) -> Result<(Vec<String>, Vec<Index>), String> {
    type StatRow = (String, i64, String, Option<String>, Option<u32>, String);
    let rows: Vec<StatRow> = c
        .exec(
            "SELECT INDEX_NAME, NON_UNIQUE, INDEX_TYPE, COLUMN_NAME, SUB_PART, COALESCE(COLLATION, 'A')
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?
             ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
            (table,),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut pk = Vec::new();
    let mut indexes: Vec<Index> = Vec::new();
    for (name, non_unique, kind, column, sub_part, _order) in rows {
        let Some(column) = column else {
            reasons.push(format!("index {name} is on an expression"));
            continue;
        };
        if kind != "BTREE" && kind != "HASH" {
            reasons.push(format!(
                "index {name} is {kind}, which PostgreSQL has no equivalent of here"
            ));
            continue;
        }
        if name == "PRIMARY" {
            if sub_part.is_some() {
                reasons.push("the primary key uses a column prefix".into());
            }
            pk.push(column);
            continue;
        }
        match indexes.last_mut() {
            Some(i) if i.name == name => i.columns.push((column, sub_part)),
            _ => indexes.push(Index {
                name,
                unique: non_unique == 0,
                columns: vec![(column, sub_part)],
            }),
        }
    }
    Ok((pk, indexes))
}

async fn load_foreign_keys(c: &mut Conn, table: &str) -> Result<Vec<ForeignKey>, String> {
    type FkRow = (String, String, String, String, String, String);
    let rows: Vec<FkRow> = c
        .exec(
            "SELECT k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME,
                    r.DELETE_RULE, r.UPDATE_RULE
             FROM information_schema.KEY_COLUMN_USAGE k
             JOIN information_schema.REFERENTIAL_CONSTRAINTS r
               ON r.CONSTRAINT_SCHEMA = k.TABLE_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME
              AND r.TABLE_NAME = k.TABLE_NAME
             WHERE k.TABLE_SCHEMA = DATABASE() AND k.TABLE_NAME = ?
               AND k.REFERENCED_TABLE_NAME IS NOT NULL
             ORDER BY k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            (table,),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut out: Vec<ForeignKey> = Vec::new();
    for (name, col, ref_table, ref_col, on_delete, on_update) in rows {
        match out.last_mut() {
            Some(f) if f.name == name => {
                f.columns.push(col);
                f.ref_columns.push(ref_col);
            }
            _ => out.push(ForeignKey {
                name,
                columns: vec![col],
                ref_table,
                ref_columns: vec![ref_col],
                on_delete,
                on_update,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(data_type: &'a str, column_type: &'a str) -> Facts<'a> {
        Facts {
            data_type,
            column_type,
            precision: 0,
            scale: 0,
            fsp: 0,
            json: false,
        }
    }

    #[test]
    fn labels_keep_quotes_commas_and_order() {
        assert_eq!(
            labels("enum('b','a''s','x,y')").unwrap(),
            vec!["b", "a's", "x,y"]
        );
        assert!(labels("enum('open").is_err());
    }

    #[test]
    fn integers_widen_with_range_checks() {
        let c = map_column("n", &facts("int", "int(10) unsigned"), None).unwrap();
        assert_eq!(c.pg_type, "BIGINT");
        assert_eq!(c.checks, vec!["\"n\" BETWEEN 0 AND 4294967295"]);
        let b = map_column("b", &facts("tinyint", "tinyint(1)"), None).unwrap();
        assert_eq!(b.pg_type, "SMALLINT");
        assert!(map_column("g", &facts("geometry", "geometry"), None).is_err());
    }
}
