//! The `/api/v1` handlers. Each carries its OpenAPI description (`utoipa::path`), and
//! [`ApiDoc`] collects them into the document served at `/api/v1/openapi.json`, so the
//! document cannot drift from the routes.

// Handlers short-circuit with a ready `Response` as the error; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

use crate::auth::{KeyInfo, Role};
use crate::error::ApiError;
use crate::server::{Caller, Shared};
use crate::sql::Tables;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kvwatch_detect::store::{AlertCounts, AlertFilter, AlertSort, AlertUpdate, DeadLetter};
use kvwatch_detect::{Alert, HistoryEntry, Severity, Status};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// An error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// A stable code for programs: bad_request, unauthorized, forbidden, not_found, conflict,
    /// timeout, refused, too_complex, query_failed, memory_limit, busy, unavailable, internal…
    pub code: String,
    /// The ID of the request (also in the `X-Request-Id` header); the service log has the
    /// details of an internal error under it.
    pub request_id: String,
}

type Answer = Result<Response, ApiError>;

/// Query parameters of `GET /alerts`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Minimum severity (informational, low, medium, high, critical).
    severity: Option<String>,
    /// new, acknowledged, resolved or suppressed.
    status: Option<String>,
    /// Rule ID.
    rule: Option<String>,
    /// Vault name (case-insensitive).
    vault: Option<String>,
    /// Principal UPN, object ID or application ID (case-insensitive).
    principal: Option<String>,
    /// Caller IP address.
    ip: Option<String>,
    /// Assignee.
    assignee: Option<String>,
    /// Substring (3 characters or more) of title, summary, description or dedup key
    /// (case-insensitive).
    q: Option<String>,
    /// RFC 3339: alerts last seen at or after.
    since: Option<String>,
    /// RFC 3339: alerts last seen before.
    until: Option<String>,
    /// -last_seen (default), last_seen, -created_at, created_at, -severity, severity,
    /// -event_count or event_count.
    sort: Option<String>,
    /// Page size, 1 to 1000 [default 100].
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Include each alert's `description` and `evidence` (event IDs); by default a page
    /// carries `evidence_count` instead, and `GET /alerts/{id}` has everything.
    full: Option<bool>,
}

/// An alert as listed: everything but the rule description and the evidence IDs.
#[derive(Serialize, ToSchema)]
pub struct AlertItem {
    id: String,
    rule_id: String,
    title: String,
    severity: Severity,
    status: Status,
    assignee: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    first_seen: String,
    #[schema(value_type = String, format = DateTime)]
    last_seen: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: String,
    #[schema(value_type = String, format = DateTime)]
    updated_at: String,
    event_count: i64,
    occurrences: i64,
    dedup_key: String,
    vaults: Vec<String>,
    principals: Vec<kvwatch_detect::Principal>,
    ips: Vec<String>,
    objects: Vec<String>,
    tactics: Vec<String>,
    techniques: Vec<String>,
    summary: String,
    evidence_count: usize,
}

impl From<Alert> for AlertItem {
    fn from(a: Alert) -> Self {
        let t = kvwatch_ingest::time::format_ns;
        Self {
            evidence_count: a.evidence.len(),
            first_seen: t(a.first_seen),
            last_seen: t(a.last_seen),
            created_at: t(a.created_at),
            updated_at: t(a.updated_at),
            id: a.id,
            rule_id: a.rule_id,
            title: a.title,
            severity: a.severity,
            status: a.status,
            assignee: a.assignee,
            event_count: a.event_count,
            occurrences: a.occurrences,
            dedup_key: a.dedup_key,
            vaults: a.vaults,
            principals: a.principals,
            ips: a.ips,
            objects: a.objects,
            tactics: a.tactics,
            techniques: a.techniques,
            summary: a.summary,
        }
    }
}

/// The alerts of a page, in the shape asked for.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Listed {
    Items(Vec<AlertItem>),
    Full(Vec<Alert>),
}

/// A page of alerts.
#[derive(Serialize, ToSchema)]
pub struct AlertPage {
    /// `AlertItem`s, or full `Alert`s with `full=true`.
    #[schema(value_type = Vec<AlertItem>)]
    alerts: Listed,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

fn encode_cursor(key: i64, id: &str) -> String {
    format!("{key}.{id}")
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let (t, id) = c.split_once('.')?;
    Some((t.parse().ok()?, id.to_owned()))
}

fn rfc3339(name: &str, v: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| bad(format!("{name}: {v:?} is not an RFC 3339 time")))
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

/// List alerts with filters, sorting and cursor pagination.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(ListParams),
    responses((status = 200, body = AlertPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_alerts(State(s): State<Shared>, Query(p): Query<ListParams>) -> Answer {
    let mut f = AlertFilter::default();
    if let Some(v) = &p.severity {
        f.min_severity =
            Some(Severity::parse(v).ok_or_else(|| bad(format!("unknown severity {v:?}")))?);
    }
    if let Some(v) = &p.status {
        f.status = Some(Status::parse(v).ok_or_else(|| bad(format!("unknown status {v:?}")))?);
    }
    if let Some(v) = &p.sort {
        f.sort = AlertSort::parse(v).ok_or_else(|| bad(format!("unknown sort {v:?}")))?;
    }
    for (name, value, slot) in [
        ("since", &p.since, &mut f.since),
        ("until", &p.until, &mut f.until),
    ] {
        if let Some(v) = value {
            *slot = Some(rfc3339(name, v)?);
        }
    }
    if let Some(c) = &p.cursor {
        f.after = Some(decode_cursor(c).ok_or_else(|| bad("malformed cursor"))?);
    }
    f.rule = p.rule;
    f.vault = p.vault;
    f.principal = p.principal;
    f.ip = p.ip;
    f.assignee = p.assignee;
    f.text = p.q.filter(|t| !t.is_empty());
    if f.text.as_ref().is_some_and(|t| t.chars().count() < 3) {
        return Err(bad("q needs at least 3 characters"));
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    f.limit = Some(limit);
    let sort = f.sort;
    let full = p.full.unwrap_or(false);
    // The page is built and serialised on the blocking thread that read it, so every
    // allocation of the alerts is freed where it was made; only the body crosses threads.
    let page = s
        .read_alerts(move |st| {
            let alerts = st.list(&f)?;
            let next_cursor = (alerts.len() == limit)
                .then(|| alerts.last().map(|a| encode_cursor(sort.key(a), &a.id)))
                .flatten();
            let alerts = if full {
                Listed::Full(alerts)
            } else {
                Listed::Items(alerts.into_iter().map(AlertItem::from).collect())
            };
            serde_json::to_vec(&AlertPage {
                alerts,
                next_cursor,
            })
            .map_err(|source| kvwatch_detect::AlertStoreError::Json {
                column: "page",
                source,
            })
        })
        .await?;
    Ok(match page {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => Json(AlertPage {
            alerts: Listed::Items(Vec::new()),
            next_cursor: None,
        })
        .into_response(),
    })
}

/// An alert with its audit trail and evidence events.
#[derive(Serialize, ToSchema)]
pub struct AlertDetail {
    #[serde(flatten)]
    alert: Alert,
    /// Who changed what, oldest first.
    history: Vec<HistoryEntry>,
    /// The evidence events (`events` rows), oldest first.
    #[schema(value_type = Vec<Object>)]
    events: Value,
}

/// One alert with its history and evidence events.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert ID")),
    responses((status = 200, body = AlertDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_alert(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Answer {
    let found = s
        .read_alerts(move |st| {
            Ok(match st.get(&id)? {
                Some(a) => Some((st.history(&a.id)?, a)),
                None => None,
            })
        })
        .await?;
    let Some(Some((history, alert))) = found else {
        return Err(ApiError::not_found("no such alert"));
    };
    let events = evidence_events(&s.data, &alert.evidence).await?;
    Ok(Json(AlertDetail {
        alert,
        history,
        events,
    })
    .into_response())
}

/// An analyst's change: any of the fields.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertPatch {
    /// new, acknowledged, resolved or suppressed.
    status: Option<String>,
    /// Analyst to assign; an empty string or null unassigns.
    #[serde(default, deserialize_with = "some_or_null")]
    #[schema(value_type = Option<String>)]
    assignee: Option<Option<String>>,
    /// A note for the audit trail (at most 4000 characters).
    comment: Option<String>,
}

/// Distinguishes an absent field (`None`) from an explicit null (`Some(None)`).
fn some_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?))
}

/// Change an alert's status, assignee, or add a comment; every change is recorded with the
/// caller's key name.
#[utoipa::path(patch, path = "/api/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert ID")),
    request_body = AlertPatch,
    responses((status = 200, body = AlertDetail), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn patch_alert(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Answer {
    let patch: AlertPatch = json_body(req, 64 * 1024).await?;
    let mut update = AlertUpdate::default();
    if let Some(v) = &patch.status {
        update.status = Some(Status::parse(v).ok_or_else(|| bad(format!("unknown status {v:?}")))?);
    }
    if let Some(a) = patch.assignee {
        let a = a.map(|x| x.trim().to_owned()).filter(|x| !x.is_empty());
        if a.as_ref().is_some_and(|x| x.chars().count() > 200) {
            return Err(bad("assignee over 200 characters"));
        }
        update.assignee = Some(a);
    }
    if let Some(c) = patch.comment {
        if c.trim().is_empty() || c.chars().count() > 4000 {
            return Err(bad("comment must be 1 to 4000 characters"));
        }
        update.comment = Some(c);
    }
    if update.status.is_none() && update.assignee.is_none() && update.comment.is_none() {
        return Err(bad("nothing to change: give status, assignee or comment"));
    }
    let now = kvwatch_ingest::store::now_nanos();
    let actor = caller.name.clone();
    let (aid, who) = (id.clone(), actor.clone());
    s.write_alerts(move |st| st.update(&aid, &update, &who, now))
        .await?;
    tracing::info!(alert = %id, key = %actor, status = ?patch.status, "api.alert_updated");
    get_alert(State(s), UrlPath(id)).await
}

/// How long a client may take to send a request body.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a JSON body of at most `limit` bytes, sent within [`BODY_DEADLINE`].
async fn json_body<T: serde::de::DeserializeOwned>(
    req: Request,
    limit: usize,
) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json",
        ));
    }
    let body = tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(req.into_body(), limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the body did not arrive within {} s",
                    BODY_DEADLINE.as_secs()
                ),
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body over {} KiB", limit / 1024),
            )
        })?;
    serde_json::from_slice(&body).map_err(|e| bad(format!("body: {e}")))
}

/// The evidence events of an alert (`events` rows), oldest first.
#[utoipa::path(get, path = "/api/v1/alerts/{id}/events", tag = "alerts",
    params(("id" = String, Path, description = "Alert ID")),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn alert_events(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Answer {
    let Some(Some(alert)) = s.read_alerts(move |st| st.get(&id)).await? else {
        return Err(ApiError::not_found("no such alert"));
    };
    Ok(Json(evidence_events(&s.data, &alert.evidence).await?).into_response())
}

/// `events` rows with the given IDs as a JSON array. The statement is the service's own
/// (event IDs are hex hashes, checked before they go into it), so it runs in-process.
async fn evidence_events(data: &Path, evidence: &[String]) -> Result<Value, ApiError> {
    let ids: Vec<&String> = evidence
        .iter()
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    if ids.is_empty() || !data.join(kvwatch_ingest::store::MANIFEST).exists() {
        return Ok(json!([]));
    }
    let list = ids
        .iter()
        .map(|e| format!("'{e}'"))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!("SELECT * FROM events WHERE event_id IN ({list}) ORDER BY time, event_id");
    let internal = |e: &dyn std::fmt::Display| ApiError::internal(format!("evidence events: {e}"));
    let ctx = kvwatch_ingest::query::open_session(data)
        .await
        .map_err(|e| internal(&e))?;
    let df = kvwatch_ingest::query::read_only_sql(&ctx, &sql)
        .await
        .map_err(|e| internal(&e))?;
    let batches = df.collect().await.map_err(|e| internal(&e))?;
    rows_json(&batches)
}

/// Record batches as a JSON array of row objects.
fn rows_json(batches: &[datafusion::arrow::array::RecordBatch]) -> Result<Value, ApiError> {
    let bytes = kvwatch_ingest::query::batches_json(batches).map_err(ApiError::internal)?;
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
}

/// Query parameters of `GET /export`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `next_cursor` of the previous call; empty or absent starts from the beginning.
    cursor: Option<String>,
    /// native (default), ocsf (Detection Finding 2004) or cef (strings).
    format: Option<String>,
    /// At most this many alerts, 1 to 5000 [default 500].
    limit: Option<usize>,
}

/// A page of the change feed.
#[derive(Serialize, ToSchema)]
pub struct ExportPage {
    /// Alerts in change order: objects (native, ocsf) or strings (cef).
    #[schema(value_type = Vec<Object>)]
    alerts: Vec<Value>,
    /// Send this next; unchanged when caught up.
    next_cursor: String,
}

/// Pull delivery for SIEMs: alerts created or changed after `cursor`, oldest change first.
/// An empty list means caught up; the cursor to send next is always returned (unchanged when
/// caught up), so a poller never skips a change and needs to remember nothing else.
#[utoipa::path(get, path = "/api/v1/export", tag = "export", params(ExportParams),
    responses((status = 200, body = ExportPage), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn export(State(s): State<Shared>, Query(p): Query<ExportParams>) -> Answer {
    let after = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| bad("malformed cursor"))?,
    };
    let format = crate::forward::PayloadFormat::parse(p.format.as_deref().unwrap_or("native"))
        .ok_or_else(|| bad("unknown format (native, ocsf or cef)"))?;
    let limit = p.limit.unwrap_or(500).clamp(1, 5000);
    let rows = s
        .read_alerts(move |st| st.changes(after, limit))
        .await?
        .unwrap_or_default();
    let next = rows.last().map(|(seq, _)| *seq).unwrap_or(after);
    let alerts = rows.iter().map(|(_, a)| format.render(a)).collect();
    Ok(Json(ExportPage {
        alerts,
        next_cursor: next.to_string(),
    })
    .into_response())
}

/// The rules this service evaluates (summaries).
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules",
    responses((status = 200, body = Object, description = "{\"rules\": [...]}")),
    security(("bearer" = [])))]
pub async fn list_rules(State(s): State<Shared>) -> Answer {
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
    let rules: Vec<Value> = s
        .rules
        .iter()
        .map(|r| {
            keep.iter()
                .filter_map(|k| r.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect();
    Ok(Json(json!({"rules": rules})).into_response())
}

/// One rule: metadata, parameters and SQL.
#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "Rule ID")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_rule(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Answer {
    match s.rules.iter().find(|r| r["id"] == id.as_str()) {
        Some(r) => Ok(Json(r.clone()).into_response()),
        None => Err(ApiError::not_found("no such rule")),
    }
}

/// An analyst query.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One SELECT over `events`, `activity`, `alerts`, `alert_history`, `azure_diagnostics`
    /// or `information_schema`.
    sql: String,
    /// json (default) or csv.
    format: Option<String>,
    /// Row limit, up to the server's (smaller wins).
    max_rows: Option<usize>,
}

/// Rows of an analyst query.
#[derive(Serialize, ToSchema)]
pub struct QueryResponse {
    /// Column names, in the order of the statement's select list.
    columns: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    rows: Value,
    row_count: usize,
    /// More rows existed than the limit.
    truncated: bool,
    elapsed_ms: u64,
}

/// Read-only SQL for analysts: one SELECT, run in a separate worker process with a row and
/// byte limit, a timeout and a memory limit; nothing outside the event and alert stores can
/// be named, and statements nested too deeply are refused.
#[utoipa::path(post, path = "/api/v1/query", tag = "query", request_body = QueryRequest,
    responses((status = 200, body = QueryResponse, description = "JSON, or text/csv when format is csv"),
        (status = 400, body = ErrorBody, description = "Refused, too complex, failed, or over the memory limit"),
        (status = 408, body = ErrorBody, description = "Timed out"),
        (status = 503, body = ErrorBody, description = "Every SQL worker is busy")),
    security(("bearer" = [])))]
pub async fn query(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Answer {
    let q: QueryRequest = json_body(req, 256 * 1024).await?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => return Err(bad(format!("unknown format {f:?} (json or csv)"))),
    };
    let mut limits = s.sql_limits;
    if let Some(m) = q.max_rows {
        limits.max_rows = limits.max_rows.min(m.max(1));
    }
    // The statement is logged (it is the analyst's own text) as a quoted field, never its
    // results.
    let r = s.sql.run(&q.sql, limits, Tables::Analyst).await;
    match &r {
        Ok(res) => {
            tracing::info!(key = %caller.name, rows = res.rows, truncated = res.truncated, elapsed_ms = res.elapsed.as_millis() as u64, sql = ?q.sql, "api.query")
        }
        Err(e) => {
            tracing::warn!(key = %caller.name, code = e.code(), error = %e, sql = ?q.sql, "api.query_refused")
        }
    }
    let res = r?;
    if csv {
        let mut buf = Vec::new();
        {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for b in &res.batches {
                w.write(b).map_err(ApiError::internal)?;
            }
        }
        if res.batches.is_empty() {
            let names: Vec<&str> = res
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            buf = format!("{}\n", names.join(",")).into_bytes();
        }
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::HeaderName::from_static("x-kvwatch-truncated"),
                    res.truncated.to_string(),
                ),
            ],
            buf,
        )
            .into_response());
    }
    let columns = res
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let rows = rows_json(&res.batches)?;
    Ok(Json(QueryResponse {
        columns,
        rows,
        row_count: res.rows,
        truncated: res.truncated,
        elapsed_ms: res.elapsed.as_millis() as u64,
    })
    .into_response())
}

/// Query parameters of `GET /stats`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// RFC 3339 start [default: 24 hours before `to`].
    from: Option<String>,
    /// RFC 3339 end [default: now].
    to: Option<String>,
    /// Only this vault's events.
    vault: Option<String>,
}

/// Event and alert counts for a period.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    #[schema(value_type = String, format = DateTime)]
    from: String,
    #[schema(value_type = String, format = DateTime)]
    to: String,
    /// `{vault, hour, events, failed}` rows, by hour and vault.
    #[schema(value_type = Vec<Object>)]
    events_per_vault_hour: Value,
    events_total: i64,
    alerts: AlertCounts,
}

/// Events per vault and hour, and alerts by severity, status and rule, for a period.
#[utoipa::path(get, path = "/api/v1/stats", tag = "stats", params(StatsParams),
    responses((status = 200, body = Stats), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stats(State(s): State<Shared>, Query(p): Query<StatsParams>) -> Answer {
    let to = match p.to.as_deref() {
        Some(v) => rfc3339("to", v)?,
        None => kvwatch_ingest::store::now_nanos(),
    };
    let from = match p.from.as_deref() {
        Some(v) => rfc3339("from", v)?,
        None => to - 24 * 3_600_000_000_000,
    };
    if from >= to {
        return Err(bad("from must be before to"));
    }
    if let Some(v) = &p.vault
        && !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("vault names are letters, digits and '-'"));
    }
    let ts = |ns: i64| kvwatch_ingest::time::format_ns(ns);
    let vault_filter = p
        .vault
        .as_deref()
        .map(|v| format!(" AND vault = '{}'", v.to_lowercase()))
        .unwrap_or_default();
    let sql = format!(
        "SELECT vault, date_trunc('hour', time) AS hour, count(*) AS events, \
         count(*) FILTER (WHERE http_status >= 400 AND http_status <> 401) AS failed \
         FROM events WHERE time >= to_timestamp_nanos({from}) AND time < to_timestamp_nanos({to}){vault_filter} \
         GROUP BY 1, 2 ORDER BY 2, 1"
    );
    let limits = crate::sql::SqlLimits {
        max_rows: 100_000,
        ..s.sql_limits
    };
    let rows = s.sql.run(&sql, limits, Tables::Analyst).await?;
    let per_hour = rows_json(&rows.batches)?;
    let total = per_hour
        .as_array()
        .map(|a| a.iter().map(|r| r["events"].as_i64().unwrap_or(0)).sum())
        .unwrap_or(0);
    let alerts = s
        .read_alerts(move |st| st.counts(from, to))
        .await?
        .unwrap_or_default();
    Ok(Json(Stats {
        from: ts(from),
        to: ts(to),
        events_per_vault_hour: per_hour,
        events_total: total,
        alerts,
    })
    .into_response())
}

/// A push forwarder and where it stands.
#[derive(Serialize, ToSchema)]
pub struct SinkInfo {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    /// Where it delivers (no credentials).
    target: String,
    /// Every change up to this number is delivered or dead-lettered.
    cursor: i64,
    /// Changes not yet delivered.
    lag: i64,
    delivered: u64,
    retries: u64,
    dead_letters: i64,
    skipped: u64,
    running: bool,
    last_error: Option<String>,
    /// Unix seconds of the last delivery (0: none yet).
    last_success: i64,
}

/// The push forwarders of this service.
#[utoipa::path(get, path = "/api/v1/sinks", tag = "sinks",
    responses((status = 200, body = Vec<SinkInfo>)), security(("bearer" = [])))]
pub async fn list_sinks(State(s): State<Shared>) -> Answer {
    use std::sync::atomic::Ordering::Relaxed;
    let (head, dead) = s
        .read_alerts(|st| Ok((st.head_seq()?, st.dead_letter_counts()?)))
        .await?
        .unwrap_or_default();
    let out: Vec<SinkInfo> = s
        .sinks
        .iter()
        .map(|x| SinkInfo {
            name: x.name.clone(),
            kind: x.kind.to_owned(),
            target: x.target.clone(),
            cursor: x.cursor.load(Relaxed),
            lag: (head - x.cursor.load(Relaxed)).max(0),
            delivered: x.delivered.load(Relaxed),
            retries: x.retries.load(Relaxed),
            dead_letters: dead
                .iter()
                .find(|(n, _)| *n == x.name)
                .map(|d| d.1)
                .unwrap_or(0),
            skipped: x.skipped.load(Relaxed),
            running: !x.stopped.load(Relaxed),
            last_error: x.last_error(),
            last_success: x.last_success.load(Relaxed),
        })
        .collect();
    Ok(Json(out).into_response())
}

fn known_sink(s: &Shared, name: &str) -> Result<(), ApiError> {
    if s.sinks.iter().any(|x| x.name == name) {
        Ok(())
    } else {
        Err(ApiError::not_found("no such sink"))
    }
}

/// Alerts a sink refused for good, newest first.
#[utoipa::path(get, path = "/api/v1/sinks/{name}/dead-letters", tag = "sinks",
    params(("name" = String, Path, description = "Sink name")),
    responses((status = 200, body = Vec<DeadLetter>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn dead_letters(State(s): State<Shared>, UrlPath(name): UrlPath<String>) -> Answer {
    known_sink(&s, &name)?;
    let list = s
        .read_alerts(move |st| st.dead_letters(Some(&name), 10_000))
        .await?
        .unwrap_or_default();
    Ok(Json(list).into_response())
}

/// Queue a sink's dead letters for another delivery (after fixing the cause).
#[utoipa::path(post, path = "/api/v1/sinks/{name}/dead-letters/retry", tag = "sinks",
    params(("name" = String, Path, description = "Sink name")),
    responses((status = 200, body = Object, description = "{\"queued\": n}"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry_dead_letters(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Extension(caller): Extension<Caller>,
) -> Answer {
    known_sink(&s, &name)?;
    let n = name.clone();
    let queued = s.write_alerts(move |st| st.retry_dead_letters(&n)).await?;
    tracing::info!(sink = %name, queued, key = %caller.name, "api.dead_letters_requeued");
    Ok(Json(json!({"queued": queued})).into_response())
}

/// API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, body = Vec<KeyInfo>)), security(("bearer" = [])))]
pub async fn list_keys(State(s): State<Shared>) -> Answer {
    Ok(Json(s.keys.list()?).into_response())
}

/// A new key's name and role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    /// reader, analyst or admin.
    role: String,
}

/// The created key; its secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    name: String,
    role: Role,
    key: String,
}

/// Create an API key.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_key(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Answer {
    let k: NewKey = json_body(req, 4096).await?;
    let role = Role::parse(&k.role)?;
    let key = s
        .keys
        .create(&k.name, role)
        .inspect_err(|e| note_key_write(&s, e))?;
    tracing::info!(created = %k.name, role = role.as_str(), key = %caller.name, "api.key_created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            name: k.name,
            role,
            key,
        }),
    )
        .into_response())
}

/// A key-store write the disk refused marks the disk for `/readyz`.
fn note_key_write(s: &Shared, e: &crate::auth::AuthError) {
    if let crate::auth::AuthError::Db(db) = e
        && crate::error::is_disk_refusal(db)
    {
        s.disk.write_failed("the key store", db);
    }
}

/// Revoke an API key (effective immediately).
#[utoipa::path(delete, path = "/api/v1/keys/{name}", tag = "keys",
    params(("name" = String, Path, description = "Key name")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_key(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Extension(caller): Extension<Caller>,
) -> Answer {
    s.keys
        .revoke(&name)
        .inspect_err(|e| note_key_write(&s, e))?;
    tracing::info!(revoked = %name, key = %caller.name, "api.key_revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Stored reports, newest first.
#[utoipa::path(get, path = "/api/v1/reports", tag = "reports",
    responses((status = 200, body = Vec<crate::report::StoredReport>)), security(("bearer" = [])))]
pub async fn list_reports(State(s): State<Shared>) -> Answer {
    let data = s.data.clone();
    let list = tokio::task::spawn_blocking(move || crate::report::list(&data)).await??;
    Ok(Json(list).into_response())
}

/// Download a stored report (HTML, CSV or JSON as generated).
#[utoipa::path(get, path = "/api/v1/reports/{id}", tag = "reports",
    params(("id" = String, Path, description = "Report ID")),
    responses((status = 200, description = "The report file"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_report(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Answer {
    let data = s.data.clone();
    let Some((meta, body)) =
        tokio::task::spawn_blocking(move || crate::report::load(&data, &id)).await??
    else {
        return Err(ApiError::not_found("no such report"));
    };
    let format = crate::report::Format::parse(&meta.format).unwrap_or(crate::report::Format::Json);
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"kvwatch-{}.{}\"",
                    meta.id, meta.format
                ),
            ),
        ],
        body,
    )
        .into_response())
}

/// A report to generate now.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// compliance (default), access, permissions, sensitive-ops, failed-access, blast-radius,
    /// hygiene or alerts.
    kind: Option<String>,
    /// RFC 3339 period start [default: 30 days before `to`].
    from: Option<String>,
    /// RFC 3339 period end [default: now].
    to: Option<String>,
    /// Only these vaults.
    #[serde(default)]
    vaults: Vec<String>,
    /// html (default), csv or json.
    format: Option<String>,
}

/// Generate a report now; it is stored and listed like scheduled ones.
#[utoipa::path(post, path = "/api/v1/reports", tag = "reports", request_body = ReportRequest,
    responses((status = 201, body = crate::report::StoredReport), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_report(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Answer {
    use crate::report::{Format, Kind, ReportOptions};
    let r: ReportRequest = json_body(req, 16 * 1024).await?;
    let kind = Kind::parse(r.kind.as_deref().unwrap_or("compliance"))
        .ok_or_else(|| bad("unknown kind"))?;
    let format = Format::parse(r.format.as_deref().unwrap_or("html"))
        .ok_or_else(|| bad("unknown format (html, csv or json)"))?;
    let to = match r.to.as_deref() {
        Some(v) => rfc3339("to", v)?,
        None => kvwatch_ingest::store::now_nanos(),
    };
    let from = match r.from.as_deref() {
        Some(v) => rfc3339("from", v)?,
        None => to - 30 * 86_400_000_000_000,
    };
    if from >= to {
        return Err(bad("from must be before to"));
    }
    let mut o = ReportOptions::new(kind, from, to);
    o.vaults = r.vaults.iter().map(|v| v.trim().to_lowercase()).collect();
    let rep = crate::report::run(&s.data, &o).await?;
    let body = crate::report::render(&rep, format);
    let data = s.data.clone();
    let by = format!("api:{}", caller.name);
    let saved =
        tokio::task::spawn_blocking(move || crate::report::save(&data, &rep, format, &body, &by))
            .await?;
    let meta = match saved {
        Ok(m) => m,
        Err(crate::report::ReportError::Io(e)) => {
            s.disk.write_failed("a report", &e);
            return Err(ApiError::unavailable(
                "the report could not be stored (disk full or read-only)",
                e,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(report = %meta.id, key = %caller.name, "api.report_generated");
    Ok((StatusCode::CREATED, Json(meta)).into_response())
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("kvw_ API key")
                        .description(Some(
                            "Create keys with `kvwatch apikey create --role R --name N`.",
                        ))
                        .build(),
                ),
            );
    }
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "kvwatch", description = "Azure Key Vault audit-log detections: alerts, triage, analyst SQL, SIEM export."),
    paths(list_alerts, get_alert, patch_alert, alert_events, export, list_rules, get_rule, query, stats,
        list_sinks, dead_letters, retry_dead_letters, list_keys, create_key, revoke_key,
        list_reports, get_report, create_report),
    components(schemas(Alert, AlertItem, AlertPage, AlertDetail, AlertPatch, HistoryEntry, ExportPage, QueryRequest,
        QueryResponse, Stats, AlertCounts, SinkInfo, DeadLetter, KeyInfo, NewKey, CreatedKey, Role, ErrorBody,
        ReportRequest, crate::report::StoredReport,
        Severity, Status, kvwatch_detect::Principal)),
    modifiers(&BearerAuth),
    tags((name = "alerts", description = "List, inspect and triage alerts"),
        (name = "export", description = "Pull delivery for SIEMs"),
        (name = "query", description = "Read-only analyst SQL"),
        (name = "rules"), (name = "stats"), (name = "reports", description = "Compliance reports"), (name = "sinks", description = "Push forwarders"),
        (name = "keys", description = "API keys (admin)"))
)]
pub struct ApiDoc;

/// The OpenAPI 3.1 document of this API.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().unwrap_or_default()
}

/// The OpenAPI document (open: it holds no data).
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
