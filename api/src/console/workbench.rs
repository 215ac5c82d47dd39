//! The SQL workbench: an editor with the tables and columns beside it and example hunting
//! queries; results as a table, CSV, and a chart when there is a time and a number. The
//! statement runs exactly as `POST /api/v1/query` runs it: read-only guards, row limit,
//! timeout and memory limit, in a worker process.

use super::entity::{Rows, run_all};
use super::{Signed, view};
use crate::auth::Role;
use crate::sql::Tables;
use crate::state::Shared;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::Value;

/// Example hunting queries: (title, SQL).
const EXAMPLES: &[(&str, &str)] = &[
    (
        "Secrets read per principal per day",
        "SELECT date_trunc('day', time) AS day, coalesce(principal_upn, principal_oid) AS principal,\n       count(DISTINCT object_name) AS secrets\nFROM events\nWHERE operation = 'SecretGet' AND http_status < 300\nGROUP BY 1, 2\nORDER BY secrets DESC\nLIMIT 50",
    ),
    (
        "Events per hour (a chart)",
        "SELECT date_trunc('hour', time) AS hour, count(*) AS events,\n       count(*) FILTER (WHERE http_status >= 400 AND http_status <> 401) AS denied\nFROM events\nGROUP BY 1\nORDER BY 1",
    ),
    (
        "Denied, then succeeded, by the same caller on the same vault",
        "SELECT d.vault, coalesce(d.principal_upn, d.principal_oid) AS principal,\n       min(d.time) AS first_denied, min(o.time) AS first_success\nFROM events d JOIN events o\n  ON o.vault = d.vault AND o.principal_oid = d.principal_oid AND o.time > d.time\nWHERE d.http_status = 403 AND o.http_status < 300\nGROUP BY 1, 2\nORDER BY first_denied\nLIMIT 50",
    ),
    (
        "Access policy changes",
        "SELECT time, vault, coalesce(principal_upn, principal_oid) AS principal, caller_ip,\n       policy_added_oid, array_to_string(policy_added_permissions, ',') AS permissions, policy_removed_oid\nFROM events\nWHERE operation IN ('VaultPatch', 'VaultPut')\n  AND (policy_added_oid IS NOT NULL OR policy_removed_oid IS NOT NULL)\nORDER BY time DESC\nLIMIT 100",
    ),
    (
        "Addresses a principal had never used before today",
        "WITH first AS (\n  SELECT principal_oid, caller_ip, min(time) AS first_seen\n  FROM events WHERE principal_oid IS NOT NULL GROUP BY 1, 2)\nSELECT * FROM first\nWHERE first_seen >= (SELECT max(time) FROM events) - INTERVAL '1 day'\nORDER BY first_seen DESC\nLIMIT 100",
    ),
    (
        "Open alerts by rule",
        "SELECT rule_id, severity, count(*) AS alerts, max(last_seen) AS last_seen\nFROM alerts\nWHERE status IN ('new', 'acknowledged')\nGROUP BY 1, 2\nORDER BY alerts DESC",
    ),
];

/// The tables and columns the analyst can name.
const SCHEMA_SQL: &str = "SELECT table_name, column_name, data_type FROM information_schema.columns \
    WHERE table_schema = 'public' ORDER BY table_name, ordinal_position";

#[derive(Deserialize, Default)]
pub struct Prefill {
    sql: Option<String>,
}

pub async fn page(State(s): State<Shared>, signed: Signed, Query(q): Query<Prefill>) -> Response {
    if let Err(r) = signed.need(Role::Analyst, "the SQL workbench") {
        return r;
    }
    let sql = q.sql.unwrap_or_else(|| EXAMPLES[0].1.to_owned());
    render(&s, &signed, &sql, None).await
}

#[derive(Deserialize)]
pub struct Run {
    csrf: String,
    sql: String,
    /// `csv` downloads the result instead of showing it.
    format: Option<String>,
}

pub async fn run(State(s): State<Shared>, signed: Signed, Form(f): Form<Run>) -> Response {
    if let Err(r) = signed.may(&f.csrf, Role::Analyst, "the SQL workbench") {
        return r;
    }
    if f.sql.len() > 256 * 1024 {
        return super::failed(
            &signed,
            crate::handlers::bad("the statement is over 256 KiB"),
        );
    }
    let started = std::time::Instant::now();
    if f.format.as_deref() == Some("csv") {
        let r = s.sql.run(&f.sql, s.sql_limits, Tables::Analyst).await;
        tracing::info!(key = %signed.0.name, ok = r.is_ok(), sql = ?f.sql, "console.query_csv");
        return match r
            .map_err(crate::error::ApiError::from)
            .and_then(|res| crate::handlers::query::csv_bytes(&res).map(|b| (b, res.truncated)))
        {
            Ok((body, truncated)) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"kvwatch-query.csv\"".to_owned(),
                    ),
                    (
                        header::HeaderName::from_static("x-kvwatch-truncated"),
                        truncated.to_string(),
                    ),
                ],
                body,
            )
                .into_response(),
            Err(e) => super::failed(&signed, e),
        };
    }
    let result = run_all(&s, std::slice::from_ref(&f.sql), Tables::Analyst)
        .await
        .pop()
        .unwrap_or_else(|| Err("no result".into()));
    tracing::info!(key = %signed.0.name, ok = result.is_ok(), elapsed_ms = started.elapsed().as_millis() as u64, sql = ?f.sql, "console.query");
    render(&s, &signed, &f.sql, Some((result, started.elapsed()))).await
}

/// A chart of the result when one column holds times and others numbers.
fn chart(cols: &[String], rows: &[Value]) -> Option<Markup> {
    if rows.len() < 2 {
        return None;
    }
    let is_time = |c: &String| {
        rows.iter().all(|r| {
            r[c.as_str()].as_str().is_some_and(|s| {
                chrono::DateTime::parse_from_rfc3339(s).is_ok()
                    || (s.len() == 10 && s.as_bytes()[4] == b'-')
            })
        })
    };
    let time = cols.iter().find(|c| is_time(c))?;
    let nums: Vec<&String> = cols
        .iter()
        .filter(|c| {
            rows.iter()
                .all(|r| r[c.as_str()].is_number() || r[c.as_str()].is_null())
        })
        .take(4)
        .collect();
    if nums.is_empty() {
        return None;
    }
    let mut sorted: Vec<&Value> = rows.iter().collect();
    sorted.sort_by(|a, b| a[time.as_str()].as_str().cmp(&b[time.as_str()].as_str()));
    let cats: Vec<String> = sorted
        .iter()
        .map(|r| view::when_text(r[time.as_str()].as_str().unwrap_or("")))
        .collect();
    let series: Vec<(String, Vec<f64>)> = nums
        .iter()
        .map(|c| {
            (
                c.to_string(),
                sorted
                    .iter()
                    .map(|r| r[c.as_str()].as_f64().unwrap_or(0.0))
                    .collect(),
            )
        })
        .collect();
    Some(PreEscaped(crate::report::html::stacked_bars(
        &format!(
            "{} by {time}",
            nums.iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &cats,
        &series,
        &crate::report::html::PALETTE,
    )))
}

fn schema_panel(schema: &Rows) -> Markup {
    let Ok((_, rows, _)) = schema else {
        return html! { p.muted { "The table list is not available now." } };
    };
    let mut tables: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for r in rows {
        let t = r["table_name"].as_str().unwrap_or("").to_owned();
        let c = (
            r["column_name"].as_str().unwrap_or("").to_owned(),
            r["data_type"].as_str().unwrap_or("").to_owned(),
        );
        match tables.last_mut() {
            Some((name, cols)) if *name == t => cols.push(c),
            _ => tables.push((t, vec![c])),
        }
    }
    html! {
        @for (t, cols) in &tables {
            details open[t == "events"] {
                summary { code { (t) } " (" (cols.len()) ")" }
                ul { @for (c, ty) in cols { li { code { (c) } " " span.muted { (ty) } } } }
            }
        }
    }
}

async fn render(
    s: &Shared,
    signed: &Signed,
    sql: &str,
    result: Option<(Rows, std::time::Duration)>,
) -> Response {
    let schema = run_all(s, &[SCHEMA_SQL.to_owned()], Tables::Analyst)
        .await
        .pop()
        .unwrap_or_else(|| Err("no result".into()));
    let limits = s.sql_limits;
    let body = html! {
        h1 { "SQL workbench" }
        p.muted {
            "One read-only SELECT over the event and alert stores; at most " (view::thousands(limits.max_rows as i64))
            " rows, " (limits.timeout.as_secs()) " s. Ctrl+Enter runs."
        }
        div.workbench {
            div {
                form #query method="post" action="/workbench" {
                    input type="hidden" name="csrf" value=(signed.0.csrf);
                    label for="sql" { "Statement" }
                    textarea #sql name="sql" spellcheck="false" { (sql) }
                    p {
                        button type="submit" name="format" value="table" { "Run" } " "
                        button.plain type="submit" name="format" value="csv" { "Download CSV" }
                    }
                }
                @if let Some((res, elapsed)) = &result {
                    section #result aria-live="polite" {
                        @match res {
                            Ok((cols, rows, truncated)) => {
                                p.ok role="status" {
                                    (view::thousands(rows.len() as i64)) " rows in " (elapsed.as_millis()) " ms"
                                    @if *truncated { " — more than the limit; the rest was cut" }
                                }
                                @if let Some(c) = chart(cols, rows) { (c) }
                                (view::table(cols, rows, None))
                            }
                            Err(e) => { p.error role="alert" { (e) } }
                        }
                    }
                }
            }
            aside aria-label="Tables and examples" {
                h2 { "Tables" }
                div.schema { (schema_panel(&schema)) }
                h2 { "Examples" }
                ul {
                    @for (title, q) in EXAMPLES {
                        li { a href={ "/workbench?sql=" (view::enc(q)) } { (title) } }
                    }
                }
            }
        }
    };
    Html(view::page("Workbench", Some(&signed.0), "workbench", body).into_string()).into_response()
}
