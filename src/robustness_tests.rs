//! Randomized inputs into every parser that sees bytes from a socket or a
//! file: none may panic. (Deterministic seeds, so failures reproduce.)

use crate::mirror::record::MirrorTxn;
use crate::protocol::response::{Expect, Tracker};
use crate::router::{classify, lexer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random bytes biased towards SQL-ish and protocol-ish tokens.
fn noise(rng: &mut StdRng, max: usize) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"SELECT ",
        b"INSERT INTO t ",
        b"VALUES (",
        b")",
        b"'",
        b"\"",
        b"`",
        b"\\",
        b"/*",
        b"*/",
        b"/*!4010",
        b"-- ",
        b"#",
        b"\n",
        b";",
        b"?",
        b"@",
        b"@@",
        b"0x",
        b"1e",
        b".5",
        b"x'",
        b"_binary'",
        b"CONNECTION_ID()",
        b"KILL ",
        b"QUERY ",
        b"LIMIT ",
        b"ORDER BY ",
        b"NOW(",
        b"\xff",
        b"\xfe",
        b"\x00",
        b"CREATE PROCEDURE p() BEGIN ",
        b"END",
        b"(",
        b",",
    ];
    let len = rng.random_range(0..max);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if rng.random_bool(0.5) {
            out.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())]);
        } else {
            out.push(rng.random());
        }
    }
    out
}

#[test]
fn sql_layer_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x7A4D3);
    let mut toks = Vec::new();
    for _ in 0..3000 {
        let sql = noise(&mut rng, 200);
        lexer::tokenize(&sql, &mut toks);
        let _ = lexer::digest(&sql, &toks);
        let _ = lexer::split_statements(&sql, &toks);
        let _ = lexer::parse_kill(&sql, &toks);
        let _ = lexer::rewrite_connection_id(&sql, &toks, 42);
        let _ = classify(&sql);
    }
}

#[test]
fn response_tracker_never_panics() {
    let mut rng = StdRng::seed_from_u64(0xB0B);
    for _ in 0..3000 {
        let expect = [
            Expect::ResultSet,
            Expect::Prepare,
            Expect::FieldList,
            Expect::Fetch,
            Expect::Single,
        ][rng.random_range(0..5)];
        let mut t = Tracker::new(expect, rng.random());
        for _ in 0..rng.random_range(1..30) {
            let mut p = noise(&mut rng, 40);
            if !p.is_empty() && rng.random_bool(0.3) {
                p[0] = [0x00, 0xFE, 0xFF, 0xFB, 0x01, 0x03][rng.random_range(0..6)];
            }
            let len = if rng.random_bool(0.05) {
                0xFF_FFFF
            } else {
                p.len()
            };
            if t.feed(&p, len).is_err() {
                break;
            }
            if t.is_done() {
                break;
            }
        }
    }
}

#[test]
fn config_and_records_never_panic() {
    let mut rng = StdRng::seed_from_u64(0xC0FFEE);
    let base = include_str!("../config/example.yaml");
    for _ in 0..500 {
        // Mutate the real example: delete, duplicate or corrupt a span.
        let mut text: Vec<u8> = base.as_bytes().to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..text.len());
            let end = (at + rng.random_range(0..40)).min(text.len());
            match rng.random_range(0..3) {
                0 => {
                    text.drain(at..end);
                }
                1 => {
                    let piece = text[at..end].to_vec();
                    text.splice(at..at, piece);
                }
                _ => {
                    let junk = noise(&mut rng, 20);
                    text.splice(at..end, junk);
                }
            }
            if text.is_empty() {
                break;
            }
        }
        let _ = crate::config::parse(&String::from_utf8_lossy(&text));
        let _ = MirrorTxn::decode(&text);
        let mut rec = vec![1u8];
        rec.extend(noise(&mut rng, 60));
        let _ = MirrorTxn::decode(&rec);
        for version in [2u8, 3] {
            rec[0] = version;
            let _ = crate::mirror::record::JournalRecord::decode(&rec);
        }
    }
}

#[test]
fn handshake_parsers_never_panic() {
    use mysql_common::io::ParseBuf;
    use mysql_common::packets::HandshakeResponse;
    use mysql_common::proto::MyDeserialize;
    let mut rng = StdRng::seed_from_u64(0x5EED);
    for _ in 0..5000 {
        let mut p = noise(&mut rng, 120);
        if rng.random_bool(0.3) {
            // A real greeting's shape, with random bytes after the version.
            let mut g = b"\x0a5.5.5-10.11.19-MariaDB\0".to_vec();
            g.extend(noise(&mut rng, 80));
            p = g;
        }
        if rng.random_bool(0.5) && p.len() >= 4 {
            // Plausible capability flags so deeper branches are reached.
            p[..4].copy_from_slice(&0x00FF_A28Du32.to_le_bytes());
        }
        let _ = HandshakeResponse::deserialize((), &mut ParseBuf(&p));
        let _ = crate::backend::conn::parse_greeting(&p);
    }
}
