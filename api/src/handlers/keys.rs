//! API keys (admin): list, create (the secret shown once), revoke.

use super::{Answer, ErrorBody, json_body};
use crate::auth::{KeyInfo, Role};
use crate::state::{Caller, Shared};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
pub(crate) fn note_key_write(s: &Shared, e: &crate::auth::AuthError) {
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
