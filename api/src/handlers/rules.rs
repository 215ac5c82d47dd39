//! The rules the service evaluates.

use super::{Answer, ErrorBody};
use crate::error::ApiError;
use crate::state::Shared;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::response::IntoResponse;
use serde_json::{Value, json};

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
