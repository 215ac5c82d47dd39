//! `kvwatch detect`, `alerts`, `alert` and `rules` through the real binary, on real stores.

use crate::common::*;
use serde_json::{Value, json};
use std::path::Path;

const VAULT: &str = "/SUBSCRIPTIONS/00000000-0000-4000-8000-0000000000AA/RESOURCEGROUPS/PAY-RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/PAYMENTS-KV";

/// One audit record by mallory on payments-kv.
pub(crate) fn record(time: &str, op: &str, object: &str) -> String {
    json!({
        "time": time, "category": "AuditEvent", "operationName": op, "resourceId": VAULT,
        "resultSignature": "OK", "callerIpAddress": "203.0.113.7",
        "identity": {"claim": {"oid": "6e1f0000-0000-4000-8000-00000000000a", "upn": "mallory@contoso.com"}},
        "properties": {"httpStatusCode": 200, "id": format!("https://payments-kv.vault.azure.net/{object}")}
    })
    .to_string()
}

/// SecretDelete records at 10:00, 10:05, … on 2026-03-02, one per index.
fn deletes(range: std::ops::Range<u32>) -> Vec<String> {
    range
        .map(|i| {
            record(
                &format!("2026-03-02T10:{:02}:00Z", i * 5),
                "SecretDelete",
                &format!("secrets/s{i}"),
            )
        })
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

pub(crate) fn alerts(data: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["alerts", "--format", "json"];
    args.extend_from_slice(extra);
    let r = run(data, &args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    serde_json::from_str::<Value>(&r.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

pub(crate) fn detect(data: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["detect", "--format", "json"];
    args.extend_from_slice(extra);
    let r = run(data, &args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn by_rule<'a>(alerts: &'a [Value], rule: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["rule_id"] == rule).collect()
}

#[test]
fn generated_attacks_are_listed_with_entities_and_rerun_adds_nothing() {
    let out = tempfile::tempdir().unwrap();
    let g = bin()
        .args([
            "generate",
            "--days",
            "3",
            "--seed",
            "5",
            "--attacks",
            "self-grant-then-read,delete-purge,role-assignment,firewall-opened",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let data = tempfile::tempdir().unwrap();
    ingest(
        data.path(),
        &[
            &out.path().join("insights-logs-auditevent"),
            &out.path().join("insights-activity-logs"),
        ],
    );
    let first = detect(data.path(), &[]);
    assert_eq!(first["mode"], "incremental");
    let created = first["created"].as_u64().unwrap();
    assert!(created >= 4, "{first}");

    let labels: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("labels.json")).unwrap()).unwrap();
    let all = alerts(data.path(), &[]);
    assert_eq!(all.len() as u64, created);
    for (kind, rule) in [
        ("self-grant-then-read", "kv-perm-self-grant"),
        ("delete-purge", "kv-corr-delete-then-purge"),
        ("role-assignment", "kv-perm-role-assignment"),
        ("firewall-opened", "kv-cfg-firewall-opened"),
    ] {
        let label = labels["attacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["kind"] == kind)
            .unwrap();
        let hits = by_rule(&all, rule);
        assert_eq!(hits.len(), 1, "{rule}: {all:#?}");
        let a = hits[0];
        let oid = label["actor"]["oid"].as_str().unwrap().to_lowercase();
        assert!(
            a["principals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["oid"] == oid.as_str()),
            "{rule} names the actor {oid}: {a:#}"
        );
        assert!(
            a["vaults"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| label["vaults"].as_array().unwrap().contains(v)),
            "{a:#}"
        );
        // The alert's time lies within the attack.
        let (s, e) = (
            label["start"].as_str().unwrap(),
            label["end"].as_str().unwrap(),
        );
        let (f, l) = (
            a["first_seen"].as_str().unwrap(),
            a["last_seen"].as_str().unwrap(),
        );
        assert!(f >= s && l <= e, "{rule}: {f}..{l} outside {s}..{e}");
        assert!(!a["evidence"].as_array().unwrap().is_empty());
        for field in [
            "id",
            "title",
            "severity",
            "status",
            "created_at",
            "updated_at",
            "event_count",
            "ips",
            "objects",
            "tactics",
            "techniques",
            "summary",
        ] {
            assert!(!a[field].is_null(), "{field} missing: {a:#}");
        }
    }
    // Evidence resolves to stored events.
    let sg = by_rule(&all, "kv-perm-self-grant")[0];
    let n = count(
        data.path(),
        &format!(
            "SELECT count(*) FROM events e JOIN alerts a ON array_has(a.evidence, e.event_id) WHERE a.id = '{}'",
            sg["id"].as_str().unwrap()
        ),
    );
    assert_eq!(n, sg["event_count"].as_i64().unwrap());

    // Nothing new: incremental is a no-op; a full backfill re-evaluates and changes nothing.
    assert_eq!(detect(data.path(), &[])["mode"], "up-to-date");
    let again = detect(data.path(), &["--from", "2024-05-01", "--to", "2024-06-01"]);
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(again["updated"], 0, "{again}");
    assert_eq!(alerts(data.path(), &[]).len(), all.len());

    // Filters, OCSF and status changes.
    let high = alerts(data.path(), &["--severity", "high"]);
    assert!(
        high.iter()
            .all(|a| a["severity"] == "high" || a["severity"] == "critical")
    );
    assert!(!high.is_empty());
    let r = run(data.path(), &["alerts", "--format", "ocsf"]);
    let ocsf: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(ocsf[0]["class_uid"], 2004);
    assert_eq!(ocsf.as_array().unwrap().len(), all.len());
    let id = sg["id"].as_str().unwrap();
    let r = run(
        data.path(),
        &[
            "alert",
            &id[..16],
            "--set-status",
            "acknowledged",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let acked = alerts(data.path(), &["--status", "acknowledged"]);
    assert_eq!(acked.len(), 1);
    assert_eq!(acked[0]["id"], id);
}

#[test]
fn late_data_updates_open_alerts_and_opens_old_windows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let first = deletes(0..6);
    write_lines(&dir.path().join("a.jsonl"), &first);
    ingest(&data, &[&dir.path().join("a.jsonl")]);
    detect(&data, &[]);
    let before = by_rule(&alerts(&data, &[]), "kv-sens-mass-delete")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["event_count"], 6);

    // An archive blob that arrives late: more deletes in the same hour, and a vault delete a
    // day earlier than anything seen so far.
    let mut late = deletes(6..9);
    late.push(record("2026-03-01T08:00:00Z", "VaultDelete", ""));
    write_lines(&dir.path().join("b.jsonl"), &late);
    ingest(&data, &[&dir.path().join("b.jsonl")]);
    let pass = detect(&data, &[]);
    assert_eq!(pass["mode"], "incremental", "{pass}");
    let after = alerts(&data, &[]);
    let md = by_rule(&after, "kv-sens-mass-delete");
    assert_eq!(md.len(), 1, "updated, not duplicated: {after:#?}");
    assert_eq!(md[0]["id"], before[0]["id"]);
    assert_eq!(md[0]["event_count"], 9);
    assert_eq!(md[0]["last_seen"], "2026-03-02T10:40:00.0000000Z");
    assert_eq!(
        by_rule(&after, "kv-sens-vault-deleted").len(),
        1,
        "the old window was evaluated"
    );
    assert!(pass["updated"].as_u64().unwrap() >= 1, "{pass}");
}

#[test]
fn repeats_inside_the_suppression_period_fold_into_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    // Backups at 10:00 and 13:00: two hourly windows of kv-sens-destructive-op (suppression 1d),
    // and one at 10:00 two days later, outside the suppression period.
    let lines = vec![
        record("2026-03-02T10:00:00Z", "SecretBackup", "secrets/a"),
        record("2026-03-02T13:00:00Z", "SecretBackup", "secrets/b"),
        record("2026-03-04T14:00:00Z", "SecretBackup", "secrets/c"),
    ];
    write_lines(&dir.path().join("a.jsonl"), &lines);
    ingest(&data, &[&dir.path().join("a.jsonl")]);
    let pass = detect(&data, &[]);
    assert_eq!(pass["folded"], 1, "{pass}");
    let a = alerts(&data, &["--rule", "kv-sens-destructive-op"]);
    assert_eq!(a.len(), 2, "{a:#?}");
    let folded = a
        .iter()
        .find(|x| x["occurrences"] == 2)
        .expect("a folded alert");
    assert_eq!(folded["event_count"], 2);
    assert!(
        folded["summary"]
            .as_str()
            .unwrap()
            .contains("2 occurrences"),
        "{folded}"
    );
    let r = run(&data, &["alert", folded["id"].as_str().unwrap()]);
    assert!(
        r.stdout.contains("occurrences") && r.stdout.contains("2026-03-02T13:00:00"),
        "{}",
        r.stdout
    );
}

/// A rule whose query outgrows the detection memory pool spills to disk, says how much in the
/// pass report, and finds what it finds with memory to spare.
#[test]
fn a_rule_that_spills_reports_it_and_finds_the_same() {
    let dir = tempfile::tempdir().unwrap();
    // Three nights of 20,000 reads of distinct secrets by seven callers, each from the same
    // fifty addresses every night (routine); on the third night one of them also reads ten
    // secrets from an address it never used (an alert).
    let mut lines = Vec::new();
    let read = |time: String, caller: u32, ip: String, secret: String| {
        json!({
            "time": time, "category": "AuditEvent", "operationName": "SecretGet",
            "resourceId": VAULT, "resultSignature": "OK", "callerIpAddress": ip,
            "identity": {"claim": {"oid": format!("6e1f0000-0000-4000-8000-{caller:012}"),
                                   "upn": format!("pipeline{caller}@contoso.com")}},
            "properties": {"httpStatusCode": 200,
                           "id": format!("https://payments-kv.vault.azure.net/secrets/{secret}")}
        })
        .to_string()
    };
    for day in 1..=3 {
        for i in 0..20_000u32 {
            lines.push(read(
                format!("2026-03-0{day}T02:{:02}:{:02}Z", i / 400, (i / 7) % 60),
                i % 7,
                format!("203.0.113.{}", i % 50 + 1),
                format!("a-rather-long-secret-name-{day}-{i}"),
            ));
        }
    }
    for i in 0..10 {
        lines.push(read(
            format!("2026-03-03T14:0{i}:00Z"),
            3,
            "198.51.100.66".into(),
            format!("s{i}"),
        ));
    }
    let input = dir.path().join("reads.jsonl");
    write_lines(&input, &lines);
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    std::fs::copy(
        pack.join("kv-read-burst-distinct.yaml"),
        rules.join("kv-read-burst-distinct.yaml"),
    )
    .unwrap();
    let mut runs = Vec::new();
    for (name, memory_mb) in [("tight", "160"), ("roomy", "2048")] {
        let data = dir.path().join(name);
        ingest(&data, &[&input]);
        let rules = rules.to_str().unwrap();
        let pass = detect(
            &data,
            &["--rules", rules, "--no-models", "--memory-mb", memory_mb],
        );
        assert_eq!(pass["failed"], json!([]), "{pass}");
        let spilled = pass["rules"][0]["spilled_bytes"].as_u64().unwrap();
        let found: Vec<(Value, Value)> = alerts(&data, &[])
            .iter()
            .map(|a| (a["id"].clone(), a["summary"].clone()))
            .collect();
        runs.push((spilled, found));
    }
    assert!(runs[0].0 > 0, "nothing spilled in 160 MiB");
    assert_eq!(runs[1].0, 0, "spilled in 2 GiB");
    assert_eq!(runs[0].1.len(), 1, "{:?}", runs[0].1);
    assert!(
        runs[0].1[0].1.as_str().unwrap().contains("198.51.100.66"),
        "{:?}",
        runs[0].1
    );
    assert_eq!(runs[0].1, runs[1].1);
}

#[test]
fn rules_test_passes_and_a_broken_fixture_or_rule_fails_loudly() {
    let empty = tempfile::tempdir().unwrap();
    let r = run(empty.path(), &["rules", "test"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(", 0 failed"), "{}", r.stdout);
    let list = run(empty.path(), &["rules", "list", "--format", "json"]);
    let rules: Value = serde_json::from_str(&list.stdout).unwrap();
    assert!(rules.as_array().unwrap().len() >= 20);

    // A copy of the pack with one expectation changed.
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&pack).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let f = dir.path().join("kv-sens-mass-delete.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, text.replace("event_count: 6", "event_count: 7")).unwrap();
    let rules_arg = dir.path().display().to_string();
    let r = run(empty.path(), &["rules", "test", "--rules", &rules_arg]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("FAIL kv-sens-mass-delete / six deletes in an hour"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(", 1 failed"), "{}", r.stdout);

    // SQL that does not plan is rejected at load time with file and line, by every command.
    std::fs::write(
        &f,
        text.replace(
            "HAVING count(*) > {{threshold}}",
            "HAVING count(*) > no_such_column",
        ),
    )
    .unwrap();
    for cmd in [
        &["rules", "list", "--rules", &rules_arg][..],
        &["rules", "test", "--rules", &rules_arg][..],
    ] {
        let r = run(empty.path(), cmd);
        assert_ne!(r.code, 0);
        assert!(
            r.stderr.contains("kv-sens-mass-delete.yaml:") && r.stderr.contains("no_such_column"),
            "{}",
            r.stderr
        );
    }
    // A parameter the rule does not have, from the config file, is refused.
    let cfg = dir.path().join("kvwatch.toml");
    std::fs::write(&cfg, "[rules.kv-sens-mass-delete.params]\nthreshhold = 3\n").unwrap();
    let r = run(
        empty.path(),
        &["--config", &cfg.display().to_string(), "rules", "list"],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("threshhold"), "{}", r.stderr);
}

#[test]
fn configured_parameters_change_what_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let lines: Vec<String> = (0..4)
        .map(|i| {
            record(
                &format!("2026-03-02T10:0{i}:00Z"),
                "SecretDelete",
                &format!("secrets/s{i}"),
            )
        })
        .collect();
    write_lines(&dir.path().join("a.jsonl"), &lines);
    ingest(&data, &[&dir.path().join("a.jsonl")]);
    let cfg = dir.path().join("kvwatch.toml");
    std::fs::write(&cfg, "[rules.kv-sens-mass-delete.params]\nthreshold = 3\n\n[rules.kv-sens-destructive-op]\nenabled = false\n").unwrap();
    let r = run(
        &data,
        &[
            "--config",
            &cfg.display().to_string(),
            "detect",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let a = alerts(&data, &[]);
    assert_eq!(by_rule(&a, "kv-sens-mass-delete").len(), 1, "{a:#?}");
    assert_eq!(
        by_rule(&a, "kv-sens-destructive-op").len(),
        0,
        "disabled: {a:#?}"
    );
}

#[test]
fn follow_mode_alerts_on_new_and_late_data_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    write_lines(
        &dir.path().join("seed.jsonl"),
        &[record("2026-03-02T09:00:00Z", "SecretGet", "secrets/s0")],
    );
    ingest(&data, &[&dir.path().join("seed.jsonl")]);
    let child = bin()
        .arg("--data")
        .arg(&data)
        .args(["detect", "--follow", "--interval", "1", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |pred: &dyn Fn(&[Value]) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let a = alerts(&data, &[]);
            if pred(&a) {
                return a;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out; alerts: {a:#?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    let lines = deletes(0..6);
    write_lines(&dir.path().join("a.jsonl"), &lines);
    ingest(&data, &[&dir.path().join("a.jsonl")]);
    wait_for(&|a| by_rule(a, "kv-sens-mass-delete").len() == 1);
    // Late events of the same hour update the open alert.
    write_lines(
        &dir.path().join("b.jsonl"),
        &[record(
            "2026-03-02T10:55:00Z",
            "SecretDelete",
            "secrets/late",
        )],
    );
    ingest(&data, &[&dir.path().join("b.jsonl")]);
    let a = wait_for(&|a| {
        by_rule(a, "kv-sens-mass-delete")
            .first()
            .is_some_and(|x| x["event_count"] == 7)
    });
    assert_eq!(by_rule(&a, "kv-sens-mass-delete").len(), 1);
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passes = String::from_utf8_lossy(&out.stdout);
    assert!(
        passes.lines().count() >= 2,
        "one JSON line per pass with new data: {passes}"
    );
}

fn anomaly_alerts(data: &Path) -> Vec<(String, i64, String)> {
    let mut v: Vec<(String, i64, String)> = alerts(data, &["--rule", "anomaly-principal"])
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["event_count"].as_i64().unwrap(),
                a["severity"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn baselines_persist_across_runs_and_equal_a_backfill() {
    let out = tempfile::tempdir().unwrap();
    let g = bin()
        .args([
            "generate",
            "--format",
            "jsonl",
            "--days",
            "4",
            "--seed",
            "21",
            "--attacks",
            "crypto-spike,low-and-slow,token-replay",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let mut days: Vec<_> = std::fs::read_dir(out.path().join("jsonl"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    days.sort();
    assert_eq!(days.len(), 4);

    // Service-like: two days, a pass, then the next two days and another pass.
    let inc = tempfile::tempdir().unwrap();
    ingest(inc.path(), &[&days[0], &days[1]]);
    let first = detect(inc.path(), &[]);
    assert_eq!(first["models"]["rebuilt"], true, "{first}");
    assert!(inc.path().join("baselines.json").exists());
    ingest(inc.path(), &[&days[2], &days[3]]);
    let second = detect(inc.path(), &[]);
    let m = &second["models"];
    assert_eq!(m["rebuilt"], false, "the learned state is reused: {second}");
    let total = count(
        inc.path(),
        "SELECT count(*) FROM events WHERE http_status < 300 AND operation <> 'Authentication'",
    );
    assert!(
        m["events"].as_i64().unwrap() < total * 3 / 4,
        "only new hours are read: {m}"
    );

    // A backfill from scratch over the same data gives the same model alerts.
    let full = tempfile::tempdir().unwrap();
    ingest(
        full.path(),
        &days.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
    );
    detect(full.path(), &["--from", "2024-05-01", "--to", "2024-06-01"]);
    let a = anomaly_alerts(inc.path());
    assert!(!a.is_empty());
    assert_eq!(a, anomaly_alerts(full.path()));

    // Late data for an hour already learned makes the next pass rebuild.
    write_lines(
        &inc.path().join("late.jsonl"),
        &[record("2024-05-06T12:00:00Z", "SecretGet", "secrets/late")],
    );
    ingest(inc.path(), &[&inc.path().join("late.jsonl")]);
    let third = detect(inc.path(), &[]);
    assert_eq!(third["models"]["rebuilt"], true, "{third}");
}

#[test]
fn an_ip_far_above_its_daily_trend_raises_the_series_alert() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let mut lines = Vec::new();
    // Forty reads a day for six days, then four hundred, then one on the next day to close it.
    for day in 1..=7 {
        let n = if day == 7 { 400 } else { 40 };
        for i in 0..n {
            let t = format!(
                "2026-03-{day:02}T{:02}:{:02}:{:02}Z",
                8 + i / 60 % 10,
                i % 60,
                i % 50
            );
            lines.push(record(&t, "SecretGet", "secrets/s1"));
        }
    }
    lines.push(record("2026-03-08T09:00:00Z", "SecretGet", "secrets/s1"));
    write_lines(&dir.path().join("a.jsonl"), &lines);
    ingest(&data, &[&dir.path().join("a.jsonl")]);
    detect(&data, &[]);
    let a = alerts(&data, &["--rule", "anomaly-ip-volume"]);
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0]["ips"][0], "203.0.113.7");
    assert_eq!(a[0]["event_count"], 400);
    assert!(
        a[0]["summary"].as_str().unwrap().contains("2026-03-07"),
        "{}",
        a[0]["summary"]
    );
    assert!(
        a[0]["first_seen"]
            .as_str()
            .unwrap()
            .starts_with("2026-03-07T00:00:00")
    );
}

/// A store with eight deletes and a backup by mallory, and a rule directory of two rules
/// (mass-delete and destructive-op) in which mass-delete's threshold test is replaced by
/// `having`. Returns the store, the rule directory and mass-delete's file with its good text.
struct TwoRules {
    data: std::path::PathBuf,
    rules: String,
    file: std::path::PathBuf,
    good: String,
}

fn two_rules(dir: &Path, having: &str) -> TwoRules {
    let data = dir.join("store");
    let rules = dir.join("rules");
    std::fs::create_dir(&rules).unwrap();
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    for r in ["kv-sens-mass-delete.yaml", "kv-sens-destructive-op.yaml"] {
        std::fs::copy(pack.join(r), rules.join(r)).unwrap();
    }
    let file = rules.join("kv-sens-mass-delete.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    let changed = good.replace("HAVING count(*) > {{threshold}}", having);
    assert_ne!(changed, good);
    std::fs::write(&file, changed).unwrap();
    let mut lines = deletes(0..8);
    lines.push(record("2026-03-02T10:30:00Z", "SecretBackup", "secrets/b"));
    write_lines(&dir.join("a.jsonl"), &lines);
    ingest(&data, &[&dir.join("a.jsonl")]);
    TwoRules {
        data,
        rules: rules.display().to_string(),
        file,
        good,
    }
}

#[test]
fn a_rule_that_fails_at_run_time_leaves_the_others_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    // Plans fine, fails on the data: a vault name is no number.
    let TwoRules {
        data,
        rules: rules_arg,
        file: f,
        good,
    } = two_rules(dir.path(), "HAVING count(*) > CAST(max(vault) AS INT)");
    let args = [
        "detect",
        "--format",
        "json",
        "--no-models",
        "--rules",
        &rules_arg,
    ];

    let r = run(&data, &args);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let pass: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        pass["failed"][0]["rule_id"], "kv-sens-mass-delete",
        "{pass}"
    );
    assert!(
        r.stderr.contains("rule kv-sens-mass-delete failed"),
        "{}",
        r.stderr
    );
    let a = alerts(&data, &[]);
    assert_eq!(by_rule(&a, "kv-sens-destructive-op").len(), 1, "{a:#?}");
    assert!(by_rule(&a, "kv-sens-mass-delete").is_empty(), "{a:#?}");

    // Repaired, the next run evaluates the range the failure left pending, with no new data.
    std::fs::write(&f, good).unwrap();
    let r = run(&data, &args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let a = alerts(&data, &[]);
    assert_eq!(by_rule(&a, "kv-sens-mass-delete").len(), 1, "{a:#?}");
    assert_eq!(by_rule(&a, "kv-sens-destructive-op").len(), 1, "{a:#?}");
}

/// `n` SecretGet records on `vault`, one every five minutes from `from`.
fn every_five_minutes(vault: &str, from: &str, n: i64) -> Vec<String> {
    let t0 = chrono::DateTime::parse_from_rfc3339(from).unwrap();
    let id = VAULT.replace("PAYMENTS-KV", &vault.to_uppercase());
    (0..n)
        .map(|i| {
            let t = (t0 + chrono::Duration::minutes(5 * i)).to_rfc3339();
            let mut r: Value =
                serde_json::from_str(&record(&t, "SecretGet", "secrets/s1")).unwrap();
            r["resourceId"] = json!(id);
            r.to_string()
        })
        .collect()
}

#[test]
fn a_silence_that_late_records_fill_is_withdrawn_not_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    // payments-kv logs every five minutes, then nothing from 10:00 on 03-03 while prod-kv
    // goes on until the end of 03-03: a silence, on the data the store holds.
    let mut first = every_five_minutes("payments-kv", "2026-03-01T00:00:00Z", 58 * 12);
    first.extend(every_five_minutes(
        "prod-kv",
        "2026-03-01T00:00:00Z",
        72 * 12,
    ));
    write_lines(&dir.path().join("a.jsonl"), &first);
    ingest(&data, &[&dir.path().join("a.jsonl")]);
    detect(&data, &["--no-models"]);
    let silent = by_rule(&alerts(&data, &[]), "kv-log-silence")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(silent.len(), 1, "{silent:#?}");
    assert_eq!(silent[0]["status"], "new");
    let id = silent[0]["id"].as_str().unwrap().to_owned();

    // The vault's records for the gap arrive late (a blob delivered hours afterwards): the
    // vault was never silent. The alert is withdrawn with the reason, not left standing.
    let late = every_five_minutes("payments-kv", "2026-03-03T10:00:00Z", 14 * 12);
    write_lines(&dir.path().join("b.jsonl"), &late);
    ingest(&data, &[&dir.path().join("b.jsonl")]);
    let pass = detect(&data, &["--no-models"]);
    assert_eq!(pass["withdrawn"], 1, "{pass}");
    let after = alerts(&data, &[]);
    let silence = by_rule(&after, "kv-log-silence");
    assert_eq!(silence.len(), 1, "{after:#?}");
    assert_eq!(silence[0]["id"], id.as_str());
    assert_eq!(silence[0]["status"], "resolved", "{:#?}", silence[0]);
    assert!(
        silence[0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Withdrawn by detection"),
        "{:#?}",
        silence[0]
    );
    let trail = query(
        &data,
        &format!("SELECT actor, action, new FROM alert_history WHERE alert_id = '{id}'"),
    );
    assert!(
        trail.iter().any(|h| h["action"] == "withdrawn"),
        "{trail:#?}"
    );
    assert!(
        trail
            .iter()
            .any(|h| h["actor"] == "detection" && h["new"] == "resolved"),
        "{trail:#?}"
    );
    // Nothing left to withdraw: a rerun changes nothing.
    let pass = detect(
        &data,
        &["--no-models", "--from", "2026-03-01", "--to", "2026-03-05"],
    );
    assert_eq!(pass["withdrawn"], 0, "{pass}");
    assert_eq!(by_rule(&alerts(&data, &[]), "kv-log-silence").len(), 1);
}

#[test]
fn a_rule_past_its_deadline_is_stopped_and_the_others_still_alert() {
    let dir = tempfile::tempdir().unwrap();
    // Plans fine and would count ten billion rows: a rule that never finishes on its own.
    let TwoRules {
        data,
        rules: rules_arg,
        ..
    } = two_rules(
        dir.path(),
        "HAVING count(*) > {{threshold}} + \
         (SELECT count(*) FROM generate_series(1, 10000000000) WHERE value < 0)",
    );
    let started = std::time::Instant::now();
    let r = run(
        &data,
        &[
            "detect",
            "--format",
            "json",
            "--no-models",
            "--rules",
            &rules_arg,
            "--rule-timeout-secs",
            "2",
        ],
    );
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(took.as_secs() < 30, "the deadline did not hold: {took:?}");
    let pass: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        pass["failed"][0]["rule_id"], "kv-sens-mass-delete",
        "{pass}"
    );
    assert!(r.stderr.contains("deadline"), "{}", r.stderr);
    let a = alerts(&data, &[]);
    assert_eq!(by_rule(&a, "kv-sens-destructive-op").len(), 1, "{a:#?}");
    assert!(by_rule(&a, "kv-sens-mass-delete").is_empty(), "{a:#?}");
}

/// Sigma rules through the CLI: the examples' fixtures pass under `rules test`, `--sigma` adds
/// them to the pack, a field without a mapping is a load error naming rule, file and field, a
/// mapping in the config file fixes it, and the rule then alerts on ingested data.
#[test]
fn sigma_rules_load_test_and_alert() {
    let empty = tempfile::tempdir().unwrap();
    let sigma = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/sigma");
    let sigma_arg = sigma.display().to_string();
    let r = run(empty.path(), &["rules", "test", "--rules", &sigma_arg]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("sigma-") && r.stdout.contains(", 0 failed"),
        "{}",
        r.stdout
    );
    let list = run(
        empty.path(),
        &["rules", "list", "--sigma", &sigma_arg, "--format", "json"],
    );
    assert_eq!(list.code, 0, "{}", list.stderr);
    let listed: Value = serde_json::from_str(&list.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"kv-sens-purge"), "{ids:?}");
    assert_eq!(ids.iter().filter(|i| i.starts_with("sigma-")).count(), 5);

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("sigma");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("lab.yml"),
        "title: Secret read from the lab range\nid: 5e6f7a8b-0000-4000-8000-000000000001\n\
         logsource: {product: azure, service: keyvault}\n\
         detection:\n  sel:\n    operationName: SecretGet\n    SourceAddress|cidr: 203.0.113.0/24\n  condition: sel\nlevel: high\n",
    )
    .unwrap();
    let rules_arg = rules.display().to_string();
    let r = run(empty.path(), &["rules", "list", "--sigma", &rules_arg]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("lab.yml:1")
            && r.stderr.contains("Secret read from the lab range")
            && r.stderr.contains("SourceAddress")
            && r.stderr.contains("[sigma.keyvault]"),
        "{}",
        r.stderr
    );
    let cfg = dir.path().join("kvwatch.toml");
    std::fs::write(&cfg, "[sigma.keyvault]\nSourceAddress = \"caller_ip\"\n").unwrap();
    let cfg_arg = cfg.display().to_string();
    let data = dir.path().join("store");
    ingest(&data, &[&samples().join("handsaved.json")]);
    let r = run(
        &data,
        &[
            "--config", &cfg_arg, "detect", "--format", "json", "--sigma", &rules_arg,
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let got = alerts(&data, &[]);
    let sigma_alerts = by_rule(&got, "sigma-5e6f7a8b-0000-4000-8000-000000000001");
    // One SecretGet came from 203.0.113.9 (logged as `IP:port`).
    assert_eq!(sigma_alerts.len(), 1, "{got:?}");
    assert_eq!(sigma_alerts[0]["severity"], "high");
}
