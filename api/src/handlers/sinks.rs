//! The push forwarders: where each stands, its dead letters, and retrying them.

use super::{Answer, ErrorBody};
use crate::error::ApiError;
use crate::state::{Caller, Shared};
use axum::extract::{Path as UrlPath, State};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use kvwatch_detect::store::DeadLetter;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

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

pub(crate) fn known_sink(s: &Shared, name: &str) -> Result<(), ApiError> {
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
