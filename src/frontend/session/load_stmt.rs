//! What a LOAD DATA statement says, read by tokens: shared by the cluster
//! (which stages the file on one shard) and capture (which stages it on
//! the primary so the mirror gets the rows as an INSERT).

use super::SessionError;
use crate::protocol::Wire;
use crate::router::lexer::{Tok, Token};

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
    Some(Load {
        local,
        file,
        modifier,
        table,
        name: (toks[first].start, toks[last].end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::lexer;

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
        let sql = b"LOAD DATA INFILE 'f' INTO TABLE t";
        lexer::tokenize(sql, &mut toks);
        let l = parse(sql, &toks).unwrap();
        assert!(!l.local && l.modifier.is_none());
    }
}
