//! `kvwatch ingest` on every envelope, bad input, archives, stdin and gzip.

use crate::common::*;
use serde_json::{Value, json};
use std::path::Path;

fn counts(report: &Value) -> (u64, u64, u64, u64) {
    let p = &report["parsed"];
    (
        p["events"].as_u64().unwrap(),
        p["activity"].as_u64().unwrap(),
        p["quarantined"].as_u64().unwrap(),
        p["other_category"].as_u64().unwrap(),
    )
}

#[test]
fn every_envelope_shape() {
    // (file, events, activity, quarantined, other categories)
    let cases = [
        ("envelope-pretty.json", 5, 0, 0, 0),
        ("envelope-compact.json", 9, 1, 1, 1),
        ("PT1H.json", 9, 2, 0, 0),
        ("array.json", 2, 0, 0, 0),
        ("single.json", 1, 0, 0, 0),
        ("activity.jsonl", 0, 2, 0, 0),
    ];
    for (file, ev, act, q, other) in cases {
        let dir = tempfile::tempdir().unwrap();
        let report = ingest(dir.path(), &[&samples().join(file)]);
        assert_eq!(counts(&report), (ev, act, q, other), "{file}: {report}");
        assert_eq!(report["stored"]["events"], ev, "{file}");
        assert_eq!(
            count(dir.path(), "SELECT count(*) FROM events"),
            ev as i64,
            "{file}"
        );
        assert_eq!(
            count(dir.path(), "SELECT count(*) FROM activity"),
            act as i64,
            "{file}"
        );
    }
}

/// The two shapes Microsoft documents for Key Vault logs (an hourly archive blob of JSON Lines,
/// and a pretty-printed `{"records": […]}` envelope), in records of our own that keep their
/// quirks: durations as strings, empty correlation IDs, claims under long URI keys.
#[test]
fn documented_archive_and_envelope_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let r = ingest(
        dir.path(),
        &[
            &samples().join("archive-vaultget.json"),
            &samples().join("envelope-vaultget.json"),
        ],
    );
    assert_eq!(counts(&r), (3, 0, 0, 0));
    let rows = query(
        dir.path(),
        "SELECT vault, subscription_id, resource_group, resource_type, operation, operation_version, \
         duration_ms, http_status, caller_ip, correlation_id, principal_upn, principal_type, client_info, \
         object_type, object_name, CAST(time AS VARCHAR) AS t FROM events ORDER BY time, principal_appid",
    );
    assert_eq!(rows.len(), 3);
    let r0 = &rows[0];
    assert_eq!(r0["vault"], "finance-kv");
    assert_eq!(
        r0["subscription_id"],
        "7c1e2a90-4d3b-4f6a-9e21-5b8d0c3f6a12"
    );
    assert_eq!(r0["resource_group"], "finance-rg");
    assert_eq!(r0["resource_type"], "vaults");
    assert_eq!(r0["operation"], "VaultGet");
    assert_eq!(r0["operation_version"], "2018-02-14");
    assert_eq!(r0["duration_ms"], 64);
    assert_eq!(r0["http_status"], 200);
    assert_eq!(r0["caller_ip"], "198.51.100.23");
    assert_eq!(
        r0["correlation_id"],
        Value::Null,
        "empty correlation id is null"
    );
    assert_eq!(r0["principal_upn"], "live.com#analyst@example.org");
    assert_eq!(r0["principal_type"], "user");
    assert_eq!(r0["client_info"], "azure-resource-manager/2.0");
    assert_eq!(r0["object_type"], "vault");
    assert!(
        r0["t"]
            .as_str()
            .unwrap()
            .starts_with("2019-03-11T08:15:42.5031177"),
        "{r0}"
    );
}

#[test]
fn record_quirks_are_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = ["envelope-compact.json", "array.json", "single.json"]
        .iter()
        .map(|f| samples().join(f))
        .collect();
    ingest(
        dir.path(),
        &files.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
    );
    let one = |sql: &str| -> Value {
        let rows = query(dir.path(), sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0].clone()
    };
    // Managed HSM: identity as a JSON string with nested claim keys, request fields at top
    // level, numeric durationMs, 3 fractional digits.
    let hsm = one("SELECT * FROM events WHERE operation = 'KeyCreate'");
    assert_eq!(hsm["resource_type"], "managedhsms");
    assert_eq!(hsm["vault"], "contoso-hsm");
    assert_eq!(hsm["principal_oid"], "7a8b9c0d-0000-4000-8000-0000000000aa");
    assert_eq!(hsm["principal_upn"], "hsm-admin@contoso.com");
    assert_eq!(hsm["duration_ms"], 488);
    assert_eq!(hsm["http_status"], 200);
    assert_eq!(hsm["client_info"], "azsdk-python-keyvault-keys/4.8.0");
    assert_eq!(hsm["subnet_id"], "(unknown)");
    assert_eq!(hsm["object_type"], "key");
    assert_eq!(hsm["object_name"], "cmk-1");
    let extra: Value = serde_json::from_str(hsm["properties"].as_str().unwrap()).unwrap();
    assert_eq!(
        extra["PoolType"], "ManagedHSM",
        "unmapped properties kept: {extra}"
    );
    assert_eq!(
        extra["_record"]["PoolName"], "contoso-hsm",
        "unmapped top-level keys kept: {extra}"
    );

    // Managed identity, RBAC vault, object from properties.id with version.
    let mi = one(
        "SELECT * FROM events WHERE operation = 'SecretGet' AND http_status = 200 AND principal_type = 'managed_identity'",
    );
    assert_eq!(mi["vault"], "contoso-prod-kv");
    assert_eq!(mi["object_name"], "sql-root");
    assert_eq!(mi["object_version"], "d1230f9a8b7c4d6e9f0a1b2c3d4e5f60");
    assert_eq!(mi["is_rbac_authorized"], true);
    assert_eq!(
        mi["applied_assignment_id"],
        "3f0b9a2c7d1e4c5a8b6f0e9d2c1a7b45"
    );
    assert_eq!(mi["tls_version"], "TLS1_3");
    assert!(
        mi["principal_mirid"]
            .as_str()
            .unwrap()
            .ends_with("/sites/contoso-api")
    );

    // Short claims, access-policy vault; the object comes from `id`, the version from it too.
    let user = one(
        "SELECT * FROM events WHERE operation = 'SecretGet' AND principal_upn = 'alice@contoso.com'",
    );
    assert_eq!(user["principal_type"], "user");
    assert_eq!(
        user["principal_appid"],
        "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
    );
    assert_eq!(user["is_access_policy_match"], true);
    assert_eq!(user["object_name"], "DbPassword");
    assert_eq!(user["principal_name"], "alice@contoso.com");

    // Access policy added (long claim names), permissions as lists.
    let grant = one("SELECT * FROM events WHERE policy_added_oid IS NOT NULL");
    assert_eq!(
        grant["principal_oid"],
        "8f2c6a10-0000-4000-8000-6e5d4c3b2a19"
    );
    assert_eq!(grant["principal_upn"], "mallory@contoso.com");
    assert_eq!(
        grant["policy_added_oid"],
        "8f2c6a10-0000-4000-8000-6e5d4c3b2a19"
    );
    assert_eq!(
        grant["policy_added_permissions"],
        json!(["secrets:get", "secrets:list"])
    );
    assert_eq!(grant["rbac_enabled"], false);
    assert_eq!(grant["soft_delete_enabled"], true);
    assert_eq!(grant["soft_delete_retention_days"], 90);
    assert_eq!(
        grant["purge_protection_enabled"], false,
        "null purge protection means off"
    );
    assert_eq!(
        grant["network_default_action"], "Allow",
        "null networkAcls means open"
    );

    // Removed policy with permissions written as a comma-separated string.
    let removed = one("SELECT * FROM events WHERE policy_removed_oid IS NOT NULL");
    assert_eq!(
        removed["policy_removed_permissions"],
        json!(["secrets:get", "secrets:list"])
    );

    // Firewall opened.
    let fw = one("SELECT * FROM events WHERE ip_rule_added IS NOT NULL");
    assert_eq!(fw["ip_rule_added"], "0.0.0.0/0");
    assert_eq!(fw["network_default_action"], "Allow");
    assert_eq!(fw["network_bypass"], "AzureServices");
    assert_eq!(fw["soft_delete_retention_days"], 7);

    // Authentication challenge: no object, 401 kept.
    let auth = one("SELECT * FROM events WHERE operation = 'Authentication'");
    assert_eq!(auth["http_status"], 401);
    assert_eq!(auth["object_type"], Value::Null);
    assert_eq!(auth["operation_family"], "authentication");

    // Crypto call: action segment after the version does not confuse the object parser.
    let unwrap = one("SELECT * FROM events WHERE operation = 'KeyUnwrap'");
    assert_eq!(unwrap["object_type"], "key");
    assert_eq!(unwrap["object_name"], "storage-cmk");
    assert_eq!(unwrap["tls_version"], "TLS1_1");
    assert_eq!(unwrap["operation_family"], "crypto");

    // Every event has a deterministic 32-hex id and a source with its line.
    let ids = query(dir.path(), "SELECT event_id, source FROM events");
    for r in &ids {
        let id = r["event_id"].as_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(r["source"].as_str().unwrap().contains(".json"), "{r}");
    }
}

#[test]
fn activity_log_role_assignments() {
    let dir = tempfile::tempdir().unwrap();
    ingest(dir.path(), &[&samples().join("activity.jsonl")]);
    let rows = query(dir.path(), "SELECT * FROM activity ORDER BY time");
    assert_eq!(rows.len(), 2);
    let ra = &rows[0];
    assert_eq!(
        ra["operation"],
        "microsoft.authorization/roleassignments/write"
    );
    assert_eq!(
        ra["role_definition_id"],
        "4633458b-17de-408a-b874-0445c86b69e6"
    );
    assert_eq!(
        ra["role_name"], "Key Vault Secrets User",
        "the granted role, not the caller's evidence"
    );
    assert_eq!(
        ra["target_principal_id"],
        "9d8c7b6a-0000-4000-8000-0000000000ee"
    );
    assert_eq!(ra["target_principal_type"], "ServicePrincipal");
    assert_eq!(ra["vault"], "contoso-prod-kv");
    assert_eq!(ra["caller_oid"], "8f2c6a10-0000-4000-8000-6e5d4c3b2a19");
    assert_eq!(ra["caller_upn"], "mallory@contoso.com");
    assert_eq!(ra["status"], "Success");
    assert!(
        ra["scope"]
            .as_str()
            .unwrap()
            .ends_with("/vaults/contoso-prod-kv"),
        "{ra}"
    );
    let diag = &rows[1];
    assert_eq!(
        diag["operation"],
        "microsoft.insights/diagnosticsettings/delete"
    );
    assert_eq!(diag["vault"], "contoso-prod-kv");
}

#[test]
fn corrupt_input_is_quarantined_and_good_lines_stored() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        dir.path(),
        &[
            "ingest",
            "--format",
            "json",
            samples().join("corrupt.jsonl").to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "bad records are not a failure: {}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    // Lines 2 and 3 (free text, then a cut record) are one stretch, so one row.
    assert_eq!(counts(&report), (3, 0, 9, 1), "{report}");
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), 3);
    let q = query(
        dir.path(),
        "SELECT source, reason, raw FROM quarantine ORDER BY source",
    );
    assert_eq!(q.len(), 9);
    let reason_of = |line: &str| -> Vec<String> {
        q.iter()
            .filter(|r| {
                let s = r["source"].as_str().unwrap();
                s.ends_with(&format!(":{line}")) || s.contains(&format!(":{line}#"))
            })
            .map(|r| r["reason"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(reason_of("2-3")[0].starts_with("invalid JSON"), "{q:?}");
    assert!(
        reason_of("4")[0].contains("`records` is not an array"),
        "{q:?}"
    );
    assert!(
        reason_of("5")[0].contains("invalid time \"not-a-time\""),
        "{q:?}"
    );
    assert!(reason_of("6")[0].contains("durationMs"), "{q:?}");
    assert!(reason_of("7")[0].contains("httpStatusCode"), "{q:?}");
    assert!(
        reason_of("8")[0].contains("unsupported category: AzurePolicyEvaluationDetails"),
        "{q:?}"
    );
    assert_eq!(
        reason_of("9").len(),
        2,
        "each array element is accounted for: {q:?}"
    );
    assert!(reason_of("11")[0].contains("not a JSON object"), "{q:?}");
    // The raw input is kept for every quarantined record.
    assert!(q.iter().all(|r| !r["raw"].as_str().unwrap().is_empty()));
}

#[test]
fn reingest_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = ingest(dir.path(), &[&samples()]);
    let events = count(dir.path(), "SELECT count(*) FROM events");
    let quarantined = count(dir.path(), "SELECT count(*) FROM quarantine");
    // 9 vault events, 2 HSM events, the one event of corrupt.jsonl not seen elsewhere, the
    // 3 VaultGet records of the documented shapes and the 5 of the hand-saved file.
    assert_eq!(events, 20, "{first}");
    let second = ingest(dir.path(), &[&samples()]);
    assert_eq!(second["stored"]["events"], 0, "{second}");
    assert_eq!(second["stored"]["activity"], 0, "{second}");
    assert_eq!(second["stored"]["quarantine"], 0, "{second}");
    assert_eq!(
        second["stored"]["duplicates"].as_u64().unwrap(),
        second["parsed"]["records"].as_u64().unwrap(),
        "{second}"
    );
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), events);
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM quarantine"),
        quarantined
    );
    assert_eq!(
        count(dir.path(), "SELECT count(DISTINCT event_id) FROM events"),
        events
    );
}

/// Builds the storage-account archive layout with `per_hour` records per vault and hour.
fn archive(root: &Path, vaults: &[&str], hours: u32, per_hour: u32) -> u64 {
    let mut n = 0;
    for v in vaults {
        for h in 0..hours {
            let dir = root.join(format!(
                "insights-logs-auditevent/resourceId=/SUBSCRIPTIONS/AAAA0A0A-BB1B-CC2C-DD3D-EEEEEE4E4E4E/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{}/y=2024/m=05/d=01/h={h:02}/m=00",
                v.to_uppercase()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut lines = String::new();
            for i in 0..per_hour {
                let op = if i % 3 == 0 {
                    "SecretList"
                } else {
                    "SecretGet"
                };
                let rec = json!({
                    "time": format!("2024-05-01T{h:02}:{:02}:{:02}.{:07}Z", i / 60 % 60, i % 60, i),
                    "resourceId": format!("/SUBSCRIPTIONS/AAAA0A0A-BB1B-CC2C-DD3D-EEEEEE4E4E4E/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{}", v.to_uppercase()),
                    "operationName": op, "operationVersion": "7.4", "category": "AuditEvent",
                    "resultType": "Success", "resultSignature": "OK", "durationMs": "5",
                    "callerIpAddress": "10.0.0.1", "correlationId": "",
                    "identity": {"claim": {"oid": "00000000-0000-4000-8000-000000000001", "appid": "a"}},
                    "properties": {"httpStatusCode": 200, "requestUri": format!("https://{v}.vault.azure.net/secrets/s{i}/?api-version=7.4")}
                });
                lines.push_str(&rec.to_string());
                lines.push('\n');
                n += 1;
            }
            let file = dir.join("PT1H.json");
            std::fs::write(&file, lines).unwrap();
            if h % 2 == 1 {
                // Some blobs were downloaded compressed.
                gzip(&file, &dir.join("PT1H.json.gz"));
                std::fs::remove_file(&file).unwrap();
            }
        }
    }
    n
}

#[test]
fn archive_layout_gives_exact_counts() {
    let src = tempfile::tempdir().unwrap();
    let total = archive(src.path(), &["kv-alpha", "kv-beta"], 4, 30);
    std::fs::write(src.path().join("README.txt"), "not a log").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = ingest(dir.path(), &[src.path()]);
    assert_eq!(r["parsed"]["events"], total);
    assert_eq!(r["skipped_files"].as_array().unwrap().len(), 1, "{r}");
    let rows = query(
        dir.path(),
        "SELECT vault, operation, count(*) AS n FROM events GROUP BY 1,2 ORDER BY 1,2",
    );
    assert_eq!(
        rows,
        vec![
            json!({"vault": "kv-alpha", "operation": "SecretGet", "n": 80}),
            json!({"vault": "kv-alpha", "operation": "SecretList", "n": 40}),
            json!({"vault": "kv-beta", "operation": "SecretGet", "n": 80}),
            json!({"vault": "kv-beta", "operation": "SecretList", "n": 40}),
        ]
    );
}

#[test]
fn stdin_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let input = std::fs::read(samples().join("PT1H.json")).unwrap();
    let r = run_stdin(dir.path(), &["ingest", "--format", "json", "-"], &input);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(counts(&report), (9, 2, 0, 0));
    let src = query(
        dir.path(),
        "SELECT source FROM events ORDER BY source LIMIT 1",
    );
    assert!(
        src[0]["source"].as_str().unwrap().starts_with("stdin:"),
        "{src:?}"
    );

    let gz_dir = tempfile::tempdir().unwrap();
    let gz = gz_dir.path().join("blob.json.gz");
    gzip(&samples().join("envelope-pretty.json"), &gz);
    let dir2 = tempfile::tempdir().unwrap();
    let report = ingest(dir2.path(), &[&gz]);
    assert_eq!(counts(&report), (5, 0, 0, 0));
    // Gzip is sniffed by content: a compressed file with a plain name works too.
    let renamed = gz_dir.path().join("blob.json");
    std::fs::copy(&gz, &renamed).unwrap();
    let dir3 = tempfile::tempdir().unwrap();
    assert_eq!(counts(&ingest(dir3.path(), &[&renamed])), (5, 0, 0, 0));
}

#[test]
fn unreadable_input_fails_but_others_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        dir.path(),
        &["ingest", "--format", "json", "/nonexistent/file.json"],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/nonexistent/file.json"), "{}", r.stderr);

    // A file that breaks mid-read (a gzip stream cut short) is damaged input, not an
    // unreadable one: what was read before the break is stored, the break is quarantined
    // with its reason, and the run succeeds.
    let src = tempfile::tempdir().unwrap();
    std::fs::copy(samples().join("single.json"), src.path().join("a.json")).unwrap();
    let gz = src.path().join("full.json.gz");
    gzip(&samples().join("PT1H.json"), &gz);
    let bytes = std::fs::read(&gz).unwrap();
    let damaged = src.path().join("b.json.gz");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let r = run(
        dir.path(),
        &[
            "ingest",
            "--format",
            "json",
            src.path().join("a.json").to_str().unwrap(),
            damaged.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["failed"], json!([]), "{report}");
    let stored = report["stored"]["events"].as_u64().unwrap();
    assert!(stored >= 2, "{report}");
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM events"),
        stored as i64
    );
    assert_eq!(
        count(
            dir.path(),
            "SELECT count(*) FROM quarantine WHERE source LIKE 'b.json.gz:%' AND reason LIKE 'damaged gzip%'"
        ),
        1
    );
}

#[test]
fn table_summary_for_people() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        dir.path(),
        &["ingest", samples().join("corrupt.jsonl").to_str().unwrap()],
    );
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("events stored"), "{}", r.stdout);
    assert!(r.stdout.contains("quarantined         9"), "{}", r.stdout);
    assert!(r.stdout.contains("records/s"), "{}", r.stdout);
}

#[test]
fn compaction_merges_small_files_without_changing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    archive(src.path(), &["kv-a"], 10, 5);
    // One ingest per hour blob: each run writes its own small file.
    for entry in walk(src.path()) {
        let r = run(
            dir.path(),
            &[
                "ingest",
                "--no-compact",
                "--format",
                "json",
                entry.to_str().unwrap(),
            ],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let manifest = || -> Value {
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap()
    };
    let files_before = manifest()["tables"]["events"].as_array().unwrap().len();
    assert_eq!(files_before, 10);
    let ids_before = query(dir.path(), "SELECT event_id FROM events ORDER BY event_id");
    let r = run(
        dir.path(),
        &["compact", "--format", "json", "--compact-min-files", "4"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        out,
        json!({"files_before": 10, "files_after": 1, "partitions_dropped": 0, "files_dropped": 0, "orphans_removed": 0})
    );
    assert_eq!(manifest()["tables"]["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        query(dir.path(), "SELECT event_id FROM events ORDER BY event_id"),
        ids_before
    );
    // Replaced files stay readable for queries planned before the compaction…
    assert_eq!(walk(&dir.path().join("events")).len(), 11);
    assert_eq!(manifest()["retired"].as_array().unwrap().len(), 10);
    assert_eq!(
        query(dir.path(), "SELECT event_id FROM events ORDER BY event_id"),
        ids_before
    );
    // …and go once their grace period is over.
    let r = run(dir.path(), &["compact", "--retire-grace-secs", "0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let parquet_files = walk(&dir.path().join("events")).len();
    assert_eq!(parquet_files, 1, "replaced files are deleted");
    assert!(manifest().get("retired").is_none());
    // The merged file is sorted by time.
    let times = query(dir.path(), "SELECT CAST(time AS BIGINT) AS t FROM events");
    let t: Vec<i64> = times.iter().map(|r| r["t"].as_i64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]));
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                out.push(e);
            }
        }
    }
    out.sort();
    out
}

/// Times of every Parquet file of a table, file by file, in stored row order.
fn stored_times(data: &Path, table: &str) -> Vec<Vec<i64>> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampNanosecondType;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut out = Vec::new();
    for f in walk(&data.join(table)) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut times = Vec::new();
        for b in reader {
            let b = b.unwrap();
            let t = b.column_by_name("time").unwrap();
            times.extend(t.as_primitive::<TimestampNanosecondType>().values().iter());
        }
        out.push(times);
    }
    out
}

#[test]
fn disordered_input_is_stored_in_time_order() {
    // 300 records of one day in scrambled order, cut into many small batches, so the store
    // must merge rows across batches to write the day's file in order.
    let src = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for i in 0..300u32 {
        let k = i * 113 % 300;
        let rec = json!({
            "time": format!("2024-05-01T{:02}:{:02}:{:02}.{:07}Z", k / 60 % 24, k % 60, k % 60, k),
            "resourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV",
            "operationName": "SecretGet", "category": "AuditEvent", "resultType": "Success",
            "callerIpAddress": "10.0.0.1",
            "properties": {"httpStatusCode": 200, "id": format!("https://kv.vault.azure.net/secrets/s{k}")}
        });
        lines.push_str(&rec.to_string());
        lines.push('\n');
    }
    let file = src.path().join("scrambled.jsonl");
    std::fs::write(&file, lines).unwrap();
    let mut ids = Vec::new();
    for flag in [None, Some("--no-mmap")] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["ingest", "--batch-rows", "16", "--no-compact"];
        args.extend(flag);
        args.push(file.to_str().unwrap());
        let r = run(dir.path(), &args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let files = stored_times(dir.path(), "events");
        assert_eq!(files.len(), 1, "one day, one file");
        assert_eq!(files[0].len(), 300);
        assert!(
            files[0].windows(2).all(|w| w[0] <= w[1]),
            "rows are stored in time order ({flag:?})"
        );
        ids.push(query(
            dir.path(),
            "SELECT event_id, object_name FROM events ORDER BY event_id",
        ));
    }
    assert_eq!(ids[0], ids[1], "mapped and read input store the same rows");
}

#[test]
fn large_json_lines_file_parsed_in_ranges_keeps_every_record_and_line_number() {
    // Big enough to be cut into three ranges at `--split-mb 1`, with blank lines, a garbage
    // line and a truncated record near the cuts: the ranges must lose, repeat and renumber
    // nothing, so the store matches a single-threaded run row for row.
    let src = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let n = 3000u32;
    for i in 0..n {
        let rec = json!({
            "time": format!("2024-05-01T{:02}:{:02}:{:02}.{:07}Z", i / 3600 % 24, i / 60 % 60, i % 60, i),
            "resourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV",
            "operationName": "SecretGet", "category": "AuditEvent", "resultType": "Success",
            "callerIpAddress": "10.0.0.1", "correlationId": format!("c-{i}"),
            "identity": {"claim": {"oid": format!("oid-{}", i % 7), "appid": "app"}},
            "properties": {"httpStatusCode": 200, "id": format!("https://kv.vault.azure.net/secrets/s{i}"),
                           "clientInfo": "x".repeat(300)}
        });
        text.push_str(&rec.to_string());
        text.push('\n');
        match i % 997 {
            0 => text.push_str("\n\n"),
            1 => text.push_str("garbage line\n"),
            2 => text.push_str("{\"time\":\"2024-05-01T00:00:00Z\",\"category\"\n"),
            _ => {}
        }
    }
    assert!(text.len() > 1 << 20, "{} bytes", text.len());
    let file = src.path().join("big.jsonl");
    std::fs::write(&file, &text).unwrap();
    let path = file.to_str().unwrap();
    let mut stores = Vec::new();
    for threads in ["1", "3"] {
        let dir = tempfile::tempdir().unwrap();
        let r = run(
            dir.path(),
            &[
                "ingest",
                "--format",
                "json",
                "--parse-threads",
                threads,
                "--split-mb",
                "1",
                path,
            ],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        let report: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["stored"]["events"], u64::from(n), "{report}");
        assert_eq!(report["parsed"]["quarantined"], 8, "{report}");
        let events = query(
            dir.path(),
            "SELECT event_id, time, principal_oid, object_name, source FROM events ORDER BY event_id",
        );
        let quarantine = query(
            dir.path(),
            "SELECT source, reason, raw FROM quarantine ORDER BY source",
        );
        stores.push((events, quarantine, dir));
    }
    let differ = |a: &[Value], b: &[Value]| {
        (a.len() != b.len())
            .then(|| format!("{} rows against {}", a.len(), b.len()))
            .or_else(|| {
                a.iter()
                    .zip(b)
                    .find(|(x, y)| x != y)
                    .map(|(x, y)| format!("{x} against {y}"))
            })
    };
    assert_eq!(
        differ(&stores[0].0, &stores[1].0),
        None,
        "same events, same sources"
    );
    assert_eq!(
        differ(&stores[0].1, &stores[1].1),
        None,
        "same quarantine, same lines"
    );
    // Line numbers count blank lines: records 0, 997, 1994 and 2991 are each followed by
    // four extra lines (two blank, two bad), so record 2999 is on line 3000 + 16.
    let last = stores[1]
        .0
        .iter()
        .find(|r| r["object_name"] == "s2999")
        .unwrap();
    // Sources name the file as the user named it, never the directories above it.
    assert_eq!(last["source"], "big.jsonl:3016");
}

/// A damaged gzip archive (cut short, a bad checksum, garbage after the member) keeps every
/// record that decompressed before the damage, and the damage itself is one quarantine row
/// with its reason: nothing readable is lost and nothing vanishes unseen.
#[test]
fn damaged_gzip_archives_keep_their_readable_records() {
    let dir = tempfile::tempdir().unwrap();
    let generated = super::common::generate(
        &dir.path().join("gen"),
        &[
            "--format",
            "jsonl",
            "--days",
            "1",
            "--seed",
            "9",
            "--attacks",
            "none",
        ],
    );
    let jsonl = std::fs::read_dir(generated.join("jsonl"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let lines: Vec<&str> = text.lines().take(3000).collect();
    let plain = format!("{}\n", lines.join("\n"));
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, plain.as_bytes()).unwrap();
    let gz = enc.finish().unwrap();

    let cut = gz[..gz.len() / 2].to_vec();
    let mut bad_crc = gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 6] ^= 0xff;
    let mut trailing = gz.clone();
    trailing.extend_from_slice(b"\x00\x01 not another gzip member");
    for (name, bytes, whole) in [
        ("cut.json.gz", cut, false),
        ("bad-crc.json.gz", bad_crc, true),
        ("trailing.json.gz", trailing, true),
    ] {
        let src = dir.path().join(name);
        std::fs::write(&src, &bytes).unwrap();
        let data = dir.path().join(format!("store-{name}"));
        let report = ingest(&data, &[&src]);
        assert_eq!(report["failed"], json!([]), "{name}: {report}");
        let events = report["stored"]["events"].as_u64().unwrap()
            + report["stored"]["activity"].as_u64().unwrap();
        if whole {
            // Every record decompressed before the checksum or the garbage was reached.
            assert_eq!(events, 3000, "{name}: {report}");
        } else {
            assert!(events > 500 && events < 3000, "{name}: {events} {report}");
        }
        let q = query(
            &data,
            "SELECT source, reason FROM quarantine WHERE reason LIKE 'damaged gzip%'",
        );
        assert_eq!(q.len(), 1, "{name}: {q:?}");
        assert!(q[0]["source"].as_str().unwrap().starts_with(name), "{q:?}");
        // Every record is counted once: stored, or quarantined (the line the cut went through).
        let p = &report["parsed"];
        assert_eq!(
            p["records"].as_u64(),
            Some(
                p["events"].as_u64().unwrap()
                    + p["activity"].as_u64().unwrap()
                    + p["quarantined"].as_u64().unwrap()
            ),
            "{name}: {report}"
        );
    }
}

/// A file saved by hand from the portal and the CLI during an investigation: BOM, CRLF, no
/// final newline, captions between records, pretty records pasted with `},` between them, one
/// cut short, an array that never closes, Activity Log records in the portal's shape, and
/// caller addresses that are not plain addresses. Every complete record is recovered and each
/// stretch of other text is one quarantine row naming its lines.
#[test]
fn hand_saved_file_is_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let report = ingest(dir.path(), &[&samples().join("handsaved.json")]);
    assert_eq!(counts(&report), (5, 2, 3, 0), "{report}");
    let q = query(
        dir.path(),
        "SELECT source, reason, raw FROM quarantine ORDER BY received_at, source",
    );
    let mut lines: Vec<String> = q
        .iter()
        .map(|r| {
            let s = r["source"].as_str().unwrap();
            s.rsplit(':').next().unwrap().to_owned()
        })
        .collect();
    lines.sort();
    assert_eq!(lines, ["1", "149", "82-93"], "{q:?}");
    let cut = q
        .iter()
        .find(|r| r["source"].as_str().unwrap().ends_with(":82-93"))
        .unwrap();
    assert!(
        cut["raw"].as_str().unwrap().contains("RL continued"),
        "{cut}"
    );

    let ev = query(
        dir.path(),
        "SELECT correlation_id, caller_ip, caller_ip_raw, vault, object_name FROM events ORDER BY time",
    );
    let ips: Vec<(Value, Value)> = ev
        .iter()
        .map(|r| (r["caller_ip"].clone(), r["caller_ip_raw"].clone()))
        .collect();
    assert_eq!(
        ips,
        [
            (Value::Null, json!("<Redacted>")),
            (json!("203.0.113.9"), json!("203.0.113.9:50122")),
            (json!("2001:db8::7"), json!("[2001:db8::7]:443")),
            (Value::Null, json!("unknown")),
            (Value::Null, Value::Null),
        ],
        "{ev:?}"
    );
    assert!(ev.iter().all(|r| r["vault"] == "lab-kv"), "{ev:?}");
    let al = query(
        dir.path(),
        "SELECT operation, status, caller_upn, caller_oid, caller_ip, caller_ip_raw, resource_id, vault, role_name, target_principal_id, scope FROM activity ORDER BY time",
    );
    assert_eq!(al.len(), 2, "{al:?}");
    assert_eq!(
        al[0]["operation"],
        "microsoft.authorization/roleassignments/write"
    );
    assert_eq!(al[0]["role_name"], "Key Vault Secrets User");
    assert_eq!(
        al[0]["target_principal_id"],
        "7d3c0000-0000-4000-8000-00000000a11c"
    );
    assert_eq!(al[0]["caller_ip"], "2001:db8::7");
    assert_eq!(
        al[1]["operation"],
        "microsoft.keyvault/vaults/accesspolicies/write"
    );
    assert_eq!(al[1]["caller_ip"], "203.0.113.9");
    assert_eq!(al[1]["caller_ip_raw"], "203.0.113.9:50111");
    assert_eq!(
        al[1]["resource_id"],
        "/subscriptions/0b1e0000-0000-4000-8000-00000000cafe/resourcegroups/lab-rg/providers/microsoft.keyvault/vaults/lab-kv/accesspolicies/add"
    );
    for r in &al {
        assert_eq!(r["status"], "Succeeded", "{r}");
        assert_eq!(r["caller_upn"], "mallory@lab.example", "{r}");
        assert_eq!(
            r["caller_oid"], "7d3c0000-0000-4000-8000-00000000a11c",
            "{r}"
        );
        assert_eq!(r["vault"], "lab-kv", "{r}");
    }
}
