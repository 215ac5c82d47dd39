//! The axum router. Authentication is on for everything except the liveness and readiness
//! probes and the OpenAPI document: a request carries `Authorization: Bearer <key>`, the
//! key's role must cover the route, and every authenticated call is logged with the key's
//! name (never the key).

use crate::auth::{KeyStore, Role};
use crate::forward::SinkStatus;
use crate::handlers;
use crate::sql::SqlLimits;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kvwatch_detect::store::{AlertStore, AlertStoreError};
use kvwatch_ingest::kafka::Metrics as KafkaMetrics;
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
    /// The detection loop's counters, when this process runs one.
    pub detect: Option<Arc<kvwatch_detect::run::PassMetrics>>,
    /// The push forwarders this process runs.
    pub sinks: Vec<Arc<SinkStatus>>,
    /// Bounds of analyst SQL.
    pub sql_limits: SqlLimits,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    denied: AtomicU64,
    /// Idle read-only alert-store connections, reused across requests.
    readers: Mutex<Vec<AlertStore>>,
    /// Alert-store reads running at once. Reads are CPU-bound: with one blocking thread per
    /// request, 50 clients time-sliced 50 reads over two cores (and opened a connection for
    /// every read beyond the pool), so every page took as long as the slowest; queued in
    /// order, each waits only for those ahead of it.
    read_slots: Arc<tokio::sync::Semaphore>,
}

/// Concurrent alert-store reads: twice the cores (a read also waits on the page cache).
fn read_slot_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .clamp(2, READER_POOL)
}

/// Idle connections kept for reuse; at least as many as reads may run at once.
const READER_POOL: usize = 16;

impl ApiState {
    pub fn new(data: PathBuf, keys: KeyStore, kafka: Option<Arc<KafkaMetrics>>) -> Self {
        Self {
            data,
            keys,
            kafka,
            rules: Vec::new(),
            detect: None,
            sinks: Vec::new(),
            sql_limits: SqlLimits::default(),
            requests: Mutex::new(BTreeMap::new()),
            denied: AtomicU64::new(0),
            readers: Mutex::new(Vec::new()),
            read_slots: Arc::new(tokio::sync::Semaphore::new(read_slot_count())),
        }
    }

    /// Runs `f` on a pooled read-only alert-store connection, off the async workers.
    /// `Ok(None)`: there is no alert store yet.
    pub(crate) async fn read_alerts<T, F>(self: &Arc<Self>, f: F) -> Result<Option<T>, Response>
    where
        T: Send + 'static,
        F: FnOnce(&AlertStore) -> Result<T, AlertStoreError> + Send + 'static,
    {
        let s = self.clone();
        let slot = self.read_slots.clone().acquire_owned().await;
        let r = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let pooled = s.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let store = match pooled {
                Some(st) => st,
                None => match AlertStore::open_read_only(&s.data)? {
                    Some(st) => st,
                    None => return Ok(None),
                },
            };
            let out = f(&store);
            let mut pool = s.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READER_POOL {
                pool.push(store);
            }
            out.map(Some)
        })
        .await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("alert store: {e}"),
            )),
            Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        }
    }

    /// Runs `f` on a read-write alert-store connection, off the async workers.
    pub(crate) async fn write_alerts<T, F>(self: &Arc<Self>, f: F) -> Result<T, Response>
    where
        T: Send + 'static,
        F: FnOnce(&AlertStore) -> Result<T, AlertStoreError> + Send + 'static,
    {
        let data = self.data.clone();
        let r = tokio::task::spawn_blocking(move || f(&AlertStore::open(&data)?)).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(AlertStoreError::NoSuchAlert(_))) => {
                Err(error(StatusCode::NOT_FOUND, "no such alert"))
            }
            Ok(Err(e)) => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("alert store: {e}"),
            )),
            Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        }
    }
}

/// A per-sink metric: name, type, help, and how to read it.
type SinkFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SinkStatus) -> i64,
);

pub type Shared = Arc<ApiState>;

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// The caller, put into request extensions by the auth layer.
#[derive(Clone)]
pub struct Caller {
    pub name: String,
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

/// A low-cardinality label for a path: IDs are replaced by `{id}` / `{name}`.
fn route_family(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "api", "v1", "alerts", _, "events"] => "/api/v1/alerts/{id}/events".into(),
        ["", "api", "v1", "alerts", _] => "/api/v1/alerts/{id}".into(),
        ["", "api", "v1", "rules", _] => "/api/v1/rules/{id}".into(),
        ["", "api", "v1", "keys", _] => "/api/v1/keys/{name}".into(),
        ["", "api", "v1", "reports", _] => "/api/v1/reports/{id}".into(),
        ["", "api", "v1", "sinks", _, rest @ ..] => {
            format!("/api/v1/sinks/{{name}}/{}", rest.join("/"))
        }
        _ => path.to_owned(),
    }
}

/// The router: probes and the OpenAPI document open; reading for `reader`, triage and SQL
/// for `analyst`, keys and dead-letter retries for `admin`.
pub fn router(state: Shared) -> Router {
    let layer = |role| middleware::from_fn_with_state((state.clone(), role), authenticate);
    let reader = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/alerts", get(handlers::list_alerts))
        .route("/api/v1/alerts/{id}", get(handlers::get_alert))
        .route("/api/v1/alerts/{id}/events", get(handlers::alert_events))
        .route("/api/v1/export", get(handlers::export))
        .route("/api/v1/rules", get(handlers::list_rules))
        .route("/api/v1/rules/{id}", get(handlers::get_rule))
        .route("/api/v1/stats", get(handlers::stats))
        .route("/api/v1/sinks", get(handlers::list_sinks))
        .route("/api/v1/reports", get(handlers::list_reports))
        .route("/api/v1/reports/{id}", get(handlers::get_report))
        .route(
            "/api/v1/sinks/{name}/dead-letters",
            get(handlers::dead_letters),
        )
        .route_layer(layer(Role::Reader));
    let analyst = Router::new()
        .route(
            "/api/v1/alerts/{id}",
            axum::routing::patch(handlers::patch_alert),
        )
        .route("/api/v1/query", post(handlers::query))
        .route("/api/v1/reports", post(handlers::create_report))
        .route_layer(layer(Role::Analyst));
    let admin = Router::new()
        .route(
            "/api/v1/keys",
            get(handlers::list_keys).post(handlers::create_key),
        )
        .route(
            "/api/v1/keys/{name}",
            axum::routing::delete(handlers::revoke_key),
        )
        .route(
            "/api/v1/sinks/{name}/dead-letters/retry",
            post(handlers::retry_dead_letters),
        )
        .route_layer(layer(Role::Admin));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/api/v1/openapi.json", get(handlers::openapi))
        .merge(reader)
        .merge(analyst)
        .merge(admin)
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
    match s.read_alerts(|st| st.head_seq()).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "alert store unavailable"),
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
    if let Some(d) = &s.detect {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, v, help) in [
            (
                "detect_passes_total",
                g(&d.passes),
                "detection passes completed",
            ),
            (
                "detect_pass_failures_total",
                g(&d.failures),
                "passes that failed (retried)",
            ),
            (
                "detect_alerts_created_total",
                g(&d.created),
                "alerts opened",
            ),
            (
                "detect_alerts_updated_total",
                g(&d.updated),
                "occurrences updated by late or longer activity",
            ),
            (
                "detect_alerts_folded_total",
                g(&d.folded),
                "occurrences folded into open alerts",
            ),
            (
                "detect_files_total",
                g(&d.new_files),
                "store files evaluated",
            ),
            (
                "detect_last_pass_ms",
                g(&d.last_pass_ms),
                "duration of the last pass",
            ),
            (
                "detect_last_pass_timestamp_seconds",
                g(&d.last_pass_end),
                "end of the last pass",
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
    }
    if !s.sinks.is_empty() {
        let head = s
            .read_alerts(|st| st.head_seq())
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        let dead: BTreeMap<String, i64> = s
            .read_alerts(|st| st.dead_letter_counts())
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let families: [SinkFamily; 9] = [
            ("sink_delivered_total", "counter", "alerts delivered", |x| {
                x.delivered.load(Ordering::Relaxed) as i64
            }),
            ("sink_requests_total", "counter", "delivery attempts", |x| {
                x.requests.load(Ordering::Relaxed) as i64
            }),
            (
                "sink_retries_total",
                "counter",
                "failed attempts retried",
                |x| x.retries.load(Ordering::Relaxed) as i64,
            ),
            (
                "sink_dead_lettered_total",
                "counter",
                "alerts refused for good",
                |x| x.dead_lettered.load(Ordering::Relaxed) as i64,
            ),
            (
                "sink_skipped_total",
                "counter",
                "alerts below min_severity",
                |x| x.skipped.load(Ordering::Relaxed) as i64,
            ),
            (
                "sink_truncated_total",
                "counter",
                "UDP syslog messages cut",
                |x| x.truncated.load(Ordering::Relaxed) as i64,
            ),
            (
                "sink_cursor",
                "gauge",
                "last change delivered or dead-lettered",
                |x| x.cursor.load(Ordering::Relaxed),
            ),
            (
                "sink_last_success_timestamp_seconds",
                "gauge",
                "time of the last delivery",
                |x| x.last_success.load(Ordering::Relaxed),
            ),
            ("sink_up", "gauge", "1 while the sink thread runs", |x| {
                i64::from(!x.stopped.load(Ordering::Relaxed))
            }),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(
                out,
                "# HELP kvwatch_{name} {help}\n# TYPE kvwatch_{name} {kind}"
            );
            for x in &s.sinks {
                let _ = writeln!(out, "kvwatch_{name}{{sink=\"{}\"}} {}", x.name, get(x));
            }
        }
        out.push_str(
            "# HELP kvwatch_sink_lag changes not yet delivered\n# TYPE kvwatch_sink_lag gauge\n",
        );
        for x in &s.sinks {
            let lag = (head - x.cursor.load(Ordering::Relaxed)).max(0);
            let _ = writeln!(out, "kvwatch_sink_lag{{sink=\"{}\"}} {lag}", x.name);
        }
        out.push_str("# HELP kvwatch_sink_dead_letters alerts on the dead-letter list\n# TYPE kvwatch_sink_dead_letters gauge\n");
        for x in &s.sinks {
            let n = dead.get(&x.name).copied().unwrap_or(0);
            let _ = writeln!(out, "kvwatch_sink_dead_letters{{sink=\"{}\"}} {n}", x.name);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
