//! Entry points for the coverage-guided fuzz targets in `fuzz/` (`make
//! fuzz`), one per parser that sees bytes from a socket or a file. Each
//! takes arbitrary bytes and must return without panicking; the fuzz
//! targets call them under libFuzzer, and `tests/fuzz_corpus.rs` replays
//! every committed corpus file through them on the stable toolchain.

use crate::mirror::record::{JournalRecord, MirrorTxn};
use crate::protocol::response::{Expect, Step, Tracker};
use crate::router::lexer;

/// Client bytes after the handshake: a command packet. Its SQL (a
/// COM_QUERY or COM_STMT_PREPARE) goes through everything the session runs
/// on statement text before a backend sees it: the router (lexer,
/// sqlparser, determinism), statement splitting, rewrites, write-set
/// shapes and keyed shapes.
pub fn client_command(data: &[u8]) {
    let Some((&cmd, sql)) = data.split_first() else {
        return;
    };
    let c = crate::router::classify(sql);
    let mut toks = Vec::new();
    lexer::tokenize(sql, &mut toks);
    let _ = lexer::digest(sql, &toks);
    let _ = lexer::split_statements(sql, &toks);
    let _ = lexer::parse_kill(sql, &toks);
    let _ = lexer::savepoint_name(sql, &toks);
    let _ = lexer::param_spans(sql);
    let _ = lexer::pin_rewrite(sql, &toks, || "00000000-0000-0000-0000-000000000000".into());
    let _ = lexer::rewrite_calls(sql, &toks, "ROW_COUNT", "1");
    let _ = lexer::rewrite_connection_id(sql, &toks, 7);
    let _ = lexer::rename_database(sql, &toks, "shop", "shop_next");
    let _ = crate::mirror::writeset::shape_of(sql, &mut toks);
    lexer::tokenize(sql, &mut toks);
    for r in &c.statements {
        if let crate::router::Class::Write(kind) = &r.class {
            let _ = crate::router::keyed::keyed_shape(sql, &toks, *kind);
        }
    }
    if cmd == 0x16 {
        // A prepared statement's text with its placeholders filled.
        let n = lexer::count_params(&toks);
        let values: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let spans = lexer::param_spans(sql);
        let _ = lexer::render_params(sql, &spans, &values);
    }
}

/// Backend bytes: a response to a command of the kind the first byte
/// picks, as packets of up to 255 bytes (each preceded by its length
/// byte), fed to the response tracker until it says the response ended.
pub fn backend_response(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let expect = match mode % 5 {
        0 => Expect::ResultSet,
        1 => Expect::Prepare,
        2 => Expect::FieldList,
        3 => Expect::Fetch,
        _ => Expect::Single,
    };
    let mut t = Tracker::new(expect, mode & 0x80 != 0);
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        match t.feed(packet, packet.len()) {
            Ok(Step::More) => {}
            Ok(Step::LocalInfile) => t.infile_sent(),
            Ok(Step::Done) | Err(_) => return,
        }
    }
}

/// A journal record as read back from disk (either record layout).
pub fn journal_record(data: &[u8]) {
    if let Ok(r) = JournalRecord::decode(data) {
        let _ = r.encode();
    }
    let _ = MirrorTxn::decode(data);
}

/// Config text: the YAML a config file holds, validated without reading
/// any file it names.
pub fn config_text(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::parse_without_files(text);
    }
}

/// A target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name (the corpus directories' names).
pub const TARGETS: &[(&str, Target)] = &[
    ("client_command", client_command),
    ("backend_response", backend_response),
    ("journal_record", journal_record),
    ("config_text", config_text),
];

/// Journal records of each kind, as the journal writes them: the seeds of
/// the `journal_record` corpus (`TANDEM_WRITE_SEEDS=1 cargo test --lib
/// fuzzing` writes them to `fuzz/corpus/journal_record/`).
pub fn journal_seeds() -> Vec<Vec<u8>> {
    use crate::mirror::record::{MirrorStatement, Pins, SessionVars};
    let txn = MirrorTxn {
        committed_at_us: 1_700_000_000_000_000,
        conn_id: 7,
        statements: vec![MirrorStatement {
            db: Some("shop".into()),
            sql: b"INSERT INTO t (a) VALUES (1)".to_vec(),
            tables: vec!["t".into()],
            ddl: false,
            pins: Pins {
                timestamp_us: Some(1_700_000_000_000_000),
                ..Default::default()
            },
            session: SessionVars::default(),
        }],
    };
    vec![
        JournalRecord::Intent {
            token: 42,
            txn: txn.clone(),
        }
        .encode(),
        JournalRecord::Outcome {
            intent: 3,
            committed: true,
            at_us: 1_700_000_000_000_001,
        }
        .encode(),
        txn.encode(),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_decode_and_can_be_written() {
        let seeds = super::journal_seeds();
        for s in &seeds {
            super::journal_record(s);
        }
        if std::env::var("TANDEM_WRITE_SEEDS").is_ok() {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/journal_record");
            std::fs::create_dir_all(dir).unwrap();
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(format!("{dir}/seed{i}"), s).unwrap();
            }
        }
    }
}
