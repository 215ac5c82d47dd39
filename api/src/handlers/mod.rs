//! The `/api/v1` handlers, one module per resource. Each handler carries its OpenAPI
//! description (`utoipa::path`), and [`ApiDoc`] collects them into the document served at
//! `/api/v1/openapi.json`, so the document cannot drift from the routes. Handlers return
//! [`Answer`]: a response, or an [`ApiError`] that renders the one error shape.

pub mod alerts;
pub mod keys;
pub mod query;
pub mod reports;
pub mod rules;
pub mod sinks;
pub mod stats;

use crate::auth::{KeyInfo, Role};
use crate::error::ApiError;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kvwatch_detect::store::{AlertCounts, DeadLetter};
use kvwatch_detect::{Alert, HistoryEntry, Severity, Status};
use serde::Serialize;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

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

/// What a handler returns.
pub type Answer = Result<Response, ApiError>;

pub(crate) fn rfc3339(name: &str, v: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| bad(format!("{name}: {v:?} is not an RFC 3339 time")))
}

pub(crate) fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

/// How long a client may take to send a request body.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a JSON body of at most `limit` bytes, sent within [`BODY_DEADLINE`].
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
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

/// Record batches as a JSON array of row objects, each with its keys in column order (as
/// written, not re-parsed into a sorted map).
pub(crate) fn rows_raw(
    batches: &[datafusion::arrow::array::RecordBatch],
) -> Result<Box<serde_json::value::RawValue>, ApiError> {
    let bytes = kvwatch_ingest::query::batches_json(batches).map_err(ApiError::internal)?;
    let text = String::from_utf8(bytes).map_err(ApiError::internal)?;
    serde_json::value::RawValue::from_string(text).map_err(ApiError::internal)
}

/// Record batches as a JSON array of row objects.
pub(crate) fn rows_json(
    batches: &[datafusion::arrow::array::RecordBatch],
) -> Result<Value, ApiError> {
    let bytes = kvwatch_ingest::query::batches_json(batches).map_err(ApiError::internal)?;
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
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
    paths(alerts::list_alerts, alerts::get_alert, alerts::patch_alert, alerts::alert_events,
        alerts::export, rules::list_rules, rules::get_rule, query::query, stats::stats,
        sinks::list_sinks, sinks::dead_letters, sinks::retry_dead_letters, keys::list_keys,
        keys::create_key, keys::revoke_key, reports::list_reports, reports::get_report,
        reports::create_report),
    components(schemas(Alert, alerts::AlertItem, alerts::AlertPage, alerts::AlertDetail,
        alerts::AlertPatch, HistoryEntry, alerts::ExportPage, query::QueryRequest,
        query::QueryResponse, stats::Stats, AlertCounts, sinks::SinkInfo, DeadLetter, KeyInfo,
        keys::NewKey, keys::CreatedKey, Role, ErrorBody, reports::ReportRequest,
        crate::report::StoredReport, Severity, Status, kvwatch_detect::Principal)),
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
