//! Row keys: how a write names exactly the rows it changed, so that the
//! secondary changes the same ones whatever it would have matched itself.
//! A table's key is its primary key, else its first unique key whose
//! columns are all NOT NULL (InnoDB's clustered key). Key values travel as
//! SQL literals that compare equal on any server and in any connection
//! character set: numbers as digits, temporal values as their text, and
//! character and binary strings as hex with the column's character set
//! (`_utf8mb4 X'…'`), so no conversion touches them.
//!
//! Capture reads keys with a locking read (`router::keyed`); a sharded or
//! PostgreSQL secondary will need the same rendering of rows by key.

use crate::sql::quote;

/// How a key column's value is read and written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    /// Integer or DECIMAL: its text is the literal.
    Number,
    /// Temporal and other types whose text form is an exact literal.
    Text,
    /// A character string in this character set: read as HEX().
    Chars(String),
    /// A binary string: read as HEX().
    Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    pub ty: KeyType,
}

/// The columns that identify a row of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowKey {
    pub columns: Vec<KeyColumn>,
}

/// One unique index's column as information_schema lists it.
pub struct IndexColumn {
    pub index: String,
    pub column: String,
    pub data_type: String,
    pub charset: Option<String>,
    pub nullable: bool,
}

/// At most this many keys make one restriction (a bigger write is not
/// keyed: its text would be unreasonably long).
pub const MAX_KEYS: usize = 100_000;

impl RowKey {
    /// The table's key from its unique indexes' columns (in index, then
    /// column order): PRIMARY if there is one, else the first unique index
    /// without nullable columns. None when no index qualifies or a column
    /// has a type whose values cannot be written back exactly (FLOAT,
    /// DOUBLE, BIT, spatial, JSON).
    pub fn choose(columns: &[IndexColumn]) -> Option<RowKey> {
        let mut names: Vec<&str> = columns.iter().map(|c| c.index.as_str()).collect();
        names.dedup();
        names.sort_by_key(|n| *n != "PRIMARY");
        for name in names {
            let cols: Vec<&IndexColumn> = columns.iter().filter(|c| c.index == name).collect();
            if cols.iter().any(|c| c.nullable) {
                continue;
            }
            let key: Option<Vec<KeyColumn>> = cols
                .iter()
                .map(|c| {
                    Some(KeyColumn {
                        name: c.column.clone(),
                        ty: key_type(&c.data_type, c.charset.as_deref())?,
                    })
                })
                .collect();
            return key.map(|columns| RowKey { columns });
        }
        None
    }

    /// The select list that reads a row's key.
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| match c.ty {
                KeyType::Chars(_) | KeyType::Bytes => format!("HEX({})", quote(&c.name)),
                _ => quote(&c.name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The condition that holds for exactly the rows whose keys (as
    /// `select_list` read them) are `rows`. None when a value is not what
    /// the select list reads (the rows are then not named safely).
    pub fn restriction(&self, rows: &[Vec<Option<Vec<u8>>>]) -> Option<String> {
        if rows.is_empty() {
            return Some("FALSE".to_string());
        }
        let single = self.columns.len() == 1;
        let mut out = String::with_capacity(rows.len() * 16 + 32);
        if single {
            out.push_str(&quote(&self.columns[0].name));
        } else {
            out.push('(');
            let names: Vec<String> = self.columns.iter().map(|c| quote(&c.name)).collect();
            out.push_str(&names.join(", "));
            out.push(')');
        }
        out.push_str(" IN (");
        for (i, row) in rows.iter().enumerate() {
            if row.len() != self.columns.len() {
                return None;
            }
            if i > 0 {
                out.push_str(", ");
            }
            if !single {
                out.push('(');
            }
            for (j, (col, v)) in self.columns.iter().zip(row).enumerate() {
                if j > 0 {
                    out.push_str(", ");
                }
                out.push_str(&literal(&col.ty, v.as_deref()?)?);
            }
            if !single {
                out.push(')');
            }
        }
        out.push(')');
        Some(out)
    }
}

/// information_schema's DATA_TYPE → how the key column travels.
fn key_type(data_type: &str, charset: Option<&str>) -> Option<KeyType> {
    let t = data_type.to_ascii_lowercase();
    Some(match t.as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
        | "numeric" => KeyType::Number,
        "date" | "datetime" | "timestamp" | "time" | "year" | "uuid" | "inet4" | "inet6" => {
            KeyType::Text
        }
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
            let cs = charset?;
            if !cs.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            KeyType::Chars(cs.to_string())
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => KeyType::Bytes,
        _ => return None,
    })
}

fn literal(ty: &KeyType, v: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(v).ok()?;
    match ty {
        KeyType::Number => (!text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.'))
        .then(|| text.to_string()),
        KeyType::Text => text
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
            .then(|| crate::sql::sql_literal(v)),
        KeyType::Chars(cs) => hex(text).map(|h| format!("_{cs} X'{h}'")),
        KeyType::Bytes => hex(text).map(|h| format!("X'{h}'")),
    }
}

fn hex(text: &str) -> Option<&str> {
    (text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit())).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(index: &str, column: &str, ty: &str, cs: Option<&str>, nullable: bool) -> IndexColumn {
        IndexColumn {
            index: index.into(),
            column: column.into(),
            data_type: ty.into(),
            charset: cs.map(str::to_string),
            nullable,
        }
    }

    #[test]
    fn primary_first_then_a_unique_key_without_nulls() {
        let cols = [
            col("a_uniq", "email", "varchar", Some("utf8mb4"), true),
            col("b_uniq", "code", "char", Some("latin1"), false),
            col("PRIMARY", "id", "bigint", None, false),
        ];
        let k = RowKey::choose(&cols).unwrap();
        assert_eq!(k.columns[0].name, "id");
        let k = RowKey::choose(&cols[..2]).unwrap();
        assert_eq!(k.columns[0].ty, KeyType::Chars("latin1".into()));
        assert!(RowKey::choose(&cols[..1]).is_none());
        assert!(RowKey::choose(&[col("PRIMARY", "f", "double", None, false)]).is_none());
    }

    #[test]
    fn restrictions_render_exact_literals() {
        let k = RowKey {
            columns: vec![
                KeyColumn {
                    name: "id".into(),
                    ty: KeyType::Number,
                },
                KeyColumn {
                    name: "name".into(),
                    ty: KeyType::Chars("utf8mb4".into()),
                },
            ],
        };
        assert_eq!(k.select_list(), "`id`, HEX(`name`)");
        let rows = vec![
            vec![Some(b"1".to_vec()), Some(b"C3A9".to_vec())],
            vec![Some(b"-2".to_vec()), Some(b"".to_vec())],
        ];
        assert_eq!(
            k.restriction(&rows).unwrap(),
            "(`id`, `name`) IN ((1, _utf8mb4 X'C3A9'), (-2, _utf8mb4 X''))"
        );
        assert_eq!(k.restriction(&[]).unwrap(), "FALSE");
        assert!(k
            .restriction(&[vec![Some(b"1 OR 1".to_vec()), Some(b"00".to_vec())]])
            .is_none());
        assert!(k.restriction(&[vec![None, Some(b"00".to_vec())]]).is_none());
    }
}
