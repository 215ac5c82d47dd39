//! Compliance reports: stored ones, and generating one now.

use super::{Answer, ErrorBody, bad, json_body, rfc3339};
use crate::error::ApiError;
use crate::state::{Caller, Shared};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::ToSchema;

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
    use crate::report::{Format, Kind};
    let r: ReportRequest = json_body(req, 16 * 1024).await?;
    let kind = Kind::parse(r.kind.as_deref().unwrap_or("compliance"))
        .ok_or_else(|| bad("unknown kind"))?;
    let format = Format::parse(r.format.as_deref().unwrap_or("html"))
        .ok_or_else(|| bad("unknown format (html, csv or json)"))?;
    let to = r.to.as_deref().map(|v| rfc3339("to", v)).transpose()?;
    let from = r.from.as_deref().map(|v| rfc3339("from", v)).transpose()?;
    let by = format!("api:{}", caller.name);
    let meta = generate(&s, kind, format, from, to, &r.vaults, by).await?;
    tracing::info!(report = %meta.id, key = %caller.name, "api.report_generated");
    Ok((StatusCode::CREATED, Json(meta)).into_response())
}

/// Runs, renders and stores a report (`to` defaults to now, `from` to 30 days before `to`).
pub(crate) async fn generate(
    s: &Shared,
    kind: crate::report::Kind,
    format: crate::report::Format,
    from: Option<i64>,
    to: Option<i64>,
    vaults: &[String],
    by: String,
) -> Result<crate::report::StoredReport, ApiError> {
    let to = to.unwrap_or_else(kvwatch_ingest::store::now_nanos);
    let from = from.unwrap_or(to - 30 * 86_400_000_000_000);
    if from >= to {
        return Err(bad("from must be before to"));
    }
    let mut o = crate::report::ReportOptions::new(kind, from, to);
    o.vaults = vaults.iter().map(|v| v.trim().to_lowercase()).collect();
    let rep = crate::report::run(&s.data, &o).await?;
    let body = crate::report::render(&rep, format);
    let data = s.data.clone();
    let saved =
        tokio::task::spawn_blocking(move || crate::report::save(&data, &rep, format, &body, &by))
            .await?;
    match saved {
        Ok(m) => Ok(m),
        Err(crate::report::ReportError::Io(e)) => {
            s.disk.write_failed("a report", &e);
            Err(ApiError::unavailable(
                "the report could not be stored (disk full or read-only)",
                e,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
