//! The API's one error type and the request ID that ties an error answer to the log.
//!
//! Every error answer is `{"error": message, "code": code, "request_id": id}`. The message is
//! written for the client and never carries internal text (a database error, a path, an
//! engine message): a 500 says only that something failed and names the request, and the
//! detail goes to the log under the same request ID, where an operator finds it.

use crate::auth::AuthError;
use crate::sql::SqlError;
use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kvwatch_detect::AlertStoreError;
use serde_json::json;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The response header that carries the request ID.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The ID of the request being handled on this task ("-" outside a request).
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.clone())
        .unwrap_or_else(|_| "-".to_owned())
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// What went wrong inside, for the log only.
    pub detail: Option<String>,
    /// Seconds the client should wait before retrying (503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A failure inside the service: the client learns only the request ID.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            detail: Some(detail.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the service log has the details under this request ID",
            )
        }
    }

    /// The service cannot do this now (a full or read-only disk), but may soon.
    pub fn unavailable(message: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self {
            detail: Some(detail.to_string()),
            retry_after: Some(30),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = request_id();
        if let Some(d) = &self.detail {
            tracing::error!(request_id = %id, status = self.status.as_u16(), code = self.code, detail = ?d, "api.error");
        }
        let mut r = (
            self.status,
            Json(json!({"error": self.message, "code": self.code, "request_id": id})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<SqlError> for ApiError {
    fn from(e: SqlError) -> Self {
        let status = match &e {
            SqlError::Refused(_)
            | SqlError::TooComplex(_)
            | SqlError::Query(_)
            | SqlError::Memory(_) => StatusCode::BAD_REQUEST,
            SqlError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            SqlError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            SqlError::Crashed(_) | SqlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            code: e.code(),
            message: e.to_string(),
            detail: e.internal_detail().map(str::to_owned),
            retry_after: matches!(e, SqlError::Busy).then_some(2),
        }
    }
}

/// Whether a store error is the disk refusing writes (full, read-only, no permission).
pub fn is_disk_refusal(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(C::DiskFull | C::ReadOnly | C::CannotOpen | C::PermissionDenied | C::SystemIoFailure)
    )
}

impl From<AlertStoreError> for ApiError {
    fn from(e: AlertStoreError) -> Self {
        match &e {
            AlertStoreError::NoSuchAlert(_) => Self::not_found("no such alert"),
            AlertStoreError::Sql(db) if is_disk_refusal(db) => Self::unavailable(
                "the alert store cannot be written now (disk full or read-only); reads still work",
                &e,
            ),
            AlertStoreError::Postgres(pg) if pg.code().is_none() => Self::unavailable(
                "the shared alert database cannot be reached now; try again",
                &e,
            ),
            AlertStoreError::Config { .. } => Self::unavailable(
                "the shared alert database cannot be reached now; try again",
                &e,
            ),
            _ => Self::internal(&e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let e = match e {
            AuthError::Shared(inner) => return inner.into(),
            e => e,
        };
        match &e {
            AuthError::BadRole(_) | AuthError::BadName => Self::bad_request(e.to_string()),
            AuthError::Exists(_) => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            AuthError::NoSuchKey(_) => Self::not_found(e.to_string()),
            AuthError::Db(db) if is_disk_refusal(db) => Self::unavailable(
                "the key store cannot be written now (disk full or read-only); existing keys still work",
                &e,
            ),
            AuthError::Db(_) | AuthError::Shared(_) => Self::internal(&e),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(format!("a background task failed: {e}"))
    }
}

impl From<crate::report::ReportError> for ApiError {
    fn from(e: crate::report::ReportError) -> Self {
        match &e {
            crate::report::ReportError::Invalid(_) => Self::bad_request(e.to_string()),
            _ => Self::internal(&e),
        }
    }
}

/// A request ID the client sent that is safe to echo and log: 1 to 64 characters of letters,
/// digits, '-', '_' and '.'.
fn client_request_id(req: &Request) -> Option<String> {
    let v = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then(|| v.to_owned())
}

/// A fresh request ID (16 hex digits).
pub(crate) fn new_request_id() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 8];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outermost layer: gives every request an ID (the client's `X-Request-Id` when it is
/// well-formed), runs the request in a log span and a task-local that carry it, returns it
/// in the `X-Request-Id` header, and turns error answers made outside the handlers (unknown
/// route, wrong method, a malformed query string) into the JSON error shape.
pub async fn request_ids(req: Request, next: Next) -> Response {
    let id = client_request_id(&req).unwrap_or_else(new_request_id);
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(
                async move {
                    let resp = next.run(req).await;
                    uniform_error(resp).await
                },
                span,
            ),
        )
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// An error answer that is not yet JSON (axum's own rejections) in the JSON error shape.
async fn uniform_error(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    // JSON errors stay as they are, and so do the console's error pages.
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text.trim().to_owned()
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}
