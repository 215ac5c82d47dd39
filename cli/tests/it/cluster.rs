//! The alert store on PostgreSQL, through the real binary: detection, the CLI, analyst SQL and
//! the API on a private server give what they give on SQLite, and `kvwatch alerts migrate`
//! moves a node's SQLite store into an empty database.

use super::api::{get, key, patch, serve_with};
use super::common::{bin, ingest, run};
use crate::pg_server::PgServer;
use serde_json::{Value, json};
use std::path::Path;

fn alerts(data: &Path, global: &[&str]) -> Vec<Value> {
    let mut args: Vec<&str> = global.to_vec();
    args.extend(["alerts", "--format", "json"]);
    let r = run(data, &args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    serde_json::from_str::<Value>(&r.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// An alert without the wall-clock times of its detection.
fn content(a: &Value) -> Value {
    let mut a = a.clone();
    for k in ["created_at", "detected_at", "updated_at"] {
        a.as_object_mut().unwrap().remove(k);
    }
    a
}

#[test]
fn alerts_on_postgres_equal_sqlite_and_migrate_copies_a_node_store() {
    let out = tempfile::tempdir().unwrap();
    let g = bin()
        .args(["generate", "--days", "2", "--seed", "11", "--attacks"])
        .arg("self-grant-then-read,delete-purge,role-assignment,firewall-opened,mass-retrieval")
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let inputs = [
        out.path().join("insights-logs-auditevent"),
        out.path().join("insights-activity-logs"),
    ];
    let inputs: Vec<&Path> = inputs
        .iter()
        .map(|p| p.as_path())
        .filter(|p| p.exists())
        .collect();
    let (lite, on_pg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ingest(lite.path(), &inputs);
    ingest(on_pg.path(), &inputs);
    let pg = PgServer::start();
    let url = pg.create_db("node");
    let with_pg = ["--alerts", url.as_str()];

    let detect = |data: &Path, global: &[&str]| {
        let mut args: Vec<&str> = global.to_vec();
        args.extend(["detect", "--format", "json"]);
        let r = run(data, &args);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        serde_json::from_str::<Value>(&r.stdout).unwrap()
    };
    let a = detect(lite.path(), &[]);
    let b = detect(on_pg.path(), &with_pg);
    assert_eq!(a["created"], b["created"], "{a}\n{b}");
    assert!(a["created"].as_u64().unwrap() >= 4, "{a}");
    // Nothing went to a SQLite file beside the data.
    assert!(!on_pg.path().join("alerts.db").exists());
    let want = alerts(lite.path(), &[]);
    let got = alerts(on_pg.path(), &with_pg);
    assert_eq!(
        got.iter().map(content).collect::<Vec<_>>(),
        want.iter().map(content).collect::<Vec<_>>()
    );
    // A second pass on the same data adds nothing, on either.
    assert_eq!(detect(on_pg.path(), &with_pg)["created"], 0);

    // Analyst SQL reads the same alerts table (the query workers get the database too).
    let r = run(
        on_pg.path(),
        &[
            "--alerts",
            &url,
            "query",
            "--format",
            "json",
            "SELECT count(*) AS n FROM alerts",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let n: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(n[0]["n"].as_u64(), Some(want.len() as u64), "{n}");

    // The API on PostgreSQL: listing, filters, triage.
    let analyst = key(on_pg.path(), "analyst", "ana");
    let (mut child, base) = serve_with(on_pg.path(), &with_pg, "serve.log");
    let _reap = super::api::Reap(child.id());
    let (code, page) = get(&format!("{base}/api/v1/alerts?limit=500"), Some(&analyst));
    assert_eq!(code, 200, "{page}");
    let ids: Vec<&str> = page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        want.iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect::<Vec<_>>()
    );
    let vault = want[0]["vaults"][0].as_str().unwrap().to_uppercase();
    let (code, by_vault) = get(
        &format!("{base}/api/v1/alerts?vault={vault}"),
        Some(&analyst),
    );
    assert_eq!(code, 200, "{by_vault}");
    let expect = want
        .iter()
        .filter(|a| {
            a["vaults"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.as_str().unwrap().eq_ignore_ascii_case(&vault))
        })
        .count();
    assert_eq!(by_vault["alerts"].as_array().unwrap().len(), expect);
    let one = format!("{base}/api/v1/alerts/{}", ids[0]);
    let (code, acked) = patch(
        &one,
        &analyst,
        json!({"status": "acknowledged", "comment": "mine"}),
    );
    assert_eq!(code, 200, "{acked}");
    let listed = alerts(on_pg.path(), &["--alerts", &url]);
    assert_eq!(listed[0]["status"], "acknowledged");
    let _ = child.kill();
    let _ = child.wait();

    // Migration: the SQLite node's store, copied whole into a new database.
    let url2 = pg.create_db("migrated");
    let r = run(
        lite.path(),
        &["alerts", "migrate", "--to", &url2, "--format", "json"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        report["tables"]["alerts"].as_u64(),
        Some(want.len() as u64),
        "{report}"
    );
    assert_eq!(alerts(lite.path(), &["--alerts", &url2]), want);
    // Detection carries on from the copied coverage: nothing new, nothing twice.
    let again = detect(lite.path(), &["--alerts", &url2]);
    assert_eq!(again["created"], 0, "{again}");
    // A second copy into the same database is refused, and changes nothing.
    let r = run(lite.path(), &["alerts", "migrate", "--to", &url2]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("empty database"), "{}", r.stderr);
    assert_eq!(alerts(lite.path(), &["--alerts", &url2]).len(), want.len());
    // And a URL that is not PostgreSQL's is refused up front.
    let r = run(lite.path(), &["--alerts", "mysql://x/y", "alerts"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("postgres://"), "{}", r.stderr);
}
