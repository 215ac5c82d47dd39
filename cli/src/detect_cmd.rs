//! `kvwatch detect`, `kvwatch alerts`, `kvwatch alert` and `kvwatch rules`: wiring of
//! kvwatch-detect into subcommands.

use crate::config::Config;
use crate::output::{Format, kv_table, thousands};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use kvwatch_detect::engine::check_all;
use kvwatch_detect::fixture::run_fixtures;
use kvwatch_detect::follow::PassOutcome;
use kvwatch_detect::pack;
use kvwatch_detect::rule::{self, Dur, Rule, RuleOverride};
use kvwatch_detect::run::{DetectReport, backfill, incremental};
use kvwatch_detect::{Alert, AlertFilter, AlertStore, Engine, Severity, Status};
use kvwatch_ingest::DataDir;
use kvwatch_ingest::time::{format_ns, parse_timestamp_ns};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Clone, Default)]
pub struct RulesSource {
    /// Directory of rule files (kvwatch YAML and Sigma) instead of the built-in pack.
    #[arg(long, env = "KVWATCH_RULES")]
    pub rules: Option<PathBuf>,
    /// Directory of Sigma rules (or kvwatch rules) loaded in addition to the pack.
    #[arg(long, env = "KVWATCH_SIGMA")]
    pub sigma: Option<PathBuf>,
}

#[derive(Args)]
pub struct DetectArgs {
    /// Start of event time to evaluate (RFC 3339, YYYY-MM-DD, or an age such as 24h or 7d).
    /// Without --from/--to, evaluates what the store gained since the last run.
    #[arg(long, env = "KVWATCH_DETECT_FROM")]
    from: Option<String>,
    /// End of event time to evaluate (exclusive) [default: the newest event].
    #[arg(long, env = "KVWATCH_DETECT_TO")]
    to: Option<String>,
    /// Keep running: evaluate new data every --interval seconds until interrupted.
    #[arg(long, env = "KVWATCH_DETECT_FOLLOW")]
    follow: bool,
    #[command(flatten)]
    common: FollowArgs,
}

/// Detection settings shared by `detect` and the continuous detection of `serve`.
impl FollowArgs {
    /// The rule engine's watermark policy and memory pool, from flags, environment and the
    /// config file.
    pub fn engine_options(&self, cfg: &Config) -> kvwatch_detect::engine::EngineOptions {
        let d = kvwatch_detect::engine::EngineOptions::default();
        let secs = std::time::Duration::from_secs;
        kvwatch_detect::engine::EngineOptions {
            watermark: kvwatch_ingest::watermark::WatermarkPolicy {
                lateness: self
                    .allowed_lateness_secs
                    .or(cfg.detect.allowed_lateness_secs)
                    .map_or(d.watermark.lateness, secs),
                idle_after: self
                    .idle_source_secs
                    .or(cfg.detect.idle_source_secs)
                    .map_or(d.watermark.idle_after, secs),
            },
            memory_bytes: self
                .memory_mb
                .or(cfg.detect.memory_mb)
                .map_or(d.memory_bytes, |mb| mb.max(64) << 20),
            rule_timeout: self
                .rule_timeout_secs
                .or(cfg.detect.rule_timeout_secs)
                .map_or(d.rule_timeout, |s| secs(s.max(1))),
        }
    }

    /// Prints each detection pass as `detect --follow` does, in the chosen format.
    pub fn pass_printer(&self, cfg: &Config) -> kvwatch_detect::follow::PassListener {
        let json = self.format == Format::Json;
        let interval = self.follow_options(cfg).interval.as_secs();
        Box::new(move |outcome| print_pass(outcome, json, interval))
    }

    /// How continuous detection runs, from flags, environment and the config file.
    pub fn follow_options(&self, cfg: &Config) -> kvwatch_detect::follow::FollowOptions {
        kvwatch_detect::follow::FollowOptions {
            interval: std::time::Duration::from_secs(
                self.interval
                    .or(cfg.detect.interval_secs)
                    .unwrap_or(30)
                    .max(1),
            ),
            commit_poll: std::time::Duration::from_millis(
                self.commit_poll_ms
                    .or(cfg.detect.commit_poll_ms)
                    .unwrap_or(200)
                    .max(10),
            ),
            engine: self.engine_options(cfg),
            models: (!self.no_models).then_some(cfg.models.clone()),
            max_evidence: self
                .max_evidence
                .or(cfg.detect.max_evidence)
                .unwrap_or(1000)
                .max(1),
        }
    }
}

#[derive(Args, Clone)]
pub struct FollowArgs {
    #[command(flatten)]
    pub source: RulesSource,
    /// Continuous detection runs a pass whenever the store commits, and at least every this
    /// many seconds [default: 30].
    #[arg(long, env = "KVWATCH_DETECT_INTERVAL_SECS")]
    interval: Option<u64>,
    /// Milliseconds between checks of the store for a new commit [default: 200].
    #[arg(long, env = "KVWATCH_DETECT_COMMIT_POLL_MS")]
    commit_poll_ms: Option<u64>,
    /// Seconds a record may arrive behind the newest one of its Kafka partition; rules about
    /// absence judge only data older than the slowest partition minus this [default: 900].
    #[arg(long, env = "KVWATCH_ALLOWED_LATENESS_SECS")]
    allowed_lateness_secs: Option<u64>,
    /// Seconds without records after which a partition stops holding the watermark back
    /// [default: 300].
    #[arg(long, env = "KVWATCH_IDLE_SOURCE_SECS")]
    idle_source_secs: Option<u64>,
    /// Memory the detection rules share, in MiB; beyond it sorts and aggregations spill to
    /// the temporary directory [default: 2048].
    #[arg(long, env = "KVWATCH_DETECT_MEMORY_MB")]
    memory_mb: Option<usize>,
    /// Seconds one rule may run in one pass; a rule still running then is stopped, reported
    /// as failed and retried at the next pass [default: 600].
    #[arg(long, env = "KVWATCH_RULE_TIMEOUT_SECS")]
    rule_timeout_secs: Option<u64>,
    /// Rules only: skip the behavioural models.
    #[arg(long, env = "KVWATCH_DETECT_NO_MODELS")]
    no_models: bool,
    /// Event IDs kept as evidence per alert [default: 1000].
    #[arg(long, env = "KVWATCH_DETECT_MAX_EVIDENCE")]
    max_evidence: Option<usize>,
    #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlertFormat {
    Table,
    Json,
    /// OCSF 1.3 Detection Finding (class 2004), one JSON array.
    Ocsf,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertsArgs {
    #[command(subcommand)]
    cmd: Option<AlertsCmd>,
    /// Alerts last seen at or after this time (RFC 3339, YYYY-MM-DD, or an age such as 24h).
    #[arg(long, env = "KVWATCH_ALERTS_SINCE")]
    since: Option<String>,
    /// Minimum severity (informational, low, medium, high, critical).
    #[arg(long, env = "KVWATCH_ALERTS_SEVERITY")]
    severity: Option<String>,
    /// Only this rule.
    #[arg(long, env = "KVWATCH_ALERTS_RULE")]
    rule: Option<String>,
    /// Only this status (new, acknowledged, resolved, suppressed).
    #[arg(long, env = "KVWATCH_ALERTS_STATUS")]
    status: Option<String>,
    /// At most this many alerts, newest first.
    #[arg(long, env = "KVWATCH_ALERTS_LIMIT")]
    limit: Option<usize>,
    #[arg(
        long,
        value_enum,
        default_value = "table",
        env = "KVWATCH_ALERTS_FORMAT"
    )]
    format: AlertFormat,
}

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Copy this node's SQLite alert store (alerts, triage history, sink cursors and dead
    /// letters, detection's bookkeeping) into an empty PostgreSQL database, for running
    /// several nodes on one store.
    Migrate(MigrateArgs),
}

#[derive(Args)]
pub struct MigrateArgs {
    /// The store to copy: `sqlite` (alerts.db in the state directory) or the path of an
    /// alerts.db file.
    #[arg(long, default_value = "sqlite", env = "KVWATCH_MIGRATE_FROM")]
    from: String,
    /// The PostgreSQL database to copy into (`postgres://…`; `${env:…}`/`${file:…}` for the
    /// password). It may have the schema but no alerts yet.
    #[arg(long, env = "KVWATCH_MIGRATE_TO")]
    to: String,
    #[arg(
        long,
        value_enum,
        default_value = "table",
        env = "KVWATCH_MIGRATE_FORMAT"
    )]
    format: Format,
}

/// `kvwatch alerts migrate`.
fn cmd_migrate(data: &DataDir, a: MigrateArgs) -> Result<ExitCode> {
    use kvwatch_detect::store::pg::is_postgres;
    use kvwatch_ingest::secret::redact_url;
    if !is_postgres(&a.to) {
        bail!("--to {}: a postgres:// URL", redact_url(&a.to));
    }
    let source = if a.from == "sqlite" {
        DataDir::new(data.root())
    } else {
        let path = PathBuf::from(&a.from);
        if path.file_name().is_none_or(|n| n != "alerts.db") {
            bail!(
                "--from {}: `sqlite` or the path of an alerts.db file",
                a.from
            );
        }
        DataDir::new(path.parent().unwrap_or(std::path::Path::new(".")))
    };
    if !source.alerts_db().exists() {
        bail!("no alert store at {}", source.alerts_db().display());
    }
    let from = AlertStore::open_read_only(&source)?
        .with_context(|| format!("{} holds no alert store yet", source.alerts_db().display()))?;
    let dest_data = DataDir::new(data.root()).with_alerts(Some(a.to.clone()));
    let to = AlertStore::open(&dest_data)?;
    let t0 = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    let report = from.copy_into(&to, |table, n| {
        if last.elapsed() >= std::time::Duration::from_secs(1) {
            last = std::time::Instant::now();
            eprintln!("copying {table}: {} rows", thousands(n));
        }
    })?;
    // The node's API keys go along, so every client keeps working on every node.
    let keys = if source.auth_db().exists() {
        let from_keys = kvwatch_api::KeyStore::open(&source)?;
        from_keys.copy_into(&kvwatch_api::KeyStore::open(&dest_data)?)?
    } else {
        0
    };
    let mut report = report;
    report.tables.push(("api_keys".into(), keys as u64));
    let secs = t0.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    if a.format == Format::Json {
        let tables: serde_json::Map<String, serde_json::Value> = report
            .tables
            .iter()
            .map(|(t, n)| (t.clone(), serde_json::json!(n)))
            .collect();
        let doc = serde_json::json!({
            "from": source.alerts_db(),
            "to": redact_url(&a.to),
            "tables": tables,
            "seconds": secs,
        });
        writeln!(out, "{doc}")?;
    } else {
        writeln!(
            out,
            "copied {} into {} in {secs:.1} s",
            source.alerts_db().display(),
            redact_url(&a.to)
        )?;
        let rows: Vec<(&str, String)> = report
            .tables
            .iter()
            .map(|(t, n)| (t.as_str(), thousands(*n)))
            .collect();
        kv_table(&mut out, &rows)?;
        writeln!(
            out,
            "run the nodes with --alerts (KVWATCH_ALERTS) set to this database; the SQLite file is left as it was"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct AlertArgs {
    /// Alert ID (as listed by `kvwatch alerts`).
    id: String,
    /// Change the alert's status (acknowledged, resolved, suppressed, new).
    #[arg(long)]
    set_status: Option<String>,
    #[arg(
        long,
        value_enum,
        default_value = "table",
        env = "KVWATCH_ALERTS_FORMAT"
    )]
    format: AlertFormat,
}

#[derive(Subcommand)]
pub enum RulesCmd {
    /// List the rules with severity, window and fixture count.
    List {
        #[command(flatten)]
        source: RulesSource,
        #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
        format: Format,
    },
    /// Show one rule: metadata, parameters (after configuration) and the rendered SQL.
    Show {
        id: String,
        #[command(flatten)]
        source: RulesSource,
    },
    /// Print every enabled rule's SQL rendered for the store in --data, as a JSON array of
    /// {id, sql} (to run the same queries elsewhere, e.g. in DuckDB for comparison).
    Sql {
        #[command(flatten)]
        source: RulesSource,
    },
    /// Run the rules' fixtures; exits non-zero when any fails.
    Test {
        /// Only these rules.
        ids: Vec<String>,
        #[command(flatten)]
        source: RulesSource,
        #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
        format: Format,
    },
}

/// Parses RFC 3339, `YYYY-MM-DD` (midnight UTC) or an age (`24h`, `7d`) before `now`.
pub fn parse_time(s: &str, now: i64) -> Result<i64> {
    if let Some(d) = Dur::parse(s) {
        return Ok(now - d.nanos());
    }
    if let Some(t) = parse_timestamp_ns(s) {
        return Ok(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        return Ok(t.timestamp_nanos_opt().unwrap_or(0));
    }
    bail!("cannot read {s:?} as a time (use RFC 3339, YYYY-MM-DD, or an age like 24h)")
}

/// Loads the rule pack (directory or built-in), applies the configuration, and plans every
/// rule: a rule that does not load or plan stops the command with its file and line.
pub async fn load_rules(
    cfg: &Config,
    source: &RulesSource,
    only_enabled: bool,
) -> Result<Vec<Rule>> {
    let dir = source.rules.clone().or_else(|| cfg.detect.rules.clone());
    cfg.sigma
        .validate()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let mut rules = pack::load_with(dir.as_deref(), &cfg.sigma).with_context(|| match &dir {
        Some(d) => format!("loading rules from {}", d.display()),
        None => "loading the built-in rule pack".to_owned(),
    })?;
    if let Some(extra) = source.sigma.clone().or_else(|| cfg.detect.sigma.clone()) {
        let more = pack::load_dir_with(&extra, &cfg.sigma)
            .with_context(|| format!("loading rules from {}", extra.display()))?;
        rules.extend(more);
        rules = pack::check_unique(rules)?;
    }
    let overrides: BTreeMap<String, RuleOverride> = cfg
        .rules
        .iter()
        .map(|(id, rc)| {
            let o = RuleOverride {
                enabled: rc.enabled,
                interval: rc.interval.clone(),
                params: rc.params.clone(),
            };
            (id.clone(), o)
        })
        .collect();
    rule::apply_overrides(&mut rules, &overrides, only_enabled)?;
    check_all(&rules).await?;
    Ok(rules)
}

fn progress(quiet: bool) -> impl FnMut(usize, usize, &str) {
    let tty = std::io::stderr().is_terminal() && !quiet;
    move |done, total, rule| {
        if tty {
            if done < total {
                eprint!("\rdetect: {done}/{total} rules, {rule:<40}");
            } else {
                eprint!("\r{:<70}\r", "");
            }
        }
    }
}

fn alert_store(data: &DataDir, cfg: &Config, max_evidence: Option<usize>) -> Result<AlertStore> {
    let mut s = AlertStore::open(data)?;
    s.max_evidence = max_evidence
        .or(cfg.detect.max_evidence)
        .unwrap_or(s.max_evidence)
        .max(1);
    Ok(s)
}

pub async fn cmd_detect(data: &DataDir, cfg: &Config, a: DetectArgs) -> Result<ExitCode> {
    if !data.has_events() {
        bail!(
            "no event store at {} (run `kvwatch ingest` first, or pass --data)",
            data.root().display()
        );
    }
    if a.follow {
        if a.from.is_some() || a.to.is_some() {
            bail!("--follow evaluates new data as it arrives; it does not take --from/--to");
        }
        let shutdown = crate::shutdown_on_signal()?;
        let rules = load_rules(cfg, &a.common.source, true).await?;
        let metrics = kvwatch_detect::run::PassMetrics::default();
        let opts = a.common.follow_options(cfg);
        let mut print = a.common.pass_printer(cfg);
        kvwatch_detect::follow::follow(data, &rules, &opts, &metrics, &shutdown, |outcome| {
            print(outcome)
        })
        .await;
        return Ok(ExitCode::SUCCESS);
    }
    let c = &a.common;
    let rules = load_rules(cfg, &c.source, true).await?;
    let mut store = alert_store(data, cfg, c.max_evidence)?;
    let pass = kvwatch_detect::run::PassOptions {
        models: (!c.no_models).then_some(&cfg.models),
        engine: c.engine_options(cfg),
        honour_intervals: false,
    };
    let report = if a.from.is_some() || a.to.is_some() {
        let Some((lo, hi)) = data.time_range()? else {
            bail!("the event store is empty");
        };
        let now = kvwatch_ingest::store::now_nanos();
        let from = a
            .from
            .as_deref()
            .map(|s| parse_time(s, now))
            .transpose()?
            .unwrap_or(lo);
        let to =
            a.to.as_deref()
                .map(|s| parse_time(s, now))
                .transpose()?
                .unwrap_or(hi + 1);
        if to <= from {
            bail!("--to must be after --from");
        }
        backfill(
            data,
            &rules,
            &pass,
            from,
            to,
            &mut store,
            &mut progress(false),
        )
        .await?
    } else {
        incremental(data, &rules, &pass, &mut store, &mut progress(false)).await?
    };
    print_detect(&report, rules.len(), c.format)?;
    if report.failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let again = if report.mode == "backfill" {
        "rerun the range to evaluate it again"
    } else {
        "its ranges are evaluated again by the next run"
    };
    for f in &report.failed {
        eprintln!("detect: rule {} failed ({again}): {}", f.rule_id, f.error);
    }
    Ok(ExitCode::FAILURE)
}

/// One line per pass of `detect --follow` (JSON Lines with `--format json`).
fn print_pass(outcome: PassOutcome<'_>, json: bool, interval: u64) {
    match outcome {
        PassOutcome::Failed(e) => {
            eprintln!("detect: pass failed, retrying in {interval} s: {e}");
        }
        PassOutcome::Done(r) if json => {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        PassOutcome::Done(r) => println!(
            "{} detect: {} new alerts, {} updated, {} folded, {} withdrawn ({} new files, {} ms)",
            format_ns(kvwatch_ingest::store::now_nanos()),
            r.totals.created,
            r.totals.updated,
            r.totals.folded,
            r.totals.withdrawn,
            r.new_files,
            r.elapsed_ms
        ),
    }
}

fn print_detect(r: &DetectReport, nrules: usize, format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(r)?)?;
        return Ok(());
    }
    writeln!(out, "kvwatch detect ({})", r.mode)?;
    if r.mode == "up-to-date" {
        writeln!(
            out,
            "  nothing new since the last run; use --from/--to to re-evaluate a range"
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "  {:<32} {:>8} {:>8} {:>8} {:>7} {:>9} {:>10}",
        "rule", "windows", "new", "updated", "folded", "ms", "spilled"
    )?;
    for x in &r.rules {
        let spilled = match x.spilled_bytes {
            0 => "-".to_owned(),
            b => format!("{:.1} MiB", b as f64 / 1048576.0),
        };
        writeln!(
            out,
            "  {:<32} {:>8} {:>8} {:>8} {:>7} {:>9} {:>10}",
            x.rule_id,
            x.occurrences,
            x.stats.created,
            x.stats.updated,
            x.stats.folded,
            x.elapsed_ms,
            spilled
        )?;
    }
    let ranges: Vec<String> = r
        .ranges
        .iter()
        .map(|(a, b)| format!("{a} .. {b}"))
        .collect();
    kv_table(
        &mut out,
        &[
            ("rules", nrules.to_string()),
            ("event time", ranges.join("; ")),
            ("new alerts", thousands(r.totals.created)),
            ("updated", thousands(r.totals.updated)),
            ("folded into open alerts", thousands(r.totals.folded)),
            ("unchanged", thousands(r.totals.unchanged)),
            (
                "withdrawn (contradicted by late records)",
                thousands(r.totals.withdrawn),
            ),
            ("elapsed", format!("{:.2} s", r.elapsed_ms as f64 / 1000.0)),
        ],
    )?;
    writeln!(out, "  see: kvwatch alerts")?;
    Ok(())
}

fn open_alerts_read(data: &DataDir) -> Result<Option<AlertStore>> {
    Ok(AlertStore::open_read_only(data)?)
}

fn write_alerts(out: &mut dyn Write, alerts: &[Alert], format: AlertFormat) -> Result<()> {
    match format {
        AlertFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(alerts)?)?,
        AlertFormat::Ocsf => {
            let v: Vec<_> = alerts.iter().map(Alert::to_ocsf).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?
        }
        AlertFormat::Table => {
            if alerts.is_empty() {
                writeln!(out, "no alerts")?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<16} {:<13} {:<6} {:<28} {:<20} {:>6}  summary",
                "id", "severity", "status", "rule", "last seen", "events"
            )?;
            for a in alerts {
                let mut summary = a.summary.clone();
                if summary.chars().count() > 110 {
                    summary = summary.chars().take(107).collect::<String>() + "...";
                }
                writeln!(
                    out,
                    "{:<16} {:<13} {:<6} {:<28} {:<20} {:>6}  {}",
                    &a.id[..16.min(a.id.len())],
                    a.severity.as_str(),
                    &a.status.as_str()[..3.min(a.status.as_str().len())],
                    a.rule_id,
                    &format_ns(a.last_seen)[..19],
                    a.event_count,
                    summary
                )?;
            }
            writeln!(out, "{} alerts", alerts.len())?;
        }
    }
    Ok(())
}

pub fn cmd_alerts(data: &DataDir, a: AlertsArgs) -> Result<ExitCode> {
    if let Some(AlertsCmd::Migrate(m)) = a.cmd {
        return cmd_migrate(data, m);
    }
    let now = kvwatch_ingest::store::now_nanos();
    let filter = AlertFilter {
        since: a.since.as_deref().map(|s| parse_time(s, now)).transpose()?,
        min_severity: a
            .severity
            .as_deref()
            .map(|s| Severity::parse(s).with_context(|| format!("unknown severity {s:?}")))
            .transpose()?,
        rule: a.rule,
        status: a
            .status
            .as_deref()
            .map(|s| Status::parse(s).with_context(|| format!("unknown status {s:?}")))
            .transpose()?,
        limit: a.limit,
        ..Default::default()
    };
    let alerts = match open_alerts_read(data)? {
        Some(s) => s.list(&filter)?,
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    write_alerts(&mut out, &alerts, a.format)?;
    Ok(ExitCode::SUCCESS)
}

pub fn cmd_alert(data: &DataDir, a: AlertArgs) -> Result<ExitCode> {
    // Accept the 16-character prefix the table shows.
    let store = AlertStore::open(data)?;
    let matches: Vec<Alert> = store
        .list(&AlertFilter::default())?
        .into_iter()
        .filter(|x| x.id.starts_with(&a.id))
        .collect();
    let alert = match matches.as_slice() {
        [one] => one.clone(),
        [] => bail!("no alert with id {}", a.id),
        _ => bail!(
            "{} alerts start with {}; give more of the id",
            matches.len(),
            a.id
        ),
    };
    if let Some(s) = &a.set_status {
        let st = Status::parse(s).with_context(|| format!("unknown status {s:?}"))?;
        let actor = format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        );
        store.set_status(&alert.id, st, &actor, kvwatch_ingest::store::now_nanos())?;
        tracing::info!(alert = %alert.id, status = st.as_str(), "alert.status_changed");
    }
    let alert = store.get(&alert.id)?.context("alert vanished")?;
    let mut out = std::io::stdout().lock();
    match a.format {
        AlertFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&alert)?)?,
        AlertFormat::Ocsf => writeln!(out, "{}", serde_json::to_string_pretty(&alert.to_ocsf())?)?,
        AlertFormat::Table => {
            let principals: Vec<String> = alert
                .principals
                .iter()
                .map(|p| {
                    let mut s = p.label().to_owned();
                    if let (Some(o), Some(_)) = (&p.oid, &p.upn) {
                        s.push_str(&format!(" ({o})"));
                    }
                    s
                })
                .collect();
            kv_table(
                &mut out,
                &[
                    ("id", alert.id.clone()),
                    ("rule", alert.rule_id.clone()),
                    ("title", alert.title.clone()),
                    ("severity", alert.severity.to_string()),
                    ("status", alert.status.as_str().into()),
                    ("first seen", format_ns(alert.first_seen)),
                    ("last seen", format_ns(alert.last_seen)),
                    ("events", alert.event_count.to_string()),
                    ("occurrences", alert.occurrences.to_string()),
                    ("vaults", alert.vaults.join(", ")),
                    ("principals", principals.join(", ")),
                    ("ips", alert.ips.join(", ")),
                    ("objects", alert.objects.join(", ")),
                    (
                        "ATT&CK",
                        format!("{} {}", alert.tactics.join(" "), alert.techniques.join(" ")),
                    ),
                    ("summary", alert.summary.clone()),
                ],
            )?;
            writeln!(out, "\noccurrences")?;
            for o in store.occurrences(&alert.id)? {
                writeln!(
                    out,
                    "  {}  {:>6} events  {}",
                    &format_ns(o.window_start)[..19],
                    o.event_count,
                    o.summary
                )?;
            }
            writeln!(
                out,
                "\nevidence: kvwatch query \"SELECT e.* FROM events e JOIN alerts a ON array_has(a.evidence, e.event_id) WHERE a.id = '{}' ORDER BY e.time\"",
                alert.id
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cmd_rules(data: &DataDir, cfg: &Config, cmd: RulesCmd) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        RulesCmd::Sql { source } => {
            let rules = load_rules(cfg, &source, true).await?;
            let store = Engine::open(data)?.store_values();
            let v: Vec<_> = rules
                .iter()
                .map(|r| serde_json::json!({"id": r.id(), "sql": r.render(&store)}))
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        RulesCmd::List { source, format } => {
            let rules = load_rules(cfg, &source, false).await?;
            if format == Format::Json {
                let v: Vec<_> = rules.iter().map(|r| r.summary()).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                writeln!(
                    out,
                    "{:<30} {:<8} {:>6} {:>5} {:<4} title",
                    "id", "severity", "window", "tests", "on"
                )?;
                for r in &rules {
                    writeln!(
                        out,
                        "{:<30} {:<8} {:>6} {:>5} {:<4} {}",
                        r.id(),
                        r.doc.severity.as_str(),
                        String::from(r.doc.window),
                        r.doc.tests.len(),
                        if r.doc.enabled { "yes" } else { "no" },
                        r.doc.title
                    )?;
                }
                writeln!(out, "{} rules", rules.len())?;
            }
        }
        RulesCmd::Show { id, source } => {
            let rules = load_rules(cfg, &source, false).await?;
            let r = rules
                .iter()
                .find(|r| r.id() == id)
                .with_context(|| format!("no rule {id:?}"))?;
            let params: Vec<String> = r
                .params
                .iter()
                .map(|(k, v)| format!("{k} = {}", v.sql()))
                .collect();
            kv_table(
                &mut out,
                &[
                    ("id", r.id().into()),
                    ("file", r.file.clone()),
                    ("title", r.doc.title.clone()),
                    ("severity", r.doc.severity.to_string()),
                    (
                        "ATT&CK",
                        format!("{} {}", r.doc.tactics.join(" "), r.doc.techniques.join(" ")),
                    ),
                    ("window", String::from(r.doc.window)),
                    ("lookback", String::from(r.lookback())),
                    ("history", String::from(r.history())),
                    ("suppression", String::from(r.doc.suppression)),
                    ("dedup", r.doc.dedup.join(", ")),
                    ("enabled", r.doc.enabled.to_string()),
                    ("fixtures", r.doc.tests.len().to_string()),
                ],
            )?;
            writeln!(out, "\n{}", r.doc.description.trim())?;
            writeln!(out, "\nparameters\n  {}", params.join("\n  "))?;
            writeln!(
                out,
                "\nSQL (rendered; data_start and watermark shown as the epoch)\n{}",
                r.render(&Engine::empty().store_values())
            )?;
        }
        RulesCmd::Test {
            ids,
            source,
            format,
        } => {
            let rules = load_rules(cfg, &source, false).await?;
            for id in &ids {
                if !rules.iter().any(|r| r.id() == id) {
                    bail!("no rule {id:?}");
                }
            }
            let mut results = Vec::new();
            for r in rules
                .iter()
                .filter(|r| ids.is_empty() || ids.iter().any(|i| i == r.id()))
            {
                if r.doc.tests.is_empty() {
                    results.push(kvwatch_detect::fixture::FixtureResult {
                        rule_id: r.id().into(),
                        name: "(no fixtures)".into(),
                        passed: false,
                        message: Some("every rule needs positive and negative fixtures".into()),
                        occurrences: 0,
                    });
                }
                results.extend(run_fixtures(r).await);
            }
            let failed = results.iter().filter(|r| !r.passed).count();
            if format == Format::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&results)?)?;
            } else {
                for r in &results {
                    writeln!(
                        out,
                        "{} {} / {}",
                        if r.passed { "PASS" } else { "FAIL" },
                        r.rule_id,
                        r.name
                    )?;
                    if let Some(m) = &r.message {
                        for line in m.lines() {
                            writeln!(out, "       {line}")?;
                        }
                    }
                }
                writeln!(out, "{} fixtures, {} failed", results.len(), failed)?;
            }
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
