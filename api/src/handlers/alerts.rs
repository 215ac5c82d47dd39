//! Alerts: listing with filters and keyset pages, one alert with its trail and evidence,
//! triage (status, assignee, comments), and the change feed SIEMs pull.

use super::{Answer, ErrorBody, bad, json_body, rfc3339, rows_json};
use crate::error::ApiError;
use crate::state::{Caller, Shared};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use kvwatch_detect::store::{AlertFilter, AlertSort, AlertUpdate};
use kvwatch_detect::{Alert, HistoryEntry, Severity, Status};
use kvwatch_ingest::DataDir;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

/// Query parameters of `GET /alerts` (and of the console's queue).
#[derive(Deserialize, Serialize, IntoParams, Default, Clone)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Minimum severity (informational, low, medium, high, critical).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// new, acknowledged, resolved or suppressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Rule ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Vault name (case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// Principal UPN, object ID or application ID (case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Caller IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Assignee.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Substring (3 characters or more) of title, summary, description or dedup key
    /// (case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// RFC 3339: alerts last seen at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// RFC 3339: alerts last seen before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// -last_seen (default), last_seen, -created_at, created_at, -severity, severity,
    /// -event_count or event_count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    /// Page size, 1 to 1000 [default 100].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Include each alert's `description` and `evidence` (event IDs); by default a page
    /// carries `evidence_count` instead, and `GET /alerts/{id}` has everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full: Option<bool>,
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
    /// Wall-clock time the alert was first raised (as on the full alert).
    #[schema(value_type = String, format = DateTime)]
    detected_at: String,
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
            detected_at: t(a.detected_at),
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

impl ListParams {
    /// The store filter these parameters ask for (the page size defaults to 100).
    pub fn filter(&self) -> Result<AlertFilter, ApiError> {
        let p = self;
        let mut f = AlertFilter::default();
        if let Some(v) = p.severity.as_deref().filter(|v| !v.is_empty()) {
            f.min_severity =
                Some(Severity::parse(v).ok_or_else(|| bad(format!("unknown severity {v:?}")))?);
        }
        if let Some(v) = p.status.as_deref().filter(|v| !v.is_empty()) {
            f.status = Some(Status::parse(v).ok_or_else(|| bad(format!("unknown status {v:?}")))?);
        }
        if let Some(v) = p.sort.as_deref().filter(|v| !v.is_empty()) {
            f.sort = AlertSort::parse(v).ok_or_else(|| bad(format!("unknown sort {v:?}")))?;
        }
        for (name, value, slot) in [
            ("since", &p.since, &mut f.since),
            ("until", &p.until, &mut f.until),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                *slot = Some(rfc3339(name, v)?);
            }
        }
        if let Some(c) = p.cursor.as_deref().filter(|v| !v.is_empty()) {
            f.after = Some(decode_cursor(c).ok_or_else(|| bad("malformed cursor"))?);
        }
        let some = |v: &Option<String>| v.clone().filter(|t| !t.trim().is_empty());
        f.rule = some(&p.rule);
        f.vault = some(&p.vault);
        f.principal = some(&p.principal);
        f.ip = some(&p.ip);
        f.assignee = some(&p.assignee);
        f.text = some(&p.q);
        if f.text.as_ref().is_some_and(|t| t.chars().count() < 3) {
            return Err(bad("q needs at least 3 characters"));
        }
        f.limit = Some(p.limit.unwrap_or(100).clamp(1, 1000));
        Ok(f)
    }
}

/// The cursor of the page after `alerts`, when the page was full.
pub fn next_cursor(alerts: &[Alert], limit: usize, sort: AlertSort) -> Option<String> {
    (alerts.len() == limit)
        .then(|| alerts.last().map(|a| encode_cursor(sort.key(a), &a.id)))
        .flatten()
}

/// List alerts with filters, sorting and cursor pagination.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(ListParams),
    responses((status = 200, body = AlertPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_alerts(State(s): State<Shared>, Query(p): Query<ListParams>) -> Answer {
    let f = p.filter()?;
    let limit = f.limit.unwrap_or(100);
    let sort = f.sort;
    let full = p.full.unwrap_or(false);
    // The page is built and serialised on the blocking thread that read it, so every
    // allocation of the alerts is freed where it was made; only the body crosses threads.
    let page = s
        .read_alerts(move |st| {
            let alerts = st.list(&f)?;
            let next_cursor = next_cursor(&alerts, limit, sort);
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

/// The statement that reads an alert's evidence events: the service's own (event IDs are
/// hex hashes, checked before they go into it). `None` when there is no well-formed ID.
pub(crate) fn evidence_sql(evidence: &[String]) -> Option<String> {
    let ids: Vec<&String> = evidence
        .iter()
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    if ids.is_empty() {
        return None;
    }
    let list = ids
        .iter()
        .map(|e| format!("'{e}'"))
        .collect::<Vec<_>>()
        .join(",");
    Some(format!(
        "SELECT * FROM events WHERE event_id IN ({list}) ORDER BY time, event_id"
    ))
}

/// `events` rows with the given IDs as a JSON array, run in-process (see [`evidence_sql`]).
pub(crate) async fn evidence_events(
    data: &DataDir,
    evidence: &[String],
) -> Result<Value, ApiError> {
    let Some(sql) = evidence_sql(evidence).filter(|_| data.has_events()) else {
        return Ok(json!([]));
    };
    let internal = |e: &dyn std::fmt::Display| ApiError::internal(format!("evidence events: {e}"));
    let ctx = data.session().await.map_err(|e| internal(&e))?;
    let df = kvwatch_ingest::query::read_only_sql(&ctx, &sql)
        .await
        .map_err(|e| internal(&e))?;
    let batches = df.collect().await.map_err(|e| internal(&e))?;
    rows_json(&batches)
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
