//! The `kvwatch` binary: thin wiring of the libraries into subcommands.

mod config;
mod demo;
mod detect_cmd;
mod kafka_cmd;
mod output;
mod report_cmd;
mod serve_cmd;
mod sql_cmd;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use config::Config;
use kvwatch_ingest::DataDir;
use kvwatch_ingest::WriteOptions;
use kvwatch_ingest::files::{IngestOptions, IngestReport, Progress, expand};
use kvwatch_ingest::loganalytics::Shape;
use output::{Format, kv_table, thousands};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kvwatch",
    version,
    about = "Azure Key Vault audit logs in, detections out"
)]
struct Cli {
    /// Config file (TOML); `./kvwatch.toml` is read when present.
    #[arg(long, global = true, env = "KVWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// The event store: a directory, or an object-store URL shared by many nodes
    /// (`az://container/prefix`, `abfss://container@account.dfs.core.windows.net/prefix`,
    /// `s3://bucket/prefix`, `gs://bucket/prefix`) [default: ./kvwatch-data].
    #[arg(long, global = true, env = "KVWATCH_DATA")]
    data: Option<String>,
    /// This node's local state (alert store, API keys, reports, models, upload staging);
    /// required when --data is a URL [default: the --data directory].
    #[arg(long, global = true, env = "KVWATCH_STATE")]
    state: Option<PathBuf>,
    /// The alert store (alerts, triage history, sink cursors, detection's bookkeeping) in a
    /// PostgreSQL database that several nodes share:
    /// `postgres://kvwatch:${env:PGPASSWORD}@db.example:5432/kvwatch?sslmode=require`
    /// (`${env:…}`/`${file:…}` are read at start; `sslrootcert=PATH` adds a CA)
    /// [default: SQLite, `alerts.db` in the state directory].
    #[arg(long, global = true, env = "KVWATCH_ALERTS")]
    alerts: Option<String>,
    /// Object-store setting `key=value` (repeatable; `account_name`, `access_key`,
    /// `sas_token`, `client_id`, `client_secret`, `tenant_id`, `use_azure_cli`, `endpoint`,
    /// …); values may be `${env:NAME}` or `${file:PATH}`. `AZURE_*`/`AWS_*`/`GOOGLE_*`
    /// variables are read too.
    #[arg(
        long = "storage-option",
        global = true,
        env = "KVWATCH_STORAGE_OPTIONS",
        value_delimiter = ','
    )]
    storage_options: Vec<String>,
    /// MiB of this node's cache of the object store's Parquet files (under --state/cache),
    /// for queries and detection; 0 turns it off [default: 2048].
    #[arg(long, global = true, env = "KVWATCH_CACHE_MB")]
    cache_mb: Option<u64>,
    /// Log filter, e.g. `info` or `kvwatch_ingest=debug` [default: warn].
    #[arg(long, global = true, env = "KVWATCH_LOG")]
    log: Option<String>,
    /// Log line format: `text` (key=value, control characters escaped) or `json` (one object
    /// per line) [default: text].
    #[arg(long, global = true, env = "KVWATCH_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ingest audit logs from files, directories (recursively) or `-` for stdin.
    Ingest(IngestArgs),
    /// Ingest from Kafka / Azure Event Hubs until interrupted (effectively once into the store).
    Consume(kafka_cmd::ConsumeArgs),
    /// Publish log files to a Kafka topic as Azure-shaped envelope messages.
    Publish(kafka_cmd::PublishArgs),
    /// Run the service: the HTTP API, the Kafka source (when configured) and continuous detection.
    Serve(Box<serve_cmd::ServeArgs>),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Apikey(serve_cmd::ApikeyCmd),
    /// The SIEM forwarders of the config file: cursors, lag, dead letters, retries.
    #[command(subcommand)]
    Sinks(serve_cmd::SinksCmd),
    /// Print the OpenAPI 3.1 document of the HTTP API.
    Openapi,
    /// Compliance and blast-radius reports (HTML with charts, CSV or JSON); every number comes
    /// with the SQL that reproduces it.
    Report(report_cmd::ReportArgs),
    /// Run read-only SQL over `events`, `activity`, `quarantine`, `alerts`, `alert_history`,
    /// `azure_diagnostics` and `information_schema`.
    Query(sql_cmd::QueryArgs),
    /// Evaluate the detection rules: new data since the last run, a --from/--to range, or --follow.
    Detect(detect_cmd::DetectArgs),
    /// List alerts (table, JSON, or OCSF Detection Findings).
    Alerts(detect_cmd::AlertsArgs),
    /// Show one alert with its occurrences, or change its status.
    Alert(detect_cmd::AlertArgs),
    /// List, show and test the detection rules.
    #[command(subcommand)]
    Rules(detect_cmd::RulesCmd),
    /// Merge small Parquet files of each partition.
    Compact(CompactArgs),
    /// Generate realistic synthetic Key Vault traffic with labelled attacks.
    Generate(GenerateArgs),
    /// Score the alerts of a store against the labels of generated traffic.
    Eval(EvalArgs),
    /// Generate a week of traffic with attacks, ingest it, and summarise what kvwatch sees.
    Demo(DemoArgs),
    /// Internal: a worker process of the analyst-SQL pool (started by `serve` and `query`).
    #[command(hide = true)]
    SqlWorker,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Clone)]
struct GenArgs {
    /// Number of days of traffic.
    #[arg(long, env = "KVWATCH_GEN_DAYS", default_value_t = 7)]
    days: u32,
    /// First day (UTC), YYYY-MM-DD.
    #[arg(long, env = "KVWATCH_GEN_START", default_value = "2024-05-06")]
    start: chrono::NaiveDate,
    /// Random seed: the same seed gives the same bytes.
    #[arg(long, env = "KVWATCH_GEN_SEED", default_value_t = 1)]
    seed: u64,
    /// Multiplies vaults and workloads (1 ≈ 20 k events/day).
    #[arg(long, env = "KVWATCH_GEN_SCALE", default_value_t = 1)]
    scale: u32,
    /// `all`, `none`, or a comma-separated list of attack kinds.
    #[arg(long, env = "KVWATCH_GEN_ATTACKS", default_value = "all")]
    attacks: String,
}

impl GenArgs {
    fn config(
        &self,
        format: kvwatch_datasets::OutputFormat,
    ) -> Result<kvwatch_datasets::GenConfig> {
        Ok(kvwatch_datasets::GenConfig {
            days: self.days,
            start: self.start,
            seed: self.seed,
            scale: self.scale,
            format,
            attacks: kvwatch_datasets::parse_attacks(&self.attacks)?,
        })
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GenFormat {
    Archive,
    Eventhubs,
    Jsonl,
    Mixed,
}

#[derive(Args)]
struct GenerateArgs {
    /// Output directory (created if missing).
    #[arg(long, env = "KVWATCH_GEN_OUT")]
    out: PathBuf,
    #[arg(
        long,
        value_enum,
        env = "KVWATCH_GEN_FORMAT",
        default_value = "archive"
    )]
    format: GenFormat,
    /// Output of the summary.
    #[arg(
        long = "summary-format",
        value_enum,
        default_value = "table",
        env = "KVWATCH_FORMAT"
    )]
    summary_format: Format,
    #[command(flatten)]
    gen_args: GenArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// `labels.json` written by `kvwatch generate`.
    #[arg(long, env = "KVWATCH_EVAL_LABELS")]
    labels: PathBuf,
    /// Alerts to score, as a JSON array (the shape of `kvwatch alerts --format json`)
    /// [default: the alert store]. `--alerts FILE` is taken as this too (the global
    /// `--alerts` names a database only when it is a postgres:// URL).
    #[arg(long, env = "KVWATCH_EVAL_ALERTS")]
    alerts_file: Option<PathBuf>,
    /// Widen each attack window by this many seconds on both sides when matching alerts.
    #[arg(long, env = "KVWATCH_EVAL_TOLERANCE_SECS", default_value_t = 3600)]
    tolerance_secs: i64,
    #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
    format: Format,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    gen_args: GenArgs,
    /// Go through Kafka instead of files: publish the generated logs to this broker and
    /// consume them into the store (use a fresh topic).
    #[arg(long, env = "KVWATCH_DEMO_BROKERS")]
    brokers: Option<String>,
    /// Topic for --brokers.
    #[arg(long, env = "KVWATCH_DEMO_TOPIC", default_value = "kvwatch-demo")]
    topic: String,
}

#[derive(Args, Clone, Default)]
struct StoreArgs {
    /// Rows per Parquet file.
    #[arg(long, env = "KVWATCH_STORE_FILE_ROWS")]
    file_rows: Option<usize>,
    /// Arrow data buffered before the largest partition is flushed, in MiB.
    #[arg(long, env = "KVWATCH_STORE_BUFFER_MB")]
    buffer_mb: Option<usize>,
    /// Rows per Parquet row group.
    #[arg(long, env = "KVWATCH_STORE_ROW_GROUP_ROWS")]
    row_group_rows: Option<usize>,
    /// zstd compression level of Parquet files.
    #[arg(long, env = "KVWATCH_STORE_ZSTD_LEVEL")]
    zstd_level: Option<i32>,
    /// Compact a partition once it holds this many small files.
    #[arg(long, env = "KVWATCH_STORE_COMPACT_MIN_FILES")]
    compact_min_files: Option<usize>,
    /// Seconds that files replaced by compaction stay readable for running queries [default: 600].
    #[arg(long, env = "KVWATCH_STORE_RETIRE_GRACE_SECS")]
    retire_grace_secs: Option<u64>,
    /// Drop date partitions older than this many days at housekeeping (compaction) [default: keep all].
    #[arg(long, env = "KVWATCH_STORE_RETAIN_DAYS")]
    retain_days: Option<u32>,
    /// Shared object store: seconds before housekeeping deletes a file no manifest lists
    /// [default: 86400].
    #[arg(long, env = "KVWATCH_STORE_ORPHAN_GRACE_SECS")]
    orphan_grace_secs: Option<u64>,
    /// Shared object store: seconds the housekeeping lease lasts unless renewed [default: 300].
    #[arg(long, env = "KVWATCH_STORE_LEASE_SECS")]
    lease_secs: Option<u64>,
}

impl StoreArgs {
    fn options(&self, cfg: &Config) -> WriteOptions {
        let d = WriteOptions::default();
        let c = &cfg.store;
        WriteOptions {
            file_rows: self.file_rows.or(c.file_rows).unwrap_or(d.file_rows).max(1),
            buffer_bytes: self
                .buffer_mb
                .or(c.buffer_mb)
                .map(|m| m << 20)
                .unwrap_or(d.buffer_bytes),
            row_group_rows: self
                .row_group_rows
                .or(c.row_group_rows)
                .unwrap_or(d.row_group_rows)
                .max(1),
            zstd_level: self.zstd_level.or(c.zstd_level).unwrap_or(d.zstd_level),
            compact_min_files: self
                .compact_min_files
                .or(c.compact_min_files)
                .unwrap_or(d.compact_min_files),
            retire_grace: self
                .retire_grace_secs
                .or(c.retire_grace_secs)
                .map(std::time::Duration::from_secs)
                .unwrap_or(d.retire_grace),
            retain_days: self.retain_days.or(c.retain_days).or(d.retain_days),
            orphan_grace: self
                .orphan_grace_secs
                .or(c.orphan_grace_secs)
                .map(std::time::Duration::from_secs)
                .unwrap_or(d.orphan_grace),
            lease_ttl: self
                .lease_secs
                .or(c.lease_secs)
                .map(std::time::Duration::from_secs)
                .unwrap_or(d.lease_ttl)
                .max(std::time::Duration::from_secs(1)),
        }
    }
}

#[derive(Args)]
struct IngestArgs {
    /// Files, directories or `-` (stdin). Directories are walked for *.json, *.jsonl, *.ndjson,
    /// *.csv, *.gz. An object-store URL (`az://insights-logs-auditevent/resourceId=…`) reads
    /// the diagnostic-settings archive there: only what its blobs gained since the last run.
    #[arg(required = true)]
    paths: Vec<String>,
    /// What the inputs hold: `auto` tells Azure's records (diagnostic settings, Event Hubs,
    /// storage, portal and CLI exports) from Log Analytics rows record by record; the others
    /// force one: resource-log, azure-diagnostics, azkv-audit-logs, azure-activity (JSON or CSV).
    #[arg(long, env = "KVWATCH_INGEST_SHAPE")]
    shape: Option<Shape>,
    #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
    format: Format,
    /// Rows per Arrow batch between the parser and the store.
    #[arg(long, env = "KVWATCH_INGEST_BATCH_ROWS")]
    batch_rows: Option<usize>,
    /// Largest single JSON text accepted, in MiB; larger inputs are quarantined.
    #[arg(long, env = "KVWATCH_INGEST_MAX_FRAME_MB")]
    max_frame_mb: Option<usize>,
    /// Read files with read(2) instead of memory-mapping them. Mapping saves a copy of every
    /// byte, but a file truncated by another process while mapped ends kvwatch (SIGBUS).
    #[arg(long, env = "KVWATCH_INGEST_NO_MMAP")]
    no_mmap: bool,
    /// Parser threads (default: one per core, at most 4). Inputs are parsed side by side; a
    /// large JSON Lines file is cut at line boundaries into one range per thread.
    #[arg(long, env = "KVWATCH_INGEST_PARSE_THREADS")]
    parse_threads: Option<usize>,
    /// Smallest JSON Lines file, in MiB, cut into ranges for the parser threads.
    #[arg(long, env = "KVWATCH_INGEST_SPLIT_MB")]
    split_mb: Option<usize>,
    /// Skip compaction of small files after ingesting.
    #[arg(long, env = "KVWATCH_INGEST_NO_COMPACT")]
    no_compact: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct CompactArgs {
    #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
    format: Format,
    #[command(flatten)]
    store: StoreArgs,
}

fn main() -> ExitCode {
    kvwatch_ingest::files::keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // JSON escapes every string by itself.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        // Colour only for people: log files and collectors get plain `key=value` text, with
        // control characters in values escaped so that no value (a statement, a name from
        // the logs) can start a line that looks like one of ours.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(output::escaped_fields())
            .try_init(),
    };
}

/// The data location of `--data`/`--state`/`--storage-option` (then the config file's `data`,
/// `state` and `[storage]`).
fn open_data(cli: &Cli, cfg: &Config) -> Result<DataDir> {
    let spec = cli
        .data
        .clone()
        .or_else(|| cfg.data.clone())
        .unwrap_or_else(|| "kvwatch-data".into());
    let mut options = kvwatch_ingest::location::StorageOptions::default();
    for (k, v) in &cfg.storage {
        options.set(k, v);
    }
    for pair in &cli.storage_options {
        options
            .parse_pairs(pair)
            .context("--storage-option / KVWATCH_STORAGE_OPTIONS")?;
    }
    let state = cli.state.clone().or_else(|| cfg.state.clone());
    let cache = cli.cache_mb.or(cfg.cache_mb).unwrap_or(2048) << 20;
    let alerts = cli
        .alerts
        .clone()
        .or_else(|| cfg.alerts.clone())
        .filter(|u| !u.trim().is_empty());
    if let Some(url) = &alerts
        && !kvwatch_detect::store::pg::is_postgres(url)
    {
        bail!(
            "--alerts {}: a postgres:// or postgresql:// URL (leave it unset for SQLite in the state directory)",
            kvwatch_ingest::secret::redact_url(url)
        );
    }
    Ok(DataDir::open(&spec, state, options, cache)
        .with_context(|| format!("opening the data location {spec}"))?
        .with_alerts(alerts))
}

fn run(mut cli: Cli) -> Result<ExitCode> {
    // `kvwatch eval --alerts alerts.json` predates the global `--alerts` database URL: for
    // eval, a value that is not a database is the file of alerts to score.
    if let Cmd::Eval(e) = &mut cli.cmd
        && let Some(file) = cli
            .alerts
            .take_if(|a| !kvwatch_detect::store::pg::is_postgres(a))
    {
        e.alerts_file.get_or_insert(PathBuf::from(file));
    }
    if let Cmd::SqlWorker = cli.cmd {
        // Started by the query pool with the data directory; no config file, logs to stderr
        // (which the parent reads).
        init_logging(cli.log.as_deref().unwrap_or("warn"), LogFormat::Text);
        let data = open_data(&cli, &config::Config::default())?;
        return Ok(sql_cmd::cmd_sql_worker(&data));
    }
    let cfg = config::load(cli.config.as_deref())?;
    let log_format = match (cli.log_format, cfg.log_format.as_deref()) {
        (Some(f), _) => f,
        (None, None | Some("text")) => LogFormat::Text,
        (None, Some("json")) => LogFormat::Json,
        (None, Some(other)) => bail!("config log_format {other:?}: text or json"),
    };
    init_logging(
        cli.log.as_deref().or(cfg.log.as_deref()).unwrap_or("warn"),
        log_format,
    );
    let data = open_data(&cli, &cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.cmd {
        Cmd::Ingest(a) => rt.block_on(cmd_ingest(&data, &cfg, a)),
        Cmd::Consume(a) => rt.block_on(kafka_cmd::cmd_consume(&data, &cfg, a)),
        Cmd::Publish(a) => rt.block_on(kafka_cmd::cmd_publish(&cfg, a)),
        Cmd::Serve(a) => rt.block_on(serve_cmd::cmd_serve(&data, &cfg, *a)),
        Cmd::Apikey(c) => serve_cmd::cmd_apikey(&data, c),
        Cmd::Sinks(c) => serve_cmd::cmd_sinks(&data, &cfg, c),
        Cmd::Report(a) => rt.block_on(report_cmd::cmd_report(&data, &cfg, a)),
        Cmd::Openapi => {
            println!("{}", kvwatch_api::handlers::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Query(a) => rt.block_on(sql_cmd::cmd_query(&data, &cfg, a)),
        Cmd::Detect(a) => rt.block_on(detect_cmd::cmd_detect(&data, &cfg, a)),
        Cmd::Alerts(a) => detect_cmd::cmd_alerts(&data, a),
        Cmd::Alert(a) => detect_cmd::cmd_alert(&data, a),
        Cmd::Rules(c) => rt.block_on(detect_cmd::cmd_rules(&data, &cfg, c)),
        Cmd::Compact(a) => rt.block_on(cmd_compact(&data, &cfg, a)),
        Cmd::Generate(a) => cmd_generate(a),
        Cmd::Eval(a) => rt.block_on(cmd_eval(&data, a)),
        Cmd::Demo(a) => rt.block_on(demo::run(&data, &cfg, a)),
        Cmd::SqlWorker => unreachable!("dispatched before the config is read"),
    }
}

async fn cmd_ingest(data: &DataDir, cfg: &Config, a: IngestArgs) -> Result<ExitCode> {
    let (urls, paths): (Vec<String>, Vec<String>) = a
        .paths
        .iter()
        .cloned()
        .partition(|p| kvwatch_ingest::location::is_url(p));
    let (mut inputs, skipped) = expand(&paths)?;
    let mut skipped: Vec<String> = skipped.iter().map(|p| p.display().to_string()).collect();
    let mut writer = data.writer(a.store.options(cfg))?;
    // Archives in a storage account: what is new since the positions the store holds.
    let staging = data
        .root()
        .join("staging")
        .join(format!("archive-{}", std::process::id()));
    let mut checkpoints = Vec::new();
    for url in &urls {
        let f = kvwatch_ingest::archive::fetch(url, data.options(), writer.manifest(), &staging)
            .with_context(|| format!("reading the archive {url}"))?;
        tracing::info!(archive = %url, new = f.inputs.len(), unchanged = f.unchanged, bytes = f.bytes, "archive listed");
        inputs.extend(f.inputs);
        checkpoints.extend(f.checkpoints);
        skipped.extend(f.skipped.into_iter().map(|b| format!("{url}/{b}")));
    }
    let d = IngestOptions::default();
    let opts = IngestOptions {
        batch_rows: a
            .batch_rows
            .or(cfg.ingest.batch_rows)
            .unwrap_or(d.batch_rows),
        max_frame: a
            .max_frame_mb
            .or(cfg.ingest.max_frame_mb)
            .map(|m| m << 20)
            .unwrap_or(d.max_frame),
        mmap: !a.no_mmap && cfg.ingest.mmap.unwrap_or(d.mmap),
        parse_threads: a
            .parse_threads
            .or(cfg.ingest.parse_threads)
            .unwrap_or(d.parse_threads),
        split_min: a
            .split_mb
            .or(cfg.ingest.split_mb)
            .map(|m| m << 20)
            .unwrap_or(d.split_min),
        shape: match a.shape {
            Some(s) => s,
            None => cfg
                .ingest
                .shape
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: String| anyhow::anyhow!("config ingest.shape: {e}"))?
                .unwrap_or(d.shape),
        },
        checkpoints,
    };
    let tty = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let progress = |p: &Progress| {
        let line = format!(
            "ingest: {}/{} inputs, {} records, {:.0} MiB, {:.0} s",
            p.files_done,
            p.files_total,
            thousands(p.records),
            p.bytes as f64 / 1048576.0,
            p.elapsed.as_secs_f64()
        );
        if tty {
            eprint!("\r{line}   ");
        } else if last_line.elapsed().as_secs() >= 10 {
            last_line = std::time::Instant::now();
            eprintln!("{line}");
        }
    };
    let mut report = tokio::task::block_in_place(|| {
        kvwatch_ingest::ingest(&mut writer, inputs, &opts, progress)
    })?;
    if tty {
        eprintln!();
    }
    let _ = std::fs::remove_dir_all(&staging);
    report.skipped_files = skipped;
    let compact = !a.no_compact && cfg.ingest.compact.unwrap_or(true);
    let compacted = if compact {
        Some(writer.compact().await?)
    } else {
        None
    };
    print_ingest_report(&report, compacted, a.format)?;
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn print_ingest_report(
    r: &IngestReport,
    compacted: Option<kvwatch_ingest::store::CompactReport>,
    format: Format,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        let mut v = serde_json::to_value(r)?;
        if let Some(c) = &compacted {
            v["compacted"] = serde_json::to_value(c)?;
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let p = &r.parsed;
    let s = &r.stored;
    let mut rows = vec![
        (
            "inputs",
            format!(
                "{} ({} failed, {} skipped in directories)",
                r.files,
                r.failed.len(),
                r.skipped_files.len()
            ),
        ),
        ("records", thousands(p.records)),
        ("events stored", thousands(s.events)),
        ("activity stored", thousands(s.activity)),
        ("duplicates skipped", thousands(s.duplicates)),
        (
            "quarantined",
            format!(
                "{} (stored {})",
                thousands(p.quarantined),
                thousands(s.quarantine)
            ),
        ),
        ("other categories", thousands(p.other_category)),
        (
            "bytes read",
            format!("{:.1} MiB", p.bytes as f64 / 1048576.0),
        ),
        ("elapsed", format!("{:.2} s", r.elapsed_secs)),
        ("records/s", thousands(r.records_per_sec as u64)),
        ("files written", thousands(s.files_written)),
    ];
    if let Some(kvwatch_ingest::store::CompactReport {
        files_before: b,
        files_after: a,
        ..
    }) = compacted
        && b > 0
    {
        rows.push(("compacted", format!("{b} files into {a}")));
    }
    writeln!(out, "kvwatch ingest")?;
    kv_table(&mut out, &rows)?;
    for f in &r.failed {
        writeln!(out, "  FAILED  {}: {}", f.input, f.error)?;
    }
    if p.quarantined > 0 {
        writeln!(
            out,
            "  see: kvwatch query \"SELECT source, reason FROM quarantine ORDER BY received_at DESC LIMIT 20\""
        )?;
    }
    Ok(())
}

async fn cmd_compact(data: &DataDir, cfg: &Config, a: CompactArgs) -> Result<ExitCode> {
    let mut writer = data.writer(a.store.options(cfg))?;
    let r = writer.compact().await?;
    let mut out = std::io::stdout().lock();
    if a.format == Format::Json {
        writeln!(out, "{}", serde_json::to_string(&r)?)?;
    } else if let Some(holder) = &r.lease_held_by {
        writeln!(
            out,
            "kvwatch compact: skipped, writer {holder} is doing the shared store's housekeeping"
        )?;
    } else {
        writeln!(
            out,
            "kvwatch compact: {} files merged into {}; {} date partitions ({} files) past retention dropped; {} orphan files removed",
            r.files_before, r.files_after, r.partitions_dropped, r.files_dropped, r.orphans_removed
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A token cancelled by SIGINT or SIGTERM. Registered before anything slow, so a signal during
/// start-up is not lost.
pub(crate) fn shutdown_on_signal() -> Result<tokio_util::sync::CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = tokio_util::sync::CancellationToken::new();
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    Ok(token)
}

fn progress_printer(what: &'static str) -> impl FnMut(u32, u32) {
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    move |done, total| {
        if last.elapsed().as_secs_f64() < 1.0 && done < total {
            return;
        }
        last = std::time::Instant::now();
        let line = format!(
            "{what}: {done}/{total} hours, {:.0} s",
            started.elapsed().as_secs_f64()
        );
        if tty {
            eprint!("\r{line}   ");
            if done == total {
                eprintln!();
            }
        } else if done == total || done.is_multiple_of(24) {
            eprintln!("{line}");
        }
    }
}

fn cmd_generate(a: GenerateArgs) -> Result<ExitCode> {
    use kvwatch_datasets::OutputFormat as F;
    let format = match a.format {
        GenFormat::Archive => F::Archive,
        GenFormat::Eventhubs => F::Eventhubs,
        GenFormat::Jsonl => F::Jsonl,
        GenFormat::Mixed => F::Mixed,
    };
    let cfg = a.gen_args.config(format)?;
    let started = std::time::Instant::now();
    let s = kvwatch_datasets::generate(&cfg, &a.out, progress_printer("generate"))?;
    let secs = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    if a.summary_format == Format::Json {
        let mut v = serde_json::to_value(&s)?;
        v["elapsed_secs"] = serde_json::json!(secs);
        v["labels"] = serde_json::json!(a.out.join("labels.json"));
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "kvwatch generate")?;
        kv_table(
            &mut out,
            &[
                ("audit events", thousands(s.events)),
                ("activity records", thousands(s.activity)),
                (
                    "attacks",
                    format!("{} ({} events)", s.attacks, thousands(s.attack_events)),
                ),
                ("vaults", s.vaults.to_string()),
                ("files", thousands(s.files)),
                ("bytes", format!("{:.1} MiB", s.bytes as f64 / 1048576.0)),
                ("elapsed", format!("{secs:.2} s")),
                ("labels", a.out.join("labels.json").display().to_string()),
            ],
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn cmd_eval(data: &DataDir, a: EvalArgs) -> Result<ExitCode> {
    let labels = kvwatch_datasets::read_labels(&a.labels)?;
    let alerts = demo::load_alerts(data, a.alerts_file.as_deref())?;
    // Arrival times come from the store; with an alerts file from elsewhere they would not
    // belong to the same run.
    let arrived = match a.alerts_file {
        None => demo::arrivals(data, &labels).await?,
        Some(_) => Default::default(),
    };
    let report = kvwatch_datasets::eval::score(&labels, &alerts, a.tolerance_secs, &arrived);
    let mut out = std::io::stdout().lock();
    demo::print_eval(&mut out, &report, a.format)?;
    Ok(ExitCode::SUCCESS)
}
