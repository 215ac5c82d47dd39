//! A crash never exposes half-written data: files appear only through the manifest, and
//! whatever an interrupted writer left behind is removed by the next one.

use kvwatch_ingest::data::DataDir;
use kvwatch_ingest::files::{IngestOptions, Input, ingest};
use kvwatch_ingest::store::{StoreError, StoreWriter, read_manifest};
use std::path::{Path, PathBuf};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/samples")
        .join(name)
}

async fn count(root: &Path, sql: &str) -> i64 {
    let ctx = DataDir::new(root).session().await.unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let col = batches[0].column(0);
    datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Int64)
        .unwrap()
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test]
async fn uncommitted_and_temp_files_are_invisible_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    {
        let mut w = StoreWriter::open(root, Default::default()).unwrap();
        ingest(
            &mut w,
            vec![Input::file(sample("PT1H.json"))],
            &IngestOptions::default(),
            |_| {},
        )
        .unwrap();
    }
    assert_eq!(count(root, "SELECT count(*) FROM events").await, 9);
    // Simulate a writer killed after writing a file but before publishing the manifest, and
    // one killed mid-file.
    let part = root.join("events/date=2024-05-01");
    let committed = std::fs::read_dir(&part)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let orphan = part.join("part-orphan.parquet");
    std::fs::copy(&committed, &orphan).unwrap();
    let half = part.join("part-half.parquet.tmp");
    std::fs::write(&half, b"PAR1 half a file").unwrap();
    let manifest_tmp = root.join("manifest.json.tmp");
    std::fs::write(&manifest_tmp, b"{ half a manifest").unwrap();
    assert_eq!(
        count(root, "SELECT count(*) FROM events").await,
        9,
        "orphans are not read"
    );

    let _w = StoreWriter::open(root, Default::default()).unwrap();
    assert!(
        !orphan.exists() && !half.exists(),
        "next writer removes leftovers"
    );
    assert!(committed.exists());
    assert_eq!(count(root, "SELECT count(*) FROM events").await, 9);
}

#[tokio::test]
async fn one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _first = StoreWriter::open(dir.path(), Default::default()).unwrap();
    match StoreWriter::open(dir.path(), Default::default()) {
        Err(StoreError::Locked(_)) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a second writer must be refused"),
    }
}

#[tokio::test]
async fn checkpoints_commit_with_rows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut w = StoreWriter::open(root, Default::default()).unwrap();
    let opts = IngestOptions::default();
    ingest(
        &mut w,
        vec![Input::file(sample("single.json"))],
        &opts,
        |_| {},
    )
    .unwrap();
    w.commit(Some(("kafka/t".into(), serde_json::json!({"0": 42}))))
        .unwrap();
    let m = read_manifest(root).unwrap();
    assert_eq!(m.checkpoints["kafka/t"], serde_json::json!({"0": 42}));
    assert_eq!(m.rows(kvwatch_ingest::Table::Events), 1);
    drop(w);
    let w2 = StoreWriter::open(root, Default::default()).unwrap();
    assert_eq!(
        w2.manifest().checkpoints["kafka/t"],
        serde_json::json!({"0": 42})
    );
}

#[tokio::test]
async fn small_memory_budget_still_dedups_across_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let opts = kvwatch_ingest::WriteOptions {
        file_rows: 4,
        buffer_bytes: 1,
        compact_min_files: 2,
        ..Default::default()
    };
    let mut w = StoreWriter::open(root, opts).unwrap();
    let small = IngestOptions {
        batch_rows: 1,
        ..Default::default()
    };
    let inputs = vec![
        Input::file(sample("PT1H.json")),
        Input::file(sample("envelope-compact.json")),
        Input::file(sample("PT1H.json")),
    ];
    let r = ingest(&mut w, inputs, &small, |_| {}).unwrap();
    assert_eq!(r.stored.events, 9);
    assert!(r.stored.files_written >= 5, "{r:?}");
    assert_eq!(count(root, "SELECT count(*) FROM events").await, 9);
    assert_eq!(
        count(root, "SELECT count(DISTINCT event_id) FROM events").await,
        9
    );
    let r = w.compact().await.unwrap();
    assert!(r.files_before > r.files_after, "{r:?}");
    assert_eq!(count(root, "SELECT count(*) FROM events").await, 9);
}

/// A long-running writer forgets the IDs of old date partitions to bound its memory; a late
/// duplicate for such a partition is still caught, from the partition's files.
#[tokio::test]
async fn trimmed_id_sets_reload_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut w = StoreWriter::open(root, Default::default()).unwrap();
    let input = || vec![Input::file(sample("PT1H.json"))];
    let first = ingest(&mut w, input(), &IngestOptions::default(), |_| {}).unwrap();
    assert!(first.stored.events > 0);
    w.trim_ids(0);
    let again = ingest(&mut w, input(), &IngestOptions::default(), |_| {}).unwrap();
    assert_eq!(again.stored.events, 0);
    // Every record again: the first run's rows plus the duplicates already inside the file.
    assert_eq!(
        again.stored.duplicates,
        first.stored.events
            + first.stored.activity
            + first.stored.quarantine
            + first.stored.duplicates
    );
    assert_eq!(
        count(root, "SELECT count(*) FROM events").await,
        first.stored.events as i64
    );
}

/// Sessions of one process share the tables of the last snapshot they registered (planning a
/// snapshot's views once, not per query), so a commit must be seen by the very next session,
/// and two stores open in one process never see each other's tables.
#[tokio::test]
async fn each_session_sees_the_latest_commit_of_its_own_store() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let add = |root: &Path, name: &str| {
        let mut w = StoreWriter::open(root, Default::default()).unwrap();
        ingest(
            &mut w,
            vec![Input::file(sample(name))],
            &IngestOptions::default(),
            |_| {},
        )
        .unwrap();
    };
    let events = "SELECT count(*) FROM events";
    let through_view = "SELECT count(*) FROM azure_diagnostics";
    add(a.path(), "PT1H.json");
    assert_eq!(count(a.path(), events).await, 9);
    assert_eq!(count(a.path(), through_view).await, 9);
    // The other store, empty, then filled: its own tables each time.
    assert_eq!(count(b.path(), events).await, 0);
    add(b.path(), "single.json");
    let in_b = count(b.path(), events).await;
    assert!(in_b > 0);
    assert_eq!(count(a.path(), events).await, 9);
    // A second commit to the first store is in the next session, view included.
    add(a.path(), "archive-vaultget.json");
    let more = count(a.path(), events).await;
    assert!(more > 9, "{more}");
    assert_eq!(count(a.path(), through_view).await, more);
    assert_eq!(count(b.path(), events).await, in_b);
}
