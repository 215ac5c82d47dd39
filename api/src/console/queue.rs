//! The alert queue: counts, filters, sorting, stable cursor pages, bulk triage.

use super::{Signed, failed, view};
use crate::auth::Role;
use crate::handlers::alerts::{ListParams, next_cursor};
use crate::state::Shared;
use axum::extract::{Query, RawForm, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use kvwatch_detect::store::{AlertCounts, AlertUpdate};
use kvwatch_detect::{Alert, Severity, Status};
use maud::{Markup, html};

/// Alerts per page in the console.
const PAGE: usize = 50;

/// A date (`2024-05-08`) or a local date-time (`2024-05-08T09:00`) from a form as RFC 3339
/// UTC; anything else is left for the filter to refuse.
fn rfc3339_of(v: &str) -> String {
    let v = v.trim();
    match v.len() {
        10 => format!("{v}T00:00:00Z"),
        16 => format!("{v}:00Z"),
        _ => v.to_owned(),
    }
}

/// The queue's URL for `p`.
pub fn url(p: &ListParams) -> String {
    let q = serde_urlencoded::to_string(p).unwrap_or_default();
    if q.is_empty() {
        "/alerts".to_owned()
    } else {
        format!("/alerts?{q}")
    }
}

pub async fn queue(
    State(s): State<Shared>,
    signed: Signed,
    Query(mut p): Query<ListParams>,
) -> Response {
    // Empty form fields are no filter.
    for v in [
        &mut p.severity,
        &mut p.status,
        &mut p.rule,
        &mut p.vault,
        &mut p.principal,
        &mut p.ip,
        &mut p.assignee,
        &mut p.q,
        &mut p.since,
        &mut p.until,
        &mut p.sort,
        &mut p.cursor,
    ] {
        if v.as_deref().is_some_and(|x| x.trim().is_empty()) {
            *v = None;
        }
    }
    p.limit = Some(p.limit.unwrap_or(PAGE).min(200));
    p.full = None;
    let mut filter_p = p.clone();
    filter_p.since = p.since.as_deref().map(rfc3339_of);
    filter_p.until = p.until.as_deref().map(rfc3339_of);
    let f = match filter_p.filter() {
        Ok(f) => f,
        Err(e) => return failed(&signed, e),
    };
    let (limit, sort) = (f.limit.unwrap_or(PAGE), f.sort);
    let got = s
        .read_alerts(move |st| {
            let alerts = st.list(&f)?;
            let counts = st.totals()?;
            let head = st.head_seq()?;
            Ok((alerts, counts, head))
        })
        .await;
    let (alerts, counts, head) = match got {
        Ok(Some(x)) => x,
        Ok(None) => (Vec::new(), AlertCounts::default(), 0),
        Err(e) => return failed(&signed, e),
    };
    let next = next_cursor(&alerts, limit, sort);
    let body = render(&signed, &p, &alerts, &counts, head, next);
    Html(view::page("Alerts", Some(&signed.0), "alerts", body).into_string()).into_response()
}

fn counts_bar(p: &ListParams, c: &AlertCounts) -> Markup {
    let link = |sev: Option<&str>, status: Option<&str>| {
        let mut q = ListParams {
            severity: sev.map(str::to_owned),
            status: status.map(str::to_owned),
            ..Default::default()
        };
        q.sort = p.sort.clone();
        url(&q)
    };
    html! {
        div #counts .cards aria-label="Alert counts" {
            div.card { b { (view::thousands(c.total)) } a href="/alerts" { "all alerts" } }
            @for sev in Severity::ALL.iter().rev() {
                @let n: i64 = Severity::ALL.iter().filter(|s| s.ocsf_id() >= sev.ocsf_id()).map(|s| c.by_severity.get(s.as_str()).copied().unwrap_or(0)).sum();
                div.card { b { (view::thousands(n)) } a href=(link(Some(sev.as_str()), None)) { (view::severity(sev.as_str())) " or higher" } }
            }
            @for st in Status::ALL {
                @let n = c.by_status.get(st.as_str()).copied().unwrap_or(0);
                div.card { b { (view::thousands(n)) } a href=(link(None, Some(st.as_str()))) { (st.as_str()) } }
            }
        }
    }
}

fn text_field(label: &str, name: &str, value: Option<&str>, hint: &str) -> Markup {
    html! {
        label { (label) input type="search" name=(name) value=[value] placeholder=(hint); }
    }
}

fn select(label: &str, name: &str, value: Option<&str>, options: &[(&str, &str)]) -> Markup {
    html! {
        label { (label)
            select name=(name) {
                @for (v, l) in options {
                    option value=(v) selected[value == Some(*v) || (value.is_none() && v.is_empty())] { (l) }
                }
            }
        }
    }
}

fn filters(p: &ListParams) -> Markup {
    let sev: Vec<(&str, &str)> = std::iter::once(("", "any"))
        .chain(Severity::ALL.iter().rev().map(|s| (s.as_str(), s.as_str())))
        .collect();
    let status: Vec<(&str, &str)> = std::iter::once(("", "any"))
        .chain(Status::ALL.iter().map(|s| (s.as_str(), s.as_str())))
        .collect();
    let sorts = [
        ("-last_seen", "newest activity"),
        ("last_seen", "oldest activity"),
        ("-created_at", "newest raised"),
        ("-severity", "most severe"),
        ("-event_count", "most events"),
    ];
    html! {
        form.filters method="get" action="/alerts" role="search" aria-label="Filter alerts" {
            (select("Severity at least", "severity", p.severity.as_deref(), &sev))
            (select("Status", "status", p.status.as_deref(), &status))
            (text_field("Rule", "rule", p.rule.as_deref(), "kv-…"))
            (text_field("Vault", "vault", p.vault.as_deref(), "name"))
            (text_field("Principal", "principal", p.principal.as_deref(), "UPN, object or app ID"))
            (text_field("IP", "ip", p.ip.as_deref(), "address"))
            (text_field("Assignee", "assignee", p.assignee.as_deref(), "name"))
            label { "From" input type="date" name="since" value=[p.since.as_deref().map(|v| v.get(..10).unwrap_or(v))]; }
            label { "To" input type="date" name="until" value=[p.until.as_deref().map(|v| v.get(..10).unwrap_or(v))]; }
            (text_field("Text", "q", p.q.as_deref(), "3+ characters"))
            (select("Sort", "sort", p.sort.as_deref(), &sorts))
            button type="submit" { "Filter" }
            a href="/alerts" { "Clear" }
        }
    }
}

fn principal_label(a: &Alert) -> Option<(String, String)> {
    a.principals.first().and_then(|p| {
        let key = p
            .upn
            .clone()
            .or_else(|| p.oid.clone())
            .or_else(|| p.appid.clone())?;
        Some((key.clone(), key))
    })
}

fn render(
    signed: &Signed,
    p: &ListParams,
    alerts: &[Alert],
    counts: &AlertCounts,
    head: i64,
    next: Option<String>,
) -> Markup {
    let triage = signed.0.role >= Role::Analyst;
    let first_page = p.cursor.is_none();
    html! {
        h1 { "Alerts" }
        (counts_bar(p, counts))
        (filters(p))
        p #fresh .banner role="status" aria-live="polite" hidden {}
        form #bulk method="post" action="/alerts/bulk" {
            input type="hidden" name="csrf" value=(signed.0.csrf);
            input type="hidden" name="back" value=(url(p));
            @if triage {
                div.bulk {
                    label { "With the selected: "
                        select name="action" {
                            option value="acknowledged" { "acknowledge" }
                            option value="resolved" { "resolve" }
                            option value="suppressed" { "suppress" }
                            option value="new" { "reopen" }
                            option value="assign" { "assign to…" }
                        }
                    }
                    label { "Assignee " input type="text" name="assignee" size="14"; }
                    label { "Comment " input type="text" name="comment" size="30"; }
                    button type="submit" { "Apply" }
                    span.muted { "Keys: j/k move, x selects, o opens." }
                }
            }
            div.scroll {
                table.queue data-head=(head) data-poll=(if first_page { "10000" } else { "0" }) {
                    caption.muted { (alerts.len()) " alerts on this page" }
                    thead { tr {
                        @if triage { th scope="col" { input #select-all type="checkbox" aria-label="Select all on this page"; } }
                        th scope="col" { "Severity" } th scope="col" { "Alert" } th scope="col" { "Principal" }
                        th scope="col" { "Vault" } th scope="col" { "Last seen" } th scope="col" { "Status" }
                        th scope="col" { "Assignee" } th scope="col" { "Events" }
                    } }
                    tbody {
                        @for a in alerts {
                            tr {
                                @if triage { td { input type="checkbox" name="id" value=(a.id) aria-label={ "Select " (a.title) }; } }
                                td { (view::severity(a.severity.as_str())) }
                                td.sum {
                                    a.open href={ "/alerts/" (view::enc(&a.id)) } { (a.title) }
                                    br; span.muted { (a.summary.chars().take(220).collect::<String>()) }
                                }
                                td { @if let Some((k, l)) = principal_label(a) { a href={ "/principals/" (view::enc(&k)) } { (l) } } }
                                td { @for v in &a.vaults { a href={ "/vaults/" (view::enc(v)) } { (v) } " " } }
                                td { (view::when(a.last_seen)) }
                                td { (a.status.as_str()) }
                                td { (a.assignee.as_deref().unwrap_or("")) }
                                td.n { (view::thousands(a.event_count)) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if !first_page { a href=(url(&ListParams { cursor: None, ..p.clone() })) { "« First page" } }
            @if let Some(c) = next { a href=(url(&ListParams { cursor: Some(c), ..p.clone() })) rel="next" { "Next page »" } }
        }
    }
}

/// Bulk triage: one form, several alerts, one change each in their trails.
pub async fn bulk(State(s): State<Shared>, signed: Signed, RawForm(raw): RawForm) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw).unwrap_or_default();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
    };
    if let Err(r) = signed.may(&get("csrf").unwrap_or_default(), Role::Analyst, "triage") {
        return r;
    }
    let ids: Vec<String> = pairs
        .iter()
        .filter(|(n, _)| n == "id")
        .map(|(_, v)| v.clone())
        .take(1000)
        .collect();
    let back = get("back")
        .filter(|b| b.starts_with("/alerts"))
        .unwrap_or_else(|| "/alerts".to_owned());
    if ids.is_empty() {
        return Redirect::to(&back).into_response();
    }
    let mut update = AlertUpdate::default();
    match get("action").as_deref() {
        Some("assign") => {
            let who = get("assignee").filter(|a| !a.is_empty());
            if who.as_ref().is_some_and(|a| a.chars().count() > 200) {
                return failed(
                    &signed,
                    crate::handlers::bad("assignee over 200 characters"),
                );
            }
            update.assignee = Some(who);
        }
        Some(a) => match Status::parse(a) {
            Some(st) => update.status = Some(st),
            None => {
                return failed(
                    &signed,
                    crate::handlers::bad(format!("unknown action {a:?}")),
                );
            }
        },
        None => return failed(&signed, crate::handlers::bad("no action")),
    }
    if let Some(c) = get("comment").filter(|c| !c.is_empty()) {
        if c.chars().count() > 4000 {
            return failed(
                &signed,
                crate::handlers::bad("comment over 4000 characters"),
            );
        }
        update.comment = Some(c);
    }
    let now = kvwatch_ingest::store::now_nanos();
    let actor = signed.0.name.clone();
    let n = ids.len();
    let done = s
        .write_alerts(move |st| {
            for id in &ids {
                st.update(id, &update, &actor, now)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = done {
        return failed(&signed, e);
    }
    tracing::info!(key = %signed.0.name, alerts = n, "console.bulk_triage");
    Redirect::to(&back).into_response()
}
