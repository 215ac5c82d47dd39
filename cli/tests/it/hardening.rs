//! The service against its own users: hostile analyst SQL (deep statements, CPU-bound plans,
//! memory-hungry functions), forged log lines, slow clients and connection floods, a full or
//! read-only disk, and damaged gzip archives. Every case runs against the real `kvwatch`
//! binary over real HTTP (and, for the disk, a real filesystem that fills up).

use super::api::{Reap, agent, get, key, post};
use super::common::{bin, ingest, run};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A store with a day of generated traffic and its alerts.
fn store(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("store");
    let generated = super::common::generate(
        &dir.join("gen"),
        &["--format", "jsonl", "--days", "1", "--seed", "5"],
    );
    ingest(&data, &[&generated.join("jsonl")]);
    let r = run(&data, &["detect", "--no-models"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    data
}

/// Waits for "API on http://…" in `log` and returns the base URL.
fn wait_for_url(child: &mut Child, log: &Path) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(i) = text.find("API on http://") {
            return text[i + 7..].lines().next().unwrap().trim().to_owned();
        }
        if start.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("serve did not start: {text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kvwatch serve` on a free port with `extra` arguments, logging to `log`.
#[allow(clippy::zombie_processes)]
fn start(data: &Path, global: &[&str], extra: &[&str], log: &Path) -> (Child, String) {
    let mut child = bin()
        .arg("--data")
        .arg(data)
        .args(global)
        .args(["--log", "info", "serve", "--listen", "127.0.0.1:0"])
        .args(["--interval", "3600", "--no-models"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let url = wait_for_url(&mut child, log);
    (child, url)
}

fn healthy(base: &str) -> bool {
    get(&format!("{base}/healthz"), None).0 == 200
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

/// Processes whose command line mentions `needle` (the SQL workers of one store).
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && cmd.contains("sql-worker") {
            out.push(pid);
        }
    }
    out
}

fn chain(op: &str, n: usize) -> String {
    format!("SELECT {}", vec!["1"; n].join(op))
}

#[test]
fn hostile_analyst_sql_is_contained_and_the_service_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = store(dir.path());
    let analyst = key(&data, "analyst", "hunter");
    let reader = key(&data, "reader", "wall");
    let log = dir.path().join("serve.log");
    let (child, base) = start(
        &data,
        &[],
        &["--sql-timeout-secs", "4", "--sql-memory-mb", "256"],
        &log,
    );
    let _reap = Reap(child.id());
    let url = format!("{base}/api/v1/query");

    // 1. Statements nested too deep for the planner: a clear 400, and the service lives.
    let deep = [
        chain(" + ", 2000),
        vec!["SELECT 1"; 500].join(" UNION ALL "),
        format!(
            "SELECT count(*) FROM events WHERE {}",
            (0..5000)
                .map(|i| format!("vault = 'v{i}'"))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
        format!("SELECT {}", vec!["'x'"; 20000].join(" || ")),
        format!("SELECT {}", vec!["a.vault = 'x'"; 3000].join(" AND ")),
        format!("SELECT {} TRUE", "NOT ".repeat(3000)),
        format!("SELECT {}1", "- ".repeat(3000)),
        format!("SELECT {}1{}", "(".repeat(2000), ")".repeat(2000)),
        format!("SELECT {}1{}", "abs(".repeat(500), ")".repeat(500)),
        format!(
            "SELECT {}1{}",
            "CASE WHEN TRUE THEN ".repeat(300),
            " END".repeat(300)
        ),
        format!(
            "SELECT * FROM {}events{}",
            "(SELECT * FROM ".repeat(300),
            ") t".repeat(300)
        ),
        format!("SELECT {}1{}", "[".repeat(1000), "]".repeat(1000)),
    ];
    for sql in &deep {
        let (code, v) = post(&url, &analyst, json!({ "sql": sql }));
        assert_eq!(code, 400, "{:.60}: {v}", sql);
        let c = v["code"].as_str().unwrap_or_default();
        assert!(c == "too_complex" || c == "refused", "{:.60}: {v}", sql);
        assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(healthy(&base), "the service died on {:.60}", sql);
    }
    // The same guard stands in front of `kvwatch query`.
    let r = run(&data, &["query", &chain(" + ", 2000)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("too complex"), "{}", r.stderr);

    // 2. CPU-bound plans: cancelled at the deadline (408 within a second or two of it) while
    //    the rest of the API keeps answering.
    let cpu = [
        "SELECT count(*) FROM events a, events b, events c WHERE a.vault || b.vault = c.vault",
        "SELECT count(*) FROM generate_series(1, 1000000000000)",
        "SELECT count(*) FROM events a, events b WHERE regexp_like(a.client_info || b.client_info, '(a+)+$')",
        "SELECT count(*) FROM unnest(generate_series(1, 100000000))",
        "SELECT max(rn) FROM (SELECT row_number() OVER (ORDER BY a.time, b.time) AS rn FROM events a, events b)",
    ];
    for sql in cpu {
        let (tx, rx) = std::sync::mpsc::channel();
        let (u, k, q) = (url.clone(), analyst.clone(), sql.to_owned());
        let t0 = Instant::now();
        let worker = std::thread::spawn(move || {
            let r = post(&u, &k, json!({ "sql": q }));
            tx.send(t0.elapsed()).unwrap();
            r
        });
        // While it runs: probes, alert pages and a second query answer promptly.
        std::thread::sleep(Duration::from_millis(700));
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let t = Instant::now();
            assert!(healthy(&base));
            let (code, _) = get(&format!("{base}/api/v1/alerts?limit=20"), Some(&reader));
            assert_eq!(code, 200);
            slowest = slowest.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            slowest < Duration::from_secs(2),
            "{sql}: API answered in {slowest:?}"
        );
        let (code, v) = post(
            &url,
            &analyst,
            json!({"sql": "SELECT count(*) AS n FROM events"}),
        );
        assert_eq!(code, 200, "a second query while {sql} runs: {v}");
        let (code, v) = worker.join().unwrap();
        let took = rx.recv().unwrap();
        let c = v["code"].as_str().unwrap_or_default();
        assert!(
            (code == 408 && c == "timeout") || (code == 400 && c == "memory_limit"),
            "{sql}: {code} {v}"
        );
        assert!(
            took < Duration::from_secs(7),
            "{sql}: answered after {took:?}"
        );
    }

    // 3. Memory-hungry functions and operators stop at the limit, in the worker.
    let hungry = [
        "SELECT length(repeat('x', 1000000000)) AS n",
        "SELECT length(string_agg(repeat('x', 1000), '')) AS n FROM generate_series(1, 10000000)",
        "SELECT cardinality(array_agg(value)) AS n FROM generate_series(1, 1000000000)",
        "SELECT r FROM (SELECT repeat('y', 200) || value AS r FROM generate_series(1, 5000000)) ORDER BY r",
        "SELECT count(DISTINCT repeat(CAST(value AS VARCHAR), 40)) AS n FROM generate_series(1, 20000000)",
    ];
    for sql in hungry {
        let t0 = Instant::now();
        let (code, v) = post(&url, &analyst, json!({ "sql": sql }));
        let c = v["code"].as_str().unwrap_or_default();
        assert!(
            (code == 400 && c == "memory_limit") || (code == 408 && c == "timeout"),
            "{sql}: {code} {v}"
        );
        assert!(t0.elapsed() < Duration::from_secs(7), "{sql}");
        assert!(healthy(&base));
    }
    let (code, v) = post(
        &url,
        &analyst,
        json!({"sql": "SELECT length(repeat('x', 1000000000)) AS n"}),
    );
    assert_eq!(
        (code, v["code"].as_str()),
        (400, Some("memory_limit")),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("256 MiB"),
        "the limit is named: {v}"
    );
    let peak = peak_rss_mb(child.id());
    assert!(
        peak < 400,
        "the service itself peaked at {peak} MiB while queries reached for gigabytes"
    );

    // Still a working service: a normal query, the counters of what happened.
    let (code, v) = post(
        &url,
        &analyst,
        json!({"sql": "SELECT vault, count(*) AS n FROM events GROUP BY vault ORDER BY n DESC LIMIT 2"}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["columns"], json!(["vault", "n"]));
    let (_, metrics) = get(&format!("{base}/metrics"), Some(&reader));
    let metrics = metrics.as_str().unwrap().to_owned();
    for name in [
        "kvwatch_sql_timeouts_total",
        "kvwatch_sql_memory_limited_total",
    ] {
        let n: u64 = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n > 0, "{name} counted nothing:\n{metrics}");
    }

    // 4. SIGTERM while a runaway query runs: the service stops promptly and takes its
    //    workers with it.
    let needle = data.display().to_string();
    let (u, k) = (url.clone(), analyst.clone());
    let runaway = std::thread::spawn(move || {
        post(
            &u,
            &k,
            json!({"sql": "SELECT count(*) FROM events a, events b, events c WHERE a.vault || b.vault = c.vault"}),
        )
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!processes_with(&needle).is_empty(), "no worker is running");
    let t0 = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut child = child;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "serve ignored SIGTERM during a runaway query"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let (code, _) = runaway.join().unwrap();
    assert!(code >= 400, "{code}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        processes_with(&needle),
        Vec::<u32>::new(),
        "workers outlived the service"
    );

    // 5. Continuous detection goes on while runaway queries hold every SQL worker: a purge
    //    ingested meanwhile is alerted on long before the queries' deadline.
    let log = dir.path().join("serve2.log");
    let (child, base) = start(&data, &[], &["--sql-timeout-secs", "60"], &log);
    let _reap = Reap(child.id());
    let url = format!("{base}/api/v1/query");
    let runaways: Vec<_> = (0..2)
        .map(|_| {
            let (u, k) = (url.clone(), analyst.clone());
            std::thread::spawn(move || {
                post(
                    &u,
                    &k,
                    json!({"sql": "SELECT count(*) FROM events a, events b, events c WHERE a.vault || b.vault = c.vault"}),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        processes_with(&needle).len(),
        2,
        "two workers should be busy"
    );
    let purge = dir.path().join("purge.jsonl");
    std::fs::write(
        &purge,
        super::detect::record("2026-03-02T10:00:00Z", "SecretPurge", "secrets/crown") + "\n",
    )
    .unwrap();
    let t0 = Instant::now();
    ingest(&data, &[&purge]);
    let found = loop {
        let (_, v) = get(
            &format!("{base}/api/v1/alerts?rule=kv-sens-purge&limit=5"),
            Some(&reader),
        );
        let hit = v["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x.to_string().contains("mallory@contoso.com"))
        });
        if hit {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no alert for the purge while the queries ran: {v}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        runaways.iter().all(|t| !t.is_finished()),
        "the queries ended before detection answered ({found:?})"
    );
    eprintln!("purge alerted {found:?} after its ingest, with both SQL workers busy");
    // The runaway requests end when `_reap` kills the service (their threads report the
    // dropped connection).
}

#[test]
fn logs_cannot_be_forged_and_errors_name_requests_not_internals() {
    let dir = tempfile::tempdir().unwrap();
    let data = store(dir.path());
    let analyst = key(&data, "analyst", "hunter");
    let forged = "2026-12-02T00:00:00.000000Z  INFO kvwatch_api::server: api.call method=DELETE route=\"/api/v1/keys/admin\" key=root status=204";
    let sql = format!("SELECT 1 AS x /* \n{forged}\n */");

    for format in ["text", "json"] {
        let log = dir.path().join(format!("serve-{format}.log"));
        let (child, base) = start(&data, &["--log-format", format], &[], &log);
        let _reap = Reap(child.id());
        let (code, v) = post(
            &format!("{base}/api/v1/query"),
            &analyst,
            json!({ "sql": sql }),
        );
        assert_eq!(code, 200, "{v}");
        // A comment too, with a newline, through the triage trail.
        let alerts = get(&format!("{base}/api/v1/alerts?limit=1"), Some(&analyst)).1;
        let id = alerts["alerts"][0]["id"].as_str().unwrap().to_owned();
        let (code, _) = super::api::patch(
            &format!("{base}/api/v1/alerts/{id}"),
            &analyst,
            json!({"comment": format!("ok\n{forged}"), "status": "acknowledged"}),
        );
        assert_eq!(code, 200);
        std::thread::sleep(Duration::from_millis(300));
        let text = std::fs::read_to_string(&log).unwrap();
        for line in text.lines() {
            assert!(
                !line.starts_with("2026-12-02T00:00:00.000000Z"),
                "a forged line in the {format} log: {line}"
            );
            // Start-up notices for people ("serve: API on …") are the only plain lines.
            if format == "json" && !line.starts_with("serve: ") {
                let parsed: Result<Value, _> = serde_json::from_str(line);
                assert!(parsed.is_ok(), "not one JSON object per line: {line}");
            }
        }
        let logged = text
            .lines()
            .find(|l| l.contains("api.query") && l.contains("hunter"))
            .unwrap_or_else(|| panic!("the query was not logged:\n{text}"));
        assert!(logged.contains("\\n2026-12-02T00:00:00"), "{logged}");
    }

    // Error answers: JSON with a code and the request ID (also a header), never internals.
    let log = dir.path().join("serve-errors.log");
    let (child, base) = start(&data, &[], &[], &log);
    let _reap = Reap(child.id());
    for (path, status) in [
        ("/api/v1/nothing-here", 404),
        ("/api/v1/alerts?limit=many", 400),
        ("/api/v1/alerts/nope", 404),
    ] {
        let mut r = agent()
            .get(&format!("{base}{path}"))
            .header("Authorization", &format!("Bearer {analyst}"))
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let header = r
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(v["request_id"], header.as_str(), "{path}: {v}");
        assert!(
            v["error"].is_string() && v["code"].is_string(),
            "{path}: {v}"
        );
    }
    // A client's own request ID is kept when it is well-formed, replaced when it is not.
    let r = agent()
        .get(&format!("{base}/healthz"))
        .header("X-Request-Id", "trace-42")
        .call()
        .unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap(), "trace-42");
    let r = agent()
        .get(&format!("{base}/healthz"))
        .header("X-Request-Id", "bad id\twith tab")
        .call()
        .unwrap();
    assert_ne!(r.headers().get("x-request-id").unwrap(), "bad id\twith tab");
    // The bearer scheme is matched in any case.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let mut r = agent()
            .get(&format!("{base}/api/v1/alerts?limit=1"))
            .header("Authorization", &format!("{scheme} {analyst}"))
            .call()
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "{scheme}: {}",
            r.body_mut().read_to_string().unwrap()
        );
    }
    // Evidence names ingested files as the user named them, never by absolute path.
    let alerts = get(&format!("{base}/api/v1/alerts?limit=50"), Some(&analyst)).1;
    let with_events = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule_id"] != "kv-log-silence")
        .unwrap();
    let detail = get(
        &format!(
            "{base}/api/v1/alerts/{}",
            with_events["id"].as_str().unwrap()
        ),
        Some(&analyst),
    )
    .1;
    let events = detail["events"].as_array().unwrap();
    assert!(!events.is_empty(), "{detail}");
    for e in events {
        let source = e["source"].as_str().unwrap();
        assert!(source.starts_with("jsonl/"), "{source}");
    }
    // A store file damaged under a running service: the query fails with a 500 that names
    // the request, and the log holds the details under that ID; no path reaches the client.
    let part = std::fs::read_dir(data.join("events"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let file = std::fs::read_dir(&part)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4096] {
        *b = 0x55;
    }
    std::fs::write(&file, &bytes).unwrap();
    let (code, v) = post(
        &format!("{base}/api/v1/query"),
        &analyst,
        json!({"sql": "SELECT count(DISTINCT principal_id), max(request_uri) FROM events"}),
    );
    assert!(code == 500 || code == 400, "{code} {v}");
    let body = v.to_string();
    assert!(!body.contains(&data.display().to_string()), "{body}");
    assert!(!body.contains(".parquet"), "{body}");
    assert!(!body.to_lowercase().contains("bug report"), "{body}");
    if code == 500 {
        let id = v["request_id"].as_str().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.lines()
                .any(|l| l.contains(id) && l.contains("api.error")),
            "no log line names request {id}:\n{text}"
        );
    }
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    std::fs::create_dir_all(&data).unwrap();
    let log = dir.path().join("serve.log");
    let (child, base) = start(
        &data,
        &[],
        &[
            "--max-connections",
            "4",
            "--header-read-timeout-secs",
            "1",
            "--idle-timeout-secs",
            "2",
        ],
        &log,
    );
    let _reap = Reap(child.id());
    let addr = base.trim_start_matches("http://").to_owned();
    let closed_within = |s: &mut TcpStream, limit: Duration| -> bool {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 1024];
        let t0 = Instant::now();
        loop {
            match s.read(&mut buf) {
                Ok(0) => return t0.elapsed() <= limit,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    };
    // A header that never ends is cut off after the header-read timeout.
    let mut partial = TcpStream::connect(&addr).unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    assert!(closed_within(&mut partial, Duration::from_secs(4)));
    // A keep-alive connection that stays idle after its answer is closed too.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 64];
    let n = idle.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    assert!(closed_within(&mut idle, Duration::from_secs(5)));
    // Past the connection limit, a new connection gets a clear 503 at once.
    let hold: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut over = TcpStream::connect(&addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut answer = String::new();
    let _ = over.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    // Like every other error, the refusal carries a request ID, in its body and its header,
    // and the log line that records it names the same ID.
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let body: Value = serde_json::from_str(body).unwrap();
    let rid = body["request_id"].as_str().unwrap().to_owned();
    assert_eq!(rid.len(), 16, "{body}");
    assert!(head.contains(&format!("x-request-id: {rid}")), "{head}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("api.connection_refused_over_limit") && l.contains(&rid)),
        "{logged}"
    );
    // The held connections say nothing, so they are closed and the service takes new ones.
    drop(hold);
    std::thread::sleep(Duration::from_millis(300));
    assert!(healthy(&base));
}

/// Runs `cmd` inside the mount namespace of `pid` (the serve under test).
fn in_namespace(pid: u32, script: &str) -> std::process::Output {
    Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-U",
            "-m",
            "--preserve-credentials",
            "sh",
            "-c",
        ])
        .arg(script)
        .output()
        .unwrap()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kvwatch serve` in its own user and mount namespace, on a 64 MiB tmpfs at `mnt` holding a
/// copy of `seed`: a real filesystem that fills up and can be mounted read-only, without
/// privileges. With `read_only`, the filesystem is read-only before the service starts (a
/// filesystem cannot be remounted read-only while the service holds files open for writing).
#[allow(clippy::zombie_processes)]
fn serve_on_tmpfs(seed: &Path, mnt: &Path, log: &Path, read_only: bool) -> (Child, String) {
    std::fs::create_dir_all(mnt).unwrap();
    let ro = if read_only {
        "mount -o remount,ro \"$1\" && "
    } else {
        ""
    };
    let mut child = Command::new("unshare")
        .args(["-Urm", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=64m kvwatch-test \"$1\" && cp -a \"$2\"/. \"$1\"/ && {ro}\
             exec \"$3\" --data \"$1\" --log info serve --listen 127.0.0.1:0 --interval 3600 \
             --no-models --min-free-mb 1"
        ))
        .args(["sh"])
        .arg(mnt)
        .arg(seed)
        .arg(env!("CARGO_BIN_EXE_kvwatch"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let base = wait_for_url(&mut child, log);
    (child, base)
}

#[test]
fn a_full_or_read_only_disk_degrades_writes_and_keeps_reads() {
    let dir = tempfile::tempdir().unwrap();
    let seed = store(dir.path());
    let reader = key(&seed, "reader", "wall");
    let analyst = key(&seed, "analyst", "hunter");
    // Never used before the disk fails: the first request of a key must not need a write.
    let fresh = key(&seed, "reader", "fresh");
    let admin = key(&seed, "admin", "root");

    for (name, read_only) in [("full", false), ("read-only", true)] {
        let mnt = dir.path().join(format!("mnt-{name}"));
        let m = mnt.display().to_string();
        let log = dir.path().join(format!("serve-{name}.log"));
        let (child, base) = serve_on_tmpfs(&seed, &mnt, &log, read_only);
        let _reap = Reap(child.id());
        let pid = child.id();
        let ready = || get(&format!("{base}/readyz"), None);
        let alert_id = get(&format!("{base}/api/v1/alerts?limit=1"), Some(&reader)).1["alerts"][0]
            ["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let triage = |status: &str| {
            super::api::patch(
                &format!("{base}/api/v1/alerts/{alert_id}"),
                &analyst,
                json!({ "status": status }),
            )
        };
        let (break_it, fix_it, says) = if read_only {
            (None, format!("mount -o remount,rw {m}"), "read-only")
        } else {
            assert_eq!(ready().0, 200, "{:?}", ready().1);
            assert_eq!(triage("acknowledged").0, 200);
            (
                Some(format!(
                    "dd if=/dev/zero of={m}/filler bs=1M 2>/dev/null; sync; true"
                )),
                format!("rm -f {m}/filler"),
                "full",
            )
        };
        if let Some(cmd) = break_it {
            let out = in_namespace(pid, &cmd);
            assert!(out.status.success(), "{name}: {out:?}");
        }
        wait_until(
            &format!("/readyz turning not ready ({name})"),
            Duration::from_secs(15),
            || ready().0 == 503,
        );
        let (_, why) = ready();
        assert!(why.to_string().contains(says), "{name}: {why}");
        // Reads keep working, for keys used before and for one never used.
        for k in [&reader, &fresh] {
            let (code, v) = get(&format!("{base}/api/v1/alerts?limit=5"), Some(k));
            assert_eq!(code, 200, "{name}: {v}");
        }
        let (code, v) = get(&format!("{base}/api/v1/alerts/{alert_id}"), Some(&reader));
        assert_eq!(code, 200, "{name}: {v}");
        let (code, v) = post(
            &format!("{base}/api/v1/query"),
            &analyst,
            json!({"sql": "SELECT count(*) AS n FROM events"}),
        );
        assert_eq!(code, 200, "{name}: {v}");
        // Writes fail clearly.
        let (code, v) = triage("resolved");
        assert_eq!(
            (code, v["code"].as_str()),
            (503, Some("unavailable")),
            "{name}: {v}"
        );
        let keys = format!("{base}/api/v1/keys");
        let (code, v) = post(
            &keys,
            &admin,
            json!({"name": format!("new-{name}"), "role": "reader"}),
        );
        assert_eq!(code, 503, "{name}: {v}");
        assert!(healthy(&base));
        // And everything recovers by itself.
        let out = in_namespace(pid, &fix_it);
        assert!(out.status.success(), "{name}: {out:?}");
        wait_until(
            &format!("/readyz recovering ({name})"),
            Duration::from_secs(15),
            || ready().0 == 200,
        );
        let (code, v) = triage("acknowledged");
        assert_eq!(code, 200, "{name}: {v}");
        let (code, v) = post(
            &keys,
            &admin,
            json!({"name": format!("new-{name}"), "role": "reader"}),
        );
        assert_eq!(code, 201, "{name}: {v}");
        let new_key = v["key"].as_str().unwrap();
        assert_eq!(
            get(&format!("{base}/api/v1/alerts?limit=1"), Some(new_key)).0,
            200
        );
    }
}
