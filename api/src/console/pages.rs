//! Reports (list, open, generate now), the rules with their parameters and last runs, and
//! the service's health: Kafka lag, the last event per vault, quarantine, sinks.

use super::entity::{Section, run_all, sections};
use super::{Signed, failed, view};
use crate::auth::Role;
use crate::report::{Format, Kind};
use crate::sql::Tables;
use crate::state::Shared;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{PreEscaped, html};
use serde::Deserialize;
use serde_json::Value;
use std::sync::atomic::Ordering;

pub async fn reports(State(s): State<Shared>, signed: Signed) -> Response {
    let data = s.data.clone();
    let list = match tokio::task::spawn_blocking(move || crate::report::list(&data)).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return failed(&signed, e.into()),
        Err(e) => return failed(&signed, e.into()),
    };
    let can = signed.0.role >= Role::Analyst;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let month_ago = (chrono::Utc::now() - chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    let body = html! {
        h1 { "Reports" }
        @if can {
            form.filters method="post" action="/reports" aria-label="Generate a report" {
                input type="hidden" name="csrf" value=(signed.0.csrf);
                label { "Kind" select name="kind" { @for k in Kind::ALL { option value=(k.as_str()) { (k.as_str()) } } } }
                label { "From" input type="date" name="from" value=(month_ago) required; }
                label { "To" input type="date" name="to" value=(today) required; }
                label { "Format" select name="format" { option value="html" { "HTML" } option value="csv" { "CSV" } option value="json" { "JSON" } } }
                button type="submit" { "Generate now" }
            }
        }
        @if list.is_empty() { p.none { "No reports yet." } } @else {
            table {
                thead { tr { th scope="col" { "Report" } th scope="col" { "Kind" } th scope="col" { "Period" } th scope="col" { "Generated" } th scope="col" { "By" } th scope="col" { "Size" } } }
                tbody { @for r in &list { tr {
                    td { a href={ "/reports/" (r.id) } { (r.id) } " " span.muted { (r.format) } }
                    td { (r.kind) }
                    td { (view::when_text(&r.from)) " – " (view::when_text(&r.to)) }
                    td { (view::when_text(&r.generated_at)) }
                    td { (r.requested_by) }
                    td.n { (view::thousands((r.bytes / 1024) as i64)) " KiB" }
                } } }
            }
        }
    };
    Html(view::page("Reports", Some(&signed.0), "reports", body).into_string()).into_response()
}

#[derive(Deserialize, Default)]
pub struct Download {
    download: Option<String>,
}

pub async fn report(
    State(s): State<Shared>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<Download>,
) -> Response {
    let data = s.data.clone();
    let found = match tokio::task::spawn_blocking(move || crate::report::load(&data, &id)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return failed(&signed, e.into()),
        Err(e) => return failed(&signed, e.into()),
    };
    let Some((meta, bytes)) = found else {
        return super::refuse(
            StatusCode::NOT_FOUND,
            Some(&signed.0),
            "No such report",
            "There is no report with this ID.",
        );
    };
    let format = Format::parse(&meta.format).unwrap_or(Format::Json);
    if q.download.is_some() || format != Format::Html {
        return (
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
            bytes,
        )
            .into_response();
    }
    // The stored file is self-contained (its own style); in the console its body is shown
    // in the console's frame with the same stylesheet.
    let text = String::from_utf8_lossy(&bytes);
    let inner = text
        .split_once("<body>")
        .and_then(|(_, b)| b.rsplit_once("</body>"))
        .map_or("", |(b, _)| b);
    let body = html! {
        p { a href="/reports" { "« Reports" } " · " a href={ "/reports/" (meta.id) "?download=1" } { "Download the file" } }
        article.report { (PreEscaped(inner)) }
    };
    Html(view::page(&meta.kind, Some(&signed.0), "reports", body).into_string()).into_response()
}

#[derive(Deserialize)]
pub struct Generate {
    csrf: String,
    kind: String,
    from: String,
    to: String,
    format: String,
}

pub async fn generate(
    State(s): State<Shared>,
    signed: Signed,
    Form(f): Form<Generate>,
) -> Response {
    if let Err(r) = signed.may(&f.csrf, Role::Analyst, "generating a report") {
        return r;
    }
    let bad = |m: &str| failed(&signed, crate::handlers::bad(m));
    let Some(kind) = Kind::parse(&f.kind) else {
        return bad("unknown kind");
    };
    let Some(format) = Format::parse(&f.format) else {
        return bad("unknown format");
    };
    let day = |d: &str| {
        chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
    };
    let (Some(from), Some(to)) = (day(&f.from), day(&f.to)) else {
        return bad("dates are YYYY-MM-DD");
    };
    // The `to` day is included.
    let to = to + 86_400_000_000_000;
    let by = format!("console:{}", signed.0.name);
    match crate::handlers::reports::generate(&s, kind, format, Some(from), Some(to), &[], by).await
    {
        Ok(meta) => {
            tracing::info!(report = %meta.id, key = %signed.0.name, "console.report_generated");
            Redirect::to(&format!("/reports/{}", meta.id)).into_response()
        }
        Err(e) => failed(&signed, e),
    }
}

pub async fn rules(State(s): State<Shared>, signed: Signed) -> Response {
    let got = s
        .read_alerts(|st| Ok((st.rule_runs()?, st.rule_totals()?)))
        .await;
    let (runs, counts) = match got {
        Ok(Some(x)) => x,
        Ok(None) => Default::default(),
        Err(e) => return failed(&signed, e),
    };
    let text = |v: &Value| view::cell(v);
    let body = html! {
        h1 { "Rules" }
        p.muted { (s.rules.len()) " rules. Parameters are overridden in kvwatch.toml under [rules.<id>.params]." }
        div.scroll { table {
            thead { tr {
                th scope="col" { "Rule" } th scope="col" { "Severity" } th scope="col" { "Window" }
                th scope="col" { "Parameters" } th scope="col" { "Last evaluation" } th scope="col" { "Alerts" }
            } }
            tbody { @for r in &s.rules {
                @let id = r["id"].as_str().unwrap_or("");
                tr #(id) {
                    td {
                        b { (id) } br; (text(&r["title"]))
                        details { summary { "What it detects" } p { (text(&r["description"])) } }
                    }
                    td { (view::severity(r["severity"].as_str().unwrap_or(""))) }
                    td { (text(&r["window"])) }
                    td { @if let Some(p) = r["params"].as_object() { @for (k, v) in p { code { (k) " = " (text(v)) } br; } } }
                    td { @if let Some((at, n, ms)) = runs.get(id) {
                        (view::when(*at)) br; span.muted { (n) " occurrences, " (view::thousands(*ms)) " ms" }
                    } @else { span.muted { "not run yet" } } }
                    td.n { a href={ "/alerts?rule=" (view::enc(id)) } { (view::thousands(counts.get(id).copied().unwrap_or(0))) } }
                }
            } }
        } }
    };
    Html(view::page("Rules", Some(&signed.0), "rules", body).into_string()).into_response()
}

pub async fn health(State(s): State<Shared>, signed: Signed) -> Response {
    let secs = vec![
        Section {
            title: "Last event per vault",
            sql: "SELECT vault, max(time) AS last_event, count(*) AS events FROM events GROUP BY vault ORDER BY last_event".into(),
            daily: false,
        },
        Section {
            title: "Quarantined input by reason",
            sql: "SELECT reason, count(*) AS records, max(received_at) AS last_seen FROM quarantine GROUP BY reason ORDER BY records DESC".into(),
            daily: false,
        },
    ];
    let sqls: Vec<String> = secs.iter().map(|x| x.sql.clone()).collect();
    // Operator tables: the quarantine counts (never its raw text) are the service's own query.
    let results = run_all(&s, &sqls, Tables::Operator).await;
    let dead = s
        .read_alerts(|st| st.dead_letter_counts())
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let lag = s.kafka.as_ref().map(|k| k.lag()).unwrap_or_default();
    let now = kvwatch_ingest::store::now_nanos();
    let body = html! {
        h1 { "Health" }
        dl.facts {
            dt { "Disk" } dd { @match s.disk.state() { crate::health::Disk::Writable => "takes writes", crate::health::Disk::Refusing(r) => { "refusing writes: " (r) } } }
            dt { "Console sessions" } dd { (s.sessions.count(now)) }
            dt { "Refused API and console calls" } dd { (view::thousands(s.denied.load(Ordering::Relaxed) as i64)) }
        }
        h2 { "Kafka" }
        @if let Some(k) = &s.kafka {
            dl.facts {
                dt { "Records" } dd { (view::thousands(k.records.load(Ordering::Relaxed) as i64)) }
                dt { "Quarantined" } dd { (view::thousands(k.quarantined.load(Ordering::Relaxed) as i64)) }
                dt { "Errors" } dd { (view::thousands(k.kafka_errors.load(Ordering::Relaxed) as i64)) }
                dt { "Rebalances" } dd { (view::thousands(k.rebalances.load(Ordering::Relaxed) as i64)) }
            }
            table {
                thead { tr { th scope="col" { "Partition" } th scope="col" { "Lag (messages)" } } }
                tbody { @for (p, l) in &lag { tr { td { (p) } td.n { (view::thousands(*l)) } } } }
            }
        } @else { p.none { "This process runs no Kafka source." } }
        h2 { "Sinks" }
        @if s.sinks.is_empty() { p.none { "No push sinks are configured." } } @else {
            table {
                thead { tr { th scope="col" { "Sink" } th scope="col" { "Kind" } th scope="col" { "Target" } th scope="col" { "Cursor" } th scope="col" { "Delivered" } th scope="col" { "Dead letters" } th scope="col" { "Last error" } } }
                tbody { @for k in &s.sinks { tr {
                    td { (k.name) } td { (k.kind) } td { (k.target) }
                    td.n { (view::thousands(k.cursor.load(Ordering::Relaxed))) }
                    td.n { (view::thousands(k.delivered.load(Ordering::Relaxed) as i64)) }
                    td.n { (view::thousands(dead.iter().find(|(n, _)| *n == k.name).map_or(0, |d| d.1))) }
                    td { (k.last_error().unwrap_or_default()) }
                } } }
            }
        }
        (sections(&secs, &results))
    };
    Html(view::page("Health", Some(&signed.0), "health", body).into_string()).into_response()
}
