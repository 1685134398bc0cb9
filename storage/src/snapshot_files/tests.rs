use std::fs;

use super::*;

fn orders(files: &SnapshotFiles) -> Vec<u64> {
    files.list().unwrap().iter().map(|i| i.order).collect()
}

#[test]
fn save_then_load_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles::open(dir.path(), 3).unwrap();
    assert_eq!(files.load_latest().unwrap(), None);

    files
        .save(117, "3-117-42", b"the meta", b"the data")
        .unwrap();
    let got = files.load_latest().unwrap().unwrap();
    assert_eq!(
        got,
        StoredSnapshot {
            order: 117,
            id: "3-117-42".into(),
            meta: b"the meta".to_vec(),
            data: b"the data".to_vec(),
        }
    );

    // Survives reopening, and empty parts are fine.
    files.save(200, "", b"", b"").unwrap();
    let reopened = SnapshotFiles::open(dir.path(), 3).unwrap();
    let got = reopened.load_latest().unwrap().unwrap();
    assert_eq!(
        (got.order, got.id.as_str(), got.meta.len(), got.data.len()),
        (200, "", 0, 0)
    );

    let infos = reopened.list().unwrap();
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[0].id, "3-117-42");
    assert_eq!(infos[0].size, fs::metadata(&infos[0].path).unwrap().len());
}

#[test]
fn newest_by_order_not_by_save_time() {
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles::open(dir.path(), 5).unwrap();
    files.save(1000, "big", b"m", b"d").unwrap();
    files.save(999, "small", b"m", b"d").unwrap();
    assert_eq!(files.load_latest().unwrap().unwrap().id, "big");
    assert_eq!(orders(&files), vec![999, 1000]);
}

#[test]
fn keeps_only_the_newest_n() {
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles::open(dir.path(), 2).unwrap();
    for order in [10, 20, 30, 40] {
        files
            .save(order, &format!("id-{order}"), b"m", b"d")
            .unwrap();
    }
    assert_eq!(orders(&files), vec![30, 40]);
    let on_disk = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(on_disk, 2, "pruned files are really gone");
}

#[test]
fn same_order_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles::open(dir.path(), 2).unwrap();
    files.save(5, "first", b"m", b"1").unwrap();
    files.save(5, "second", b"m", b"2").unwrap();
    assert_eq!(orders(&files), vec![5]);
    assert_eq!(files.load_latest().unwrap().unwrap().id, "second");
}

#[test]
fn flipped_byte_falls_back_to_older() {
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles::open(dir.path(), 3).unwrap();
    files.save(10, "old", b"meta-old", b"data-old").unwrap();
    files.save(20, "new", b"meta-new", b"data-new").unwrap();

    let newest = files.list().unwrap().pop().unwrap().path;
    let mut bytes = fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40; // one bit in the data
    fs::write(&newest, bytes).unwrap();

    let got = files.load_latest().unwrap().unwrap();
    assert_eq!(
        (got.order, got.id.as_str(), got.data.as_slice()),
        (10, "old", &b"data-old"[..])
    );
}

#[test]
fn truncated_file_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles::open(dir.path(), 3).unwrap();
    files.save(1, "old", b"m", b"data").unwrap();
    files.save(2, "new", b"m", &[7u8; 4096]).unwrap();

    let newest = files.list().unwrap().pop().unwrap().path;
    let f = fs::OpenOptions::new().write(true).open(&newest).unwrap();
    f.set_len(1000).unwrap();

    assert_eq!(files.load_latest().unwrap().unwrap().id, "old");
    // A file too short for a header, too.
    fs::write(&newest, b"TALLY").unwrap();
    assert_eq!(files.load_latest().unwrap().unwrap().id, "old");
    // `list` leaves it out rather than failing.
    assert_eq!(orders(&files), vec![1]);
}

#[test]
fn nothing_verifies_means_none() {
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles::open(dir.path(), 3).unwrap();
    fs::write(
        dir.path().join(format!("{:020}.snap", 9)),
        b"garbage that is long enough to be a header maybe, but it is not one at all",
    )
    .unwrap();
    assert_eq!(files.load_latest().unwrap(), None);
}

#[test]
fn temp_files_from_a_crash_are_ignored_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles::open(dir.path(), 3).unwrap();
    files.save(10, "good", b"m", b"d").unwrap();

    // A crash mid-save leaves a temp file, possibly with a higher order and a valid-looking body.
    let tmp = dir.path().join(format!("{:020}-1234-0.tmp", 99));
    let good = files.list().unwrap()[0].path.clone();
    fs::copy(&good, &tmp).unwrap();

    assert_eq!(
        files.load_latest().unwrap().unwrap().order,
        10,
        "temp file is never read"
    );
    assert_eq!(orders(&files), vec![10]);

    let _reopened = SnapshotFiles::open(dir.path(), 3).unwrap();
    assert!(!tmp.exists(), "temp file removed at open");
    assert!(good.exists());
}

#[test]
fn rejects_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        SnapshotFiles::open(dir.path(), 0),
        Err(StorageError::Invalid(_))
    ));
    let files = SnapshotFiles::open(dir.path(), 1).unwrap();
    let long_id = "x".repeat(MAX_ID_LEN + 1);
    assert!(matches!(
        files.save(1, &long_id, b"", b""),
        Err(StorageError::Invalid(_))
    ));
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a refused save leaves nothing"
    );
}
