//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`,
//! seeds and whatever `make fuzz` kept or found) through its target's
//! entry point on the stable toolchain: none may panic. A crash the fuzzer
//! finds is committed to the corpus (and gets a unit test beside its code).

use std::path::Path;

#[test]
fn every_corpus_file_runs_through_its_target_without_panicking() {
    // On a thread with a runtime worker's stack (8 MB, `main.rs`).
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(replay)
        .unwrap()
        .join()
        .unwrap();
}

fn replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut ran = 0;
    for (name, target) in tandem::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: no corpus");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            if std::env::var("TANDEM_FUZZ_TRACE").is_ok() {
                eprintln!("{}", f.display());
            }
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panic!("{name} panicked on {}", f.display());
            }
            ran += 1;
        }
    }
    assert!(ran > 0);
}
