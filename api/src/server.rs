//! The axum router. Authentication is on for everything except the liveness and readiness
//! probes: a request carries `Authorization: Bearer <key>`, the key's role must cover the
//! route, and every authenticated call is logged with the key's name (never the key).

use crate::auth::{KeyStore, Role};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kvwatch_detect::alert::Status;
use kvwatch_detect::rule::Severity;
use kvwatch_detect::store::{AlertFilter, AlertStore};
use kvwatch_ingest::kafka::Metrics as KafkaMetrics;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Shared state of the server.
pub struct ApiState {
    pub data: PathBuf,
    pub keys: KeyStore,
    /// The Kafka consumer's counters, when this process runs one.
    pub kafka: Option<Arc<KafkaMetrics>>,
    /// The rules this service evaluates, as `Rule::detail` documents.
    pub rules: Vec<serde_json::Value>,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    denied: AtomicU64,
}

impl ApiState {
    pub fn new(data: PathBuf, keys: KeyStore, kafka: Option<Arc<KafkaMetrics>>) -> Self {
        Self {
            data,
            keys,
            kafka,
            rules: Vec::new(),
            requests: Mutex::new(BTreeMap::new()),
            denied: AtomicU64::new(0),
        }
    }
}

type Shared = Arc<ApiState>;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// The caller, put into request extensions by the auth layer.
#[derive(Clone)]
struct Caller {
    name: String,
}

async fn authenticate(
    State((state, need)): State<(Shared, Role)>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req.uri().path().to_owned();
    let method = req.method().clone();
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        state.denied.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%method, route, "api.unauthenticated");
        return error(
            StatusCode::UNAUTHORIZED,
            "missing API key: send Authorization: Bearer <key> (create one with `kvwatch apikey create`)",
        );
    };
    let found = {
        let keys = &state.keys;
        keys.verify(token)
    };
    let (name, role) = match found {
        Ok(Some(k)) => k,
        Ok(None) => {
            state.denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%method, route, "api.bad_key");
            return error(StatusCode::UNAUTHORIZED, "unknown or revoked API key");
        }
        Err(e) => {
            tracing::error!(error = %e, "api.key_store_failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "key store unavailable");
        }
    };
    if role < need {
        state.denied.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%method, route, key = %name, role = role.as_str(), need = need.as_str(), "api.forbidden");
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "this key has role {}; {} needs {}",
                role.as_str(),
                route,
                need.as_str()
            ),
        );
    }
    req.extensions_mut().insert(Caller { name: name.clone() });
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    tracing::info!(%method, route, key = %name, status, elapsed_us = started.elapsed().as_micros() as u64, "api.call");
    *state
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((route_family(&route), status))
        .or_default() += 1;
    resp
}

/// A low-cardinality label for a path: IDs are replaced by `{id}`.
fn route_family(path: &str) -> String {
    if path.starts_with("/api/v1/alerts/") && path.ends_with("/events") {
        "/api/v1/alerts/{id}/events".into()
    } else if path.starts_with("/api/v1/alerts/") {
        "/api/v1/alerts/{id}".into()
    } else if path.starts_with("/api/v1/rules/") {
        "/api/v1/rules/{id}".into()
    } else {
        path.to_owned()
    }
}

/// The router: `/healthz` and `/readyz` open; `/metrics` and `GET` alert endpoints for
/// readers; alert updates for analysts.
pub fn router(state: Shared) -> Router {
    let reader = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/events", get(alert_events))
        .route("/api/v1/export", get(export))
        .route("/api/v1/rules", get(list_rules))
        .route("/api/v1/rules/{id}", get(get_rule))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Role::Reader),
            authenticate,
        ));
    let analyst = Router::new()
        .route("/api/v1/alerts/{id}", axum::routing::patch(patch_alert))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Role::Analyst),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .merge(reader)
        .merge(analyst)
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(s): State<Shared>) -> Response {
    match AlertStore::open(&s.data) {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("alert store: {e}")),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    let mut out = String::new();
    out.push_str("# TYPE kvwatch_http_requests_total counter\n");
    for ((route, status), n) in s.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(
            out,
            "kvwatch_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# TYPE kvwatch_http_denied_total counter\nkvwatch_http_denied_total {}",
        s.denied.load(Ordering::Relaxed)
    );
    if let Some(k) = &s.kafka {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, v, help) in [
            ("kafka_messages_total", g(&k.messages), "messages received"),
            (
                "kafka_records_total",
                g(&k.records),
                "records stored or quarantined",
            ),
            ("kafka_events_total", g(&k.events), "audit events stored"),
            (
                "kafka_quarantined_total",
                g(&k.quarantined),
                "quarantine rows stored",
            ),
            (
                "kafka_duplicates_total",
                g(&k.duplicates),
                "rows dropped as duplicates",
            ),
            (
                "kafka_redelivered_skipped_total",
                g(&k.replayed_skipped),
                "messages below the stored position",
            ),
            ("kafka_batches_total", g(&k.batches), "batches committed"),
            (
                "kafka_dead_lettered_total",
                g(&k.dead_lettered),
                "copies sent to the dead-letter topic",
            ),
            (
                "kafka_offset_gap_messages_total",
                g(&k.offset_gap_messages),
                "messages missing from the log",
            ),
            ("kafka_errors_total", g(&k.kafka_errors), "client errors"),
            (
                "kafka_last_batch_latency_ms",
                g(&k.last_batch_latency_ms),
                "first message to durable, last batch",
            ),
        ] {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP kvwatch_{name} {help}\n# TYPE kvwatch_{name} {kind}\nkvwatch_{name} {v}"
            );
        }
        out.push_str("# TYPE kvwatch_kafka_consumer_lag gauge\n");
        for (tp, lag) in k.lag() {
            let _ = writeln!(
                out,
                "kvwatch_kafka_consumer_lag{{partition=\"{tp}\"}} {lag}"
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[derive(Deserialize)]
struct ListParams {
    /// Minimum severity.
    severity: Option<String>,
    status: Option<String>,
    rule: Option<String>,
    /// RFC 3339: alerts last seen at or after.
    since: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn open_store(s: &ApiState) -> Result<Option<AlertStore>, Box<Response>> {
    AlertStore::open_read_only(&s.data).map_err(|e| {
        Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("alert store: {e}"),
        ))
    })
}

fn encode_cursor(last_seen: i64, id: &str) -> String {
    format!("{last_seen}.{id}")
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let (t, id) = c.split_once('.')?;
    Some((t.parse().ok()?, id.to_owned()))
}

async fn list_alerts(State(s): State<Shared>, Query(p): Query<ListParams>) -> Response {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let mut f = AlertFilter::default();
    if let Some(v) = &p.severity {
        match Severity::parse(v) {
            Some(x) => f.min_severity = Some(x),
            None => return bad(format!("unknown severity {v:?}")),
        }
    }
    if let Some(v) = &p.status {
        match Status::parse(v) {
            Some(x) => f.status = Some(x),
            None => return bad(format!("unknown status {v:?}")),
        }
    }
    if let Some(v) = &p.since {
        match chrono::DateTime::parse_from_rfc3339(v) {
            Ok(t) => f.since = t.timestamp_nanos_opt(),
            Err(e) => return bad(format!("since: {e} (RFC 3339 expected)")),
        }
    }
    if let Some(c) = &p.cursor {
        match decode_cursor(c) {
            Some(x) => f.after = Some(x),
            None => return bad("malformed cursor".into()),
        }
    }
    f.rule = p.rule.clone();
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    f.limit = Some(limit);
    let store = match open_store(&s) {
        Ok(Some(st)) => st,
        Ok(None) => return Json(json!({"alerts": [], "next_cursor": null})).into_response(),
        Err(r) => return *r,
    };
    match store.list(&f) {
        Ok(alerts) => {
            let next = (alerts.len() == limit)
                .then(|| alerts.last().map(|a| encode_cursor(a.last_seen, &a.id)))
                .flatten();
            Json(json!({"alerts": alerts, "next_cursor": next})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_alert(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    let store = match open_store(&s) {
        Ok(Some(st)) => st,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such alert"),
        Err(r) => return *r,
    };
    match store.get(&id) {
        Ok(Some(a)) => Json(a).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such alert"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    status: String,
}

async fn patch_alert(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let caller = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send application/json");
    }
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body over 64 KiB"),
    };
    let patch: Patch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let Some(status) = Status::parse(&patch.status) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown status {:?}", patch.status),
        );
    };
    let store = match AlertStore::open(&s.data) {
        Ok(st) => st,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let now = kvwatch_ingest::store::now_nanos();
    match store.set_status(&id, status, now) {
        Ok(()) => {
            tracing::info!(alert = %id, status = status.as_str(), key = %caller, "api.alert_updated");
            match store.get(&id) {
                Ok(Some(a)) => Json(a).into_response(),
                _ => error(StatusCode::NOT_FOUND, "no such alert"),
            }
        }
        Err(kvwatch_detect::store::AlertStoreError::NoSuchAlert(_)) => {
            error(StatusCode::NOT_FOUND, "no such alert")
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct ExportParams {
    cursor: Option<String>,
    format: Option<String>,
    limit: Option<usize>,
}

/// Pull delivery for SIEMs: alerts created or changed after `cursor`, oldest change first.
/// An empty list means caught up; the cursor to send next is always returned (unchanged when
/// caught up), so a poller never skips a change and never needs to remember anything else.
async fn export(State(s): State<Shared>, Query(p): Query<ExportParams>) -> Response {
    let after = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match c.parse::<i64>() {
            Ok(v) if v >= 0 => v,
            _ => return error(StatusCode::BAD_REQUEST, "malformed cursor"),
        },
    };
    let format = p.format.as_deref().unwrap_or("native");
    if !matches!(format, "native" | "ocsf") {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown format {format:?} (native or ocsf)"),
        );
    }
    let limit = p.limit.unwrap_or(500).clamp(1, 5000);
    // Read-write open: it applies the change-sequence migration to an older alert store.
    let store = match AlertStore::open(&s.data) {
        Ok(st) => st,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("alert store: {e}"),
            );
        }
    };
    match store.changes(after, limit) {
        Ok(rows) => {
            let next = rows.last().map(|(seq, _)| *seq).unwrap_or(after);
            let alerts: Vec<serde_json::Value> = rows
                .iter()
                .map(|(_, a)| {
                    if format == "ocsf" {
                        a.to_ocsf()
                    } else {
                        serde_json::to_value(a).unwrap_or_default()
                    }
                })
                .collect();
            Json(json!({"alerts": alerts, "next_cursor": next.to_string()})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Summaries of the rules (the detail without description and parameters).
async fn list_rules(State(s): State<Shared>) -> Response {
    let keep = [
        "id",
        "title",
        "severity",
        "window",
        "suppression",
        "tactics",
        "techniques",
        "tests",
        "enabled",
        "file",
    ];
    let rules: Vec<serde_json::Value> = s
        .rules
        .iter()
        .map(|r| {
            keep.iter()
                .filter_map(|k| r.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect();
    Json(json!({"rules": rules})).into_response()
}

async fn get_rule(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    match s.rules.iter().find(|r| r["id"] == id.as_str()) {
        Some(r) => Json(r.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such rule"),
    }
}

/// The evidence events of an alert (the IDs it keeps, up to its evidence cap), oldest first,
/// as `events` rows.
async fn alert_events(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    let alert = match open_store(&s) {
        Ok(Some(st)) => match st.get(&id) {
            Ok(Some(a)) => a,
            Ok(None) => return error(StatusCode::NOT_FOUND, "no such alert"),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such alert"),
        Err(r) => return *r,
    };
    // Event IDs are our own hex hashes; anything else is not put into SQL.
    let ids: Vec<&String> = alert
        .evidence
        .iter()
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    if ids.is_empty() || !s.data.join(kvwatch_ingest::store::MANIFEST).exists() {
        return Json(json!([])).into_response();
    }
    let list = ids
        .iter()
        .map(|e| format!("'{e}'"))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!("SELECT * FROM events WHERE event_id IN ({list}) ORDER BY time, event_id");
    let result = async {
        let ctx = kvwatch_ingest::query::open_session(&s.data).await?;
        let df = kvwatch_ingest::query::read_only_sql(&ctx, &sql).await?;
        let batches = df.collect().await?;
        let mut buf = Vec::new();
        {
            let mut w = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buf);
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        if buf.is_empty() {
            buf.extend_from_slice(b"[]");
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(buf)
    }
    .await;
    match result {
        Ok(buf) => ([(header::CONTENT_TYPE, "application/json")], buf).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("events: {e}")),
    }
}
