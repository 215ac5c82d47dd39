//! The HTTP API of `kvwatch serve`, driven over real HTTP: authentication and roles, alert
//! listing with filters and cursor pagination, updates, metrics, graceful stop.

use super::common::{bin, run};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

pub fn key(data: &Path, role: &str, name: &str) -> String {
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
fn serve(data: &Path) -> (Child, String) {
    serve_with(data, &[], "serve.log")
}

/// `serve` with extra global arguments (e.g. `--config`), logging to `data/<log>`.
#[allow(clippy::zombie_processes)]
pub fn serve_with(data: &Path, global: &[&str], log: &str) -> (Child, String) {
    let log = data.join(log);
    std::fs::create_dir_all(data).unwrap();
    let mut child = bin()
        .arg("--data")
        .arg(data)
        .args(global)
        .args(["--log", "info", "serve", "--listen", "127.0.0.1:0"])
        .args([
            "--interval",
            "3600",
            "--no-models",
            "--sql-timeout-secs",
            "10",
        ])
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

/// Kills a process when dropped, so a failing test leaves no service behind.
pub struct Reap(pub u32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

pub fn get(url: &str, key: Option<&str>) -> (u16, Value) {
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

pub fn patch(url: &str, key: &str, body: Value) -> (u16, Value) {
    send("PATCH", url, key, body)
}

pub fn post(url: &str, key: &str, body: Value) -> (u16, Value) {
    send("POST", url, key, body)
}

fn send(method: &str, url: &str, key: &str, body: Value) -> (u16, Value) {
    let req = match method {
        "POST" => agent().post(url),
        _ => agent().patch(url),
    };
    let mut r = req
        .header("Authorization", &format!("Bearer {key}"))
        .send_json(body)
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A running service on its own copy of the shared one-day store, with a reader key.
struct Fixture {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    base: String,
    reader: String,
    /// Every alert of the store, as `kvwatch alerts --format json` lists them.
    all: Vec<Value>,
    child: Child,
    _reap: Reap,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = super::fixture::store(dir.path(), 1, 3);
    let all: Vec<Value> =
        serde_json::from_str(&run(&data, &["alerts", "--format", "json"]).stdout).unwrap();
    assert!(all.len() >= 4, "{}", all.len());
    let reader = key(&data, "reader", "dashboards");
    let (child, base) = serve(&data);
    Fixture {
        _reap: Reap(child.id()),
        _dir: dir,
        data,
        base,
        reader,
        all,
        child,
    }
}

impl Fixture {
    fn alerts(&self) -> String {
        format!("{}/api/v1/alerts", self.base)
    }

    /// Stops the service with SIGTERM, checks it exited cleanly, and returns its log.
    fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(self.data.join("serve.log")).unwrap();
        assert!(status.success(), "{status:?}: {log}");
        log
    }
}

#[test]
fn probes_are_open_and_everything_else_needs_a_valid_key() {
    let f = fixture();
    assert_eq!(get(&format!("{}/healthz", f.base), None).0, 200);
    assert_eq!(get(&format!("{}/readyz", f.base), None).0, 200);
    let alerts = f.alerts();
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
    assert_eq!(get(&format!("{}/api/v1/rules", f.base), None).0, 401);
    assert_eq!(get(&format!("{}/metrics", f.base), None).0, 401);
    assert_eq!(get(&alerts, Some(&f.reader)).0, 200);
}

#[test]
fn listing_pages_every_alert_once_and_items_are_alerts_without_evidence() {
    let f = fixture();
    let (alerts, reader, all) = (f.alerts(), f.reader.as_str(), &f.all);
    // Cursor pagination walks every alert exactly once.
    let mut seen = Vec::new();
    let mut url = format!("{alerts}?limit=3");
    loop {
        let (code, page) = get(&url, Some(reader));
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

    // A list item is the full alert minus description and evidence IDs, plus their count.
    let (_, items) = get(&format!("{alerts}?limit=1000"), Some(reader));
    let (_, full) = get(&format!("{alerts}?limit=1000&full=true"), Some(reader));
    let (items, full) = (
        items["alerts"].as_array().unwrap(),
        full["alerts"].as_array().unwrap(),
    );
    assert_eq!(items.len(), full.len());
    for (i, f) in items.iter().zip(full) {
        let mut expect = f.as_object().unwrap().clone();
        let evidence = expect.remove("evidence").unwrap();
        expect.remove("description");
        expect.remove("evidence_truncated");
        expect.insert(
            "evidence_count".into(),
            json!(evidence.as_array().unwrap().len()),
        );
        assert_eq!(i.as_object().unwrap(), &expect);
    }

    let (code, high) = get(&format!("{alerts}?severity=high"), Some(reader));
    assert_eq!(code, 200);
    for a in high["alerts"].as_array().unwrap() {
        assert!(
            matches!(a["severity"].as_str(), Some("high" | "critical")),
            "{a}"
        );
    }
    assert_eq!(
        get(&format!("{alerts}?severity=urgent"), Some(reader)).0,
        400
    );
    assert_eq!(
        get(&format!("{alerts}?cursor=nonsense"), Some(reader)).0,
        400
    );

    let id = all[0]["id"].as_str().unwrap();
    let (code, a) = get(&format!("{alerts}/{id}"), Some(reader));
    assert_eq!((code, a["id"].as_str()), (200, Some(id)));
    assert_eq!(
        get(&format!("{alerts}/does-not-exist"), Some(reader)).0,
        404
    );
}

#[test]
fn roles_limit_triage_and_a_revoked_key_stops_at_once() {
    let f = fixture();
    let analyst = key(&f.data, "analyst", "soc-alice");
    let one = format!("{}/{}", f.alerts(), f.all[0]["id"].as_str().unwrap());
    assert_eq!(
        patch(&one, &f.reader, json!({"status": "acknowledged"})).0,
        403
    );
    assert_eq!(patch(&one, &analyst, json!({"status": "sideways"})).0, 400);
    let (code, a) = patch(&one, &analyst, json!({"status": "acknowledged"}));
    assert_eq!(
        (code, a["status"].as_str()),
        (200, Some("acknowledged")),
        "{a}"
    );
    let acked = get(
        &format!("{}?status=acknowledged", f.alerts()),
        Some(&f.reader),
    )
    .1;
    assert_eq!(acked["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(run(&f.data, &["apikey", "revoke", "soc-alice"]).code, 0);
    assert_eq!(patch(&one, &analyst, json!({"status": "resolved"})).0, 401);
}

#[test]
fn rules_are_served_with_description_and_parameters() {
    let f = fixture();
    let (code, rules) = get(&format!("{}/api/v1/rules", f.base), Some(&f.reader));
    assert_eq!(code, 200);
    let rules = rules["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 27, "the built-in pack");
    let rid = f.all[0]["rule_id"].as_str().unwrap();
    let (code, rule) = get(&format!("{}/api/v1/rules/{rid}", f.base), Some(&f.reader));
    assert_eq!(code, 200);
    assert_eq!(rule["id"].as_str(), Some(rid));
    assert!(
        rule["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{rule}"
    );
    assert!(rule["params"].is_object(), "{rule}");
    assert_eq!(
        get(&format!("{}/api/v1/rules/nope", f.base), Some(&f.reader)).0,
        404
    );
}

#[test]
fn export_sends_every_alert_once_then_only_what_changed() {
    let f = fixture();
    let (reader, all) = (f.reader.as_str(), &f.all);
    let export = format!("{}/api/v1/export", f.base);
    let mut cursor = String::new();
    let mut exported = HashSet::new();
    loop {
        let (code, page) = get(&format!("{export}?limit=4&cursor={cursor}"), Some(reader));
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
    let (_, caught_up) = get(&format!("{export}?cursor={cursor}"), Some(reader));
    assert_eq!(caught_up["alerts"].as_array().unwrap().len(), 0);
    assert_eq!(caught_up["next_cursor"].as_str(), Some(cursor.as_str()));
    let other = all[1]["id"].as_str().unwrap();
    let closer = key(&f.data, "analyst", "soc-bob");
    assert_eq!(
        patch(
            &format!("{}/{other}", f.alerts()),
            &closer,
            json!({"status": "resolved"})
        )
        .0,
        200
    );
    let (_, changed) = get(
        &format!("{export}?cursor={cursor}&format=ocsf"),
        Some(reader),
    );
    let changed = changed["alerts"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["class_uid"], 2004, "OCSF Detection Finding");
    let (code, cef) = get(&format!("{export}?format=cef&limit=2"), Some(reader));
    assert_eq!(code, 200);
    assert!(
        cef["alerts"][0]
            .as_str()
            .is_some_and(|c| c.starts_with("CEF:0|kvwatch|kvwatch|")),
        "{cef}"
    );
    assert_eq!(get(&format!("{export}?format=leef"), Some(reader)).0, 400);
    assert_eq!(get(&format!("{export}?cursor=-3"), Some(reader)).0, 400);
}

#[test]
fn calls_are_counted_by_route_and_logged_by_key_name_never_by_secret() {
    let f = fixture();
    let analyst = key(&f.data, "analyst", "soc-alice");
    let one = format!("{}/{}", f.alerts(), f.all[0]["id"].as_str().unwrap());
    assert_eq!(get(&one, Some(&f.reader)).0, 200);
    assert_eq!(patch(&one, &analyst, json!({"comment": "seen"})).0, 200);
    let (code, m) = get(&format!("{}/metrics", f.base), Some(&f.reader));
    assert_eq!(code, 200);
    let m = m.as_str().unwrap().to_owned();
    assert!(
        m.contains("kvwatch_http_requests_total{route=\"/api/v1/alerts/{id}\",status=\"200\"}"),
        "{m}"
    );
    assert!(m.contains("kvwatch_http_denied_total"), "{m}");
    let (reader, data) = (f.reader.clone(), f.data.clone());
    let log = f.stop();
    assert!(!log.contains(&reader) && !log.contains(&analyst));
    assert!(
        log.contains("key=dashboards") && log.contains("key=soc-alice"),
        "{log}"
    );
    let listed = run(&data, &["apikey", "list", "--format", "json"]).stdout;
    assert!(!listed.contains(&reader), "secrets are never listed");
}

#[test]
fn triage_leaves_an_audit_trail_and_filters_narrow_the_listing() {
    let f = fixture();
    triage_filters_and_audit_trail(&f.base, &f.reader, &f.data, &f.all);
}

#[test]
fn analyst_sql_is_for_analysts_read_only_and_bounded() {
    let f = fixture();
    analyst_sql(&f.base, &f.reader, &f.data);
}

#[test]
fn stats_openapi_and_admin_key_management() {
    let f = fixture();
    stats_openapi_and_admin(&f.base, &f.reader, &f.data);
}

/// PATCH with assignee and comment leaves an audit trail naming the key; list filters and
/// sorting narrow and order as asked.
fn triage_filters_and_audit_trail(base: &str, reader: &str, data: &Path, all: &[Value]) {
    let alerts = format!("{base}/api/v1/alerts");
    let carol = key(data, "analyst", "soc-carol");
    let a = &all[2];
    let id = a["id"].as_str().unwrap();
    let one = format!("{alerts}/{id}");
    assert_eq!(patch(&one, &carol, json!({})).0, 400, "an empty patch");
    assert_eq!(
        patch(&one, &carol, json!({"owner": "x"})).0,
        400,
        "unknown field"
    );
    let (code, v) = patch(
        &one,
        &carol,
        json!({"status": "acknowledged", "assignee": "carol", "comment": "looking = into it | now"}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["assignee"], "carol");
    let (code, v) = patch(&one, &carol, json!({"assignee": null}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["assignee"], Value::Null);
    let history = v["history"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h["action"].as_str().unwrap(), h["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("status", "soc-carol"),
            ("assignee", "soc-carol"),
            ("comment", "soc-carol"),
            ("assignee", "soc-carol")
        ],
        "{history:?}"
    );
    assert_eq!(history[0]["old"], "new");
    assert_eq!(history[2]["new"], "looking = into it | now");
    assert!(
        v["events"].as_array().is_some_and(|e| !e.is_empty()),
        "the alert's evidence events come with it"
    );

    let ids = |url: &str| -> Vec<String> {
        let (code, page) = get(url, Some(reader));
        assert_eq!(code, 200, "{url}: {page}");
        page["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let expect = |pred: &dyn Fn(&Value) -> bool| -> HashSet<String> {
        all.iter()
            .filter(|a| pred(a))
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let vault = a["vaults"][0].as_str().unwrap();
    let got: HashSet<String> = ids(&format!(
        "{alerts}?limit=1000&vault={}",
        vault.to_uppercase()
    ))
    .into_iter()
    .collect();
    assert_eq!(
        got,
        expect(&|x| x["vaults"].as_array().unwrap().iter().any(|v| v == vault))
    );
    if let Some(ip) = all
        .iter()
        .find_map(|x| x["ips"].as_array().and_then(|i| i.first()).cloned())
    {
        let ip = ip.as_str().unwrap();
        let got: HashSet<String> = ids(&format!("{alerts}?limit=1000&ip={ip}"))
            .into_iter()
            .collect();
        assert_eq!(
            got,
            expect(&|x| x["ips"].as_array().unwrap().iter().any(|v| v == ip))
        );
    }
    let who = all
        .iter()
        .find_map(|x| x["principals"][0]["upn"].as_str())
        .expect("an alert names a user");
    let got: HashSet<String> = ids(&format!("{alerts}?limit=1000&principal={who}"))
        .into_iter()
        .collect();
    assert!(!got.is_empty());
    assert_eq!(
        got,
        expect(&|x| x["principals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["upn"] == who))
    );
    let word = a["title"].as_str().unwrap().split(' ').next().unwrap();
    let got: HashSet<String> = ids(&format!("{alerts}?limit=1000&q={}", word.to_lowercase()))
        .into_iter()
        .collect();
    assert!(got.contains(id), "text search finds the alert by its title");
    // Narrowed listings (by an entity term, or driven by the text index) page through the
    // cursor in order, with nothing lost or repeated.
    for filter in [
        format!("q={}", word.to_lowercase()),
        format!("vault={vault}"),
    ] {
        let whole = ids(&format!("{alerts}?limit=1000&sort=-severity&{filter}"));
        let mut walked = Vec::new();
        let mut url = format!("{alerts}?sort=-severity&limit=2&{filter}");
        loop {
            let (code, page) = get(&url, Some(reader));
            assert_eq!(code, 200, "{url}: {page}");
            for x in page["alerts"].as_array().unwrap() {
                walked.push(x["id"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => url = format!("{alerts}?sort=-severity&limit=2&{filter}&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(walked, whole, "{filter}");
    }
    assert_eq!(ids(&format!("{alerts}?assignee=carol")).len(), 0);
    // Sorting by severity, walked with the cursor, is ordered and complete.
    let mut walked = Vec::new();
    let mut url = format!("{alerts}?sort=-severity&limit=2");
    loop {
        let (_, page) = get(&url, Some(reader));
        for x in page["alerts"].as_array().unwrap() {
            walked.push(x.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{alerts}?sort=-severity&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(walked.len(), all.len());
    let rank = |s: &str| {
        ["informational", "low", "medium", "high", "critical"]
            .iter()
            .position(|x| *x == s)
            .unwrap()
    };
    assert!(
        walked
            .windows(2)
            .all(|w| rank(w[0]["severity"].as_str().unwrap())
                >= rank(w[1]["severity"].as_str().unwrap()))
    );
    assert_eq!(get(&format!("{alerts}?sort=colour"), Some(reader)).0, 400);
    assert_eq!(
        get(&format!("{alerts}?until=yesterday"), Some(reader)).0,
        400
    );
}

/// POST /query: analysts only, SELECT only, nothing outside the store, bounded.
fn analyst_sql(base: &str, reader: &str, data: &Path) {
    let url = format!("{base}/api/v1/query");
    let dave = key(data, "analyst", "soc-dave");
    assert_eq!(post(&url, reader, json!({"sql": "SELECT 1"})).0, 403);
    let (code, v) = post(
        &url,
        &dave,
        json!({"sql": "SELECT vault, count(*) AS n FROM events GROUP BY vault ORDER BY n DESC"}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["columns"], json!(["vault", "n"]));
    // Each row object keeps the select list's order (not the alphabet's).
    let body = agent()
        .post(&url)
        .header("Authorization", &format!("Bearer {dave}"))
        .send_json(json!({"sql": "SELECT vault, count(*) AS n FROM events GROUP BY vault ORDER BY n DESC LIMIT 1"}))
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let row = &body[body.find("\"rows\"").unwrap()..];
    assert!(
        row.find("\"vault\"").unwrap() < row.find("\"n\"").unwrap(),
        "{body}"
    );
    let total: i64 = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .sum();
    assert_eq!(
        total,
        super::common::count(data, "SELECT count(*) FROM events")
    );
    let (code, v) = post(
        &url,
        &dave,
        json!({"sql": "SELECT a.id, count(e.event_id) AS n FROM alerts a JOIN events e ON array_has(a.evidence, e.event_id) GROUP BY a.id"}),
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["row_count"].as_u64().unwrap() > 0, "{v}");
    // CSV.
    let mut r = agent()
        .post(&url)
        .header("Authorization", &format!("Bearer {dave}"))
        .send_json(json!({"sql": "SELECT operation, count(*) AS n FROM events GROUP BY 1 ORDER BY 1 LIMIT 3", "format": "csv"}))
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csv = r.body_mut().read_to_string().unwrap();
    assert!(csv.starts_with("operation,n\n"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "{csv}");
    // Guards: every one refused with a 4xx and a reason.
    for (sql, status, why) in [
        ("COPY events TO '/tmp/kvwatch-stolen.csv'", 400, "COPY"),
        (
            "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'",
            400,
            "EXTERNAL",
        ),
        ("SELECT * FROM '/etc/passwd'", 400, "passwd"),
        ("SELECT * FROM read_csv('/etc/passwd')", 400, "read_csv"),
        ("SELECT * FROM quarantine", 400, "quarantine"),
        ("DELETE FROM events", 400, "SELECT"),
        ("SELECT 1; DROP TABLE events", 400, "one statement"),
        (
            "SELECT count(*) FROM generate_series(1, 100000000000)",
            408,
            "cancelled",
        ),
    ] {
        let (code, v) = post(&url, &dave, json!({"sql": sql}));
        assert_eq!(code, status, "{sql}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(why)),
            "{sql}: {v}"
        );
    }
    assert!(!Path::new("/tmp/kvwatch-stolen.csv").exists());
    let (code, v) = post(
        &url,
        &dave,
        json!({"sql": "SELECT * FROM generate_series(1, 50000000)", "max_rows": 50}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["row_count"].as_u64(), v["truncated"].as_bool()),
        (Some(50), Some(true))
    );
}

/// /stats, the OpenAPI document, and admin-only key management.
fn stats_openapi_and_admin(base: &str, reader: &str, data: &Path) {
    let (code, v) = get(
        &format!("{base}/api/v1/stats?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"),
        Some(reader),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["events_total"].as_i64().unwrap(),
        super::common::count(data, "SELECT count(*) FROM events")
    );
    let by_hour = v["events_per_vault_hour"].as_array().unwrap();
    assert!(by_hour.len() > 24, "{}", by_hour.len());
    let alerts_total = v["alerts"]["total"].as_i64().unwrap();
    assert_eq!(
        alerts_total,
        v["alerts"]["by_severity"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_i64().unwrap())
            .sum::<i64>()
    );
    assert_eq!(
        get(&format!("{base}/api/v1/stats?from=x"), Some(reader)).0,
        400
    );

    let (code, doc) = get(&format!("{base}/api/v1/openapi.json"), None);
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/alerts",
        "/api/v1/alerts/{id}",
        "/api/v1/query",
        "/api/v1/export",
        "/api/v1/stats",
        "/api/v1/sinks/{name}/dead-letters/retry",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} undocumented");
    }
    let printed: Value =
        serde_json::from_str(&super::common::run(data, &["openapi"]).stdout).unwrap();
    assert_eq!(
        printed, doc,
        "`kvwatch openapi` prints what the server serves"
    );

    let keys = format!("{base}/api/v1/keys");
    let admin = key(data, "admin", "ops-root");
    assert_eq!(get(&keys, Some(reader)).0, 403);
    let (code, created) = post(
        &keys,
        &admin,
        json!({"name": "siem-pull", "role": "reader"}),
    );
    assert_eq!(code, 201, "{created}");
    let new_key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&format!("{base}/api/v1/alerts?limit=1"), Some(&new_key)).0,
        200
    );
    assert_eq!(
        post(
            &keys,
            &admin,
            json!({"name": "siem-pull", "role": "reader"})
        )
        .0,
        409
    );
    assert_eq!(
        post(&keys, &admin, json!({"name": "x", "role": "root"})).0,
        400
    );
    let mut r = agent()
        .delete(&format!("{keys}/siem-pull"))
        .header("Authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        204,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    assert_eq!(
        get(&format!("{base}/api/v1/alerts?limit=1"), Some(&new_key)).0,
        401
    );
    let (code, listed) = get(&keys, Some(&admin));
    assert_eq!(code, 200);
    assert!(!listed.to_string().contains(&new_key));
}
