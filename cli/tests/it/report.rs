//! `kvwatch report` on a generated dataset: the report's numbers against counts made here
//! straight from the generated JSON lines (not through kvwatch), the HTML well formed with its
//! charts, the CSV carrying the same numbers, and the report API.

use super::api::{Reap, get, key, post, serve_with};
use super::common::run;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

/// Counts from the raw records.
#[derive(Default, Debug)]
struct Truth {
    events: i64,
    material_reads: i64,
    denied: i64,
    policy_grants: i64,
    policy_removals: i64,
    sensitive_ok: i64,
    cross_env: HashSet<String>,
    human_prod_readers: HashSet<String>,
    /// Time range of the records (ns).
    first: i64,
    last: i64,
    /// Objects (vault/type/name) successfully read, and when each was last successfully
    /// written (created, set, rotated, imported, restored, recovered), if ever.
    read_objects: HashSet<String>,
    last_written: BTreeMap<String, i64>,
}

impl Truth {
    /// Objects read but not written since `cut` (the hygiene section's stale objects).
    fn stale(&self, cut: i64) -> HashSet<String> {
        self.read_objects
            .iter()
            .filter(|o| self.last_written.get(*o).is_none_or(|w| *w < cut))
            .cloned()
            .collect()
    }
}

/// `vault/type/name` of the object a record is about, from `properties.id` or the URI.
fn object_of(r: &Value, vault: &str) -> Option<String> {
    let uri = r["properties"]["id"]
        .as_str()
        .or_else(|| r["properties"]["requestUri"].as_str())?;
    let path = uri.split("://").nth(1)?.split_once('/')?.1;
    let path = path.split('?').next()?;
    let mut parts = path.split('/');
    let kind = match parts.next()? {
        "secrets" => "secret",
        "keys" => "key",
        "certificates" => "certificate",
        _ => return None,
    };
    let name = parts.next().filter(|n| !n.is_empty())?;
    Some(format!("{vault}/{kind}/{}", name.to_lowercase()))
}

fn claim<'a>(r: &'a Value, names: &[&str]) -> Option<&'a str> {
    let id = &r["identity"]["claim"];
    names.iter().find_map(|n| id[*n].as_str())
}

fn truth(dir: &std::path::Path) -> Truth {
    const SENSITIVE: &[&str] = &[
        "SecretDelete",
        "KeyDelete",
        "CertificateDelete",
        "SecretPurge",
        "KeyPurge",
        "CertificatePurge",
        "SecretBackup",
        "KeyBackup",
        "CertificateBackup",
        "SecretRestore",
        "KeyRestore",
        "CertificateRestore",
        "SecretRecover",
        "KeyRecover",
        "CertificateRecover",
        "KeyImport",
        "CertificateImport",
        "VaultDelete",
        "VaultPurge",
        "VaultRecover",
    ];
    const WRITES: &[&str] = &[
        "SecretSet",
        "SecretRestore",
        "SecretRecover",
        "KeyCreate",
        "KeyImport",
        "KeyRotate",
        "KeyRestore",
        "KeyRecover",
        "CertificateCreate",
        "CertificateImport",
        "CertificateUpdate",
        "CertificateRestore",
        "CertificateRecover",
    ];
    let mut t = Truth {
        first: i64::MAX,
        last: i64::MIN,
        ..Truth::default()
    };
    let mut envs: BTreeMap<String, HashSet<&'static str>> = BTreeMap::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let r: Value = serde_json::from_str(line).unwrap();
            if r["category"] != "AuditEvent" {
                continue;
            }
            t.events += 1;
            let time =
                kvwatch_ingest::time::parse_timestamp_ns(r["time"].as_str().unwrap()).unwrap();
            t.first = t.first.min(time);
            t.last = t.last.max(time);
            let op = r["operationName"].as_str().unwrap();
            let status = r["properties"]["httpStatusCode"].as_i64().unwrap_or(0);
            let vault = r["resourceId"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_lowercase();
            let oid = claim(
                &r,
                &[
                    "oid",
                    "http://schemas.microsoft.com/identity/claims/objectidentifier",
                ],
            );
            let caller = oid
                .or_else(|| claim(&r, &["appid"]))
                .unwrap_or("")
                .to_owned();
            if status == 403 || (status == 401 && op != "Authentication") {
                t.denied += 1;
            }
            if let (true, Some(o)) = (status < 300, object_of(&r, &vault)) {
                if WRITES.contains(&op) {
                    let w = t.last_written.entry(o.clone()).or_insert(time);
                    *w = (*w).max(time);
                }
                if ["SecretGet", "KeyGet", "CertificateGet"].contains(&op) {
                    t.read_objects.insert(o);
                }
            }
            if ["SecretGet", "KeyGet", "CertificateGet"].contains(&op) && status < 300 {
                t.material_reads += 1;
                let env = if vault.contains("prod") {
                    "prod"
                } else if vault.contains("dev") {
                    "dev"
                } else {
                    "other"
                };
                envs.entry(caller.clone()).or_default().insert(env);
                let is_user = claim(
                    &r,
                    &[
                        "upn",
                        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
                    ],
                )
                .is_some();
                if is_user && env == "prod" {
                    t.human_prod_readers.insert(caller.clone());
                }
            }
            if SENSITIVE.contains(&op) && status < 300 {
                t.sensitive_ok += 1;
            }
            if !r["properties"]["addedAccessPolicy"].is_null() {
                t.policy_grants += 1;
            }
            if !r["properties"]["removedAccessPolicy"].is_null() {
                t.policy_removals += 1;
            }
        }
    }
    t.cross_env = envs
        .into_iter()
        .filter(|(_, e)| e.contains("prod") && e.contains("dev"))
        .map(|(c, _)| c)
        .collect();
    t
}

/// Checks that tags nest properly (void elements aside); panics with the first mismatch.
fn assert_well_formed(html: &str) {
    const VOID: &[&str] = &["meta", "br", "hr", "img", "input", "link", "line", "rect"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("an unclosed tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let self_closing = tag.ends_with('/');
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name.trim(), "<{open}> closed by </{name}>");
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if self_closing || (VOID.contains(&name.as_str()) && name != "line" && name != "rect") {
            continue;
        }
        if (name == "line" || name == "rect") && self_closing {
            continue;
        }
        stack.push(name);
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn metric(r: &Value, section: Option<&str>, name: &str) -> Value {
    let list = match section {
        None => &r["summary"],
        Some(s) => &r["sections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == s)
            .unwrap()["summary"],
    };
    list.as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing"))["value"]
        .clone()
}

fn table<'a>(r: &'a Value, section: &str, name: &str) -> &'a Vec<Value> {
    r["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == section)
        .unwrap()["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()["rows"]
        .as_array()
        .unwrap()
}

/// The shared three-day store, what its raw records say, and its compliance report (JSON).
struct Shared {
    data: &'static std::path::Path,
    truth: Truth,
    report: Value,
}

fn shared() -> &'static Shared {
    static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let t = super::fixture::template(3, 9);
        let truth = truth(&t.logs);
        assert!(
            truth.policy_grants > 0 && truth.sensitive_ok > 0 && !truth.cross_env.is_empty(),
            "{truth:?}"
        );
        let r = run(
            &t.data,
            &["report", "--kind", "compliance", "--format", "json"],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        Shared {
            data: &t.data,
            truth,
            report: serde_json::from_str(&r.stdout).unwrap(),
        }
    })
}

#[test]
fn headline_and_section_numbers_match_the_raw_records() {
    let Shared {
        data,
        truth: t,
        report: rep,
    } = shared();
    let data = *data;
    assert_eq!(metric(rep, None, "events"), json!(t.events));
    assert_eq!(metric(rep, None, "material_reads"), json!(t.material_reads));
    assert_eq!(metric(rep, None, "denied"), json!(t.denied));
    assert_eq!(
        metric(rep, Some("permissions"), "policy_grants"),
        json!(t.policy_grants)
    );
    assert_eq!(
        metric(rep, Some("permissions"), "policy_removals"),
        json!(t.policy_removals)
    );
    assert_eq!(
        metric(rep, Some("sensitive-ops"), "operations"),
        json!(t.sensitive_ok)
    );
    let cross: HashSet<String> = table(rep, "blast-radius", "cross_environment")
        .iter()
        .map(|x| x["principal_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cross, t.cross_env);
    assert_eq!(
        metric(rep, Some("access"), "human_production_readers"),
        json!(t.human_prod_readers.len())
    );
    let reads: i64 = table(rep, "access", "readers")
        .iter()
        .map(|x| x["reads"].as_i64().unwrap())
        .sum();
    assert_eq!(
        reads, t.material_reads,
        "the register accounts for every read"
    );
    let alerts: i64 =
        serde_json::from_str::<Vec<Value>>(&run(data, &["alerts", "--format", "json"]).stdout)
            .unwrap()
            .len() as i64;
    assert_eq!(metric(rep, Some("alerts"), "alerts"), json!(alerts));
}

#[test]
fn stale_objects_follow_the_threshold() {
    let Shared { data, truth: t, .. } = shared();
    let data = *data;
    // Stale objects: with a one-day threshold over the dataset's exact period, objects written
    // in its last day are fresh and the rest of those read are stale; both kinds must exist.
    let day = 86_400_000_000_000;
    let (from, to) = (t.first / 1_000_000_000, t.last / 1_000_000_000 + 1);
    let stamp = |secs: i64| kvwatch_ingest::time::format_ns(secs * 1_000_000_000);
    let cut = to * 1_000_000_000 - day;
    let want = t.stale(cut);
    assert!(
        !want.is_empty() && want.len() < t.read_objects.len(),
        "{} stale of {} read",
        want.len(),
        t.read_objects.len()
    );
    let h = run(
        data,
        &[
            "report",
            "--kind",
            "hygiene",
            "--format",
            "json",
            "--stale-days",
            "1",
            "--max-rows",
            "100000",
            "--from",
            &stamp(from),
            "--to",
            &stamp(to),
        ],
    );
    assert_eq!(h.code, 0, "{}", h.stderr);
    let h: Value = serde_json::from_str(&h.stdout).unwrap();
    let got: HashSet<String> = table(&h, "hygiene", "stale_objects")
        .iter()
        .map(|x| {
            format!(
                "{}/{}/{}",
                x["vault"].as_str().unwrap(),
                x["object_type"].as_str().unwrap(),
                x["object_name"].as_str().unwrap().to_lowercase()
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        metric(&h, Some("hygiene"), "stale_objects"),
        json!(want.len())
    );
}

#[test]
fn every_number_reruns_from_the_sql_shown_beside_it() {
    let Shared {
        data, report: rep, ..
    } = shared();
    let data = *data;
    // Every number and every table can be reproduced with the SQL shown next to it, by a
    // session that knows nothing of the report (the shared pre-aggregations travel inline).
    let sections = rep["sections"].as_array().unwrap();
    let metrics = rep["summary"].as_array().unwrap().iter().chain(
        sections
            .iter()
            .flat_map(|s| s["summary"].as_array().unwrap()),
    );
    let mut checked = 0;
    for m in metrics {
        let again = run(
            data,
            &["query", "--format", "json", m["sql"].as_str().unwrap()],
        );
        assert_eq!(again.code, 0, "{}: {}", m["name"], again.stderr);
        let again: Vec<Value> = serde_json::from_str(&again.stdout).unwrap();
        assert_eq!(again[0]["value"], m["value"], "{m}");
        checked += 1;
    }
    let tables = rep["overview"].as_array().unwrap().iter().chain(
        sections
            .iter()
            .flat_map(|s| s["tables"].as_array().unwrap()),
    );
    for t in tables {
        let again = run(
            data,
            &["query", "--format", "json", t["sql"].as_str().unwrap()],
        );
        assert_eq!(again.code, 0, "{}: {}", t["name"], again.stderr);
        let again: Vec<Value> = serde_json::from_str(&again.stdout).unwrap();
        assert_eq!(
            again.len() as u64,
            t["total_rows"].as_u64().unwrap(),
            "{}",
            t["name"]
        );
        let sorted = |rows: &[Value]| {
            let mut v: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
            v.sort();
            v
        };
        let rows = t["rows"].as_array().unwrap();
        if rows.len() == again.len() {
            assert_eq!(sorted(&again), sorted(rows), "{}", t["name"]);
        }
        checked += 1;
    }
    assert!(checked > 40, "{checked} statements rerun");
}

#[test]
fn html_is_self_contained_with_its_charts_and_csv_carries_the_same_numbers() {
    let Shared { data, truth: t, .. } = shared();
    let data = *data;
    let dir = tempfile::tempdir().unwrap();
    // HTML: one self-contained, well-formed file with its charts; CSV: the same numbers.
    let html_path = dir.path().join("r.html");
    let r = run(
        data,
        &[
            "report",
            "--format",
            "html",
            "--out",
            html_path.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert_well_formed(&html);
    assert!(
        html.matches("<svg").count() >= 3,
        "events, alerts and blast-radius charts"
    );
    assert!(
        !html.contains("src=") && !html.contains("<link") && !html.contains("@import"),
        "no external resources"
    );
    assert!(!html.contains("<script"));
    // People's formats in HTML: times to the second with the zone, one tile per number.
    assert!(
        !html.contains("0000Z"),
        "a timestamp with fractional digits"
    );
    assert!(html.contains(" UTC to "), "the period in human form");
    assert_eq!(html.matches(">Denied requests</div>").count(), 1);
    assert!(
        !html.contains("style=\""),
        "no inline style attributes (the console's CSP)"
    );
    let csv = run(data, &["report", "--format", "csv"]).stdout;
    assert!(
        csv.contains(&format!(
            "report,material_reads,\"Secret, key and certificate reads\",{}",
            t.material_reads
        )),
        "{}",
        &csv[..csv.len().min(2000)]
    );
    assert!(csv.contains("# blast-radius.principals\n"));
    assert_ne!(
        run(data, &["report", "--kind", "nonsense"]).code,
        0,
        "an unknown kind is an error"
    );
}

#[test]
fn analysts_generate_reports_and_readers_list_and_download_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = super::fixture::store(dir.path(), 3, 9);
    // The API: analysts generate, readers list and download; IDs never name a path.
    let (mut child, base) = serve_with(&data, &[], "serve.log");
    let _reap = Reap(child.id());
    let reader = key(&data, "reader", "auditor");
    let analyst = key(&data, "analyst", "soc");
    let url = format!("{base}/api/v1/reports");
    assert_eq!(post(&url, &reader, json!({})).0, 403);
    let (code, made) = post(
        &url,
        &analyst,
        json!({"kind": "blast-radius", "format": "json", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}),
    );
    assert_eq!(code, 201, "{made}");
    let (code, listed) = get(&url, Some(&reader));
    assert_eq!(code, 200);
    assert_eq!(listed[0]["id"], made["id"]);
    assert_eq!(listed[0]["requested_by"], "api:soc");
    let (code, body) = get(
        &format!("{url}/{}", made["id"].as_str().unwrap()),
        Some(&reader),
    );
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "blast-radius");
    for bad in ["..%2F..%2Fauth.db", "..", "x.meta", "%2Fetc%2Fpasswd"] {
        assert_eq!(get(&format!("{url}/{bad}"), Some(&reader)).0, 404, "{bad}");
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}
