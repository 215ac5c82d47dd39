//! Sign-in with an API key, sign-out.

use super::{Signed, view};
use crate::session;
use crate::state::Shared;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use std::sync::atomic::Ordering;

#[derive(Deserialize, Default)]
pub struct Next {
    next: Option<String>,
}

/// Only a path of this site (never `//host` or a scheme) is a place to go back to.
fn local(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/alerts".to_owned(),
    }
}

fn login_page(next: &str, error: Option<&str>) -> String {
    view::page(
        "Sign in",
        None,
        "",
        html! {
            div.login {
                h1 { "Sign in" }
                p.muted { "Use an API key (" code { "kvwatch apikey create --name NAME --role analyst" } "). Its role decides what you can do here; every change you make is recorded under its name." }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="current-password" required autofocus;
                    p { button type="submit" { "Sign in" } }
                }
            }
        },
    )
    .into_string()
}

pub async fn form(Query(q): Query<Next>) -> Response {
    Html(login_page(&local(q.next.as_deref()), None)).into_response()
}

#[derive(Deserialize)]
pub struct Login {
    key: String,
    next: Option<String>,
}

pub async fn sign_in(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<Login>,
) -> Response {
    let next = local(f.next.as_deref());
    let now = kvwatch_ingest::store::now_nanos();
    match s.sessions.open(&s.keys, &f.key, now) {
        Ok(Some((id, sess))) => {
            tracing::info!(key = %sess.name, role = sess.role.as_str(), "console.sign_in");
            // Behind a TLS-terminating proxy the cookie is also `Secure` (never sent in clear).
            let tls = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https"));
            let cookie = format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                session::COOKIE,
                s.sessions.absolute.as_secs(),
                if tls { "; Secure" } else { "" }
            );
            let mut r = Redirect::to(&next).into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, cookie.parse().expect("ASCII cookie"));
            r
        }
        Ok(None) => {
            s.denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("console.bad_key");
            (
                StatusCode::UNAUTHORIZED,
                Html(login_page(&next, Some("Unknown or revoked API key."))),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "console.key_store_unreadable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(login_page(
                    &next,
                    Some("The key store cannot be read now; try again shortly."),
                )),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
pub struct Csrf {
    csrf: String,
}

pub async fn sign_out(
    State(s): State<Shared>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<Csrf>,
) -> Response {
    if let Err(r) = signed.csrf(&f.csrf) {
        return r;
    }
    let id = super::cookie(&headers, session::COOKIE);
    if let Some(id) = id {
        s.sessions.close(&id);
    }
    tracing::info!(key = %signed.0.name, "console.sign_out");
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            session::COOKIE
        )
        .parse()
        .expect("ASCII cookie"),
    );
    r
}
