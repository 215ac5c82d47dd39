//! Behavioural anomaly detection: per-principal baselines, first-seen, seasonal volume,
//! breadth and time-of-day signals, combined into one scored alert per incident.
//!
//! Events are replayed in time order, one hour at a time. Each principal's activity in the hour
//! is scored against its baseline as it stood before the hour ([`score`]), and only then is the
//! baseline updated, so a backfill from an empty state is deterministic and equals the
//! incremental result. Signals of one principal in one hour become one occurrence
//! (`anomaly-principal`); occurrences of the same principal within the suppression period fold
//! into one alert, which is the incident.
//!
//! The learned state is persisted in `DATA/baselines.json` with the hour it is complete
//! through and the event-store files it covers. A pass learns the closed hours after `through`
//! and scores the open hour without learning it. If files arrive for hours already learned, the
//! state is rebuilt from the beginning (deterministic, so alerts only update).

pub mod baseline;
pub mod incident;
pub mod networks;
pub mod score;
pub mod series;
pub mod stats;

use crate::alert::{AlertMeta, Occurrence};
use crate::engine::EngineError;
use crate::store::{AlertStore, ApplyStats};
use baseline::{Baselines, HOUR_NS};
use datafusion::arrow::array::{Array, StringArray, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use futures::StreamExt;
use kvwatch_ingest::DataDir;
use kvwatch_ingest::Table;
use kvwatch_ingest::store::{now_nanos, write_atomic};
use score::{Ev, PrincipalInfo};
pub use score::{ModelConfig, Weights};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Rule ID of model alerts.
pub const RULE_ID: &str = "anomaly-principal";
/// Rule ID of the per-IP daily series alerts.
pub const IP_RULE_ID: &str = "anomaly-ip-volume";
const IP_TITLE: &str = "Daily Key Vault read volume from an IP far above its trend";
const IP_DESCRIPTION: &str = "Sentinel-style time series: a caller IP's successful SecretGet/KeyGet/VaultGet \
count for a day (Resource Graph sweeps excluded) against a linear trend fitted to its previous days (up to 14), \
judged by how far the residual lies beyond the 90th percentile of past residuals in units of the 10th-90th \
percentile range; only rises over a baseline above 25 count. Equivalent: Microsoft Sentinel \"Azure Key Vault \
access TimeSeries anomaly\" v1.0.5 (0914adab-90b5-47a3-a79f-7cdcac843aa7); Defender KV_OperationVolumeAnomaly.";

fn ip_meta() -> AlertMeta<'static> {
    static TACTICS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["TA0006".into()]);
    static TECHNIQUES: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["T1003".into(), "T1555.006".into()]);
    AlertMeta {
        title: IP_TITLE,
        description: IP_DESCRIPTION,
        tactics: &TACTICS,
        techniques: &TECHNIQUES,
        suppression_ns: 24 * HOUR_NS,
    }
}

/// Judges every caller IP's read count on `day` (complete and learned) against its history.
fn judge_day(b: &mut Baselines, cfg: &ModelConfig, day: i32) -> Vec<Occurrence> {
    let sc = cfg.ip_series;
    let mut out = Vec::new();
    if !sc.enabled {
        return out;
    }
    let first_day = b.data_first.map_or(day, |h| h.div_euclid(24));
    let mut ips: Vec<(u32, &std::collections::BTreeMap<i32, u32>)> =
        b.ip_days.iter().map(|(k, v)| (*k, v)).collect();
    ips.sort_by_key(|(k, _)| *k);
    for (ip, days) in ips {
        let Some(&actual) = days.get(&day) else {
            continue;
        };
        let from = (day - sc.days as i32).max(first_day);
        let history: Vec<f64> = (from..day)
            .map(|d| days.get(&d).copied().unwrap_or(0) as f64)
            .collect();
        let Some(v) = series::judge(&history, actual as f64, &sc) else {
            continue;
        };
        let ip_name = b.strings.name(ip).to_owned();
        let window_start = day as i64 * 24 * HOUR_NS;
        let mut h = blake3::Hasher::new();
        h.update(IP_RULE_ID.as_bytes());
        h.update(b"\0");
        h.update(ip_name.as_bytes());
        h.update(b"\0");
        h.update(&window_start.to_le_bytes());
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("expected".to_owned(), serde_json::json!(v.expected.round()));
        fields.insert(
            "score".to_owned(),
            serde_json::json!((v.score * 10.0).round() / 10.0),
        );
        out.push(Occurrence {
            id: h.finalize().to_hex()[..32].to_owned(),
            rule_id: IP_RULE_ID.to_owned(),
            dedup_key: ip_name.clone(),
            window_start,
            first_seen: window_start,
            last_seen: window_start + 24 * HOUR_NS - 1,
            event_count: actual as i64,
            severity: crate::alert::Severity::Low,
            summary: format!(
                "{ip_name} made {actual} secret/key/vault reads on {} vs {:.0} expected from its {}-day trend (score {:.1})",
                &kvwatch_ingest::time::format_ns(window_start)[..10],
                v.expected,
                history.len(),
                v.score
            ),
            principals: Vec::new(),
            vaults: Vec::new(),
            ips: vec![ip_name],
            objects: Vec::new(),
            evidence: Vec::new(),
            fields,
        });
    }
    // Keep only the days the next verdicts need.
    let keep_from = day - sc.days as i32;
    for d in b.ip_days.values_mut() {
        d.retain(|&k, _| k >= keep_from);
    }
    b.ip_days.retain(|_, d| !d.is_empty());
    out
}
const TITLE: &str = "Unusual Key Vault activity by a principal";
const DESCRIPTION: &str = "Behavioural model: the principal's activity in an hour departed from its own baseline \
(first use of a vault, IP, network, client, app, operation family or objects; volume far above its seasonal \
hourly profile; activity at hours it never works; many vaults at once). Signals of one principal close in time \
are combined into one alert with a risk score and the reasons. Equivalent: Defender for Key Vault KV_UserAnomaly, \
KV_AppAnomaly, KV_UserAppAnomaly, KV_OperationPatternAnomaly, KV_OperationVolumeAnomaly, KV_AccountVolumeAnomaly, \
KV_UnusualAccessSuspiciousIP; Sentinel \"Azure Key Vault access TimeSeries anomaly\".";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("reading events for the models: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("reading events for the models: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Store(#[from] kvwatch_ingest::StoreError),
    #[error(transparent)]
    Alerts(#[from] crate::store::AlertStoreError),
    #[error("baselines file {path}: {msg}")]
    State { path: String, msg: String },
}

/// What a model pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelReport {
    pub rebuilt: bool,
    pub events: u64,
    pub hours: u64,
    pub occurrences: usize,
    #[serde(flatten)]
    pub stats: ApplyStats,
    pub principals: usize,
    pub state_bytes: usize,
    pub elapsed_ms: u64,
    /// Events learned per second of CPU spent in the model (excluding the Parquet scan).
    pub learn_events_per_sec: f64,
}

fn state_err(path: &Path, msg: impl ToString) -> ModelError {
    ModelError::State {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// Loads the persisted baselines (empty when there are none).
pub fn load_state(data: &DataDir) -> Result<Baselines, ModelError> {
    let path = data.baselines();
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mut b: Baselines =
                serde_json::from_slice(&bytes).map_err(|e| state_err(&path, e))?;
            b.strings.reindex();
            Ok(b)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Baselines::default()),
        Err(e) => Err(state_err(&path, e)),
    }
}

/// What the models have learned about one principal (keyed by object ID, else UPN, else app
/// ID, as the models key them), for people to read: `None` when the models never saw it.
pub fn profile(b: &Baselines, key: &str) -> Option<serde_json::Value> {
    let id = b
        .strings
        .lookup(key)
        .or_else(|| b.strings.lookup(&key.to_ascii_lowercase()))?;
    let p = b.principals.get(&id)?;
    let at = |h: i32| kvwatch_ingest::time::format_ns(h as i64 * HOUR_NS);
    let seen = |m: &std::collections::HashMap<u32, baseline::Seen>| {
        let mut v: Vec<(&u32, &baseline::Seen)> = m.iter().collect();
        v.sort_by_key(|(k, s)| (s.first, **k));
        v.iter()
            .take(30)
            .map(|(k, s)| {
                serde_json::json!({
                    "name": b.strings.name(**k), "first_seen": at(s.first),
                    "last_seen": at(s.last), "active_hours": s.n,
                })
            })
            .collect::<Vec<_>>()
    };
    let hours: Vec<u32> = (0..24).filter(|h| p.hours_of_day & (1 << h) != 0).collect();
    Some(serde_json::json!({
        "kind": if p.person { "person" } else { "workload" },
        "first_active": at(p.first_hour),
        "last_active": at(p.last_hour),
        "active_hours": p.active_hours,
        "active_days": p.active_days,
        "active_hours_of_day_utc": hours,
        "primary_vault": b.strings.name(p.primary_vault(&b.strings)),
        "peers": b.group_sizes.get(&p.group).copied().unwrap_or(1).saturating_sub(1),
        "objects_known": p.objects.len(),
        "vaults": seen(&p.vaults),
        "addresses": seen(&p.ips),
        "clients": seen(&p.agents),
    }))
}

fn save_state(data: &DataDir, b: &Baselines) -> Result<(), ModelError> {
    let path = data.baselines();
    let bytes = serde_json::to_vec(b).map_err(|e| state_err(&path, e))?;
    write_atomic(&path, &bytes)?;
    Ok(())
}

fn meta() -> AlertMeta<'static> {
    static TACTICS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["TA0006".into()]);
    static TECHNIQUES: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["T1555.006".into(), "T1078.004".into()]);
    AlertMeta {
        title: TITLE,
        description: DESCRIPTION,
        tactics: &TACTICS,
        techniques: &TECHNIQUES,
        suppression_ns: 6 * HOUR_NS,
    }
}

const EVENTS_SQL: &str = "SELECT time, coalesce(principal_oid, principal_upn, principal_appid) AS principal, \
principal_oid, principal_upn, principal_appid, principal_type, vault, operation_family, object_type, object_name, \
caller_ip, client_info, event_id FROM events \
WHERE http_status < 300 AND operation <> 'Authentication' AND vault IS NOT NULL \
AND coalesce(principal_oid, principal_upn, principal_appid) IS NOT NULL";

fn strings(b: &datafusion::arrow::array::RecordBatch, i: usize) -> Result<StringArray, ModelError> {
    let a = cast(b.column(i), &DataType::Utf8)?;
    Ok(a.as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8")
        .clone())
}

fn times(
    b: &datafusion::arrow::array::RecordBatch,
    i: usize,
) -> Result<TimestampNanosecondArray, ModelError> {
    let a = cast(
        b.column(i),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
    )?;
    Ok(a.as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .expect("timestamp")
        .clone())
}

/// A non-empty value of a string column.
fn opt(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i) && !a.value(i).is_empty()).then(|| a.value(i))
}

/// The client family: the product token of the user agent (`AZURECLI/2.59 …` → `azurecli`).
fn agent_family(ua: &str) -> Option<String> {
    let t = ua
        .split(['/', ' ', '('])
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (!t.is_empty()).then_some(t)
}

/// Which events a replay reads, which hours it scores and which it learns.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Events in `[from, to)` (ns).
    from: i64,
    to: i64,
    /// Hours at or after this one are scored.
    emit_from: i32,
    /// Hours before this one are learned.
    learn_to: i32,
}

const GRANTS_SQL: &str = "SELECT time, vault, policy_added_oid AS grantee, \
coalesce(principal_oid, principal_upn, principal_appid) AS granter FROM events \
WHERE policy_added_oid IS NOT NULL AND http_status < 300 AND vault IS NOT NULL";
const ROLE_GRANTS_SQL: &str = " UNION ALL SELECT time, vault, target_principal_id, \
coalesce(caller_oid, caller_upn, caller_appid) FROM activity \
WHERE target_principal_id IS NOT NULL AND vault IS NOT NULL \
AND lower(operation) LIKE '%roleassignments/write' AND lower(coalesce(status, '')) NOT LIKE 'fail%'";

/// Reads every grant in the store (access policies added; roles assigned on a vault), the
/// approval trail the models weigh first reads against. Few rows: read whole at each pass.
async fn load_grants(
    ctx: &datafusion::prelude::SessionContext,
    b: &mut Baselines,
) -> Result<(), ModelError> {
    let mut sql = GRANTS_SQL.to_owned();
    if ctx.table_exist("activity")? {
        sql.push_str(ROLE_GRANTS_SQL);
    }
    b.grants.clear();
    for batch in ctx.sql(&sql).await?.collect().await? {
        let time = times(&batch, 0)?;
        let (vault, grantee, by) = (
            strings(&batch, 1)?,
            strings(&batch, 2)?,
            strings(&batch, 3)?,
        );
        for i in 0..batch.num_rows() {
            let (Some(v), Some(g)) = (opt(&vault, i), opt(&grantee, i)) else {
                continue;
            };
            b.grants
                .entry(g.to_ascii_lowercase())
                .or_default()
                .push(baseline::Grant {
                    vault: v.to_owned(),
                    hour: time.value(i).div_euclid(HOUR_NS) as i32,
                    by: opt(&by, i).unwrap_or("unknown").to_owned(),
                });
        }
    }
    for g in b.grants.values_mut() {
        g.sort_by(|x, y| (x.hour, &x.vault, &x.by).cmp(&(y.hour, &y.vault, &y.by)));
    }
    Ok(())
}

/// Replays events of `span` in time order, scoring and learning hour by hour.
async fn replay(
    root: &DataDir,
    b: &mut Baselines,
    cfg: &ModelConfig,
    span: Span,
    out: &mut Vec<Occurrence>,
    ip_out: &mut Vec<Occurrence>,
    report: &mut ModelReport,
) -> Result<(), ModelError> {
    let ctx = root.session().await?;
    let sql = format!(
        "{EVENTS_SQL} AND time >= to_timestamp_nanos({}) AND time < to_timestamp_nanos({}) ORDER BY time",
        span.from, span.to
    );
    let Span {
        emit_from,
        learn_to,
        ..
    } = span;
    load_grants(&ctx, b).await?;
    let nets = match &cfg.networks_file {
        Some(path) => networks::Networks::load(path).map_err(|msg| state_err(path, msg))?,
        None => networks::Networks::default(),
    };
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    let mut hour_events: Vec<Ev> = Vec::new();
    let mut infos: HashMap<u32, PrincipalInfo> = HashMap::new();
    let mut cur_hour: Option<i32> = None;
    let mut learn_time = std::time::Duration::ZERO;
    let mut last_day: Option<i32> = None;
    let mut flush = |b: &mut Baselines,
                     hour: i32,
                     evs: &mut Vec<Ev>,
                     infos: &mut HashMap<u32, PrincipalInfo>,
                     report: &mut ModelReport|
     -> Duration {
        let t = Instant::now();
        // A day is judged once the replay has moved past it and every hour of it is learned.
        let day = hour.div_euclid(24);
        if let Some(prev) = last_day
            && prev < day
            && (prev + 1) * 24 <= learn_to
            && prev * 24 >= emit_from
        {
            ip_out.extend(judge_day(b, cfg, prev));
        }
        last_day = Some(day);
        // Every hour is scored, so incidents grow the same in a backfill as incrementally;
        // only the emitted range reaches the alert store.
        let occs = score::score_hour(b, cfg, hour, evs, infos, hour < learn_to);
        if hour >= emit_from {
            out.extend(occs);
        }
        if hour < learn_to {
            score::learn_hour(b, hour, evs);
        }
        report.hours += 1;
        evs.clear();
        infos.clear();
        t.elapsed()
    };
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let time = times(&batch, 0)?;
        let cols: Vec<StringArray> = (1..batch.num_columns())
            .map(|i| strings(&batch, i))
            .collect::<Result<_, _>>()?;
        let [
            principal,
            oid,
            upn,
            appid,
            ptype,
            vault,
            family,
            otype,
            oname,
            ip,
            ua,
            eid,
        ] = <[StringArray; 12]>::try_from(cols).expect("12 string columns");
        for i in 0..batch.num_rows() {
            let t = time.value(i);
            let hour = t.div_euclid(HOUR_NS) as i32;
            if cur_hour != Some(hour) {
                if let Some(h) = cur_hour {
                    learn_time += flush(b, h, &mut hour_events, &mut infos, report);
                }
                cur_hour = Some(hour);
            }
            let s = &mut b.strings;
            let p = s.id(principal.value(i));
            let fam = opt(&family, i).unwrap_or("other");
            let object = match (opt(&oname, i), fam) {
                (Some(n), "material_read" | "export" | "crypto" | "object_write") => Some(s.id(
                    &format!("{}/{}/{}", vault.value(i), opt(&otype, i).unwrap_or("?"), n),
                )),
                _ => None,
            };
            let ipv = opt(&ip, i).filter(|x| x.parse::<std::net::IpAddr>().is_ok());
            let ev = Ev {
                time: t,
                principal: p,
                vault: s.id(vault.value(i)),
                family: s.id(fam),
                object,
                ip: ipv.map(|x| s.id(x)),
                network: ipv.and_then(|x| nets.network_of(x)).map(|n| s.id(&n)),
                agent: opt(&ua, i).and_then(agent_family).map(|a| s.id(&a)),
                app: opt(&appid, i).map(|a| s.id(a)),
                person: opt(&upn, i).is_some(),
                event_id: eid.value(i).to_owned(),
            };
            infos.entry(p).or_insert_with(|| PrincipalInfo {
                oid: opt(&oid, i).map(str::to_owned),
                upn: opt(&upn, i).map(str::to_owned),
                appid: opt(&appid, i).map(str::to_owned),
                kind: opt(&ptype, i).map(str::to_owned),
            });
            hour_events.push(ev);
            report.events += 1;
        }
    }
    if let Some(h) = cur_hour {
        learn_time += flush(b, h, &mut hour_events, &mut infos, report);
    }
    if learn_time.as_secs_f64() > 0.0 {
        report.learn_events_per_sec = report.events as f64 / learn_time.as_secs_f64();
    }
    Ok(())
}

use std::time::Duration;

/// Runs the models: incrementally (`range` None) or as a backfill that rebuilds the baselines
/// from the whole store and emits alerts for hours in `range`. With `complete_to` (the store's
/// watermark while a streaming source holds it back), hours from the one holding it on are
/// neither learned nor judged yet: records for them may still be on their way, and a verdict
/// on part of an hour could not be taken back. The next pass takes them up.
pub async fn run_models(
    root: &DataDir,
    cfg: &ModelConfig,
    alerts: &mut AlertStore,
    range: Option<(i64, i64)>,
    complete_to: Option<i64>,
) -> Result<ModelReport, ModelError> {
    let started = Instant::now();
    let manifest = root.snapshot()?;
    let files: Vec<_> = manifest.files(Table::Events).to_vec();
    let mut report = ModelReport::default();
    let Some(watermark) = files.iter().map(|f| f.max_time).max() else {
        return Ok(report);
    };
    let data_start = files.iter().map(|f| f.min_time).min().unwrap_or(0);
    // The hour holding the newest event is still filling, and so is every hour the store's
    // watermark has not passed: score them, do not learn them.
    let open_hour = watermark
        .min(complete_to.unwrap_or(i64::MAX))
        .div_euclid(HOUR_NS) as i32;
    let mut b = load_state(root)?;
    let new: Vec<_> = files
        .iter()
        .filter(|f| !b.covered.contains(&f.path))
        .collect();
    let late = new
        .iter()
        .any(|f| (f.min_time.div_euclid(HOUR_NS) as i32) < b.through);
    let stale = b.version != baseline::STATE_VERSION;
    let rebuild = range.is_some() || late || stale || b.data_first.is_none();
    if !rebuild && new.is_empty() {
        report.principals = b.principals.len();
        report.state_bytes = b.approx_bytes();
        return Ok(report);
    }
    let (emit_from, emit_to, read_from) = match range {
        Some((f, t)) => (f.div_euclid(HOUR_NS) as i32, t, data_start),
        None if rebuild => (i32::MIN, i64::MAX, data_start),
        None => (b.through, i64::MAX, b.through as i64 * HOUR_NS),
    };
    if rebuild {
        b = Baselines {
            version: baseline::STATE_VERSION,
            ..Baselines::default()
        };
        report.rebuilt = true;
    }
    let mut occs = Vec::new();
    let mut ip_occs = Vec::new();
    let span = Span {
        from: read_from,
        to: watermark + 1,
        emit_from,
        learn_to: open_hour,
    };
    replay(
        root,
        &mut b,
        cfg,
        span,
        &mut occs,
        &mut ip_occs,
        &mut report,
    )
    .await?;
    let emit_to = match complete_to {
        Some(_) => emit_to.min(open_hour as i64 * HOUR_NS),
        None => emit_to,
    };
    occs.retain(|o| o.window_start < emit_to);
    // A growing incident is emitted at every hour it grew: keep its latest state.
    let mut seen = std::collections::HashSet::new();
    occs.reverse();
    occs.retain(|o| seen.insert(o.id.clone()));
    occs.reverse();
    ip_occs.retain(|o| o.window_start < emit_to);
    b.through = b.through.max(open_hour);
    b.covered = files.iter().map(|f| f.path.clone()).collect();
    report.occurrences = occs.len() + ip_occs.len();
    report.stats = alerts.apply(&meta(), &occs, now_nanos())?;
    report.stats += alerts.apply(&ip_meta(), &ip_occs, now_nanos())?;
    save_state(root, &b)?;
    report.principals = b.principals.len();
    report.state_bytes = b.approx_bytes();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        events = report.events,
        hours = report.hours,
        occurrences = report.occurrences,
        rebuilt = report.rebuilt,
        "models.pass"
    );
    Ok(report)
}
