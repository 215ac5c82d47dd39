//! Kafka source and publisher against a real Kafka-compatible broker (tansu), started here.
//! `scripts/test.sh` installs the broker; `KVWATCH_TANSU` may point at another binary.
//!
//! Every scenario asserts exact row counts in the store, and that no event is stored twice.

use super::common::{bin, count, query};
use serde_json::Value;
use std::collections::HashSet;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tansu() -> PathBuf {
    if let Ok(p) = std::env::var("KVWATCH_TANSU") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/kvwatch/tansu/bin/tansu");
    assert!(
        p.exists(),
        "the tansu broker is not installed at {}: run scripts/test.sh (it installs it) or set KVWATCH_TANSU",
        p.display()
    );
    p
}

/// A scratch directory; kept (and named on stderr) when `KVWATCH_TEST_KEEP` is set, to read
/// the broker's and consumers' logs after a failure.
fn scratch() -> tempfile::TempDir {
    let mut d = tempfile::tempdir().unwrap();
    if std::env::var_os("KVWATCH_TEST_KEEP").is_some() {
        d.disable_cleanup(true);
        eprintln!("keeping {}", d.path().display());
    }
    d
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu broker on a private port; killed when dropped.
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    durable: bool,
}

impl Broker {
    fn start(dir: &Path, durable: bool) -> Broker {
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir: dir.to_owned(),
            durable,
        };
        b.launch();
        b
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let storage = if self.durable {
            // Relative to the working directory, which is the test's own directory.
            "sqlite://broker.db".to_owned()
        } else {
            "memory://tansu/".to_owned()
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        let child = Command::new(tansu())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &storage])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        wait_until(Duration::from_secs(30), "broker listening", || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://{}", self.addr()))
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A valid audit record, unique per (message, index).
fn record(m: usize, i: usize) -> String {
    let n = m * 1000 + i;
    format!(
        r#"{{"time":"2026-03-0{}T{:02}:{:02}:{:02}.{:07}Z","resourceId":"/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV-{}","operationName":"SecretGet","operationVersion":"7.4","category":"AuditEvent","resultType":"Success","resultSignature":"OK","durationMs":"3","callerIpAddress":"10.1.{}.{}","correlationId":"corr-{m}-{i}","identity":{{"claim":{{"oid":"oid-{}","appid":"app-{}"}}}},"properties":{{"id":"https://kv-{}.vault.azure.net/secrets/s{}/v1","clientInfo":"test","httpStatusCode":200,"requestUri":"https://kv-{}.vault.azure.net/secrets/s{}?api-version=7.4"}}}}"#,
        1 + (n / 86_400) % 5,
        (n / 3600) % 24,
        (n / 60) % 60,
        n % 60,
        n % 9_999_999,
        m % 7,
        m % 200,
        i % 250,
        m % 13,
        m % 13,
        m % 7,
        i,
        m % 7,
        i,
    )
}

/// Writes `messages` envelope lines of `k` records each, message numbers from `first`.
fn envelopes(path: &Path, first: usize, messages: usize, k: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for m in first..first + messages {
        let recs: Vec<String> = (0..k).map(|i| record(m, i)).collect();
        writeln!(f, r#"{{"records":[{}]}}"#, recs.join(",")).unwrap();
    }
}

/// Publishes with one message per produce batch: tansu 0.6.0 returns nothing for a fetch that
/// starts inside a multi-message batch, so a consumer resuming mid-batch would stall (real
/// Kafka and Event Hubs return the batch and the client skips the earlier records).
fn publish(broker: &Broker, topic: &str, args: &[&str], paths: &[&Path]) -> Value {
    let out = bin()
        .args([
            "publish",
            "--format",
            "json",
            "--brokers",
            &broker.addr(),
            "--topic",
            topic,
        ])
        .args(["-X", "batch.num.messages=1", "-X", "linger.ms=0"])
        .args(args)
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starts `kvwatch consume` with small batches so that crashes land between many commits.
fn consume(
    data: &Path,
    broker: &Broker,
    topic: &str,
    group: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let mut c = bin();
    c.arg("--data").arg(data);
    consume_with(
        c,
        &data.with_extension("log"),
        broker,
        topic,
        group,
        extra,
        env,
    )
}

/// [`consume`] with the data location already on `c`, logging to `log`.
fn consume_with(
    mut c: Command,
    log: &Path,
    broker: &Broker,
    topic: &str,
    group: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    c.args([
        "--log",
        "info",
        "consume",
        "--format",
        "json",
        "--brokers",
        &broker.addr(),
    ])
    .args(["--topic", topic, "--group", group])
    .args([
        "--batch-rows",
        "400",
        "--batch-linger-ms",
        "150",
        "--stats-interval-secs",
        "2",
    ])
    // Killed members must leave the group quickly for the next run to get partitions.
    .args([
        "-X",
        "session.timeout.ms=6000",
        "-X",
        "heartbeat.interval.ms=500",
    ])
    .args(["-X", "max.poll.interval.ms=10000"])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(log);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("spawn consume")
}

/// Partition assignments logged by the consumers of `data` so far.
fn assignments(data: &Path) -> usize {
    std::fs::read_to_string(data.with_extension("log"))
        .unwrap_or_default()
        .matches("partition assigned")
        .count()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// SIGTERM, then the JSON report the consumer prints on its way out.
fn stop(child: Child) -> Value {
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "consumer exit {:?}", out.status);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn rows(data: &Path, table: &str) -> i64 {
    if !data.join("manifest.json").exists() {
        return 0;
    }
    count(data, &format!("SELECT count(*) FROM {table}"))
}

fn event_ids(data: &Path) -> Vec<String> {
    query(data, "SELECT event_id FROM events")
        .into_iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Exactly `n` events, all distinct, each from a distinct Kafka position.
fn assert_exact(data: &Path, n: i64) {
    assert_eq!(rows(data, "events"), n);
    assert_eq!(
        count(data, "SELECT count(DISTINCT event_id) FROM events"),
        n
    );
    assert_eq!(count(data, "SELECT count(DISTINCT source) FROM events"), n);
    assert_eq!(
        count(
            data,
            "SELECT count(*) FROM events WHERE source NOT LIKE 'kafka:kv/%@%:1#%'"
        ),
        0
    );
}

#[test]
fn publish_then_consume_round_trips_generated_data() {
    let dir = scratch();
    let broker = Broker::start(dir.path(), false);
    broker.create_topic("kv", 4);
    let generated = super::common::generate(
        &dir.path().join("gen"),
        &["--format", "jsonl", "--days", "1", "--seed", "11"],
    );
    let logs = generated.join("jsonl");
    let p = publish(&broker, "kv", &["--message-kb", "256"], &[&logs]);
    assert!(p["messages"].as_u64().unwrap() > 4, "{p}");
    let reference = dir.path().join("ref");
    let rr = super::common::ingest(&reference, &[&logs]);
    let expected = rr["stored"]["events"].as_i64().unwrap();
    assert_eq!(
        p["records"].as_i64().unwrap(),
        rr["parsed"]["records"].as_i64().unwrap()
    );

    let data = dir.path().join("store");
    let c = consume(&data, &broker, "kv", "g1", &[], &[]);
    wait_until(Duration::from_secs(120), "all rows stored", || {
        rows(&data, "events") >= expected
    });
    let report = stop(c);
    assert_eq!(report["events"].as_i64().unwrap(), expected, "{report}");
    assert_eq!(report["duplicates"], 0);
    assert_eq!(
        report["positions"].as_object().unwrap().len(),
        4,
        "{report}"
    );
    let mut a = event_ids(&data);
    let mut b = event_ids(&reference);
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "the Kafka path stores exactly what file ingest stores"
    );
    assert_eq!(rows(&data, "quarantine"), rows(&reference, "quarantine"));

    // A restart reads nothing twice.
    let c = consume(&data, &broker, "kv", "g1", &[], &[]);
    std::thread::sleep(Duration::from_secs(4));
    let again = stop(c);
    assert_eq!(again["records"], 0, "{again}");
    assert_eq!(rows(&data, "events"), expected);
}

#[test]
fn crashes_at_every_point_neither_lose_nor_duplicate() {
    let dir = scratch();
    let broker = Broker::start(dir.path(), false);
    broker.create_topic("kv", 4);
    let (n, k) = (300, 20);
    let input = dir.path().join("in.jsonl");
    envelopes(&input, 0, n, k);
    let p = publish(&broker, "kv", &["--raw"], &[&input]);
    assert_eq!(p["messages"], n);
    let data = dir.path().join("store");
    let total = (n * k) as i64;

    // Deterministic crash points: after a batch is cut, between the Parquet files and the
    // manifest, and between the manifest and the Kafka commit.
    for point in [
        "kafka-before-write:2",
        "store-before-manifest:3",
        "kafka-after-checkpoint:2",
    ] {
        let c = consume(
            &data,
            &broker,
            "kv",
            "g",
            &[],
            &[("KVWATCH_TEST_CRASH", point)],
        );
        let out = c.wait_with_output().unwrap();
        assert!(!out.status.success(), "{point}: expected an abort");
        let stored = rows(&data, "events");
        assert!(stored < total, "{point}: {stored}");
        assert_eq!(stored % k as i64, 0, "{point}: whole messages only");
    }
    // Random SIGKILLs while consuming.
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _ in 0..4 {
        let before = assignments(&data);
        let c = consume(&data, &broker, "kv", "g", &[], &[]);
        wait_until(Duration::from_secs(60), "partitions assigned", || {
            assignments(&data) > before
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 700));
        signal(&c, "KILL");
        let _ = c.wait_with_output();
    }
    let c = consume(&data, &broker, "kv", "g", &[], &[]);
    wait_until(Duration::from_secs(120), "all rows stored", || {
        rows(&data, "events") >= total
    });
    std::thread::sleep(Duration::from_millis(500));
    let report = stop(c);
    // Started from the store's positions: nothing re-read, nothing de-duplicated.
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_exact(&data, total);
    let positions: i64 = report["positions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(
        positions, n as i64,
        "positions cover every message once: {report}"
    );
}

#[test]
fn broker_restart_mid_stream_loses_nothing() {
    let dir = scratch();
    let mut broker = Broker::start(dir.path(), true);
    broker.create_topic("kv", 4);
    let (n, k) = (200, 10);
    let first = dir.path().join("a.jsonl");
    let second = dir.path().join("b.jsonl");
    envelopes(&first, 0, n, k);
    envelopes(&second, n, n, k);
    publish(&broker, "kv", &["--raw"], &[&first]);
    let data = dir.path().join("store");
    let c = consume(&data, &broker, "kv", "g", &[], &[]);
    wait_until(Duration::from_secs(60), "first half", || {
        rows(&data, "events") >= (n * k) as i64
    });
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    broker.launch();
    publish(&broker, "kv", &["--raw"], &[&second]);
    let total = (2 * n * k) as i64;
    wait_until(
        Duration::from_secs(120),
        "second half after the restart",
        || rows(&data, "events") >= total,
    );
    std::thread::sleep(Duration::from_millis(500));
    let report = stop(c);
    assert_exact(&data, total);
    assert_eq!(report["duplicates"], 0, "{report}");
}

#[test]
fn two_consumers_split_partitions_and_one_takes_over() {
    let dir = scratch();
    let broker = Broker::start(dir.path(), false);
    broker.create_topic("kv", 4);
    let (n, k) = (200, 10);
    let first = dir.path().join("a.jsonl");
    let second = dir.path().join("b.jsonl");
    envelopes(&first, 0, n, k);
    envelopes(&second, n, n, k);
    let da = dir.path().join("node-a");
    let db = dir.path().join("node-b");
    let a = consume(&da, &broker, "kv", "shared", &[], &[]);
    let b = consume(&db, &broker, "kv", "shared", &[], &[]);
    // Both members in the group before data arrives, so the split is visible.
    wait_until(Duration::from_secs(60), "both consumers assigned", || {
        assignments(&da) > 0 && assignments(&db) > 0
    });
    publish(&broker, "kv", &["--raw"], &[&first]);
    let half = (n * k) as i64;
    wait_until(Duration::from_secs(60), "first half", || {
        rows(&da, "events") + rows(&db, "events") >= half
    });
    let ra = stop(a);
    let a_parts = ra["positions"].as_object().unwrap().len();
    assert!(a_parts > 0 && a_parts < 4, "A held part of the topic: {ra}");
    publish(&broker, "kv", &["--raw"], &[&second]);
    let total = 2 * half;
    wait_until(Duration::from_secs(120), "B takes over", || {
        rows(&da, "events") + rows(&db, "events") >= total
    });
    std::thread::sleep(Duration::from_millis(500));
    let rb = stop(b);
    assert_eq!(rb["positions"].as_object().unwrap().len(), 4, "{rb}");
    let ia: HashSet<String> = event_ids(&da).into_iter().collect();
    let ib: HashSet<String> = event_ids(&db).into_iter().collect();
    assert!(ia.is_disjoint(&ib), "an event stored by both nodes");
    assert_eq!((ia.len() + ib.len()) as i64, total);
    assert_eq!(rows(&da, "events") + rows(&db, "events"), total);
}

#[test]
fn poison_messages_are_quarantined_with_offsets_and_dead_lettered() {
    let dir = scratch();
    let broker = Broker::start(dir.path(), false);
    broker.create_topic("kv", 2);
    broker.create_topic("kv-dead", 1);
    let input = dir.path().join("mixed.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    let k = 5;
    let mut good = 0;
    let poison = [
        "{\"records\": [ {\"time\": \"2026-01-01T00:00:00Z\"", // truncated
        "not json at all",
        "42",
        "\"just a string\"",
        &format!("{{\"records\":[{}]}}", "x".repeat(10)),
        &format!(
            "{{\"records\":[{}]}}",
            (0..40)
                .map(|i| record(9000, i))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ];
    for m in 0..60 {
        let recs: Vec<String> = (0..k).map(|i| record(m, i)).collect();
        writeln!(f, r#"{{"records":[{}]}}"#, recs.join(",")).unwrap();
        good += k;
        if m % 10 == 3 {
            writeln!(f, "{}", poison[m / 10]).unwrap();
        }
    }
    drop(f);
    let p = publish(&broker, "kv", &["--raw"], &[&input]);
    assert_eq!(p["messages"], 66);
    let data = dir.path().join("store");
    // 8 KiB limit: the 40-record envelope is oversized.
    let c = consume(
        &data,
        &broker,
        "kv",
        "g",
        &["--max-message-kb", "8", "--dead-letter-topic", "kv-dead"],
        &[],
    );
    wait_until(Duration::from_secs(60), "good rows and poison", || {
        rows(&data, "events") >= good as i64 && rows(&data, "quarantine") >= 6
    });
    std::thread::sleep(Duration::from_millis(500));
    let report = stop(c);
    assert_eq!(rows(&data, "events"), good as i64);
    assert_eq!(report["dead_lettered"], 6, "{report}");
    let q = query(
        &data,
        "SELECT source, reason FROM quarantine ORDER BY source",
    );
    assert_eq!(q.len(), 6, "{q:?}");
    for r in &q {
        let s = r["source"].as_str().unwrap();
        assert!(s.starts_with("kafka:kv/") && s.contains('@'), "{s}");
    }
    let reasons: Vec<&str> = q.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("oversized message")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("truncated JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("invalid JSON")),
        "{reasons:?}"
    );

    // The dead-letter topic holds the six messages verbatim: consuming it quarantines them again.
    let dead = dir.path().join("dead");
    let c = consume(
        &dead,
        &broker,
        "kv-dead",
        "g-dead",
        &["--max-message-kb", "8"],
        &[],
    );
    wait_until(Duration::from_secs(60), "dead letters", || {
        rows(&dead, "quarantine") >= 6
    });
    stop(c);
    assert_eq!(rows(&dead, "quarantine"), 6);
    assert_eq!(rows(&dead, "events"), 0);
}

#[test]
fn serve_consumes_and_detects_until_stopped() {
    let dir = scratch();
    let broker = Broker::start(dir.path(), false);
    broker.create_topic("kv", 2);
    let generated = super::common::generate(
        &dir.path().join("gen"),
        &["--format", "jsonl", "--days", "1", "--seed", "3"],
    );
    let reference = dir.path().join("ref");
    let expected =
        super::common::ingest(&reference, &[&generated.join("jsonl")])["stored"]["events"]
            .as_i64()
            .unwrap();
    let data = dir.path().join("store");
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    // Started before anything is published: detection waits for the store to appear.
    let serve = bin()
        .arg("--data")
        .arg(&data)
        .args([
            "--log",
            "info",
            "serve",
            "--brokers",
            &broker.addr(),
            "--topic",
            "kv",
        ])
        .args(["--interval", "1", "--no-models", "--batch-linger-ms", "200"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    publish(&broker, "kv", &[], &[&generated.join("jsonl")]);
    let alerts = || -> Vec<Value> {
        let out = bin()
            .arg("--data")
            .arg(&data)
            .args(["alerts", "--format", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(120),
        "alerts from the consumed stream",
        // Detection passes run while batches arrive; wait for one that saw the whole day.
        || {
            rows(&data, "events") >= expected
                && alerts()
                    .iter()
                    .map(|a| a["rule_id"].as_str().unwrap_or_default().to_owned())
                    .collect::<HashSet<_>>()
                    .len()
                    >= 3
        },
    );
    signal(&serve, "TERM");
    let out = serve.wait_with_output().unwrap();
    assert!(out.status.success(), "serve exit {:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("detect:") && stdout.contains("new alerts"),
        "{stdout}"
    );
    assert!(stdout.contains("kvwatch consume"), "{stdout}");
    assert_eq!(rows(&data, "events"), expected);
    let rules: HashSet<String> = alerts()
        .iter()
        .map(|a| a["rule_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        rules.len() >= 3,
        "several rules fired on the streamed attacks: {rules:?}"
    );
}

#[test]
fn demo_runs_through_kafka() {
    let dir = scratch();
    let broker = Broker::start(dir.path(), false);
    broker.create_topic("demo", 4);
    let data = dir.path().join("store");
    let out = bin()
        .arg("--data")
        .arg(&data)
        .args([
            "demo",
            "--days",
            "2",
            "--brokers",
            &broker.addr(),
            "--topic",
            "demo",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Detection quality"), "{stdout}");
    let labels: Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-labels.json")).unwrap()).unwrap();
    assert!(labels.is_object() || labels.is_array());
    // Every generated record arrived: the store matches a file ingest of the same seed.
    let reference = dir.path().join("ref");
    let generated = super::common::generate(&dir.path().join("gen"), &["--days", "2"]);
    let rr = super::common::ingest(&reference, &[&generated]);
    let expected = rr["stored"]["events"].as_i64().unwrap();
    assert_eq!(rows(&data, "events"), expected);
    assert_eq!(
        rows(&data, "activity"),
        rr["stored"]["activity"].as_i64().unwrap()
    );
}

/// The SOC's mode: `serve` consuming a topic while days of logs are published one at a time.
/// Once every partition has gone idle (so the watermark reaches the last record), the alerts
/// are exactly those of a batch `ingest` + `detect` of the same files, IDs and contents; no
/// vault that kept logging is called silent on the way.
#[test]
fn streamed_days_give_the_alerts_of_a_batch_run() {
    use super::continuous::{alert_set, diff};
    let dir = scratch();
    let broker = Broker::start(dir.path(), false);
    broker.create_topic("kv", 3);
    let generated = super::common::generate(
        &dir.path().join("gen"),
        &["--format", "jsonl", "--days", "3", "--seed", "11"],
    );
    let mut days: Vec<PathBuf> = std::fs::read_dir(generated.join("jsonl"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    days.sort();
    // The batch run, a day per ingest; events stored after each day, to know when the
    // stream has caught up.
    let reference = dir.path().join("ref");
    let mut stored = Vec::new();
    for d in &days {
        super::common::ingest(&reference, &[d]);
        stored.push(rows(&reference, "events"));
    }
    let r = super::common::run(&reference, &["detect", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want = alert_set(&reference);
    assert!(want.len() >= 5, "{want:?}");

    let data = dir.path().join("store");
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    // The silence rule runs every 5 minutes by default; a deployment may run it more often.
    let config = dir.path().join("kvwatch.toml");
    std::fs::write(&config, "[rules.kv-log-silence]\ninterval = \"1s\"\n").unwrap();
    let serve = bin()
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .args(["--log", "info", "serve", "--brokers", &broker.addr()])
        .args(["--topic", "kv", "--batch-linger-ms", "200"])
        // Partitions go idle quickly here, so the watermark catches up within the test; not
        // so quickly that a publisher or consumer starved by the suite's other tests on two
        // cores looks idle for a moment: the watermark would pass hours that partition still
        // holds, and the models would judge them without it (one CI run saw it at 3 s).
        .args(["--idle-source-secs", "10", "--interval", "1"])
        // Fresh lag statistics: a partition with records waiting is never idle.
        .args(["--stats-interval-secs", "1"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut silent = HashSet::new();
    for (d, &expected) in days.iter().zip(&stored) {
        publish(&broker, "kv", &[], &[d]);
        // Generous: the suite runs this beside the browser tests on two cores.
        wait_until(Duration::from_secs(300), "the day stored", || {
            rows(&data, "events") >= expected
        });
        // Mid-stream, with partitions at different places: no vault that kept logging may
        // be called silent.
        silent.extend(super::continuous::wrongly_silent(
            &alert_set(&data),
            &generated,
        ));
    }
    let start = Instant::now();
    let mut got = alert_set(&data);
    while got != want && start.elapsed() < Duration::from_secs(180) {
        std::thread::sleep(Duration::from_millis(500));
        got = alert_set(&data);
    }
    signal(&serve, "TERM");
    let out = serve.wait_with_output().unwrap();
    assert!(out.status.success(), "serve exit {:?}", out.status);
    assert!(silent.is_empty(), "silence raised mid-stream: {silent:?}");
    assert!(got == want, "streamed vs batch:\n{}", diff(&want, &got));

    // `eval` on the streamed store: every attack caught by an alert about its actor has a
    // wall-clock time to detect, from its first record reaching the store to its first alert
    // being raised. (An attack whose records were swallowed by another attack's silence
    // is matched only by the vault's silence alert, and has no arrival.)
    let labels = generated.join("labels.json");
    let e = super::common::run(
        &data,
        &[
            "eval",
            "--labels",
            labels.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(e.code, 0, "{}", e.stderr);
    let e: serde_json::Value = serde_json::from_str(&e.stdout).unwrap();
    let detected: Vec<&serde_json::Value> = e["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h[1] != "kv-log-silence")
        })
        .collect();
    assert!(!detected.is_empty(), "{e}");
    for a in &detected {
        let w = a["wall_time_to_detect_secs"].as_f64();
        assert!(w.is_some_and(|w| w >= 0.0), "{a}");
    }
    assert!(
        e["median_wall_time_to_detect_secs"].as_f64().is_some(),
        "{e}"
    );
}

/// Consumers of one group write one shared store in Azurite. Members die and come back:
/// member 1 aborts right after its first store commit, before any Kafka commit (the batch its
/// partitions' next owner used to read again into its own store), and is replaced by a node
/// with an empty disk; the last member is SIGKILLed mid-stream and restarted. The store ends
/// with exactly the published events.
///
/// Each dead member is restarted only once the coordinator has expired it (a survivor's
/// rebalance shows it). tansu 0.6.0 expires a dead member without starting a new generation,
/// so its partitions stay with nobody until a member joins; a member that joins *before* the
/// expiry is assigned beside the dead one and the same happens. The join after the expiry
/// starts the generation that hands every partition out.
#[test]
fn two_consumers_write_one_shared_store_through_kills() {
    consumers_write_one_shared_store_through_kills(2);
}

#[test]
fn three_consumers_write_one_shared_store_through_kills() {
    consumers_write_one_shared_store_through_kills(3);
}

/// One store in Azurite written by consumers of topic `kv`, and read by a node of its own.
struct SharedStore<'a> {
    az: &'a crate::azurite::Azurite,
    url: &'a str,
    broker: &'a Broker,
    reader: PathBuf,
}

impl SharedStore<'_> {
    /// A consumer in `group` whose state (and log, beside it) is `disk`.
    fn member(&self, disk: &Path, group: &str, env: &[(&str, &str)]) -> Child {
        consume_with(
            crate::objstore::remote(self.az, self.url, disk),
            &disk.with_extension("log"),
            self.broker,
            "kv",
            group,
            &[],
            env,
        )
    }

    /// The `n` column of a one-row query.
    fn count(&self, sql: &str) -> i64 {
        crate::objstore::remote_query(self.az, self.url, &self.reader, sql)[0]["n"]
            .as_i64()
            .unwrap()
    }

    /// Events stored so far; zero until the first commit makes a store.
    fn stored(&self) -> i64 {
        let out = crate::objstore::remote(self.az, self.url, &self.reader)
            .args([
                "query",
                "--format",
                "json",
                "SELECT count(*) AS n FROM events",
            ])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).map_or(0, |v| v[0]["n"].as_i64().unwrap_or(0))
    }
}

/// Two consumers that do not share a group (or two owners of one partition while a group
/// settles) write one store: the one whose commit comes second finds its messages already
/// stored, drops its batch and reads on from the store's position, without stopping. The
/// store ends with each event once.
#[test]
fn a_batch_another_writer_stored_first_is_read_again_from_the_store() {
    use crate::azurite::Azurite;
    let dir = scratch();
    let broker = Broker::start(dir.path(), false);
    broker.create_topic("kv", 1);
    let az = Azurite::start(dir.path());
    az.create_container("kvfence");
    let url = "az://kvfence/store";
    let (n, k) = (200, 5);
    let total = (n * k) as i64;
    let input = dir.path().join("in.jsonl");
    envelopes(&input, 0, n, k);
    publish(&broker, "kv", &["--raw"], &[&input]);
    let store = SharedStore {
        az: &az,
        url,
        broker: &broker,
        reader: dir.path().join("reader"),
    };
    let start = |name: &str, group: &str, env: &[(&str, &str)]| {
        store.member(&dir.path().join(name), group, env)
    };
    // `slow` reads the partition from its start but holds every commit for 6 s, so `fast`,
    // started once `slow` has read the store's (empty) positions, stores first.
    let slow = start(
        "slow",
        "g-slow",
        &[("KVWATCH_TEST_PAUSE", "store-before-manifest:6000")],
    );
    wait_until(Duration::from_secs(60), "slow assigned", || {
        assignments(&dir.path().join("slow")) > 0
    });
    let fast = start("fast", "g-fast", &[]);
    wait_until(Duration::from_secs(120), "everything stored", || {
        store.stored() >= total
    });
    wait_until(
        Duration::from_secs(60),
        "slow re-read from the store",
        || {
            std::fs::read_to_string(dir.path().join("slow.log"))
                .unwrap_or_default()
                .contains("partition re-read from the store's position")
        },
    );
    let (slow, fast) = (stop(slow), stop(fast));
    assert!(slow["fenced_batches"].as_u64().unwrap() >= 1, "{slow}");
    assert_eq!(fast["fenced_batches"], 0, "{fast}");
    assert_eq!(store.count("SELECT count(*) AS n FROM events"), total);
    assert_eq!(
        store.count("SELECT count(DISTINCT event_id) AS n FROM events"),
        total
    );
}

fn consumers_write_one_shared_store_through_kills(members_n: usize) {
    use crate::azurite::Azurite;
    let dir = scratch();
    let broker = Broker::start(dir.path(), false);
    broker.create_topic("kv", 6);
    let az = Azurite::start(dir.path());
    az.create_container("kvgroup");
    let url = "az://kvgroup/store";
    let (n, k) = (300, 10);
    let total = (n * k) as i64;
    let (first, second) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    envelopes(&first, 0, n / 2, k);
    envelopes(&second, n / 2, n / 2, k);
    let mut disks: Vec<PathBuf> = (0..members_n)
        .map(|i| dir.path().join(format!("node-{i}")))
        .collect();
    let store = SharedStore {
        az: &az,
        url,
        broker: &broker,
        reader: dir.path().join("reader"),
    };
    let start = |disk: &Path, env: &[(&str, &str)]| store.member(disk, "shared", env);
    let stored = || store.stored();
    // Waits until a survivor of member `dead` has been through a rebalance since `before`,
    // or for three session timeouts (a member the coordinator had not counted yet is never
    // expired, so there is nothing to see).
    let expired = |disks: &[PathBuf], dead: usize, before: &[usize]| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(18)
            && (0..members_n).all(|i| i == dead || assignments(&disks[i]) <= before[i])
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let counts = |disks: &[PathBuf]| disks.iter().map(|d| assignments(d)).collect::<Vec<_>>();
    let crash = [("KVWATCH_TEST_CRASH", "kafka-after-checkpoint:1")];
    let mut members: Vec<Child> = (0..members_n)
        .map(|i| start(&disks[i], if i == 1 { &crash[..] } else { &[] }))
        .collect();
    wait_until(Duration::from_secs(60), "every member assigned", || {
        disks.iter().all(|d| assignments(d) > 0)
    });
    let before = counts(&disks);
    publish(&broker, "kv", &["--raw"], &[&first]);
    let status = members[1].wait().unwrap();
    assert!(!status.success(), "member 1 should have crashed");
    expired(&disks, 1, &before);
    // Its replacement has no local state: only the shared manifest says where its
    // partitions stand (ahead of the group's committed offsets).
    disks[1] = dir.path().join("node-1-replacement");
    members[1] = start(&disks[1], &[]);
    wait_until(Duration::from_secs(240), "the first half stored", || {
        stored() >= total / 2
    });
    publish(&broker, "kv", &["--raw"], &[&second]);
    wait_until(Duration::from_secs(240), "more stored", || {
        stored() > total / 2
    });
    let last = members_n - 1;
    let before = counts(&disks);
    signal(&members[last], "KILL");
    let _ = members[last].wait();
    expired(&disks, last, &before);
    members[last] = start(&disks[last], &[]);
    wait_until(Duration::from_secs(300), "everything stored", || {
        stored() >= total
    });
    std::thread::sleep(Duration::from_millis(1500));
    for m in members {
        stop(m);
    }
    let q = |sql: &str| store.count(sql);
    assert_eq!(q("SELECT count(*) AS n FROM events"), total);
    assert_eq!(q("SELECT count(DISTINCT event_id) AS n FROM events"), total);
    assert_eq!(q("SELECT count(DISTINCT source) AS n FROM events"), total);
}
