//! The event store in object storage (`--data az://…`), against a real Azure Storage emulator
//! (Azurite, started here).

use crate::azurite::Azurite;
use crate::common::{bin, generate, ingest, query, samples};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `kvwatch` on the store at `url` with `state` as this node's directory, configured by the
/// emulator's variables (`AZURE_STORAGE_USE_EMULATOR`, `AZURITE_BLOB_STORAGE_URL`).
pub fn remote(az: &Azurite, url: &str, state: &Path) -> Command {
    let mut c = bin();
    c.args(["--data", url]).arg("--state").arg(state);
    for (k, v) in az.env() {
        c.env(k, v);
    }
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().expect("run kvwatch");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn remote_query(az: &Azurite, url: &str, state: &Path, sql: &str) -> Vec<Value> {
    let mut c = remote(az, url, state);
    c.args(["query", "--format", "json", sql]);
    serde_json::from_str(&ok(c)).unwrap()
}

/// Rows per table, and the sorted event IDs.
fn contents(rows: impl Fn(&str) -> Vec<Value>) -> (BTreeMap<String, i64>, Vec<String>) {
    let mut counts = BTreeMap::new();
    for t in ["events", "activity", "quarantine"] {
        let r = rows(&format!("SELECT count(*) AS n FROM {t}"));
        counts.insert(t.to_owned(), r[0]["n"].as_i64().unwrap());
    }
    let ids = rows("SELECT event_id FROM events ORDER BY event_id")
        .into_iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    (counts, ids)
}

fn alerts_by_rule(out: &str) -> BTreeMap<String, usize> {
    let v: Value = serde_json::from_str(out).unwrap();
    let mut by = BTreeMap::new();
    for a in v.as_array().unwrap() {
        *by.entry(a["rule_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    by
}

#[test]
fn an_azurite_store_ingests_queries_and_detects_like_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let az = Azurite::start(dir.path());
    az.create_container("kvstore");
    let gen_dir = generate(
        &dir.path().join("gen"),
        &["--days", "1", "--seed", "11", "--scale", "1"],
    );
    let inputs = [gen_dir.as_path(), &samples().join("corrupt.jsonl")];

    let local = dir.path().join("local");
    ingest(&local, &inputs);
    let url = "az://kvstore/tenants/contoso";
    let state = dir.path().join("node");
    // Configured the way a real account is: explicit options, not the emulator switch.
    let mut c = bin();
    c.args(["--data", url]).arg("--state").arg(&state);
    for o in az.options() {
        c.args(["--storage-option", &o]);
    }
    c.args(["ingest", "--format", "json"]).args(inputs);
    let report: Value = serde_json::from_str(&ok(c)).unwrap();
    assert!(
        report["stored"]["events"].as_u64().unwrap() > 1000,
        "{report}"
    );
    assert!(
        !state.join("manifest.json").exists(),
        "the store is in the container, not in the state directory"
    );

    let here = contents(|sql| query(&local, sql));
    let there = contents(|sql| remote_query(&az, url, &state, sql));
    assert_eq!(here, there);

    // Re-ingesting the same files adds nothing: de-duplication reads the stored IDs back.
    let mut again = remote(&az, url, &state);
    again.args(["ingest", "--format", "json"]).args(inputs);
    let again: Value = serde_json::from_str(&ok(again)).unwrap();
    assert_eq!(again["stored"]["events"], 0, "{again}");
    assert_eq!(contents(|sql| remote_query(&az, url, &state, sql)), here);

    // Detection reads the files from the container and finds what it finds on disk.
    let mut d = bin();
    d.arg("--data")
        .arg(&local)
        .args(["detect", "--format", "json"]);
    ok(d);
    let mut d = remote(&az, url, &state);
    d.args(["detect", "--format", "json"]);
    ok(d);
    let mut a = bin();
    a.arg("--data")
        .arg(&local)
        .args(["alerts", "--format", "json"]);
    let mut b = remote(&az, url, &state);
    b.args(["alerts", "--format", "json"]);
    let (la, ra) = (alerts_by_rule(&ok(a)), alerts_by_rule(&ok(b)));
    assert!(!la.is_empty());
    assert_eq!(la, ra);

    // Compaction merges the container's files and queries still see every row.
    let mut c = remote(&az, url, &state);
    c.args(["compact", "--format", "json"]);
    ok(c);
    assert_eq!(contents(|sql| remote_query(&az, url, &state, sql)), here);
}

#[test]
fn writers_racing_on_the_manifest_both_land() {
    let dir = tempfile::tempdir().unwrap();
    let az = Azurite::start(dir.path());
    az.create_container("race");
    let url = "az://race/store";
    let a = generate(
        &dir.path().join("a"),
        &["--days", "1", "--seed", "1", "--scale", "1"],
    );
    let b = generate(
        &dir.path().join("b"),
        &["--days", "1", "--seed", "2", "--scale", "1"],
    );
    // Both writers read the empty manifest, then wait before committing on top of it: one
    // commit finds the manifest changed under it and is applied again to the new one.
    let spawn = |input: &Path, node: &str| {
        let mut c = remote(&az, url, &dir.path().join(node));
        c.env("KVWATCH_TEST_PAUSE", "store-before-manifest:2000")
            .args(["--log", "info", "ingest", "--format", "json"])
            .arg(input)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let (pa, pb) = (spawn(&a, "node-a"), spawn(&b, "node-b"));
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    for o in [&oa, &ob] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&oa.stderr),
        String::from_utf8_lossy(&ob.stderr)
    );
    assert!(
        logs.contains("manifest changed by another writer"),
        "the commits did not race: {logs}"
    );
    let ra: Value = serde_json::from_slice(&oa.stdout).unwrap();
    let rb: Value = serde_json::from_slice(&ob.stdout).unwrap();
    let stored =
        ra["stored"]["events"].as_i64().unwrap() + rb["stored"]["events"].as_i64().unwrap();
    let state = dir.path().join("reader");
    let n = remote_query(
        &az,
        url,
        &state,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events",
    );
    assert_eq!(n[0]["n"].as_i64().unwrap(), stored, "a commit was lost");
    assert_eq!(n[0]["d"].as_i64().unwrap(), stored);
    // And each writer's rows are the ones a directory store of its input holds.
    for (input, name) in [(&a, "la"), (&b, "lb")] {
        let local = dir.path().join(name);
        let r = ingest(&local, &[input]);
        let ids = query(&local, "SELECT event_id FROM events LIMIT 5");
        for id in ids {
            let id = id["event_id"].as_str().unwrap();
            let found = remote_query(
                &az,
                url,
                &state,
                &format!("SELECT count(*) AS n FROM events WHERE event_id = '{id}'"),
            );
            assert_eq!(found[0]["n"], 1, "{id} of {name} ({r})");
        }
    }
}

#[test]
fn a_url_without_a_state_directory_or_with_an_unknown_scheme_is_refused() {
    let out = bin()
        .args(["--data", "az://kv/x", "query", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--state"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--data", "ftp://kv/x", "--state"])
        .arg(dir.path())
        .args(["query", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme"));
}

/// Housekeeping of a shared store: one node at a time (the other is told who holds the
/// lease), retention and compaction while queries run (none fails), and the files a writer
/// killed between upload and commit left behind are swept.
#[test]
fn housekeeping_runs_on_one_node_and_never_breaks_a_query() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let az = Azurite::start(dir.path());
    az.create_container("hkstore");
    let url = "az://hkstore/store";
    let today = chrono::Utc::now().date_naive();
    let start = (today - chrono::Duration::days(5)).to_string();
    let input = generate(
        &dir.path().join("gen"),
        &[
            "--days",
            "6",
            "--start",
            &start,
            "--seed",
            "5",
            "--attacks",
            "none",
        ],
    );
    // Small files, so every day has many to merge.
    let mut c = remote(&az, url, &dir.path().join("writer"));
    c.args([
        "ingest",
        "--no-compact",
        "--file-rows",
        "2000",
        "--format",
        "json",
    ])
    .arg(&input);
    ok(c);
    let reader = dir.path().join("reader");
    let per_day =
        |az: &Azurite| -> BTreeMap<String, i64> {
            remote_query(
            az,
            url,
            &reader,
            "SELECT CAST(day_start(time) AS VARCHAR) AS d, count(*) AS n FROM events GROUP BY 1",
        )
        .into_iter()
        .map(|r| (r["d"].as_str().unwrap()[..10].to_owned(), r["n"].as_i64().unwrap()))
        .collect()
        };
    let before = per_day(&az);
    assert_eq!(before.len(), 6, "{before:?}");

    // A writer killed after uploading its files, before its commit.
    let extra = generate(
        &dir.path().join("extra"),
        &["--days", "1", "--start", &today.to_string(), "--seed", "9"],
    );
    let mut k = remote(&az, url, &dir.path().join("killed"));
    k.env("KVWATCH_TEST_CRASH", "store-before-manifest")
        .args(["ingest", "--no-compact"])
        .arg(&extra);
    assert!(!k.output().unwrap().status.success());

    let failures = std::sync::Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let mut q = remote(&az, url, &reader);
                q.args([
                    "query",
                    "--format",
                    "json",
                    "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events",
                ]);
                let out = q.output().unwrap();
                if !out.status.success() {
                    failures
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
        });
        let compact = |node: &str, pause: bool| {
            let mut c = remote(&az, url, &dir.path().join(node));
            if pause {
                c.env("KVWATCH_TEST_PAUSE", "housekeeping:4000");
            }
            c.args([
                "compact",
                "--retain-days",
                "3",
                "--orphan-grace-secs",
                "0",
                "--format",
                "json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        };
        let a = compact("hk-a", true);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let b = compact("hk-b", false).wait_with_output().unwrap();
        let a = a.wait_with_output().unwrap();
        done.store(true, Ordering::Relaxed);
        assert!(b.status.success() && a.status.success());
        let rb: Value = serde_json::from_slice(&b.stdout).unwrap();
        let ra: Value = serde_json::from_slice(&a.stdout).unwrap();
        assert!(
            rb["lease_held_by"].is_string(),
            "B ran while A held the lease: {rb}"
        );
        assert!(ra["lease_held_by"].is_null(), "{ra}");
        assert!(
            ra["files_before"].as_u64().unwrap() > ra["files_after"].as_u64().unwrap(),
            "{ra}"
        );
        assert!(ra["partitions_dropped"].as_u64().unwrap() >= 2, "{ra}");
        assert!(ra["orphans_removed"].as_u64().unwrap() > 0, "{ra}");
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "queries failed during housekeeping: {failures:?}"
    );
    let after = per_day(&az);
    let cutoff = (today - chrono::Duration::days(3)).to_string();
    let kept: BTreeMap<String, i64> = before
        .into_iter()
        .filter(|(d, _)| d.as_str() >= cutoff.as_str())
        .collect();
    assert_eq!(after, kept);
}

/// `kvwatch ingest az://insights-logs-auditevent/…` reads the archive in the storage account,
/// and a later run reads only what the hour's growing blob gained (a record still being
/// written waits for the run after).
#[test]
fn archive_ingest_from_blobs_is_incremental_on_a_growing_blob() {
    use crate::detect::record;
    let dir = tempfile::tempdir().unwrap();
    let az = Azurite::start(dir.path());
    let container = "insights-logs-auditevent";
    az.create_container(container);
    let hour = "resourceId=/SUBSCRIPTIONS/0000/RESOURCEGROUPS/PAY-RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/PAYMENTS-KV/y=2026/m=03/d=02/h=10/m=00/PT1H.json";
    let lines = |from: u32, to: u32| -> String {
        (from..to)
            .map(|i| {
                record(
                    &format!("2026-03-02T10:{:02}:{:02}Z", i / 60, i % 60),
                    "SecretGet",
                    &format!("secrets/s{i}"),
                ) + "\n"
            })
            .collect()
    };
    az.append_blob(container, hour, lines(0, 100).as_bytes(), true);
    // Another hour, complete, as a block blob; and a blob kvwatch does not read.
    az.put_blob(
        container,
        "resourceId=/SUBSCRIPTIONS/0000/RESOURCEGROUPS/PAY-RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/PAYMENTS-KV/y=2026/m=03/d=02/h=09/m=00/PT1H.json",
        lines(1000, 1040).as_bytes(),
    );
    az.put_blob(container, "README.txt", b"not logs");
    let data = dir.path().join("store");
    let run = || -> Value {
        let mut c = bin();
        c.arg("--data").arg(&data);
        for (k, v) in az.env() {
            c.env(k, v);
        }
        c.args(["ingest", "--format", "json", &format!("az://{container}")]);
        serde_json::from_str(&ok(c)).unwrap()
    };
    let r = run();
    assert_eq!(r["stored"]["events"], 140, "{r}");
    assert!(r["skipped_files"].to_string().contains("README.txt"), "{r}");
    // The hour goes on: 50 more records and half of one more.
    let more = lines(100, 151);
    let cut = more.len() - 40;
    az.append_blob(container, hour, &more.as_bytes()[..cut], false);
    let r = run();
    assert_eq!(r["stored"]["events"], 50, "{r}");
    assert_eq!(
        r["parsed"]["quarantined"], 0,
        "the half record was read: {r}"
    );
    az.append_blob(container, hour, &more.as_bytes()[cut..], false);
    let r = run();
    assert_eq!(r["stored"]["events"], 1, "{r}");
    let r = run();
    assert_eq!(r["stored"]["events"], 0, "{r}");
    assert_eq!(r["parsed"]["records"], 0, "nothing new is read again: {r}");
    let n = query(
        &data,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events",
    );
    assert_eq!(
        (n[0]["n"].as_i64(), n[0]["d"].as_i64()),
        (Some(191), Some(191))
    );
    let src = query(
        &data,
        "SELECT source FROM events WHERE object_name = 's150'",
    );
    assert!(
        src[0]["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{container}/resourceId=")),
        "{src:?}"
    );
}
