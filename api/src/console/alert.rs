//! One alert: summary, ATT&CK, entities, occurrences on a timeline, evidence with its SQL,
//! the audit trail, and the triage form.

use super::{Signed, failed, view};
use crate::auth::Role;
use crate::handlers::alerts::{evidence_events, evidence_sql};
use crate::state::Shared;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use kvwatch_detect::store::AlertUpdate;
use kvwatch_detect::{Alert, HistoryEntry, Occurrence, Status};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write as _;

/// Columns of the evidence table, in order (all columns are in the workbench).
const EVIDENCE_COLUMNS: &[&str] = &[
    "time",
    "operation",
    "vault",
    "object_type",
    "object_name",
    "principal_upn",
    "principal_oid",
    "caller_ip",
    "http_status",
    "client_info",
];

/// Evidence rows shown on the page.
const EVIDENCE_ROWS: usize = 200;

pub async fn page(State(s): State<Shared>, signed: Signed, Path(id): Path<String>) -> Response {
    let got = s
        .read_alerts(move |st| {
            Ok(match st.get(&id)? {
                Some(a) => Some((st.history(&a.id)?, st.occurrences(&a.id)?, a)),
                None => None,
            })
        })
        .await;
    let (history, occurrences, alert) = match got {
        Ok(Some(Some(x))) => x,
        Ok(_) => {
            return super::refuse(
                StatusCode::NOT_FOUND,
                Some(&signed.0),
                "No such alert",
                "There is no alert with this ID.",
            );
        }
        Err(e) => return failed(&signed, e),
    };
    let events = match evidence_events(&s.data, &alert.evidence).await {
        Ok(v) => v,
        Err(e) => return failed(&signed, e),
    };
    let body = render(&signed, &alert, &history, &occurrences, &events);
    Html(view::page(&alert.title, Some(&signed.0), "alerts", body).into_string()).into_response()
}

fn mitre(id: &str) -> String {
    let path = id.replace('.', "/");
    if id.starts_with("TA") {
        format!("https://attack.mitre.org/tactics/{path}/")
    } else {
        format!("https://attack.mitre.org/techniques/{path}/")
    }
}

/// Occurrences as bars on one time axis, coloured and labelled by severity.
fn timeline(occ: &[Occurrence]) -> Markup {
    if occ.is_empty() {
        return html! {};
    }
    let t0 = occ.iter().map(|o| o.first_seen).min().unwrap_or(0);
    let t1 = occ
        .iter()
        .map(|o| o.last_seen)
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let (w, left, row) = (760.0, 10.0, 16.0);
    let shown = occ.len().min(40);
    let h = row * shown as f64 + 30.0;
    let x = |t: i64| left + (w - 2.0 * left) * (t - t0) as f64 / (t1 - t0) as f64;
    let mut svg = String::new();
    for (i, o) in occ.iter().take(shown).enumerate() {
        let (a, b) = (x(o.first_seen), x(o.last_seen));
        let colour = match o.severity.as_str() {
            "critical" => "#6b0f1a",
            "high" => "#d62728",
            "medium" => "#ff7f0e",
            "low" => "#1f77b4",
            _ => "#7f7f7f",
        };
        let _ = write!(
            svg,
            r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} {} to {}: {} events, {}</title></rect>"#,
            5.0 + i as f64 * row,
            (b - a).max(3.0),
            row - 4.0,
            crate::report::html::esc(o.severity.as_str()),
            view::when(o.first_seen),
            view::when(o.last_seen),
            o.event_count,
            crate::report::html::esc(&o.summary.chars().take(160).collect::<String>()),
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{left}" y="{:.1}" font-size="10">{}</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"#,
        h - 8.0,
        view::when(t0),
        w - left,
        h - 8.0,
        view::when(t1)
    );
    html! {
        figure {
            figcaption { "Occurrences over time" }
            svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox={ "0 0 " (w) " " (h) } width="100%"
                aria-label={ (occ.len()) " occurrences from " (view::when(t0)) " to " (view::when(t1)) } {
                (PreEscaped(svg))
            }
        }
    }
}

fn principal_link(p: &kvwatch_detect::Principal) -> Markup {
    let key = p
        .upn
        .clone()
        .or_else(|| p.oid.clone())
        .or_else(|| p.appid.clone());
    html! {
        @if let Some(k) = key {
            a href={ "/principals/" (view::enc(&k)) } { (k) }
            @if let (Some(_), Some(oid)) = (&p.upn, &p.oid) { " " span.muted { "(" (oid) ")" } }
        }
    }
}

fn render(
    signed: &Signed,
    a: &Alert,
    history: &[HistoryEntry],
    occ: &[Occurrence],
    events: &Value,
) -> Markup {
    let rows: Vec<Value> = events
        .as_array()
        .map(|r| r.iter().take(EVIDENCE_ROWS).cloned().collect())
        .unwrap_or_default();
    let total = events.as_array().map_or(0, Vec::len);
    let cols: Vec<String> = EVIDENCE_COLUMNS.iter().map(|c| c.to_string()).collect();
    let sql = evidence_sql(&a.evidence);
    let can = signed.0.role >= Role::Analyst;
    html! {
        p { a href="/alerts" { "« Alerts" } }
        h1 { (view::severity(a.severity.as_str())) " " (a.title) }
        p.lead { (a.summary) }
        div.grid {
            dl.facts {
                dt { "Status" } dd { (a.status.as_str()) }
                dt { "Assignee" } dd { (a.assignee.as_deref().unwrap_or("—")) }
                dt { "Rule" } dd { a href="/rules" { (a.rule_id) } }
                dt { "First seen" } dd { (view::when(a.first_seen)) }
                dt { "Last seen" } dd { (view::when(a.last_seen)) }
                dt { "Raised" } dd { (view::when(a.created_at)) }
                dt { "Events" } dd { (view::thousands(a.event_count)) }
                dt { "Occurrences" } dd { (view::thousands(a.occurrences)) }
                dt { "Tactics" } dd { @for t in &a.tactics { a href=(mitre(t)) rel="noreferrer" { (t) } " " } }
                dt { "Techniques" } dd { @for t in &a.techniques { a href=(mitre(t)) rel="noreferrer" { (t) } " " } }
            }
            dl.facts {
                dt { "Principals" } dd { @for p in &a.principals { (principal_link(p)) br; } }
                dt { "Vaults" } dd { @for v in &a.vaults { a href={ "/vaults/" (view::enc(v)) } { (v) } " " } }
                dt { "Addresses" } dd { @for ip in &a.ips { a href={ "/ips/" (view::enc(ip)) } { (ip) } " " } }
                dt { "Objects" } dd { @for o in a.objects.iter().take(30) { code { (o) } " " } @if a.objects.len() > 30 { "… (" (a.objects.len()) ")" } }
            }
        }
        h2 { "What the rule looks for" }
        p { (a.description) }
        (timeline(occ))
        @if occ.len() > 1 {
            details {
                summary { "The " (occ.len()) " occurrences" }
                (view::table(
                    &["first_seen", "last_seen", "severity", "event_count", "summary"].map(String::from),
                    &occ.iter().map(|o| serde_json::json!({
                        "first_seen": view::when(o.first_seen), "last_seen": view::when(o.last_seen),
                        "severity": o.severity.as_str(), "event_count": o.event_count, "summary": o.summary,
                    })).collect::<Vec<_>>(),
                    None,
                ))
            }
        }
        h2 { "Evidence" }
        p.muted {
            (view::thousands(total as i64)) " events"
            @if a.evidence_truncated { " (the alert keeps the first ones of more)" }
            @if total > EVIDENCE_ROWS { "; the first " (EVIDENCE_ROWS) " are shown" }
            "."
        }
        (view::table(&cols, &rows, None))
        @if let Some(sql) = &sql {
            details {
                summary { "SQL of the evidence" }
                pre { (sql) }
            }
            @if can { p { a.button href={ "/workbench?sql=" (view::enc(sql)) } { "Open in the workbench" } } }
        }
        h2 { "History" }
        @if history.is_empty() { p.none { "No changes yet." } } @else {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "From" } th scope="col" { "To" } } }
                tbody { @for h in history { tr {
                    td { (view::when(h.at)) } td { (h.actor) } td { (h.action) }
                    td { (h.old.as_deref().unwrap_or("")) } td { (h.new.as_deref().unwrap_or("")) }
                } } }
            }
        }
        h2 #triage-heading { "Triage" }
        form.triage method="post" action={ "/alerts/" (view::enc(&a.id)) } aria-labelledby="triage-heading" {
            input type="hidden" name="csrf" value=(signed.0.csrf);
            fieldset disabled[!can] {
                @if !can { p.muted { "Your key's role (" (signed.0.role.as_str()) ") can read alerts but not change them." } }
                label for="status" { "Status " }
                select #status name="status" {
                    @for st in Status::ALL {
                        option value=(st.as_str()) selected[st == a.status] { (st.as_str()) }
                    }
                }
                " "
                label for="assignee" { "Assignee " }
                input #assignee type="text" name="assignee" value=(a.assignee.as_deref().unwrap_or("")) maxlength="200";
                p {
                    label for="comment" { "Comment" } br;
                    textarea #comment name="comment" rows="3" cols="80" maxlength="4000" {}
                }
                button type="submit" { "Save" }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct Triage {
    csrf: String,
    status: Option<String>,
    assignee: Option<String>,
    comment: Option<String>,
}

pub async fn triage(
    State(s): State<Shared>,
    signed: Signed,
    Path(id): Path<String>,
    Form(f): Form<Triage>,
) -> Response {
    if let Err(r) = signed.may(&f.csrf, Role::Analyst, "triage") {
        return r;
    }
    let bad = |m: &str| failed(&signed, crate::handlers::bad(m));
    let Some(current) = s
        .read_alerts({
            let id = id.clone();
            move |st| st.get(&id)
        })
        .await
        .ok()
        .flatten()
        .flatten()
    else {
        return super::refuse(
            StatusCode::NOT_FOUND,
            Some(&signed.0),
            "No such alert",
            "There is no alert with this ID.",
        );
    };
    // Only what the form changed goes into the trail.
    let mut u = AlertUpdate::default();
    if let Some(v) = f.status.as_deref() {
        match Status::parse(v) {
            Some(st) if st != current.status => u.status = Some(st),
            Some(_) => {}
            None => return bad("unknown status"),
        }
    }
    if let Some(v) = f.assignee {
        let v = Some(v.trim().to_owned()).filter(|x| !x.is_empty());
        if v.as_ref().is_some_and(|x| x.chars().count() > 200) {
            return bad("assignee over 200 characters");
        }
        if v != current.assignee {
            u.assignee = Some(v);
        }
    }
    if let Some(c) = f.comment.filter(|c| !c.trim().is_empty()) {
        if c.chars().count() > 4000 {
            return bad("comment over 4000 characters");
        }
        u.comment = Some(c);
    }
    if u.status.is_some() || u.assignee.is_some() || u.comment.is_some() {
        let now = kvwatch_ingest::store::now_nanos();
        let (aid, who) = (id.clone(), signed.0.name.clone());
        if let Err(e) = s
            .write_alerts(move |st| st.update(&aid, &u, &who, now))
            .await
        {
            return failed(&signed, e);
        }
        tracing::info!(alert = %id, key = %signed.0.name, "console.alert_updated");
    }
    Redirect::to(&format!("/alerts/{}", view::enc(&id))).into_response()
}
