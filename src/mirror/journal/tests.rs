use super::*;
use crate::mirror::JournalHandle;

fn all(j: &Journal, from: Lsn) -> Vec<(Lsn, Vec<u8>)> {
    let mut r = j.reader(from).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        out.push(rec);
    }
    out
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

#[test]
fn records_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(j.next_lsn(), 1);
    for i in 1..=100 {
        assert_eq!(j.append(&payload(i)).unwrap(), i);
    }
    assert_eq!(j.sync().unwrap(), 100);
    drop(j);
    let j = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(j.next_lsn(), 101);
    assert_eq!(j.durable_lsn(), 100);
    let recs = all(&j, 1);
    assert_eq!(recs.len(), 100);
    for (i, (lsn, p)) in recs.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1);
        assert_eq!(*p, payload(*lsn));
    }
    assert_eq!(all(&j, 60).first().map(|r| r.0), Some(60));
}

#[test]
fn unsynced_records_are_not_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    j.append(b"durable").unwrap();
    j.sync().unwrap();
    j.append(b"lost in a crash").unwrap();
    drop(j); // no sync: simulates a crash before the group commit
    let j = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(all(&j, 1), vec![(1, b"durable".to_vec())]);
}

#[test]
fn rotates_segments_and_reads_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), 1024).unwrap();
    for i in 1..=200 {
        j.append(&payload(i)).unwrap();
        if i % 7 == 0 {
            j.sync().unwrap();
        }
    }
    j.sync().unwrap();
    let segs = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segs > 5, "expected several segments, got {segs}");
    let recs = all(&j, 1);
    assert_eq!(recs.len(), 200);
    assert!(recs
        .iter()
        .enumerate()
        .all(|(i, (l, _))| *l == i as u64 + 1));
    drop(j);
    let mut j = Journal::open(dir.path(), 1024).unwrap();
    assert_eq!(j.next_lsn(), 201);
    assert_eq!(all(&j, 150).len(), 51);
    // Applied up to 150: whole segments below it go away, the rest stays.
    let before = j.size_bytes();
    assert!(j.truncate_before(150).unwrap() > 0);
    assert!(j.size_bytes() < before);
    assert!(j.first_lsn() <= 150);
    assert_eq!(all(&j, 150).len(), 51);
    assert!(matches!(j.reader(1), Err(JournalError::Truncated(1, _))));
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    for i in 1..=10 {
        j.append(&payload(i)).unwrap();
    }
    j.sync().unwrap();
    drop(j);
    // A crash mid-write: half a record header, then half a payload.
    let seg = segment_path(dir.path(), 1);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[
        200, 0, 0, 0, 1, 2, 3, 4, 11, 0, 0, 0, 0, 0, 0, 0, b'p', b'a',
    ])
    .unwrap();
    drop(f);
    let mut j = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(j.next_lsn(), 11);
    assert_eq!(j.append(b"after recovery").unwrap(), 11);
    j.sync().unwrap();
    let recs = all(&j, 1);
    assert_eq!(recs.len(), 11);
    assert_eq!(recs[10].1, b"after recovery");
}

#[test]
fn corruption_before_the_tail_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), 512).unwrap();
    for i in 1..=60 {
        j.append(&payload(i)).unwrap();
    }
    j.sync().unwrap();
    drop(j);
    // Flip a payload byte in the first (not the last) segment.
    let seg = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = SEGMENT_HEADER as usize + RECORD_HEADER + 3;
    bytes[at] ^= 0xFF;
    std::fs::write(&seg, bytes).unwrap();
    let j = Journal::open(dir.path(), 512).unwrap();
    let mut r = j.reader(1).unwrap();
    assert!(matches!(
        r.next_record(),
        Err(JournalError::Corrupt {
            what: "CRC mismatch",
            ..
        })
    ));
}

#[test]
fn garbage_files_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000001.seg"), b"nonsense").unwrap();
    assert!(matches!(
        Journal::open(dir.path(), 4096),
        Err(JournalError::Corrupt { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    let mut bad_len = MAGIC.to_vec();
    bad_len.extend_from_slice(&1u64.to_le_bytes());
    bad_len.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    std::fs::write(dir.path().join("00000000000000000001.seg"), &bad_len).unwrap();
    // An absurd length at the tail is a torn write: truncated, not allocated.
    let j = Journal::open(dir.path(), 4096).unwrap();
    assert_eq!(j.next_lsn(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_orders_and_batches_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), 64 * 1024).unwrap();
    let (handle, thread) = JournalHandle::spawn(j, 1024);
    let mut durable = handle.durable();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            for i in 0..500u64 {
                let rec = format!("{t}:{i}").into_bytes();
                lsns.push(h.append(rec).await.unwrap());
            }
            lsns
        }));
    }
    let mut all_lsns = Vec::new();
    for t in tasks {
        let lsns = t.await.unwrap();
        assert!(
            lsns.windows(2).all(|w| w[0] < w[1]),
            "a task's appends are ordered"
        );
        all_lsns.extend(lsns);
    }
    all_lsns.sort();
    assert_eq!(all_lsns, (1..=4000).collect::<Vec<_>>());
    durable.wait_for(|l| *l == 4000).await.unwrap();
    drop(handle);
    drop(durable);
    thread.join().unwrap();
    let j = Journal::open(dir.path(), 64 * 1024).unwrap();
    let recs = all(&j, 1);
    assert_eq!(recs.len(), 4000);
    // Per task, records appear in the order the task appended them.
    for t in 0..8u64 {
        let mine: Vec<u64> = recs
            .iter()
            .filter_map(|(_, p)| {
                let s = String::from_utf8(p.clone()).unwrap();
                let (a, b) = s.split_once(':').unwrap();
                (a.parse::<u64>().unwrap() == t).then(|| b.parse().unwrap())
            })
            .collect();
        assert_eq!(mine, (0..500).collect::<Vec<_>>());
    }
}

#[test]
fn preallocated_space_reads_as_the_end_and_is_cut_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    for i in 1..=5 {
        j.append(&payload(i)).unwrap();
    }
    j.sync().unwrap();
    let seg = segment_path(dir.path(), 1);
    let on_disk = std::fs::metadata(&seg).unwrap().len();
    assert!(on_disk >= PREALLOCATE, "zero-filled ahead: {on_disk} bytes");
    // A reader stops at the zeros, and sees records written later.
    let mut r = j.reader(1).unwrap();
    for i in 1..=5 {
        assert_eq!(r.next_record().unwrap().map(|x| x.0), Some(i));
    }
    assert_eq!(r.next_record().unwrap(), None);
    j.append(&payload(6)).unwrap();
    assert_eq!(j.write().unwrap(), 6);
    assert_eq!(j.durable_lsn(), 5);
    assert_eq!(r.next_record().unwrap().map(|x| x.0), Some(6));
    j.sync().unwrap();
    let logical = j.size_bytes();
    drop(j);
    let mut j = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(j.next_lsn(), 7);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), logical);
    assert_eq!(j.append(b"seven").unwrap(), 7);
    j.sync().unwrap();
    assert_eq!(all(&j, 1).len(), 7);
}

#[test]
fn finished_segments_end_with_their_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), 4096).unwrap();
    // A reader that keeps up while segments fill and rotate.
    let mut r = Reader::open(dir.path(), 1).unwrap();
    let mut seen = Vec::new();
    for i in 1..=300 {
        j.append(&payload(i)).unwrap();
        if i % 3 == 0 {
            j.write().unwrap();
            while let Some((lsn, _)) = r.next_record().unwrap() {
                seen.push(lsn);
            }
        }
    }
    j.sync().unwrap();
    while let Some((lsn, _)) = r.next_record().unwrap() {
        seen.push(lsn);
    }
    assert_eq!(seen, (1..=300).collect::<Vec<_>>());
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() > 3);
    for s in &segs[..segs.len() - 1] {
        let bytes = std::fs::read(s).unwrap();
        assert!(bytes.len() <= 4096);
        assert_ne!(bytes[bytes.len() - RECORD_HEADER..], [0u8; RECORD_HEADER]);
    }
}

#[test]
fn a_journal_directory_has_one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    let e = Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES)
        .err()
        .expect("a second writer is refused")
        .to_string();
    assert!(
        e.contains(&format!(
            "in use by another Tandem (process {})",
            std::process::id()
        )),
        "{e}"
    );
    drop(j);
    Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).expect("free again once closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_appends_go_with_the_next_batch_and_are_durable_with_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), 64 * 1024).unwrap();
    let (handle, thread) = JournalHandle::spawn(j, 64);
    assert_eq!(handle.append(b"intent".to_vec()).await.unwrap(), 1);
    // Queued, not written: nobody woke the writer.
    handle.append_deferred(b"outcome".to_vec());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(*handle.written().borrow(), 1);
    let mut r = Reader::open(dir.path(), 1).unwrap();
    assert_eq!(r.next_record().unwrap().map(|x| x.0), Some(1));
    assert_eq!(r.next_record().unwrap(), None);
    // The next append takes it first, and its fsync covers both.
    assert_eq!(handle.append(b"intent 2".to_vec()).await.unwrap(), 3);
    assert_eq!(handle.durable_lsn(), 3);
    r.drop_buffer().unwrap();
    assert_eq!(r.next_record().unwrap(), Some((2, b"outcome".to_vec())));
    assert_eq!(r.next_record().unwrap(), Some((3, b"intent 2".to_vec())));
    // So does an explicit sync.
    handle.append_deferred(b"outcome 2".to_vec());
    assert_eq!(handle.sync().await.unwrap(), 4);
    // And the writer's end, when every handle is gone.
    handle.append_deferred(b"outcome 3".to_vec());
    drop(handle);
    thread.join().unwrap();
    let j = Journal::open(dir.path(), 64 * 1024).unwrap();
    assert_eq!(j.durable_lsn(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_holds_the_fsync_while_appends_are_expected() {
    use crate::mirror::CommitWait;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), 64 * 1024).unwrap();
    let expected = Arc::new(AtomicUsize::new(2));
    let (handle, thread) = JournalHandle::spawn_with(
        j,
        64,
        CommitWait {
            max: Duration::from_secs(60),
            expected: expected.clone(),
        },
    );
    // Two more appends are on their way: the first waits for them.
    let h = handle.clone();
    let first = tokio::spawn(async move { h.append(b"first".to_vec()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !first.is_finished(),
        "answered before the expected append came"
    );
    assert_eq!(handle.durable_lsn(), 0);
    // One comes, one is still expected: the hold goes on.
    expected.store(1, Ordering::Release);
    let h = handle.clone();
    let second = tokio::spawn(async move { h.append(b"second".to_vec()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "the hold ended while an append was still expected"
    );
    assert_eq!(handle.durable_lsn(), 0);
    // The last comes (nothing else expected): one fsync answers all three.
    expected.store(0, Ordering::Release);
    assert_eq!(handle.append(b"third".to_vec()).await.unwrap(), 3);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(handle.durable_lsn(), 3);
    assert_eq!(handle.fsyncs(), 1, "one fsync for the held batch");
    // Nothing expected: no wait at all (else this would take a minute).
    tokio::time::timeout(Duration::from_secs(30), handle.append(b"fourth".to_vec()))
        .await
        .expect("an append with nothing expected is not held")
        .unwrap();
    drop(handle);
    thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_holds_the_fsync_at_most_its_limit() {
    use crate::mirror::CommitWait;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), 64 * 1024).unwrap();
    // An append that is expected never comes (its session went away
    // without telling): the wait ends at its limit.
    let (handle, thread) = JournalHandle::spawn_with(
        j,
        64,
        CommitWait {
            max: Duration::from_millis(50),
            expected: Arc::new(AtomicUsize::new(1)),
        },
    );
    for i in 1..=3 {
        let lsn = tokio::time::timeout(Duration::from_secs(30), handle.append(vec![i]))
            .await
            .expect("the hold ends at its limit")
            .unwrap();
        assert_eq!(lsn, u64::from(i));
    }
    drop(handle);
    thread.join().unwrap();
}

/// The journal holds every mirrored value: its directory and files are
/// created for their owner only.
#[test]
fn journal_files_are_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("journal").join("deeper");
    let mut j = Journal::open(&dir, 64 * 1024).unwrap();
    j.append(b"secret row").unwrap();
    j.sync().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}
