//! The analyst console: server-rendered HTML on the API's port (`/` → console, `/api/v1`
//! unchanged). Pages are typed templates ([`maud`]) over the same stores and SQL workers
//! the API uses; every byte (style, script, icons) is compiled in, and a strict
//! Content-Security-Policy forbids inline script and anything from elsewhere.
//!
//! Sign-in takes an API key and answers with a session cookie ([`crate::session`]); the key's
//! role decides what the pages offer and what the server accepts. Every state-changing
//! request is a POST that carries the session's CSRF token and, when the browser sends
//! one, an `Origin` of this host.

mod admin;
mod alert;
mod entity;
mod login;
mod pages;
mod queue;
pub mod view;
mod workbench;

use crate::auth::Role;
use crate::session;
pub use crate::session::{Session, Sessions};
use crate::state::Shared;
use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

/// The policy of every console page: only this origin's own style, script and images;
/// no frames, no plugins, forms only to here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in request. Without a valid session, pages redirect to the sign-in page.
pub struct Signed(pub Session);

impl FromRequestParts<Shared> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, Response> {
        let now = kvwatch_ingest::store::now_nanos();
        let found = cookie(&parts.headers, session::COOKIE)
            .and_then(|id| s.sessions.get(&s.keys, &id, now));
        match found {
            Some(sess) => Ok(Signed(sess)),
            None => {
                let back = parts
                    .uri
                    .path_and_query()
                    .map_or("/alerts", |p| p.as_str())
                    .to_owned();
                let to = if parts.method == Method::GET && back.starts_with('/') {
                    format!("/login?next={}", view::enc(&back))
                } else {
                    "/login".to_owned()
                };
                Err(Redirect::to(&to).into_response())
            }
        }
    }
}

impl Signed {
    /// Refuses (403 page) when the key's role is below `need`.
    #[allow(clippy::result_large_err)] // a rendered page is the error
    pub fn need(&self, need: Role, what: &str) -> Result<(), Response> {
        if self.0.role >= need {
            return Ok(());
        }
        tracing::warn!(key = %self.0.name, role = self.0.role.as_str(), need = need.as_str(), what, "console.forbidden");
        Err(refuse(
            StatusCode::FORBIDDEN,
            Some(&self.0),
            "Not allowed",
            &format!(
                "Your key has the {} role; {what} needs {}.",
                self.0.role.as_str(),
                need.as_str()
            ),
        ))
    }

    /// A state-changing form: its CSRF token must be the session's and the key's role at
    /// least `need`.
    #[allow(clippy::result_large_err)]
    pub fn may(&self, token: &str, need: Role, what: &str) -> Result<(), Response> {
        self.csrf(token)?;
        self.need(need, what)
    }

    /// Checks a form's CSRF token against the session's.
    #[allow(clippy::result_large_err)]
    pub fn csrf(&self, token: &str) -> Result<(), Response> {
        if session::same(token, &self.0.csrf) {
            Ok(())
        } else {
            tracing::warn!(key = %self.0.name, "console.csrf_mismatch");
            Err(refuse(
                StatusCode::FORBIDDEN,
                Some(&self.0),
                "Form expired",
                "This form was not issued by this session (or the session changed). Go back, reload and try again.",
            ))
        }
    }
}

/// A failure as a page: the API error's status and message (internal details are logged,
/// never shown).
pub fn failed(signed: &Signed, e: crate::error::ApiError) -> Response {
    if let Some(d) = &e.detail {
        tracing::error!(key = %signed.0.name, detail = %d, "console.failed");
    }
    let title = if e.status.is_client_error() {
        "Cannot do that"
    } else {
        "Something failed"
    };
    refuse(e.status, Some(&signed.0), title, &e.message)
}

/// An error page with a status.
pub fn refuse(status: StatusCode, sess: Option<&Session>, title: &str, msg: &str) -> Response {
    (status, Html(view::problem(sess, title, msg).into_string())).into_response()
}

/// A cookie's value from the request's headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Security headers on every console answer, and the same-origin check on every POST.
async fn guard(req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        {
            let bare = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .unwrap_or(origin);
            if bare != host {
                tracing::warn!(origin, host, "console.cross_origin_post");
                return refuse(
                    StatusCode::FORBIDDEN,
                    None,
                    "Refused",
                    "A form from another site cannot change anything here.",
                );
            }
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn stylesheet() -> Response {
    static CSS: std::sync::LazyLock<String> = std::sync::LazyLock::new(view::stylesheet);
    asset("text/css; charset=utf-8", CSS.as_str())
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", view::SCRIPT)
}

async fn favicon() -> Response {
    asset("image/svg+xml", view::FAVICON)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The store's change counter, for the queue's polling.
async fn head(State(s): State<Shared>, _: Signed) -> Response {
    match s.read_alerts(|st| st.head_seq()).await {
        Ok(h) => axum::Json(serde_json::json!({"head": h.unwrap_or(0)})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The console's routes.
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/alerts") }))
        .route("/login", get(login::form).post(login::sign_in))
        .route("/logout", post(login::sign_out))
        .route("/alerts", get(queue::queue))
        .route("/alerts/bulk", post(queue::bulk))
        .route("/alerts/{id}", get(alert::page).post(alert::triage))
        .route("/console/head", get(head))
        .route("/principals/{id}", get(entity::principal))
        .route("/vaults/{id}", get(entity::vault))
        .route("/ips/{id}", get(entity::ip))
        .route("/workbench", get(workbench::page).post(workbench::run))
        .route("/reports", get(pages::reports).post(pages::generate))
        .route("/reports/{id}", get(pages::report))
        .route("/rules", get(pages::rules))
        .route("/health", get(pages::health))
        .route("/admin", get(admin::page))
        .route("/admin/keys", post(admin::create_key))
        .route("/admin/keys/{name}/revoke", post(admin::revoke_key))
        .route("/admin/sinks/{name}/retry", post(admin::retry_sink))
        .route("/static/kvwatch.css", get(stylesheet))
        .route("/static/console.js", get(script))
        .route("/static/favicon.svg", get(favicon))
        .layer(middleware::from_fn(guard))
}
