//! Entity pages for a principal, a vault and an address: activity over time, what it read,
//! first sightings, permission changes, its alerts, and for a principal its blast radius.
//! Every number comes from SQL run in the analyst workers (the statements are shown).

use super::{Signed, failed, view};
use crate::handlers::alerts::ListParams;
use crate::sql::Tables;
use crate::state::Shared;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use kvwatch_detect::Alert;
use maud::{Markup, PreEscaped, html};
use serde_json::Value;

/// A section of a page: a title and the statement behind it.
pub struct Section {
    pub title: &'static str,
    pub sql: String,
    /// Draw rows of (`day`, `family`, `n`) as stacked bars per day.
    pub daily: bool,
}

/// The outcome of a section's statement: columns and rows, or what went wrong.
pub type Rows = Result<(Vec<String>, Vec<Value>, bool), String>;

/// Runs statements in the SQL workers (so an expensive page cannot stall the service),
/// concurrently, with the server's limits.
pub async fn run_all(s: &Shared, sqls: &[String], tables: Tables) -> Vec<Rows> {
    let runs = sqls.iter().map(|sql| async move {
        let res = s
            .sql
            .run(sql, s.sql_limits, tables)
            .await
            .map_err(|e| e.to_string())?;
        let cols = res
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let rows = crate::handlers::rows_json(&res.batches)
            .map_err(|e| e.message)?
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok((cols, rows, res.truncated))
    });
    futures::future::join_all(runs).await
}

/// Rows of (`day`, `family`, `n`) as a stacked bar chart, one bar per day.
pub fn daily_chart(title: &str, rows: &[Value]) -> Markup {
    let mut days: Vec<String> = Vec::new();
    let mut fams: Vec<String> = Vec::new();
    for r in rows {
        let d = r["day"].as_str().unwrap_or("").to_owned();
        let f = r["family"].as_str().unwrap_or("other").to_owned();
        if !days.contains(&d) {
            days.push(d);
        }
        if !fams.contains(&f) {
            fams.push(f);
        }
    }
    days.sort();
    let series: Vec<(String, Vec<f64>)> = fams
        .iter()
        .map(|f| {
            let vals = days
                .iter()
                .map(|d| {
                    rows.iter()
                        .filter(|r| {
                            r["day"].as_str() == Some(d)
                                && r["family"].as_str().unwrap_or("other") == f
                        })
                        .map(|r| r["n"].as_f64().unwrap_or(0.0))
                        .sum()
                })
                .collect();
            (f.clone(), vals)
        })
        .collect();
    if days.is_empty() {
        return html! {};
    }
    PreEscaped(crate::report::html::stacked_bars(
        title,
        &days,
        &series,
        &crate::report::html::PALETTE,
    ))
}

/// The sections as HTML, each with its SQL behind a disclosure.
pub fn sections(secs: &[Section], results: &[Rows]) -> Markup {
    html! {
        @for (sec, res) in secs.iter().zip(results) {
            section {
                h2 { (sec.title) }
                @match res {
                    Ok((cols, rows, truncated)) => {
                        @if sec.daily { (daily_chart(sec.title, rows)) }
                        @else { (view::table(cols, rows, None)) }
                        @if *truncated { p.muted { "More rows than the limit; narrow the query in the workbench." } }
                    }
                    Err(e) => { p.error { "This section could not be computed: " (e) } }
                }
                details { summary { "SQL" } pre { (sec.sql) } }
            }
        }
    }
}

/// Events per day and operation family of what `filter` selects, drawn as stacked bars.
fn activity(filter: &str) -> Section {
    Section {
        title: "Activity per day",
        sql: format!(
            "SELECT to_char(date_trunc('day', time), '%Y-%m-%d') AS day, operation_family AS family, \
             count(*) AS n FROM events WHERE {filter} GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        daily: true,
    }
}

/// A SQL string literal of `v` (quotes doubled).
pub fn lit(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Entity keys are short and printable; anything else is refused before it reaches SQL.
fn valid(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && v.chars().all(|c| !c.is_control())
}

async fn alerts_of(s: &Shared, p: ListParams) -> Result<Vec<Alert>, crate::error::ApiError> {
    let f = p.filter()?;
    Ok(s.read_alerts(move |st| st.list(&f))
        .await?
        .unwrap_or_default())
}

fn alert_list(alerts: &[Alert], more: &str) -> Markup {
    html! {
        h2 { "Alerts" }
        @if alerts.is_empty() { p.none { "No alerts name it." } } @else {
            table {
                thead { tr { th scope="col" { "Severity" } th scope="col" { "Alert" } th scope="col" { "Last seen" } th scope="col" { "Status" } } }
                tbody { @for a in alerts { tr {
                    td { (view::severity(a.severity.as_str())) }
                    td { a href={ "/alerts/" (view::enc(&a.id)) } { (a.title) } br; span.muted { (a.summary.chars().take(160).collect::<String>()) } }
                    td { (view::when(a.last_seen)) } td { (a.status.as_str()) }
                } } }
            }
            p { a href=(more) { "All its alerts in the queue »" } }
        }
    }
}

/// The models' persisted baselines, re-read only when the file changed.
fn models(
    data: &kvwatch_ingest::DataDir,
) -> Option<std::sync::Arc<kvwatch_detect::anomaly::baseline::Baselines>> {
    type Cached = (
        std::path::PathBuf,
        std::time::SystemTime,
        u64,
        std::sync::Arc<kvwatch_detect::anomaly::baseline::Baselines>,
    );
    static CACHE: std::sync::Mutex<Option<Cached>> = std::sync::Mutex::new(None);
    let path = data.baselines();
    let meta = std::fs::metadata(&path).ok()?;
    let (mtime, len) = (meta.modified().ok()?, meta.len());
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, m, l, b)) = c.as_ref()
        && *p == path
        && *m == mtime
        && *l == len
    {
        return Some(b.clone());
    }
    let b = std::sync::Arc::new(kvwatch_detect::anomaly::load_state(data).ok()?);
    *c = Some((path, mtime, len, b.clone()));
    Some(b)
}

/// What the behavioural models learned about a principal, if they saw it.
async fn learned(s: &Shared, id: &str, me: &str) -> Markup {
    let data = s.data.clone();
    let mut keys = vec![id.to_owned()];
    let sql = format!(
        "SELECT DISTINCT principal_oid FROM events WHERE {me} AND principal_oid IS NOT NULL LIMIT 3"
    );
    if let Some(Ok((_, rows, _))) = run_all(s, &[sql], Tables::Analyst).await.pop() {
        keys.extend(
            rows.iter()
                .filter_map(|r| r["principal_oid"].as_str().map(str::to_owned)),
        );
    }
    let found = tokio::task::spawn_blocking(move || {
        let b = models(&data)?;
        keys.iter()
            .find_map(|k| kvwatch_detect::anomaly::profile(&b, k))
    })
    .await
    .ok()
    .flatten();
    let cols = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let seen_cols = cols(&["name", "first_seen", "last_seen", "active_hours"]);
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    html! {
        h2 { "What the models learned" }
        @match found {
            None => { p.none { "The behavioural models have no baseline for it (they learn when detection runs with models)." } }
            Some(p) => {
                dl.facts {
                    dt { "Kind" } dd { (view::cell(&p["kind"])) }
                    dt { "Active" } dd { (view::cell(&p["first_active"])) " – " (view::cell(&p["last_active"])) ", " (view::cell(&p["active_hours"])) " hours on " (view::cell(&p["active_days"])) " days" }
                    dt { "Hours of day (UTC)" } dd { (view::cell(&p["active_hours_of_day_utc"])) }
                    dt { "Vault it uses most" } dd { (view::cell(&p["primary_vault"])) " (peers: " (view::cell(&p["peers"])) ")" }
                    dt { "Objects it has read" } dd { (view::cell(&p["objects_known"])) }
                }
                div.grid {
                    div { h3 { "Vaults, first seen first" } (view::table(&seen_cols, &list(&p["vaults"]), None)) }
                    div { h3 { "Addresses, first seen first" } (view::table(&seen_cols, &list(&p["addresses"]), None)) }
                }
                h3 { "Clients" } (view::table(&seen_cols, &list(&p["clients"]), None))
            }
        }
    }
}

async fn entity_page(
    s: Shared,
    signed: Signed,
    kind: &str,
    key: &str,
    secs: Vec<Section>,
    p: ListParams,
    extra: Option<Markup>,
) -> Response {
    let sqls: Vec<String> = secs.iter().map(|x| x.sql.clone()).collect();
    let (results, alerts) = tokio::join!(
        run_all(&s, &sqls, Tables::Analyst),
        alerts_of(&s, p.clone())
    );
    let alerts = match alerts {
        Ok(a) => a,
        Err(e) => return failed(&signed, e),
    };
    let more = super::queue::url(&ListParams { limit: None, ..p });
    let body = html! {
        p { a href="/alerts" { "« Alerts" } }
        h1 { span.muted { (kind) " " } (key) }
        (alert_list(&alerts, &more))
        @if let Some(x) = extra { (x) }
        (sections(&secs, &results))
    };
    Html(view::page(key, Some(&signed.0), "", body).into_string()).into_response()
}

fn refuse_key(signed: &Signed) -> Response {
    failed(signed, crate::handlers::bad("not a valid name"))
}

pub async fn principal(
    State(s): State<Shared>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    if !valid(&id) {
        return refuse_key(&signed);
    }
    let k = lit(&id.to_lowercase());
    let me =
        format!("(lower(principal_upn) = {k} OR principal_oid = {k} OR principal_appid = {k})");
    let oids = format!(
        "(SELECT DISTINCT principal_oid FROM events WHERE {me} AND principal_oid IS NOT NULL)"
    );
    let secs = vec![
        activity(&me),
        Section {
            title: "Blast radius: the vaults it can reach and what it read there",
            sql: format!(
                "WITH mine AS (SELECT vault, count(DISTINCT object_type || '/' || object_name) FILTER (WHERE operation_family IN ('material_read', 'export') AND http_status < 300) AS objects_read, count(*) FILTER (WHERE http_status < 300) AS successful, count(*) FILTER (WHERE http_status >= 400 AND http_status <> 401) AS denied, min(time) AS first_seen, max(time) AS last_seen FROM events WHERE {me} GROUP BY vault), \
granted AS (SELECT vault, max(time) AS granted_at, max(coalesce(principal_upn, principal_oid)) AS granted_by FROM events WHERE policy_added_oid IN {oids} AND http_status < 300 GROUP BY vault), \
reach AS (SELECT vault FROM mine WHERE successful > 0 UNION SELECT vault FROM granted), \
size AS (SELECT vault, count(DISTINCT object_type || '/' || object_name) AS objects_in_vault FROM events WHERE vault IN (SELECT vault FROM reach) AND object_name IS NOT NULL AND object_name <> '' GROUP BY vault) \
SELECT r.vault, z.objects_in_vault, coalesce(m.objects_read, 0) AS objects_read, m.successful, m.denied, g.granted_by, g.granted_at, m.first_seen, m.last_seen \
FROM reach r LEFT JOIN mine m ON m.vault = r.vault LEFT JOIN granted g ON g.vault = r.vault LEFT JOIN size z ON z.vault = r.vault ORDER BY objects_read DESC, r.vault"
            ),
            daily: false,
        },
        Section {
            title: "What it read",
            sql: format!(
                "SELECT vault, object_type, object_name, count(*) AS reads, min(time) AS first_seen, max(time) AS last_seen FROM events WHERE {me} AND operation_family IN ('material_read', 'export') AND http_status < 300 AND object_name IS NOT NULL GROUP BY 1, 2, 3 ORDER BY reads DESC LIMIT 100"
            ),
            daily: false,
        },
        Section {
            title: "Addresses, first seen first",
            sql: format!(
                "SELECT caller_ip, min(time) AS first_seen, max(time) AS last_seen, count(*) AS events, count(DISTINCT vault) AS vaults FROM events WHERE {me} GROUP BY 1 ORDER BY first_seen LIMIT 100"
            ),
            daily: false,
        },
        Section {
            title: "Permission changes by it or naming it",
            sql: format!(
                "SELECT time, operation, vault, coalesce(principal_upn, principal_oid) AS principal, policy_added_oid AS granted_to, array_to_string(policy_added_permissions, ',') AS permissions, caller_ip FROM events WHERE operation IN ('VaultPatch', 'VaultPut') AND http_status < 300 AND ({me} OR policy_added_oid IN {oids}) AND (policy_added_oid IS NOT NULL OR policy_removed_oid IS NOT NULL) ORDER BY time DESC LIMIT 100"
            ),
            daily: false,
        },
    ];
    let p = ListParams {
        principal: Some(id.clone()),
        limit: Some(20),
        ..Default::default()
    };
    let extra = learned(&s, &id, &me).await;
    entity_page(s, signed, "principal", &id, secs, p, Some(extra)).await
}

pub async fn vault(State(s): State<Shared>, signed: Signed, Path(id): Path<String>) -> Response {
    if !valid(&id) {
        return refuse_key(&signed);
    }
    let v = lit(&id.to_lowercase());
    let secs = vec![
        activity(&format!("vault = {v}")),
        Section {
            title: "Who reads it",
            sql: format!(
                "SELECT coalesce(principal_upn, principal_oid, principal_appid) AS principal, count(*) AS reads, count(DISTINCT object_name) AS objects, count(DISTINCT caller_ip) AS addresses, min(time) AS first_seen, max(time) AS last_seen FROM events WHERE vault = {v} AND operation_family IN ('material_read', 'export') AND http_status < 300 GROUP BY 1 ORDER BY reads DESC LIMIT 100"
            ),
            daily: false,
        },
        Section {
            title: "Objects, rarely read first",
            sql: format!(
                "SELECT object_type, object_name, count(*) AS reads, count(DISTINCT principal_oid) AS readers, min(time) AS first_seen, max(time) AS last_seen FROM events WHERE vault = {v} AND operation_family IN ('material_read', 'export') AND http_status < 300 AND object_name IS NOT NULL GROUP BY 1, 2 ORDER BY readers, reads LIMIT 100"
            ),
            daily: false,
        },
        Section {
            title: "Permission and configuration changes",
            sql: format!(
                "SELECT time, operation, coalesce(principal_upn, principal_oid) AS principal, policy_added_oid AS granted_to, array_to_string(policy_added_permissions, ',') AS permissions, policy_removed_oid AS removed, caller_ip FROM events WHERE vault = {v} AND operation IN ('VaultPatch', 'VaultPut', 'VaultDelete') AND http_status < 300 ORDER BY time DESC LIMIT 100"
            ),
            daily: false,
        },
        Section {
            title: "Denied requests by principal and reason",
            sql: format!(
                "SELECT coalesce(principal_upn, principal_oid, caller_ip) AS principal, http_status, result_signature, count(*) AS requests, max(time) AS last_seen FROM events WHERE vault = {v} AND http_status >= 400 AND http_status <> 401 GROUP BY 1, 2, 3 ORDER BY requests DESC LIMIT 50"
            ),
            daily: false,
        },
    ];
    let p = ListParams {
        vault: Some(id.clone()),
        limit: Some(20),
        ..Default::default()
    };
    entity_page(s, signed, "vault", &id, secs, p, None).await
}

pub async fn ip(State(s): State<Shared>, signed: Signed, Path(id): Path<String>) -> Response {
    if !valid(&id)
        || !id
            .chars()
            .all(|c| c.is_ascii_hexdigit() || ".:".contains(c))
    {
        return refuse_key(&signed);
    }
    let a = lit(&id);
    let secs = vec![
        activity(&format!("caller_ip = {a}")),
        Section {
            title: "Principals calling from it, first seen first",
            sql: format!(
                "SELECT coalesce(principal_upn, principal_oid, principal_appid) AS principal, min(time) AS first_seen, max(time) AS last_seen, count(*) AS events, count(*) FILTER (WHERE http_status >= 400 AND http_status <> 401) AS denied FROM events WHERE caller_ip = {a} GROUP BY 1 ORDER BY first_seen LIMIT 100"
            ),
            daily: false,
        },
        Section {
            title: "Vaults and what was read",
            sql: format!(
                "SELECT vault, count(*) AS events, count(DISTINCT object_name) FILTER (WHERE operation_family IN ('material_read', 'export') AND http_status < 300) AS objects_read, min(time) AS first_seen, max(time) AS last_seen FROM events WHERE caller_ip = {a} GROUP BY 1 ORDER BY events DESC LIMIT 100"
            ),
            daily: false,
        },
    ];
    let p = ListParams {
        ip: Some(id.clone()),
        limit: Some(20),
        ..Default::default()
    };
    entity_page(s, signed, "address", &id, secs, p, None).await
}
