//! The HTTP API of `kvwatch serve`, driven over real HTTP: authentication and roles, alert
//! listing with filters and cursor pagination, updates, metrics, graceful stop.

use super::common::{bin, ingest, run};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn key(data: &Path, role: &str, name: &str) -> String {
    let r = run(
        data,
        &[
            "apikey", "create", "--role", role, "--name", name, "--format", "json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    v["key"].as_str().unwrap().to_owned()
}

/// Starts `serve` on a free port (no Kafka) and returns it with its base URL; the caller
/// stops it and waits for it.
#[allow(clippy::zombie_processes)]
fn serve(data: &Path) -> (Child, String) {
    let log = data.join("serve.log");
    let mut child = bin()
        .arg("--data")
        .arg(data)
        .args(["--log", "info", "serve", "--listen", "127.0.0.1:0"])
        .args(["--interval", "3600", "--no-models"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(i) = text.find("API on http://") {
            let url = text[i + 7..].lines().next().unwrap().trim().to_owned();
            return (child, url);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not start: {text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get(url: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = agent().get(url);
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut r = req.call().unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn patch(url: &str, key: &str, body: Value) -> (u16, Value) {
    let mut r = agent()
        .patch(url)
        .header("Authorization", &format!("Bearer {key}"))
        .send_json(body)
        .unwrap();
    let status = r.status().as_u16();
    let v = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
    (status, v)
}

#[test]
fn api_keys_roles_alert_listing_and_updates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let generated = super::common::generate(
        &dir.path().join("gen"),
        &["--format", "jsonl", "--days", "1", "--seed", "3"],
    );
    ingest(&data, &[&generated.join("jsonl")]);
    let r = run(&data, &["detect", "--no-models"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let all: Vec<Value> =
        serde_json::from_str(&run(&data, &["alerts", "--format", "json"]).stdout).unwrap();
    assert!(all.len() >= 4, "{}", all.len());

    let reader = key(&data, "reader", "dashboards");
    let analyst = key(&data, "analyst", "soc-alice");
    let (mut child, base) = serve(&data);

    // Probes are open; everything else needs a key.
    assert_eq!(get(&format!("{base}/healthz"), None).0, 200);
    assert_eq!(get(&format!("{base}/readyz"), None).0, 200);
    let alerts = format!("{base}/api/v1/alerts");
    assert_eq!(get(&alerts, None).0, 401);
    assert_eq!(
        get(
            &alerts,
            Some("kvw_0123456789abcdef0123456789abcdef01234567")
        )
        .0,
        401
    );
    assert_eq!(get(&alerts, Some("not-even-a-key")).0, 401);

    // Cursor pagination walks every alert exactly once.
    let mut seen = Vec::new();
    let mut url = format!("{alerts}?limit=3");
    loop {
        let (code, page) = get(&url, Some(&reader));
        assert_eq!(code, 200, "{page}");
        for a in page["alerts"].as_array().unwrap() {
            seen.push(a["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{alerts}?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), all.len());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), all.len());

    let (code, high) = get(&format!("{alerts}?severity=high"), Some(&reader));
    assert_eq!(code, 200);
    for a in high["alerts"].as_array().unwrap() {
        assert!(
            matches!(a["severity"].as_str(), Some("high" | "critical")),
            "{a}"
        );
    }
    assert_eq!(
        get(&format!("{alerts}?severity=urgent"), Some(&reader)).0,
        400
    );
    assert_eq!(
        get(&format!("{alerts}?cursor=nonsense"), Some(&reader)).0,
        400
    );

    let id = all[0]["id"].as_str().unwrap();
    let one = format!("{alerts}/{id}");
    let (code, a) = get(&one, Some(&reader));
    assert_eq!((code, a["id"].as_str()), (200, Some(id)));
    assert_eq!(
        get(&format!("{alerts}/does-not-exist"), Some(&reader)).0,
        404
    );

    // Readers cannot change alerts; analysts can; a revoked key stops at once.
    assert_eq!(
        patch(&one, &reader, json!({"status": "acknowledged"})).0,
        403
    );
    assert_eq!(patch(&one, &analyst, json!({"status": "sideways"})).0, 400);
    let (code, a) = patch(&one, &analyst, json!({"status": "acknowledged"}));
    assert_eq!(
        (code, a["status"].as_str()),
        (200, Some("acknowledged")),
        "{a}"
    );
    assert_eq!(
        get(&format!("{alerts}?status=acknowledged"), Some(&reader)).1["alerts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(run(&data, &["apikey", "revoke", "soc-alice"]).code, 0);
    assert_eq!(patch(&one, &analyst, json!({"status": "resolved"})).0, 401);

    // The rules the service evaluates.
    let (code, rules) = get(&format!("{base}/api/v1/rules"), Some(&reader));
    assert_eq!(code, 200);
    let rules = rules["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 27, "the built-in pack");
    let rid = all[0]["rule_id"].as_str().unwrap();
    let (code, rule) = get(&format!("{base}/api/v1/rules/{rid}"), Some(&reader));
    assert_eq!(code, 200);
    assert_eq!(rule["id"].as_str(), Some(rid));
    assert!(
        rule["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{rule}"
    );
    assert!(rule["params"].is_object(), "{rule}");
    assert_eq!(
        get(&format!("{base}/api/v1/rules/nope"), Some(&reader)).0,
        404
    );
    assert_eq!(get(&format!("{base}/api/v1/rules"), None).0, 401);

    // Pull export: everything once from an empty cursor, then only what changed.
    let export = format!("{base}/api/v1/export");
    let mut cursor = String::new();
    let mut exported = HashSet::new();
    loop {
        let (code, page) = get(&format!("{export}?limit=4&cursor={cursor}"), Some(&reader));
        assert_eq!(code, 200, "{page}");
        let batch = page["alerts"].as_array().unwrap();
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if batch.is_empty() {
            break;
        }
        for a in batch {
            exported.insert(a["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(exported.len(), all.len());
    let (_, caught_up) = get(&format!("{export}?cursor={cursor}"), Some(&reader));
    assert_eq!(caught_up["alerts"].as_array().unwrap().len(), 0);
    assert_eq!(caught_up["next_cursor"].as_str(), Some(cursor.as_str()));
    let other = all[1]["id"].as_str().unwrap();
    let closer = key(&data, "analyst", "soc-bob");
    assert_eq!(
        patch(
            &format!("{alerts}/{other}"),
            &closer,
            json!({"status": "resolved"})
        )
        .0,
        200
    );
    let (_, changed) = get(
        &format!("{export}?cursor={cursor}&format=ocsf"),
        Some(&reader),
    );
    let changed = changed["alerts"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["class_uid"], 2004, "OCSF Detection Finding");
    assert_eq!(get(&format!("{export}?format=cef"), Some(&reader)).0, 400);
    assert_eq!(get(&format!("{export}?cursor=-3"), Some(&reader)).0, 400);

    let (code, m) = get(&format!("{base}/metrics"), Some(&reader));
    assert_eq!(code, 200);
    let m = m.as_str().unwrap().to_owned();
    assert!(
        m.contains("kvwatch_http_requests_total{route=\"/api/v1/alerts\",status=\"200\"}"),
        "{m}"
    );
    assert!(m.contains("kvwatch_http_denied_total"), "{m}");

    // Every call is logged with the key's name, never the key.
    let log = std::fs::read_to_string(data.join("serve.log")).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        std::fs::read_to_string(data.join("serve.log")).unwrap()
    );
    let log = log + &std::fs::read_to_string(data.join("serve.log")).unwrap();
    assert!(!log.contains(&reader) && !log.contains(&analyst));
    assert!(
        log.contains("key=dashboards") && log.contains("key=soc-alice"),
        "{log}"
    );
    let listed = run(&data, &["apikey", "list", "--format", "json"]).stdout;
    assert!(!listed.contains(&reader), "secrets are never listed");
}
