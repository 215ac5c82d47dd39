//! The axum router. Authentication is on for everything except the liveness and readiness
//! probes and the OpenAPI document: a request carries `Authorization: Bearer <key>`, the
//! key's role must cover the route, and every authenticated call is logged with the key's
//! name (never the key).

use crate::auth::{KeyStore, Role};
use crate::error::ApiError;
use crate::forward::SinkStatus;
use crate::handlers;
use crate::health::{Disk, DiskHealth};
use crate::sql::{PoolOptions, SqlLimits, SqlPool};
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
    /// The worker processes analyst SQL runs in.
    pub sql: Arc<SqlPool>,
    /// Whether the data directory takes writes.
    pub disk: Arc<DiskHealth>,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    denied: AtomicU64,
    /// Idle read-only alert-store connections, reused across requests.
    readers: Mutex<Vec<(u64, AlertStore)>>,
    /// Generation of the pooled readers: connections of an older generation are closed when
    /// they come back. Bumped when the disk takes writes again, because SQLite shares one
    /// shared-memory index per file among a process's connections, and one opened while the
    /// disk was read-only would keep every new connection read-only.
    reader_generation: AtomicU64,
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
    /// State for `data` with the default SQL pool (workers started from this executable)
    /// and a disk prober that wants `min_free` bytes free.
    pub fn new(
        data: PathBuf,
        keys: KeyStore,
        kafka: Option<Arc<KafkaMetrics>>,
        pool: PoolOptions,
        min_free: u64,
    ) -> Self {
        Self {
            sql: SqlPool::new(pool),
            disk: Arc::new(DiskHealth::new(data.clone(), min_free)),
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
            reader_generation: AtomicU64::new(0),
            read_slots: Arc::new(tokio::sync::Semaphore::new(read_slot_count())),
        }
    }

    /// Runs `f` on a pooled read-only alert-store connection, off the async workers.
    /// `Ok(None)`: there is no alert store yet.
    pub(crate) async fn read_alerts<T, F>(self: &Arc<Self>, f: F) -> Result<Option<T>, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&AlertStore) -> Result<T, AlertStoreError> + Send + 'static,
    {
        let s = self.clone();
        let slot = self.read_slots.clone().acquire_owned().await;
        let r = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let generation = s.reader_generation.load(Ordering::Acquire);
            let pooled = s.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let store = match pooled {
                Some((g, st)) if g == generation => st,
                _ => match AlertStore::open_read_only(&s.data)? {
                    Some(st) => st,
                    None => return Ok(None),
                },
            };
            let out = f(&store);
            let mut pool = s.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READER_POOL && s.reader_generation.load(Ordering::Acquire) == generation
            {
                pool.push((generation, store));
            }
            out.map(Some)
        })
        .await?;
        Ok(r?)
    }

    /// Runs `f` on a read-write alert-store connection, off the async workers. A write the
    /// disk refuses marks the disk (`/readyz`) and answers 503.
    pub(crate) async fn write_alerts<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: Fn(&AlertStore) -> Result<T, AlertStoreError> + Send + 'static,
    {
        let s = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let first = f_once(&s.data, &f);
            match first {
                // The disk may take writes again while connections opened when it did not are
                // still pooled: close them and try once more.
                Err(AlertStoreError::Sql(ref e))
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) =>
                {
                    s.reader_generation.fetch_add(1, Ordering::AcqRel);
                    s.readers.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    f_once(&s.data, &f)
                }
                other => other,
            }
        })
        .await?;
        if let Err(AlertStoreError::Sql(e)) = &r
            && crate::error::is_disk_refusal(e)
        {
            self.disk.write_failed("the alert store", e);
        }
        Ok(r?)
    }
}

/// Opens the alert store for writing and runs `f` on it.
fn f_once<T>(
    data: &std::path::Path,
    f: &impl Fn(&AlertStore) -> Result<T, AlertStoreError>,
) -> Result<T, AlertStoreError> {
    f(&AlertStore::open(data)?)
}

/// A per-sink metric: name, type, help, and how to read it.
type SinkFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SinkStatus) -> i64,
);

pub type Shared = Arc<ApiState>;

/// An error answer with a message for the client (see [`ApiError`] for internal failures).
pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "error",
    };
    ApiError::new(status, code, msg).into_response()
}

/// The token of an `Authorization` header: the scheme is matched without regard to case
/// (RFC 9110), the token as sent.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
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
    // A low-cardinality label for metrics: the route as declared, IDs as `{id}`.
    let family = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| route.clone(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
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
            return ApiError::unavailable("the key store cannot be read now; retry shortly", e)
                .into_response();
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
        .entry((family, status))
        .or_default() += 1;
    resp
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
        .layer(middleware::from_fn(crate::error::request_ids))
        .with_state(state)
}

async fn ready(State(s): State<Shared>) -> Response {
    let mut reasons = Vec::new();
    if let Disk::Refusing(r) = s.disk.state() {
        reasons.push(r);
    }
    if let Some(e) = s.kafka.as_ref().and_then(|k| k.store_error()) {
        reasons.push(format!("the Kafka source cannot store its batches: {e}"));
    }
    if s.read_alerts(|st| st.head_seq()).await.is_err() {
        reasons.push("the alert store cannot be read".to_owned());
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reasons": reasons})),
        )
            .into_response()
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
    let _ = writeln!(
        out,
        "# HELP kvwatch_disk_writable 1 while the data directory takes writes\n# TYPE kvwatch_disk_writable gauge\nkvwatch_disk_writable {}",
        i64::from(s.disk.state() == Disk::Writable)
    );
    let m = &s.sql.metrics;
    for (name, v, help) in [
        ("sql_queries_total", &m.queries, "analyst queries received"),
        ("sql_failed_total", &m.failed, "queries refused or failed"),
        (
            "sql_timeouts_total",
            &m.timeouts,
            "queries cancelled at the deadline",
        ),
        (
            "sql_memory_limited_total",
            &m.memory_limited,
            "queries stopped at the memory limit",
        ),
        (
            "sql_worker_crashes_total",
            &m.crashed,
            "workers that ended without an answer",
        ),
        (
            "sql_busy_total",
            &m.busy,
            "queries refused because every worker was busy",
        ),
        (
            "sql_workers_started_total",
            &m.spawned,
            "worker processes started",
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP kvwatch_{name} {help}\n# TYPE kvwatch_{name} counter\nkvwatch_{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
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
                "kafka_store_stalled",
                g(&k.store_stalled),
                "1 while the store refuses batches",
            ),
            (
                "kafka_store_retries_total",
                g(&k.store_retries),
                "batches tried again after the store refused them",
            ),
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
