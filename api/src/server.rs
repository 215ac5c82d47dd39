//! The axum router. Authentication is on for everything except the liveness and readiness
//! probes and the OpenAPI document: a request carries `Authorization: Bearer <key>`, the
//! key's role must cover the route, and every authenticated call is logged with the key's
//! name (never the key).

use crate::auth::Role;
use crate::error::ApiError;
use crate::handlers;
use crate::health::Disk;
use crate::state::{Caller, Shared};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::Ordering;

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
        .route("/metrics", get(crate::metrics::metrics))
        .route("/api/v1/alerts", get(handlers::alerts::list_alerts))
        .route("/api/v1/alerts/{id}", get(handlers::alerts::get_alert))
        .route(
            "/api/v1/alerts/{id}/events",
            get(handlers::alerts::alert_events),
        )
        .route("/api/v1/export", get(handlers::alerts::export))
        .route("/api/v1/rules", get(handlers::rules::list_rules))
        .route("/api/v1/rules/{id}", get(handlers::rules::get_rule))
        .route("/api/v1/stats", get(handlers::stats::stats))
        .route("/api/v1/sinks", get(handlers::sinks::list_sinks))
        .route("/api/v1/reports", get(handlers::reports::list_reports))
        .route("/api/v1/reports/{id}", get(handlers::reports::get_report))
        .route(
            "/api/v1/sinks/{name}/dead-letters",
            get(handlers::sinks::dead_letters),
        )
        .route_layer(layer(Role::Reader));
    let analyst = Router::new()
        .route(
            "/api/v1/alerts/{id}",
            axum::routing::patch(handlers::alerts::patch_alert),
        )
        .route("/api/v1/query", post(handlers::query::query))
        .route("/api/v1/reports", post(handlers::reports::create_report))
        .route_layer(layer(Role::Analyst));
    let admin = Router::new()
        .route(
            "/api/v1/keys",
            get(handlers::keys::list_keys).post(handlers::keys::create_key),
        )
        .route(
            "/api/v1/keys/{name}",
            axum::routing::delete(handlers::keys::revoke_key),
        )
        .route(
            "/api/v1/sinks/{name}/dead-letters/retry",
            post(handlers::sinks::retry_dead_letters),
        )
        .route_layer(layer(Role::Admin));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/api/v1/openapi.json", get(handlers::openapi))
        .merge(reader)
        .merge(analyst)
        .merge(admin)
        .merge(crate::console::router())
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
