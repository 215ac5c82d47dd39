//! Event and alert counts for a period.

use super::{Answer, ErrorBody, bad, rfc3339, rows_json};
use crate::sql::Tables;
use crate::state::Shared;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use kvwatch_detect::store::AlertCounts;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Query parameters of `GET /stats`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// RFC 3339 start [default: 24 hours before `to`].
    from: Option<String>,
    /// RFC 3339 end [default: now].
    to: Option<String>,
    /// Only this vault's events.
    vault: Option<String>,
}

/// Event and alert counts for a period.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    #[schema(value_type = String, format = DateTime)]
    from: String,
    #[schema(value_type = String, format = DateTime)]
    to: String,
    /// `{vault, hour, events, failed}` rows, by hour and vault.
    #[schema(value_type = Vec<Object>)]
    events_per_vault_hour: Value,
    events_total: i64,
    alerts: AlertCounts,
}

/// Events per vault and hour, and alerts by severity, status and rule, for a period.
#[utoipa::path(get, path = "/api/v1/stats", tag = "stats", params(StatsParams),
    responses((status = 200, body = Stats), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stats(State(s): State<Shared>, Query(p): Query<StatsParams>) -> Answer {
    let to = match p.to.as_deref() {
        Some(v) => rfc3339("to", v)?,
        None => kvwatch_ingest::store::now_nanos(),
    };
    let from = match p.from.as_deref() {
        Some(v) => rfc3339("from", v)?,
        None => to - 24 * 3_600_000_000_000,
    };
    if from >= to {
        return Err(bad("from must be before to"));
    }
    if let Some(v) = &p.vault
        && !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("vault names are letters, digits and '-'"));
    }
    let ts = |ns: i64| kvwatch_ingest::time::format_ns(ns);
    let vault_filter = p
        .vault
        .as_deref()
        .map(|v| format!(" AND vault = '{}'", v.to_lowercase()))
        .unwrap_or_default();
    let sql = format!(
        "SELECT vault, date_trunc('hour', time) AS hour, count(*) AS events, \
         count(*) FILTER (WHERE http_status >= 400 AND http_status <> 401) AS failed \
         FROM events WHERE time >= to_timestamp_nanos({from}) AND time < to_timestamp_nanos({to}){vault_filter} \
         GROUP BY 1, 2 ORDER BY 2, 1"
    );
    let limits = crate::sql::SqlLimits {
        max_rows: 100_000,
        ..s.sql_limits
    };
    let rows = s.sql.run(&sql, limits, Tables::Analyst).await?;
    let per_hour = rows_json(&rows.batches)?;
    let total = per_hour
        .as_array()
        .map(|a| a.iter().map(|r| r["events"].as_i64().unwrap_or(0)).sum())
        .unwrap_or(0);
    let alerts = s
        .read_alerts(move |st| st.counts(from, to))
        .await?
        .unwrap_or_default();
    Ok(Json(Stats {
        from: ts(from),
        to: ts(to),
        events_per_vault_hour: per_hour,
        events_total: total,
        alerts,
    })
    .into_response())
}
