//! `kvwatch demo` and the eval report: generate → ingest → summarise → score.

use crate::output::{Format, kv_table, thousands, write_batches};
use crate::{DemoArgs, config::Config};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, Int64Array};
use kvwatch_datasets::eval::{EvalReport, ScoredAlert};
use kvwatch_ingest::DataDir;
use kvwatch_ingest::files::IngestOptions;
use kvwatch_ingest::query;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Alerts to score: from a JSON file when given, else from the data directory's alert store.
pub fn load_alerts(data: &DataDir, file: Option<&Path>) -> Result<Vec<ScoredAlert>> {
    let text = match file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            let alerts = match kvwatch_detect::AlertStore::open_read_only(data)? {
                Some(s) => s.list(&Default::default())?,
                None => Vec::new(),
            };
            serde_json::to_string(&alerts)?
        }
    };
    serde_json::from_str(&text).context("not a JSON array of alerts")
}

/// When each attack's first event reached the store (its `ingested_at`), for the wall-clock
/// time to detect: audit events and Activity Log records of the attack window from its actor
/// or its addresses.
pub async fn arrivals(
    data: &DataDir,
    labels: &kvwatch_datasets::Labels,
) -> Result<BTreeMap<String, DateTime<Utc>>> {
    let mut out = BTreeMap::new();
    if !data.has_events() {
        return Ok(out);
    }
    let ctx = data.session().await?;
    let ts = |s: &str| {
        kvwatch_ingest::time::parse_timestamp_ns(s).map(kvwatch_detect::engine::sql_timestamp)
    };
    for l in &labels.attacks {
        let (Some(from), Some(to)) = (ts(&l.start), ts(&l.end)) else {
            continue;
        };
        // The same caller test on audit events and on Activity Log records (role
        // assignments, diagnostic settings).
        let who = |oid: &str, upn: &str| {
            let mut w = Vec::new();
            if let Some(o) = &l.actor.oid {
                w.push(format!("lower({oid}) = lower({})", query::sql_literal(o)));
            }
            if let Some(u) = &l.actor.upn {
                w.push(format!("lower({upn}) = lower({})", query::sql_literal(u)));
            }
            if !l.ips.is_empty() {
                let ips: Vec<String> = l.ips.iter().map(|i| query::sql_literal(i)).collect();
                w.push(format!("caller_ip IN ({})", ips.join(", ")));
            }
            w.join(" OR ")
        };
        let (events, activity) = (
            who("principal_oid", "principal_upn"),
            who("caller_oid", "caller_upn"),
        );
        if events.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT CAST(min(at) AS BIGINT) AS at FROM ( \
               SELECT min(ingested_at) AS at FROM events \
                 WHERE time >= {from} AND time <= {to} AND ({events}) \
               UNION ALL SELECT min(ingested_at) AS at FROM activity \
                 WHERE time >= {from} AND time <= {to} AND ({activity}))"
        );
        let batches = query::read_only_sql(&ctx, &sql).await?.collect().await?;
        let at = batches.first().and_then(|b| {
            let col = b.column(0).as_any().downcast_ref::<Int64Array>()?;
            (!col.is_null(0)).then(|| col.value(0))
        });
        if let Some(ns) = at {
            out.insert(l.id.clone(), DateTime::<Utc>::from_timestamp_nanos(ns));
        }
    }
    Ok(out)
}

pub fn print_eval(out: &mut dyn Write, r: &EvalReport, format: Format) -> Result<()> {
    if format == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(r)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<28} {:<22} {:<8} {:>10}  alerts",
        "attack", "kind", "result", "ttd"
    )?;
    for a in &r.attacks {
        let ttd = a
            .time_to_detect_secs
            .map(|s| format!("{:.0} s", s))
            .unwrap_or_else(|| "-".into());
        let rules: Vec<&str> = a.alerts.iter().map(|(_, rule)| rule.as_str()).collect();
        writeln!(
            out,
            "{:<28} {:<22} {:<8} {:>10}  {}",
            a.id,
            a.kind,
            if a.detected { "HIT" } else { "miss" },
            ttd,
            rules.join(", ")
        )?;
    }
    let per_class: Vec<String> = r
        .classes
        .iter()
        .map(|(k, c)| format!("{k} {}/{}", c.detected, c.attacks))
        .collect();
    kv_table(
        out,
        &[
            (
                "recall",
                format!("{}/{} = {:.2}", r.detected, r.attacks.len(), r.recall),
            ),
            ("recall per class", per_class.join(", ")),
            ("alerts", r.alerts.to_string()),
            (
                "benign alerts",
                format!(
                    "{} ({} medium or higher)",
                    r.benign_alerts, r.benign_alerts_medium_plus
                ),
            ),
            (
                "benign alerts / M events",
                format!("{:.2}", r.benign_alerts_per_million_events),
            ),
            (
                "mean time to detect",
                r.mean_time_to_detect_secs
                    .map(|s| format!("{s:.0} s"))
                    .unwrap_or_else(|| "-".into()),
            ),
            (
                "wall-clock time to detect",
                match (
                    r.median_wall_time_to_detect_secs,
                    r.max_wall_time_to_detect_secs,
                ) {
                    (Some(m), Some(x)) => format!("median {m:.1} s, max {x:.1} s (stored → alert)"),
                    _ => "-".into(),
                },
            ),
        ],
    )?;
    Ok(())
}

pub async fn run(data: &DataDir, cfg: &Config, a: DemoArgs) -> Result<std::process::ExitCode> {
    let started = std::time::Instant::now();
    let logs = tempfile::Builder::new().prefix("kvwatch-demo-").tempdir()?;
    let gcfg = a.gen_args.config(kvwatch_datasets::OutputFormat::Archive)?;
    eprintln!(
        "demo: generating {} days of traffic (seed {}, scale {}) with {} attacks",
        gcfg.days,
        gcfg.seed,
        gcfg.scale,
        gcfg.attacks.len()
    );
    let g = kvwatch_datasets::generate(&gcfg, logs.path(), crate::progress_printer("generate"))?;
    eprintln!(
        "demo: ingesting {} records into {}",
        thousands(g.events + g.activity),
        data.root().display()
    );
    // Everything the generator wrote except its ground truth.
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(logs.path())? {
        let p = entry?.path();
        if p.file_name().is_some_and(|n| n != "labels.json") {
            paths.push(p.display().to_string());
        }
    }
    paths.sort();
    let (inputs, _) = kvwatch_ingest::files::expand(&paths)?;
    let n_inputs = inputs.len();
    let report = match &a.brokers {
        None => {
            let mut writer = data.writer(crate::StoreArgs::default().options(cfg))?;
            let report = tokio::task::block_in_place(|| {
                kvwatch_ingest::ingest(&mut writer, inputs, &IngestOptions::default(), |_| {})
            })?;
            writer.compact().await?;
            report
        }
        Some(brokers) => {
            eprintln!(
                "demo: publishing to {brokers} topic {} and consuming it back",
                a.topic
            );
            let (brokers, topic, cfg_store) = (
                brokers.clone(),
                a.topic.clone(),
                crate::StoreArgs::default().options(cfg),
            );
            let data = data.clone();
            tokio::task::spawn_blocking(move || {
                kvwatch_ingest::kafka::round_trip(&data, cfg_store, inputs, &brokers, &topic)
            })
            .await??
        }
    };
    eprintln!("demo: running the detection rules");
    let rules = crate::detect_cmd::load_rules(cfg, &Default::default(), true).await?;
    let mut alerts_store = kvwatch_detect::AlertStore::open(data)?;
    let detected = kvwatch_detect::run::incremental(
        data,
        &rules,
        &kvwatch_detect::run::PassOptions {
            models: Some(&cfg.models),
            ..Default::default()
        },
        &mut alerts_store,
        &mut |_, _, _| {},
    )
    .await?;
    drop(alerts_store);
    let labels = kvwatch_datasets::read_labels(&logs.path().join("labels.json"))?;
    let labels_copy = data.root().join("demo-labels.json");
    std::fs::copy(logs.path().join("labels.json"), &labels_copy)?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "kvwatch demo — {} days of Key Vault audit logs\n",
        gcfg.days
    )?;
    kv_table(
        &mut out,
        &[
            ("log files", thousands(n_inputs as u64)),
            ("records", thousands(report.parsed.records)),
            ("events stored", thousands(report.stored.events)),
            ("activity stored", thousands(report.stored.activity)),
            ("quarantined", thousands(report.parsed.quarantined)),
            (
                "detection",
                format!(
                    "{} rules, {} alerts in {:.2} s",
                    rules.len(),
                    detected.totals.created,
                    detected.elapsed_ms as f64 / 1000.0
                ),
            ),
            (
                "ingest rate",
                format!("{} records/s", thousands(report.records_per_sec as u64)),
            ),
        ],
    )?;
    let ctx = data.session().await?;
    kvwatch_detect::table::register_alerts(&ctx, data)?;
    let sections = [
        (
            "Events per vault",
            "SELECT vault, count(*) AS events, count(DISTINCT principal_oid) AS principals, \
             sum(CASE WHEN http_status IN (401, 403) AND operation <> 'Authentication' THEN 1 ELSE 0 END) AS denied, \
             min(time) AS first, max(time) AS last FROM events GROUP BY vault ORDER BY events DESC",
        ),
        (
            "Sensitive operations (deletes, purges, backups, permission and config changes)",
            "SELECT operation, vault, coalesce(principal_upn, principal_oid) AS caller, caller_ip, count(*) AS n \
             FROM events WHERE operation_family IN ('destruction', 'export') OR operation IN ('VaultPatch', 'VaultPut') \
             GROUP BY 1,2,3,4 ORDER BY n DESC LIMIT 15",
        ),
        (
            "Activity Log (role assignments, diagnostic settings)",
            "SELECT time, operation, status, coalesce(caller_upn, caller_oid) AS caller, vault, role_name \
             FROM activity ORDER BY time",
        ),
        (
            "Alerts by rule",
            "SELECT rule_id, severity, count(*) AS alerts, sum(event_count) AS events, min(first_seen) AS first, max(last_seen) AS last \
             FROM alerts GROUP BY rule_id, severity ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 ELSE 4 END, rule_id",
        ),
        (
            "High and critical alerts",
            "SELECT substr(id, 1, 16) AS id, rule_id, first_seen, substr(summary, 1, 140) AS summary FROM alerts \
             WHERE severity IN ('high', 'critical') ORDER BY first_seen",
        ),
    ];
    for (title, sql) in sections {
        writeln!(out, "\n{title}")?;
        let batches = query::read_only_sql(&ctx, sql).await?.collect().await?;
        write_batches(&mut out, &batches, Format::Table)?;
    }
    writeln!(out, "\nDetection quality against the generator's labels")?;
    let alerts = load_alerts(data, None)?;
    let arrived = arrivals(data, &labels).await?;
    let r = kvwatch_datasets::eval::score(&labels, &alerts, 3600, &arrived);
    print_eval(&mut out, &r, Format::Table)?;
    writeln!(
        out,
        "\nfinished in {:.1} s. Explore the store:",
        started.elapsed().as_secs_f64()
    )?;
    writeln!(
        out,
        "  kvwatch --data {} query \"SELECT operation, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC\"",
        data.root().display()
    )?;
    writeln!(
        out,
        "  kvwatch --data {} eval --labels {}",
        data.root().display(),
        labels_copy.display()
    )?;
    writeln!(
        out,
        "  kvwatch --data {} alerts --severity medium",
        data.root().display()
    )?;
    // A key for the console, so the demo's data can be triaged in a browser at once.
    let keys = kvwatch_api::KeyStore::open(data)?;
    let name = format!("demo-analyst-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let key = keys.create(&name, kvwatch_api::Role::Analyst)?;
    writeln!(
        out,
        "\nTriage it in the analyst console: start the service\n  kvwatch --data {} serve\nthen open http://127.0.0.1:8080/ and sign in with this analyst key (shown once):\n  {key}",
        data.root().display()
    )?;
    Ok(std::process::ExitCode::SUCCESS)
}
