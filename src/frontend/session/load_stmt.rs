//! LOAD DATA LOCAL as INSERT … VALUES of the rows the server parsed, the
//! pieces shared by the cluster (which stages the file on one shard) and
//! capture (which stages it on the primary so the mirror gets the rows as
//! an INSERT): the statement read by tokens, the client's file, the
//! staging table's statements, the LOAD run with its file, and the INSERT.

use super::cluster::values::Column;
use super::link::query_packet;
use super::SessionError;
use crate::protocol::packets::{err_code, err_message};
use crate::protocol::{ErrSpec, ProtocolError, Wire};
use crate::router::lexer::{Tok, Token};
use crate::sql::quote;

/// The staging table's name (temporary: the session's connection's only).
pub(super) const STAGING: &str = "_tandem_load_staging";

/// What the server answers a client that cannot send files.
pub(super) fn no_local_files() -> ErrSpec {
    ErrSpec::new(
        1148,
        "42000",
        "The used command is not allowed with this MariaDB version",
    )
}

/// The statements that (re)create the staging table shaped like `target`
/// (quoted), its AUTO_INCREMENT column `auto` a nullable number, so rows
/// that leave it out get their ids from the target. The column is
/// redefined in the CREATE itself: an ALTER, even of a temporary table,
/// commits the open transaction.
pub(super) fn staging_setup(target: &str, auto: Option<&str>) -> [String; 2] {
    let staging = quote(STAGING);
    let redefined = auto
        .map(|a| format!("({} DECIMAL(20,0) NULL DEFAULT NULL) ", quote(a)))
        .unwrap_or_default();
    [
        format!("DROP TEMPORARY TABLE IF EXISTS {staging}"),
        format!("CREATE TEMPORARY TABLE {staging} {redefined}SELECT * FROM {target} LIMIT 0"),
    ]
}

/// `DROP TEMPORARY TABLE` of the staging table.
pub(super) fn staging_drop() -> String {
    format!("DROP TEMPORARY TABLE IF EXISTS {}", quote(STAGING))
}

/// The client's LOAD with the staging table in its target's place.
pub(super) fn into_staging(sql: &[u8], load: &Load) -> Vec<u8> {
    let mut text = sql[..load.name.0].to_vec();
    text.extend_from_slice(quote(STAGING).as_bytes());
    text.extend_from_slice(&sql[load.name.1..]);
    text
}

/// The staged rows in the target's column order (`names`; a redefined
/// column comes first in the staging table). `columns`: what an earlier
/// read of them said, whose FLOAT columns are then read through DOUBLE.
pub(super) fn select_staged(names: &[String], columns: Option<&[Column]>) -> String {
    let cols: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, c)| match columns.and_then(|k| k.get(i)) {
            Some(k) if k.kind == FLOAT => format!("CAST({} AS DOUBLE)", quote(c)),
            _ => quote(c),
        })
        .collect();
    format!("SELECT {} FROM {}", cols.join(", "), quote(STAGING))
}

/// Whether staged rows read with `columns` must be read again: a FLOAT's
/// text has six significant digits, fewer than its value (`1.0000001`
/// reads `1`), so its literal would store another number.
pub(super) fn reread(columns: &[Column]) -> bool {
    columns.iter().any(|c| c.kind == FLOAT)
}

/// The protocol's type byte of FLOAT.
const FLOAT: u8 = 0x04;

/// `INSERT IGNORE INTO target (names) VALUES ` (or `REPLACE INTO`), to be
/// followed by the staged rows. LOCAL without REPLACE behaves as IGNORE:
/// the server cannot stop the client's file half-way, so duplicates and
/// bad values become warnings.
pub(super) fn insert_head(load: &Load, target: &str, names: &[String]) -> Vec<u8> {
    let verb = match load.modifier {
        Some("REPLACE") => "REPLACE INTO",
        _ => "INSERT IGNORE INTO",
    };
    let cols: Vec<String> = names.iter().map(|c| quote(c)).collect();
    format!("{verb} {target} ({}) VALUES ", cols.join(", ")).into_bytes()
}

/// Runs `sql` (a LOAD DATA LOCAL) on a backend connection, sending `file`
/// when the server asks for it; its final answer (OK or ERR).
pub(super) async fn run_with_file(
    wire: &mut Wire,
    sql: &[u8],
    file: &[u8],
) -> Result<Vec<u8>, SessionError> {
    let backend = |e: ProtocolError| SessionError::Backend(e.into());
    let io = |e: std::io::Error| SessionError::Backend(ProtocolError::Io(e).into());
    let mut s = 0;
    wire.send_packet(&mut s, &query_packet(sql))
        .await
        .map_err(io)?;
    let p = wire.read_packet(Some(1), 1 << 24).await.map_err(backend)?;
    if p.payload.first() != Some(&0xFB) {
        return Ok(p.payload);
    }
    let mut s = p.last_seq.wrapping_add(1);
    for chunk in file.chunks((1 << 24) - 1) {
        wire.queue_packet(&mut s, chunk);
    }
    wire.queue_packet(&mut s, &[]);
    wire.flush().await.map_err(io)?;
    Ok(wire
        .read_packet(Some(s), 1 << 24)
        .await
        .map_err(backend)?
        .payload)
}

/// A server's error packet as the ErrSpec the client gets (its code, 1105
/// when it has none, and its message).
pub(super) fn server_error(p: &[u8]) -> ErrSpec {
    let code = match err_code(p) {
        0 => 1105,
        c => c,
    };
    ErrSpec::new(code, "HY000", err_message(p))
}

/// Asks the client for its LOCAL INFILE file `name` (the 0xFB request,
/// sequence id `seq`) and reads it up to the empty packet: (the file, or
/// None when it was larger than `limit` bytes (read to its end and
/// dropped); the sequence id of the answer that follows).
pub(super) async fn client_file(
    client: &mut Wire,
    seq: u8,
    name: &[u8],
    max_packet: usize,
    limit: usize,
) -> Result<(Option<Vec<u8>>, u8), SessionError> {
    let mut s = seq;
    let mut request = vec![0xFB];
    request.extend_from_slice(name);
    client.send_packet(&mut s, &request).await?;
    let mut file = Some(Vec::new());
    loop {
        let p = client.read_packet(Some(s), max_packet.max(1 << 24)).await?;
        s = p.last_seq.wrapping_add(1);
        if p.payload.is_empty() {
            return Ok((file, s));
        }
        match &mut file {
            Some(f) if f.len() + p.payload.len() <= limit => f.extend_from_slice(&p.payload),
            _ => file = None,
        }
    }
}

/// What a LOAD DATA statement says, found by tokens.
pub(super) struct Load {
    pub local: bool,
    pub file: Vec<u8>,
    /// `REPLACE`, `IGNORE` or nothing.
    pub modifier: Option<&'static str>,
    pub table: String,
    /// Byte span of the table name (qualified or not).
    pub name: (usize, usize),
    /// The columns the file's fields go to (its column list without user
    /// variables), None without a list (every column); and the columns
    /// its SET assigns, lower case.
    pub columns: Option<Vec<String>>,
    pub set: Vec<String>,
}

impl Load {
    /// Of the target's columns `all` (in table order), those the LOAD
    /// gives a value: the others take their defaults in the target, as
    /// they would directly (a staging table drops expression defaults
    /// such as `UUID()` or `NEXTVAL(s)`).
    pub fn given(&self, all: &[String]) -> Vec<String> {
        all.iter()
            .filter(|c| {
                let c = c.to_lowercase();
                self.columns
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|n| n.to_lowercase() == c))
                    || self.set.contains(&c)
            })
            .cloned()
            .collect()
    }
}

pub(super) fn parse(sql: &[u8], toks: &[Token]) -> Option<Load> {
    let infile = toks.iter().position(|t| t.is_word(sql, "INFILE"))?;
    let local = infile > 0 && toks[infile - 1].is_word(sql, "LOCAL");
    let file_tok = toks.get(infile + 1).filter(|t| t.kind == Tok::Str)?;
    let raw = file_tok.text(sql);
    let file = raw.get(1..raw.len().saturating_sub(1))?.to_vec();
    let into = (infile + 2..toks.len()).find(|&i| toks[i].is_word(sql, "INTO"))?;
    let modifier = toks[infile + 2..into].iter().find_map(|t| {
        if t.is_word(sql, "REPLACE") {
            Some("REPLACE")
        } else if t.is_word(sql, "IGNORE") {
            Some("IGNORE")
        } else {
            None
        }
    });
    if !toks.get(into + 1)?.is_word(sql, "TABLE") {
        return None;
    }
    let first = into + 2;
    let mut last = first;
    if toks
        .get(first + 1)
        .is_some_and(|t| t.kind == Tok::Punct(b'.'))
    {
        last = first + 2;
    }
    let table = toks.get(last)?.ident(sql)?;
    let (columns, set) = targets(sql, &toks[last + 1..])?;
    Some(Load {
        local,
        file,
        modifier,
        table,
        name: (toks[first].start, toks[last].end),
        columns,
        set,
    })
}

/// The column list and SET targets of what follows a LOAD's table name
/// (see `Load`); None: a list Tandem cannot read.
#[allow(clippy::type_complexity)]
fn targets(sql: &[u8], toks: &[Token]) -> Option<(Option<Vec<String>>, Vec<String>)> {
    let depths = crate::router::lexer::depths(toks);
    let mut columns = None;
    let mut set = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        if depths[i] != 0 {
            i += 1;
            continue;
        }
        let partition = i > 0 && toks[i - 1].is_word(sql, "PARTITION");
        if t.kind == Tok::Punct(b'(') && !partition && columns.is_none() {
            let mut list = Vec::new();
            i += 1;
            while toks.get(i)?.kind != Tok::Punct(b')') {
                match toks[i].kind {
                    Tok::Var | Tok::Punct(b',') => {}
                    _ => list.push(toks[i].ident(sql)?),
                }
                i += 1;
            }
            columns = Some(list);
        } else if t.is_word(sql, "SET") && !(i > 0 && toks[i - 1].is_word(sql, "CHARACTER")) {
            // `SET a = …, b = …`: each item's first name.
            let mut start = true;
            for j in i + 1..toks.len() {
                if depths[j] == 0 && toks[j].kind == Tok::Punct(b',') {
                    start = true;
                } else if start {
                    set.push(toks[j].ident(sql)?.to_lowercase());
                    start = false;
                }
            }
            break;
        }
        i += 1;
    }
    Some((columns, set))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::lexer;

    #[test]
    fn floats_are_read_again_through_double() {
        let col = |kind| Column {
            charset: 63,
            kind,
            flags: 0,
            decimals: 31,
        };
        let names = vec!["id".to_string(), "f".to_string()];
        assert_eq!(
            select_staged(&names, None),
            "SELECT `id`, `f` FROM `_tandem_load_staging`"
        );
        let columns = [col(0x03), col(FLOAT)];
        assert!(reread(&columns) && !reread(&columns[..1]));
        assert_eq!(
            select_staged(&names, Some(&columns)),
            "SELECT `id`, CAST(`f` AS DOUBLE) FROM `_tandem_load_staging`"
        );
    }

    #[test]
    fn a_load_statement_is_read_by_tokens() {
        let sql = b"LOAD DATA LOCAL INFILE '/tmp/x.csv' IGNORE INTO TABLE app.bids \
                    FIELDS TERMINATED BY ',' (user_id, amount, created_at)";
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        let l = parse(sql, &toks).unwrap();
        assert!(l.local);
        assert_eq!(l.file, b"/tmp/x.csv");
        assert_eq!(l.modifier, Some("IGNORE"));
        assert_eq!(l.table, "bids");
        assert_eq!(&sql[l.name.0..l.name.1], b"app.bids");
        assert_eq!(
            l.columns,
            Some(vec!["user_id".into(), "amount".into(), "created_at".into()])
        );
        let sql = b"LOAD DATA INFILE 'f' INTO TABLE t";
        lexer::tokenize(sql, &mut toks);
        let l = parse(sql, &toks).unwrap();
        assert!(!l.local && l.modifier.is_none());
        assert!(l.columns.is_none() && l.set.is_empty());
        let sql = b"LOAD DATA LOCAL INFILE 'f' INTO TABLE t CHARACTER SET utf8mb4 \
                    FIELDS TERMINATED BY ',' IGNORE 1 LINES (a, @skip, `B`) \
                    SET c = CONCAT(@skip, 'x'), d = IF(a > 1, 2, 3)";
        lexer::tokenize(sql, &mut toks);
        let l = parse(sql, &toks).unwrap();
        assert_eq!(l.columns, Some(vec!["a".into(), "B".into()]));
        assert_eq!(l.set, vec!["c".to_string(), "d".to_string()]);
        let all: Vec<String> = ["id", "a", "b", "c", "d", "u"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(l.given(&all), vec!["a", "b", "c", "d"]);
    }
}
