//! SIEM forwarding against real peers started here: an HTTP server that behaves like the Logs
//! Ingestion API (with its Entra ID token endpoint), Splunk HEC (with indexer acks) and a
//! webhook receiver that checks HMAC signatures; and syslog receivers over TCP, TLS and UDP.
//! The peers answer with 500, 429 + Retry-After, 401, 403, 413 and slow responses, and
//! `serve` is killed with SIGKILL in the middle of a delivery, then restarted.

use super::api::{Reap, get, key, patch, post, serve_with};
use super::common::run;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the HTTP peer answers to the next data request of one sink.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    Status(u16),
    RetryAfter(u16, u64),
    /// Answer 200 after this long (and raise `slow_started`).
    Slow(u64),
}

/// One data request the peer answered.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    status: u16,
    ids: Vec<String>,
    bytes: usize,
}

#[derive(Default)]
pub(crate) struct Sink {
    pub(crate) script: Mutex<VecDeque<Step>>,
    pub(crate) seen: Mutex<Vec<Seen>>,
}

#[derive(Default)]
pub(crate) struct Peer {
    hec: Sink,
    sentinel: Sink,
    pub(crate) webhook: Sink,
    tokens_issued: AtomicU64,
    pub(crate) slow_started: AtomicBool,
    bad_signatures: AtomicU64,
    acks: AtomicU64,
    /// Alert statuses seen by the webhook, by ID (latest wins).
    pub(crate) webhook_status: Mutex<std::collections::HashMap<String, String>>,
}

pub(crate) const HMAC_KEY: &str = "whsec-test-0123";

fn hmac_hex(parts: &[&[u8]]) -> String {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let key = PKey::hmac(HMAC_KEY.as_bytes()).unwrap();
    let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
    for p in parts {
        s.update(p).unwrap();
    }
    s.sign_to_vec()
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn handle(State(p): State<Arc<Peer>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if path.ends_with("/oauth2/v2.0/token") {
        let form = String::from_utf8_lossy(&body);
        if !form.contains("client_secret=s3cret") || !form.contains("grant_type=client_credentials")
        {
            return (StatusCode::UNAUTHORIZED, "bad client").into_response();
        }
        let n = p.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
        return axum::Json(
            json!({"access_token": format!("tok-{n}"), "expires_in": 3600, "token_type": "Bearer"}),
        )
        .into_response();
    }
    if path == "/hec/services/collector/ack" {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let mut acks = serde_json::Map::new();
        for id in v["acks"].as_array().into_iter().flatten() {
            acks.insert(id.to_string(), json!(true));
        }
        p.acks.fetch_add(1, Ordering::SeqCst);
        return axum::Json(json!({ "acks": acks })).into_response();
    }
    let (sink, ids): (&Sink, Vec<String>) = if path == "/hec/services/collector/event" {
        if header("authorization") != "Splunk hec-token-1" {
            return (StatusCode::FORBIDDEN, "invalid token").into_response();
        }
        let ids = String::from_utf8_lossy(&body)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("one HEC event per line");
                assert_eq!(v["sourcetype"], "kvwatch:alert");
                v["event"]["id"].as_str().unwrap().to_owned()
            })
            .collect();
        (&p.hec, ids)
    } else if path
        .starts_with("/sentinel/dataCollectionRules/dcr-1/streams/Custom-KvwatchAlerts_CL")
    {
        assert_eq!(uri.query(), Some("api-version=2023-01-01"));
        let latest = p.tokens_issued.load(Ordering::SeqCst);
        if header("authorization") != format!("Bearer tok-{latest}") {
            return (StatusCode::UNAUTHORIZED, "token expired").into_response();
        }
        let rows: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
        let ids = rows
            .iter()
            .map(|r| {
                assert!(r["TimeGenerated"].is_string(), "{r}");
                r["AlertId"].as_str().unwrap().to_owned()
            })
            .collect();
        (&p.sentinel, ids)
    } else if path == "/webhook" {
        let sig = header("x-kvwatch-signature");
        let ts = header("x-kvwatch-timestamp");
        if sig != format!("sha256={}", hmac_hex(&[ts.as_bytes(), b".", &body])) {
            p.bad_signatures.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
        }
        let v: Value = serde_json::from_slice(&body).unwrap();
        let alerts = v["alerts"].as_array().unwrap();
        if alerts.len() > 3 {
            // A receiver with a small body limit: kvwatch must split, not give up.
            p.webhook.seen.lock().unwrap().push(Seen {
                status: 413,
                ids: Vec::new(),
                bytes: body.len(),
            });
            return (StatusCode::PAYLOAD_TOO_LARGE, "too big").into_response();
        }
        let mut st = p.webhook_status.lock().unwrap();
        for a in alerts {
            st.insert(
                a["id"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            );
        }
        (
            &p.webhook,
            alerts
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_owned())
                .collect(),
        )
    } else {
        return (StatusCode::NOT_FOUND, "no such endpoint").into_response();
    };
    let step = sink.script.lock().unwrap().pop_front();
    let ok = if path.starts_with("/sentinel") {
        204
    } else {
        200
    };
    let (status, retry_after) = match step {
        None => (ok, None),
        Some(Step::Status(s)) => (s, None),
        Some(Step::RetryAfter(s, secs)) => (s, Some(secs)),
        Some(Step::Slow(ms)) => {
            p.slow_started.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (ok, None)
        }
    };
    sink.seen.lock().unwrap().push(Seen {
        status,
        ids,
        bytes: body.len(),
    });
    let mut resp = if path.starts_with("/hec") && status == 200 {
        axum::Json(json!({"text": "Success", "code": 0, "ackId": sink.seen.lock().unwrap().len()}))
            .into_response()
    } else {
        "".into_response()
    };
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert("retry-after", s.to_string().parse().unwrap());
    }
    resp
}

/// Starts the HTTP peer on its own runtime; returns its base URL.
pub(crate) fn start_http_peer(peer: Arc<Peer>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(handle).with_state(peer);
            axum::serve(l, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}

/// Syslog lines received, per transport.
type Lines = Arc<Mutex<Vec<String>>>;

/// Reads RFC 6587 octet-counted frames until the connection closes.
fn read_frames(mut r: impl BufRead, out: &Lines) {
    loop {
        let mut len = Vec::new();
        match r.read_until(b' ', &mut len) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Ok(n) = std::str::from_utf8(&len[..len.len() - 1])
            .unwrap_or("x")
            .parse::<usize>()
        else {
            panic!("bad octet count {:?}", String::from_utf8_lossy(&len));
        };
        let mut msg = vec![0; n];
        if r.read_exact(&mut msg).is_err() {
            return;
        }
        out.lock()
            .unwrap()
            .push(String::from_utf8(msg).expect("UTF-8 syslog"));
    }
}

fn start_tcp_syslog(out: Lines) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let out = out.clone();
            std::thread::spawn(move || read_frames(BufReader::new(conn), &out));
        }
    });
    port
}

fn start_udp_syslog(out: Lines) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = s.recv(&mut buf) {
            out.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    port
}

/// A self-signed certificate for 127.0.0.1, written as PEM to `dir/ca.pem`.
fn tls_acceptor(dir: &Path) -> openssl::ssl::SslAcceptor {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::ssl::{SslAcceptor, SslMethod};
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509Builder, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "kvwatch-test-syslog")
        .unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    std::fs::write(dir.join("ca.pem"), cert.to_pem().unwrap()).unwrap();
    let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    a.set_private_key(&key).unwrap();
    a.set_certificate(&cert).unwrap();
    a.build()
}

fn start_tls_syslog(out: Lines, dir: &Path) -> u16 {
    let acceptor = Arc::new(tls_acceptor(dir));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let (out, acceptor) = (out.clone(), acceptor.clone());
            std::thread::spawn(move || {
                if let Ok(s) = acceptor.accept(conn) {
                    read_frames(BufReader::new(s), &out);
                }
            });
        }
    });
    port
}

/// Splits a CEF record into its 8 header fields and extension pairs, honouring escapes;
/// panics on anything malformed.
fn parse_cef(line: &str) -> (Vec<String>, Vec<(String, String)>) {
    let start = line.find("CEF:0|").expect("a CEF payload");
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = line[start..].chars();
    while header.len() < 7 {
        match chars.next().expect("8 header fields") {
            '\\' => cur.push(chars.next().expect("escaped char")),
            '|' => header.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let ext: String = chars.collect();
    header.push(String::new());
    // Extension: `key=value` pairs; an unescaped `=` only ever follows a key.
    let mut pairs = Vec::new();
    let tokens: Vec<&str> = ext.split(' ').collect();
    let mut i = 0;
    while i < tokens.len() {
        let (k, v) = tokens[i].split_once('=').expect("key=value");
        let mut value = v.to_owned();
        i += 1;
        while i < tokens.len() && !is_key_start(tokens[i]) {
            value.push(' ');
            value.push_str(tokens[i]);
            i += 1;
        }
        let mut unescaped = String::new();
        let mut it = value.chars();
        while let Some(c) = it.next() {
            match c {
                '\\' => match it.next().expect("escaped char") {
                    'n' => unescaped.push('\n'),
                    'r' => unescaped.push('\r'),
                    c @ ('\\' | '=') => unescaped.push(c),
                    c => panic!("bad escape \\{c} in {line}"),
                },
                '=' => panic!("unescaped '=' in a value of {k}: {line}"),
                c => unescaped.push(c),
            }
        }
        pairs.push((k.to_owned(), unescaped));
    }
    (header, pairs)
}

fn is_key_start(tok: &str) -> bool {
    tok.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()) && !k.contains('\\')
    })
}

/// IDs of the alerts in 2xx answers of `sink` from request `from` on.
pub(crate) fn accepted(sink: &Sink, from: usize) -> Vec<String> {
    sink.seen.lock().unwrap()[from..]
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .flat_map(|s| s.ids.clone())
        .collect()
}

pub(crate) fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scenario's store (a copy of the shared two-day store), its alerts, and a config file
/// holding `sinks` (TOML `[[sinks]]` tables).
struct Setup {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    all: Vec<Value>,
    ids: HashSet<String>,
    config: std::path::PathBuf,
}

fn setup(sinks: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = super::fixture::store(dir.path(), 2, 11);
    let all: Vec<Value> =
        serde_json::from_str(&run(&data, &["alerts", "--format", "json"]).stdout).unwrap();
    let ids: HashSet<String> = all
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.len() >= 8, "{} alerts", ids.len());
    let config = dir.path().join("kvwatch.toml");
    std::fs::write(&config, sinks).unwrap();
    Setup {
        dir,
        data,
        all,
        ids,
        config,
    }
}

impl Setup {
    fn serve(&self, log: &str) -> (std::process::Child, String, Reap) {
        let global = ["--config", self.config.to_str().unwrap()];
        let (child, url) = serve_with(&self.data, &global, log);
        let reap = Reap(child.id());
        (child, url, reap)
    }

    /// Waits until every sink has nothing left to deliver.
    fn wait_caught_up(&self, url: &str, reader: &str, secs: u64) -> Vec<Value> {
        let sinks = || -> Vec<Value> {
            let (code, v) = get(&format!("{url}/api/v1/sinks"), Some(reader));
            assert_eq!(code, 200, "{v}");
            v.as_array().unwrap().clone()
        };
        wait_until("every sink to catch up", secs, || {
            sinks().iter().all(|s| s["lag"] == 0)
        });
        sinks()
    }

    /// Stops the service with SIGTERM and returns its logs (every `serve-*.log`).
    fn stop(&self, mut child: std::process::Child) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        let mut log = String::new();
        for e in std::fs::read_dir(&self.data).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("serve-") {
                log += &std::fs::read_to_string(e.path()).unwrap();
            }
        }
        assert!(status.success(), "{status:?}: {log}");
        log
    }

    fn missing(&self, got: impl IntoIterator<Item = String>) -> Vec<String> {
        let got: HashSet<String> = got.into_iter().collect();
        self.ids.difference(&got).cloned().collect()
    }
}

#[test]
fn hec_keeps_every_alert_through_errors_a_kill_mid_batch_and_dead_letters() {
    let peer = Arc::new(Peer::default());
    peer.hec.script.lock().unwrap().extend([
        Step::Status(500),
        Step::RetryAfter(429, 1),
        Step::Slow(4000),
        // After the restart: the batch that was in flight is refused for good.
        Step::Status(403),
    ]);
    let base = start_http_peer(peer.clone());
    // SAFETY: set before the child processes that read it are spawned; tests in this binary
    // do not read it.
    unsafe { std::env::set_var("KVWATCH_TEST_HEC_TOKEN", "hec-token-1") };
    let s = setup(&format!(
        r#"
[[sinks]]
name = "hec"
type = "splunk_hec"
url = "{base}/hec"
token = "${{env:KVWATCH_TEST_HEC_TOKEN}}"
ack = true
batch_size = 3
max_backoff_secs = 1
"#
    ));

    // First run: killed while HEC holds a batch open.
    let (mut first, _, _reap_first) = s.serve("serve-1.log");
    wait_until("the slow HEC answer", 60, || {
        peer.slow_started.load(Ordering::SeqCst)
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let hec_before = peer.hec.seen.lock().unwrap().len();

    // Second run resumes from the durable cursor.
    let (second, url, _reap_second) = s.serve("serve-2.log");
    let reader = key(&s.data, "reader", "soc-reader");
    let listed = s.wait_caught_up(&url, &reader, 120);
    let hec = &listed[0];
    let dead = hec["dead_letters"].as_i64().unwrap();
    assert!((1..=3).contains(&dead), "{hec}");
    assert!(
        !Value::from(listed.clone())
            .to_string()
            .contains("hec-token-1"),
        "no credentials in the API"
    );

    // The 403 batch is a dead letter, visible, and was never counted as delivered.
    let letters_url = format!("{url}/api/v1/sinks/hec/dead-letters");
    let (code, letters) = get(&letters_url, Some(&reader));
    assert_eq!(code, 200);
    let letters = letters.as_array().unwrap().clone();
    assert_eq!(letters.len() as i64, dead);
    assert!(
        letters.iter().all(|d| d["http_status"] == 403),
        "{letters:?}"
    );
    let (_, metrics) = get(&format!("{url}/metrics"), Some(&reader));
    let metrics = metrics.as_str().unwrap().to_owned();
    let metric = |name: &str| -> i64 {
        let prefix = format!("kvwatch_{name}{{sink=\"hec\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        metric("sink_delivered_total"),
        accepted(&peer.hec, hec_before).len() as i64,
        "delivered counts exactly the alerts HEC answered 2xx for"
    );
    assert_eq!(metric("sink_dead_letters"), dead);
    for d in &letters {
        let id = d["alert_id"].as_str().unwrap();
        assert!(
            !accepted(&peer.hec, hec_before).contains(&id.to_owned()),
            "{id} is dead-lettered but was accepted"
        );
    }

    // Only an admin may requeue; then every alert reaches HEC.
    let retry = format!("{url}/api/v1/sinks/hec/dead-letters/retry");
    assert_eq!(post(&retry, &reader, json!({})).0, 403);
    let admin = key(&s.data, "admin", "ops");
    let (code, v) = post(&retry, &admin, json!({}));
    assert_eq!((code, v["queued"].as_i64()), (200, Some(dead)), "{v}");
    wait_until("the dead letters to be redelivered", 60, || {
        get(&letters_url, Some(&reader)).1 == json!([])
    });
    let missing = s.missing(accepted(&peer.hec, 0));
    assert!(missing.is_empty(), "HEC never got {missing:?}");
    assert!(peer.acks.load(Ordering::SeqCst) > 0, "HEC acks were polled");

    let log = s.stop(second);
    assert!(
        !log.contains("hec-token-1"),
        "credentials never reach the log"
    );
    assert!(log.contains("sink.dead_lettered"), "{log}");
}

#[test]
fn sentinel_gets_a_new_token_after_a_401_and_stays_under_1_mb() {
    let peer = Arc::new(Peer::default());
    peer.sentinel.script.lock().unwrap().extend([
        Step::Status(401),
        Step::RetryAfter(503, 1),
        Step::Status(500),
    ]);
    let base = start_http_peer(peer.clone());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let s = setup(&format!(
        r#"
[[sinks]]
name = "sentinel"
type = "sentinel"
endpoint = "{base}/sentinel"
authority = "{base}/login"
tenant_id = "tenant-1"
client_id = "app-1"
client_secret = "${{file:{secret}}}"
dcr_immutable_id = "dcr-1"
stream = "Custom-KvwatchAlerts_CL"
max_backoff_secs = 1
"#,
        secret = secret.display()
    ));
    let (child, url, _reap) = s.serve("serve-1.log");
    let reader = key(&s.data, "reader", "soc-reader");
    let listed = s.wait_caught_up(&url, &reader, 120);
    assert!(!Value::from(listed).to_string().contains("s3cret"));
    let missing = s.missing(accepted(&peer.sentinel, 0));
    assert!(missing.is_empty(), "Sentinel never got {missing:?}");
    assert!(
        peer.tokens_issued.load(Ordering::SeqCst) >= 2,
        "a 401 made the Sentinel sink fetch a new token"
    );
    assert!(
        peer.sentinel
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.bytes <= 1000 * 1024),
        "Logs Ingestion calls stay under 1 MB"
    );
    let log = s.stop(child);
    assert!(!log.contains("s3cret"), "credentials never reach the log");
}

#[test]
fn webhook_is_signed_splits_refused_batches_and_hears_updates() {
    let peer = Arc::new(Peer::default());
    let base = start_http_peer(peer.clone());
    let s = setup(&format!(
        r#"
[[sinks]]
name = "webhook"
type = "webhook"
url = "{base}/webhook"
secret = "{HMAC_KEY}"
poll_interval_ms = 200
"#
    ));
    let (child, url, _reap) = s.serve("serve-1.log");
    let reader = key(&s.data, "reader", "soc-reader");
    s.wait_caught_up(&url, &reader, 120);
    let missing = s.missing(accepted(&peer.webhook, 0));
    assert!(missing.is_empty(), "the webhook never got {missing:?}");
    assert_eq!(peer.bad_signatures.load(Ordering::SeqCst), 0);
    assert!(
        peer.webhook
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.status == 413),
        "the webhook refused a large batch and kvwatch split it"
    );
    // An update is forwarded again (the feed carries changes, not just new alerts).
    let analyst = key(&s.data, "analyst", "soc");
    let changed = s.all[0]["id"].as_str().unwrap();
    assert_eq!(
        patch(
            &format!("{url}/api/v1/alerts/{changed}"),
            &analyst,
            json!({"status": "resolved"})
        )
        .0,
        200
    );
    wait_until("the update to reach the webhook", 30, || {
        peer.webhook_status
            .lock()
            .unwrap()
            .get(changed)
            .map(String::as_str)
            == Some("resolved")
    });
    let log = s.stop(child);
    assert!(!log.contains(HMAC_KEY), "credentials never reach the log");
}

#[test]
fn syslog_over_tcp_tls_and_udp_carries_every_alert_as_cef() {
    let (tcp, tls, udp): (Lines, Lines, Lines) = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let tcp_port = start_tcp_syslog(tcp.clone());
    let tls_port = start_tls_syslog(tls.clone(), dir.path());
    let udp_port = start_udp_syslog(udp.clone());
    let s = setup(&format!(
        r#"
[[sinks]]
name = "syslog-tcp"
type = "syslog"
address = "127.0.0.1:{tcp_port}"

[[sinks]]
name = "syslog-tls"
type = "syslog"
transport = "tls"
address = "127.0.0.1:{tls_port}"
ca_file = "{ca}"

[[sinks]]
name = "syslog-udp"
type = "syslog"
transport = "udp"
address = "127.0.0.1:{udp_port}"
facility = "authpriv"
"#,
        ca = dir.path().join("ca.pem").display(),
    ));
    let (child, url, _reap) = s.serve("serve-1.log");
    let reader = key(&s.data, "reader", "soc-reader");
    let listed = s.wait_caught_up(&url, &reader, 120);
    assert_eq!(listed.len(), 3);
    for (name, lines) in [("tcp", &tcp), ("tls", &tls), ("udp", &udp)] {
        let lines = lines.lock().unwrap().clone();
        let mut got = HashSet::new();
        for l in &lines {
            assert!(l.starts_with('<') && l.contains(">1 "), "{name}: {l}");
            let (header, ext) = parse_cef(l);
            assert_eq!(header[0], "CEF:0");
            assert_eq!(
                (header[1].as_str(), header[2].as_str()),
                ("kvwatch", "kvwatch")
            );
            let sev: u8 = header[6].parse().unwrap();
            assert!(sev <= 10);
            let id = ext
                .iter()
                .find(|(k, _)| k == "externalId")
                .map(|(_, v)| v.clone())
                .expect("externalId");
            let alert = s.all.iter().find(|a| a["id"] == id.as_str()).unwrap();
            assert_eq!(header[5], alert["title"].as_str().unwrap(), "{l}");
            let msg = &ext.iter().find(|(k, _)| k == "msg").unwrap().1;
            assert_eq!(msg, alert["summary"].as_str().unwrap(), "{l}");
            got.insert(id);
        }
        let missing = s.missing(got);
        assert!(missing.is_empty(), "syslog {name} never got {missing:?}");
    }
    // authpriv (10) * 8 + severity: every UDP line has a PRI between 80 and 87.
    assert!(udp.lock().unwrap().iter().all(|l| {
        let pri: u32 = l[1..l.find('>').unwrap()].parse().unwrap();
        (80..88).contains(&pri)
    }));
    let _ = &s.dir;
    s.stop(child);
}
