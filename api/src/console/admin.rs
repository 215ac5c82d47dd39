//! Administration (admin keys only): API keys — list, create (the secret shown once),
//! revoke — and the sinks' dead letters requeued. The same store calls as `/api/v1/keys`
//! and `/api/v1/sinks/{name}/dead-letters/retry`, under the same role.

use super::{Signed, failed, view};
use crate::auth::Role;
use crate::handlers::keys::note_key_write;
use crate::state::Shared;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

fn render(s: &Shared, signed: &Signed, created: Option<(&str, &str)>) -> Response {
    let keys = match s.keys.list() {
        Ok(k) => k,
        Err(e) => return failed(signed, e.into()),
    };
    let csrf = &signed.0.csrf;
    let body: Markup = html! {
        h1 { "Administration" }
        @if let Some((name, secret)) = created {
            div.ok role="status" {
                p { "Key " b { (name) } " created. Copy it now: it is not stored and cannot be shown again." }
                p { code #new-key { (secret) } }
            }
        }
        h2 { "API keys" }
        form.filters method="post" action="/admin/keys" aria-label="Create a key" {
            input type="hidden" name="csrf" value=(csrf);
            label { "Name" input type="text" name="name" required pattern="[A-Za-z0-9._\\-]{1,64}"; }
            label { "Role" select name="role" { option value="reader" { "reader" } option value="analyst" { "analyst" } option value="admin" { "admin" } } }
            button type="submit" { "Create key" }
        }
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "State" } th scope="col" {} } }
            tbody { @for k in &keys { tr {
                td { (k.name) } td { (k.role.as_str()) } td { (view::when(k.created_at)) }
                td { (k.last_used_at.map(view::when).unwrap_or_default()) }
                td { @if let Some(r) = k.revoked_at { "revoked " (view::when(r)) } @else { "active" } }
                td { @if k.revoked_at.is_none() {
                    form method="post" action={ "/admin/keys/" (view::enc(&k.name)) "/revoke" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button.plain type="submit" aria-label={ "Revoke " (k.name) } { "Revoke" }
                    }
                } }
            } } }
        }
        h2 { "Sinks" }
        @if s.sinks.is_empty() { p.none { "No push sinks are configured." } } @else {
            table {
                thead { tr { th scope="col" { "Sink" } th scope="col" { "Target" } th scope="col" { "Dead-lettered" } th scope="col" {} } }
                tbody { @for k in &s.sinks { tr {
                    td { (k.name) } td { (k.target) }
                    td.n { (view::thousands(k.dead_lettered.load(std::sync::atomic::Ordering::Relaxed) as i64)) }
                    td { form method="post" action={ "/admin/sinks/" (view::enc(&k.name)) "/retry" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button.plain type="submit" { "Requeue dead letters" }
                    } }
                } } }
            }
        }
    };
    Html(view::page("Administration", Some(&signed.0), "admin", body).into_string()).into_response()
}

pub async fn page(State(s): State<Shared>, signed: Signed) -> Response {
    if let Err(r) = signed.need(Role::Admin, "administration") {
        return r;
    }
    render(&s, &signed, None)
}

#[derive(Deserialize)]
pub struct NewKey {
    csrf: String,
    name: String,
    role: String,
}

pub async fn create_key(
    State(s): State<Shared>,
    signed: Signed,
    Form(f): Form<NewKey>,
) -> Response {
    if let Err(r) = signed.may(&f.csrf, Role::Admin, "creating keys") {
        return r;
    }
    let made = Role::parse(&f.role).and_then(|role| s.keys.create(f.name.trim(), role));
    match made {
        Ok(secret) => {
            tracing::info!(created = %f.name, role = %f.role, key = %signed.0.name, "console.key_created");
            render(&s, &signed, Some((f.name.trim(), &secret)))
        }
        Err(e) => {
            note_key_write(&s, &e);
            failed(&signed, e.into())
        }
    }
}

#[derive(Deserialize)]
pub struct Csrf {
    csrf: String,
}

pub async fn revoke_key(
    State(s): State<Shared>,
    signed: Signed,
    Path(name): Path<String>,
    Form(f): Form<Csrf>,
) -> Response {
    if let Err(r) = signed.may(&f.csrf, Role::Admin, "revoking keys") {
        return r;
    }
    if let Err(e) = s.keys.revoke(&name) {
        note_key_write(&s, &e);
        return failed(&signed, e.into());
    }
    tracing::info!(revoked = %name, key = %signed.0.name, "console.key_revoked");
    Redirect::to("/admin").into_response()
}

pub async fn retry_sink(
    State(s): State<Shared>,
    signed: Signed,
    Path(name): Path<String>,
    Form(f): Form<Csrf>,
) -> Response {
    if let Err(r) = signed.may(&f.csrf, Role::Admin, "requeueing dead letters") {
        return r;
    }
    if let Err(e) = crate::handlers::sinks::known_sink(&s, &name) {
        return failed(&signed, e);
    }
    let n = name.clone();
    match s.write_alerts(move |st| st.retry_dead_letters(&n)).await {
        Ok(queued) => {
            tracing::info!(sink = %name, queued, key = %signed.0.name, "console.dead_letters_requeued");
            Redirect::to("/admin").into_response()
        }
        Err(e) => failed(&signed, e),
    }
}
