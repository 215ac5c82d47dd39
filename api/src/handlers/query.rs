//! Analyst SQL: one read-only statement, run in a worker process under the limits.

use super::{Answer, ErrorBody, bad, json_body, rows_raw};
use crate::error::ApiError;
use crate::sql::Tables;
use crate::state::{Caller, Shared};
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    /// One object per row, its keys in the order of `columns`.
    #[schema(value_type = Vec<Object>)]
    rows: Box<serde_json::value::RawValue>,
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
        let buf = csv_bytes(&res)?;
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
    let rows = rows_raw(&res.batches)?;
    Ok(Json(QueryResponse {
        columns,
        rows,
        row_count: res.rows,
        truncated: res.truncated,
        elapsed_ms: res.elapsed.as_millis() as u64,
    })
    .into_response())
}

/// A result as CSV with a header row (also when there are no rows).
pub(crate) fn csv_bytes(res: &crate::sql::SqlResult) -> Result<Vec<u8>, ApiError> {
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
    Ok(buf)
}
