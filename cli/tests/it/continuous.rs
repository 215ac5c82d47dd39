//! Continuous detection's promises on files: alerts are a function of the data, not of how it
//! arrived (threads, batch sizes, file order, one pass or a pass per day), and silence is
//! judged against each vault's own rhythm. The streamed (Kafka) side is in `kafka.rs`.

use super::common::{generate, ingest, run};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A store's alerts by ID, without the wall-clock fields (`created_at`, `updated_at`).
pub(super) fn alert_set(data: &Path) -> BTreeMap<String, Value> {
    let r = run(data, &["alerts", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    v.into_iter()
        .map(|mut a| {
            let o = a.as_object_mut().unwrap();
            o.remove("created_at");
            o.remove("updated_at");
            o.remove("detected_at");
            (o["id"].as_str().unwrap().to_owned(), a)
        })
        .collect()
}

/// What differs between two alert sets, for a failure message.
pub(super) fn diff(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> String {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("only in the first: {k} {}", v["rule_id"])),
            Some(w) if w != v => out.push(format!("differs: {k}\n  {v}\n  {w}")),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out.push(format!(
                "only in the second: {k} {} {}",
                v["rule_id"], v["summary"]
            ));
        }
    }
    out.join("\n")
}

/// Summaries of silence alerts on vaults that no labelled attack silenced.
pub(super) fn wrongly_silent(alerts: &BTreeMap<String, Value>, generated: &Path) -> Vec<String> {
    let labels: Value =
        serde_json::from_str(&std::fs::read_to_string(generated.join("labels.json")).unwrap())
            .unwrap();
    let silenced: Vec<String> = labels["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"].as_str().unwrap_or_default().contains("silence"))
        .flat_map(|a| a["vaults"].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_str().unwrap_or_default().to_lowercase())
        .collect();
    alerts
        .values()
        .filter(|a| a["rule_id"] == "kv-log-silence")
        .filter(|a| {
            !a["vaults"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| silenced.contains(&v.as_str().unwrap_or_default().to_lowercase()))
        })
        .map(|a| a["summary"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn detect(data: &Path) {
    let r = run(data, &["detect", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

fn day_files(generated: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(generated.join("jsonl"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn alerts_are_a_function_of_the_data_not_of_how_it_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let generated = generate(
        &dir.path().join("generated"),
        &["--format", "jsonl", "--days", "3", "--seed", "11"],
    );
    let days = day_files(&generated);
    let reference = dir.path().join("one-pass");
    ingest(&reference, &[&generated.join("jsonl")]);
    detect(&reference);
    let want = alert_set(&reference);
    assert!(want.len() >= 5, "the attacks raise alerts: {}", want.len());
    assert_eq!(
        wrongly_silent(&want, &generated),
        Vec::<String>::new(),
        "only the vault the attack silenced is silent"
    );

    // One parser thread, small Arrow batches, small Parquet files, files given newest first.
    let other = dir.path().join("reordered");
    let mut rev: Vec<&Path> = days.iter().map(PathBuf::as_path).collect();
    rev.reverse();
    let r = super::common::bin()
        .arg("--data")
        .arg(&other)
        .args(["ingest", "--format", "json", "--file-rows", "3000"])
        .args(["--parse-threads", "1", "--batch-rows", "777"])
        .args(&rev)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    detect(&other);
    let got = alert_set(&other);
    assert!(
        got == want,
        "threads, batches, file order:\n{}",
        diff(&want, &got)
    );

    // A day at a time, with a detection pass after each.
    let daily = dir.path().join("daily");
    for d in &days {
        ingest(&daily, &[d]);
        detect(&daily);
    }
    let got = alert_set(&daily);
    assert!(got == want, "a pass per day:\n{}", diff(&want, &got));
}
