//! The alert store on PostgreSQL, through the real binary: detection, the CLI, analyst SQL and
//! the API on a private server give what they give on SQLite, and `kvwatch alerts migrate`
//! moves a node's SQLite store into an empty database.

use super::api::{get, key, patch, serve_with};
use super::common::{bin, ingest, run};
use super::detect::{alerts, detect};
use super::sinks::wait_until;
use crate::pg_server::PgServer;
use serde_json::{Value, json};
use std::path::Path;

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
    let analyst = {
        let r = run(
            on_pg.path(),
            &[
                "--alerts", &url, "apikey", "create", "--role", "analyst", "--name", "ana",
                "--format", "json",
            ],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str::<Value>(&r.stdout).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Not in a file beside the data: in the database.
    assert!(!on_pg.path().join("auth.db").exists());
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

    // Migration: the SQLite node's store, copied whole into a new database, its keys too.
    let old_key = key(lite.path(), "reader", "siem-pull");
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
    assert_eq!(report["tables"]["api_keys"].as_u64(), Some(1), "{report}");
    let (mut child, base2) = serve_with(lite.path(), &["--alerts", &url2], "serve-2.log");
    let _reap2 = super::api::Reap(child.id());
    let (code, page) = get(&format!("{base2}/api/v1/alerts?limit=1"), Some(&old_key));
    assert_eq!(code, 200, "the migrated key works: {page}");
    let _ = child.kill();
    let _ = child.wait();
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

/// One `kvwatch serve` node of a two-node deployment: the shared event store, its own state
/// directory, the shared PostgreSQL alert store.
struct Node {
    name: &'static str,
    state: std::path::PathBuf,
    child: Option<std::process::Child>,
    url: String,
    key: String,
}

impl Node {
    fn start(name: &'static str, store: &Path, root: &Path, db: &str, config: &Path) -> Node {
        let state = root.join(name);
        std::fs::create_dir_all(&state).unwrap();
        let with_state = |args: &[&str]| {
            let mut all = vec!["--state", state.to_str().unwrap(), "--alerts", db];
            all.extend_from_slice(args);
            run(store, &all)
        };
        let key_name = format!("ops-{name}");
        let r = with_state(&[
            "apikey", "create", "--role", "reader", "--name", &key_name, "--format", "json",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let key = serde_json::from_str::<Value>(&r.stdout).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut n = Node {
            name,
            state,
            child: None,
            url: String::new(),
            key,
        };
        n.spawn(store, db, config);
        n
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.state.join("serve.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self, store: &Path, db: &str, config: &Path) {
        let old = self.log();
        let child = bin()
            .arg("--data")
            .arg(store)
            .arg("--state")
            .arg(&self.state)
            .args(["--alerts", db, "--config"])
            .arg(config)
            .args(["--log", "info", "serve", "--listen", "127.0.0.1:0"])
            .args([
                "--node-name",
                self.name,
                "--leader-lease-secs",
                "4",
                "--no-models",
                "--interval",
                "3600",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.log_path()).unwrap())
            .spawn()
            .unwrap();
        // Keep the earlier run's log beside the new one.
        std::fs::write(self.state.join("serve-earlier.log"), old).unwrap();
        self.child = Some(child);
        let t0 = std::time::Instant::now();
        loop {
            let text = self.log();
            if let Some(i) = text.find("API on http://") {
                self.url = text[i + 7..].lines().next().unwrap().trim().to_owned();
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "{} did not start: {text}",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn leading(&self) -> bool {
        let (code, m) = get(&format!("{}/metrics", self.url), Some(&self.key));
        code == 200
            && m.as_str()
                .is_some_and(|m| m.contains(&format!("kvwatch_leader{{node=\"{}\"}} 1", self.name)))
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.take().unwrap().wait();
    }

    fn stop(&mut self) {
        self.signal("-TERM");
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(
            status.success(),
            "{}: {status:?}\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two nodes on one PostgreSQL: the leader is SIGKILLed in the middle of its first detection
/// pass and of a delivery, the standby takes over within 30 s and finishes both; the alerts
/// equal a single node's and every one reaches the sink. Then the new leader is paused
/// (SIGSTOP) past its lease while a delivery is in flight: the other node takes over, and
/// the paused one, resumed, writes nothing and stands by.
#[test]
fn a_standby_takes_over_a_killed_leader_and_a_paused_one_writes_nothing() {
    use super::sinks::{HMAC_KEY, Peer, Step, accepted, start_http_peer};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    let root = tempfile::tempdir().unwrap();
    if std::env::var_os("KVWATCH_TEST_KEEP").is_some() {
        eprintln!("keeping {}", root.path().display());
    }
    let store = super::fixture::store(root.path(), 2, 11);
    // The single-node run: the fixture's own SQLite store.
    let want = alerts(&store, &[]);
    assert!(want.len() >= 8, "{} alerts", want.len());
    let ids: std::collections::HashSet<String> = want
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let pg = PgServer::start();
    let db = pg.create_db("ha");
    let peer = Arc::new(Peer::default());
    // The first delivery hangs for 20 s: the leader is killed while it is in flight.
    peer.webhook
        .script
        .lock()
        .unwrap()
        .push_back(Step::Slow(20_000));
    let base = start_http_peer(peer.clone());
    let config = root.path().join("kvwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\nname = \"webhook\"\ntype = \"webhook\"\nurl = \"{base}/webhook\"\nsecret = \"{HMAC_KEY}\"\npoll_interval_ms = 200\nbatch_size = 3\n"
        ),
    )
    .unwrap();
    let mut a = Node::start("node-a", &store, root.path(), &db, &config);
    wait_until("node-a to lead", 30, || a.leading());
    let mut b = Node::start("node-b", &store, root.path(), &db, &config);
    assert!(!b.leading(), "one leader");
    // Keys live in the shared database: one made through either node works on both.
    assert_eq!(get(&format!("{}/metrics", b.url), Some(&a.key)).0, 200);
    assert_eq!(get(&format!("{}/metrics", a.url), Some(&b.key)).0, 200);
    // So are console sessions: signed in through node-a, the same cookie works on node-b.
    let no_redirects: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let r = no_redirects
        .post(&format!("{}/login", a.url))
        .send_form([("key", a.key.as_str()), ("next", "/alerts")])
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = no_redirects
        .get(&format!("{}/alerts", b.url))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(
        page.status().as_u16(),
        200,
        "a session from node-a on node-b"
    );
    let count = || -> usize {
        pg.psql("ha", "SELECT count(*) FROM alerts")
            .parse()
            .unwrap()
    };
    // Mid-pass and mid-delivery: some alerts stored, the first batch in flight.
    wait_until("node-a's first alerts and delivery", 60, || {
        count() > 0 && peer.slow_started.load(Ordering::SeqCst)
    });
    let stored_at_kill = count();
    let covered_at_kill: i64 = pg
        .psql("ha", "SELECT count(*) FROM covered_files")
        .parse()
        .unwrap();
    a.kill();
    let killed = Instant::now();
    wait_until("node-b to take over", 30, || b.leading());
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(30), "take-over took {took:?}");
    eprintln!(
        "take-over after {took:?}; at the kill {stored_at_kill} of {} alerts were stored and {covered_at_kill} files covered",
        want.len()
    );
    assert_eq!(
        covered_at_kill, 0,
        "the leader was killed before its first pass finished"
    );
    // node-b finishes the pass and the deliveries.
    wait_until("every alert stored and delivered", 120, || {
        let got: std::collections::HashSet<String> =
            accepted(&peer.webhook, 0).into_iter().collect();
        count() == want.len() && ids.is_subset(&got)
    });
    let got = alerts(&store, &["--alerts", &db]);
    assert_eq!(
        got.iter().map(content).collect::<Vec<_>>(),
        want.iter().map(content).collect::<Vec<_>>(),
        "two nodes and a kill give a single node's alerts"
    );
    let epoch_b: i64 = pg
        .psql("ha", "SELECT epoch FROM kvwatch_lease")
        .parse()
        .unwrap();
    assert_eq!(epoch_b, 2);

    // node-a comes back as a standby.
    a.spawn(&store, &db, &config);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!a.leading() && b.leading());
    // node-b is paused while a delivery is in flight (an analyst's change to forward).
    let analyst = {
        let r = run(
            &store,
            &[
                "--state",
                b.state.to_str().unwrap(),
                "--alerts",
                &db,
                "apikey",
                "create",
                "--role",
                "analyst",
                "--name",
                "ana",
                "--format",
                "json",
            ],
        );
        serde_json::from_str::<Value>(&r.stdout).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    peer.slow_started.store(false, Ordering::SeqCst);
    peer.webhook
        .script
        .lock()
        .unwrap()
        .push_back(Step::Slow(8_000));
    let first = want[0]["id"].as_str().unwrap();
    let (code, _) = patch(
        &format!("{}/api/v1/alerts/{first}", b.url),
        &analyst,
        json!({"status": "acknowledged"}),
    );
    assert_eq!(code, 200);
    wait_until("node-b's delivery of the change", 30, || {
        peer.slow_started.load(Ordering::SeqCst)
    });
    b.signal("-STOP");
    wait_until("node-a to take over from the paused node", 30, || {
        a.leading()
    });
    wait_until("node-a to deliver the change", 30, || {
        peer.webhook_status
            .lock()
            .unwrap()
            .get(first)
            .map(String::as_str)
            == Some("acknowledged")
    });
    std::thread::sleep(Duration::from_secs(1));
    let snapshot = || {
        pg.psql(
            "ha",
            "SELECT (SELECT string_agg(sink || ':' || change_seq || ':' || updated_at, ',') FROM sink_cursors) || '|' || \
             (SELECT md5(string_agg(id || change_seq || updated_at, ',' ORDER BY id)) FROM alerts) || '|' || \
             (SELECT count(*) FROM alert_history) || '|' || (SELECT string_agg(rule_id || last_run_at, ',' ORDER BY rule_id) FROM rule_runs)",
        )
    };
    let before = snapshot();
    b.signal("-CONT");
    // The paused node's delivery completes, then it finds its term over.
    wait_until("node-b to notice it no longer leads", 30, || {
        b.log().contains("leader.lost") || b.log().contains("leader.expired")
    });
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        snapshot(),
        before,
        "the resumed node wrote to the alert store"
    );
    assert!(a.leading() && !b.leading());
    let epoch: i64 = pg
        .psql("ha", "SELECT epoch FROM kvwatch_lease")
        .parse()
        .unwrap();
    assert_eq!(epoch, 3);
    b.stop();
    a.stop();
    assert!(!a.log().contains(HMAC_KEY) && !b.log().contains(HMAC_KEY));
    if std::env::var_os("KVWATCH_TEST_KEEP").is_some() {
        let _ = root.keep();
    }
}
