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
