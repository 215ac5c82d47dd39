//! `kvwatch consume`, `kvwatch publish` and `kvwatch serve`: wiring of the Kafka source and
//! publisher from `kvwatch-ingest` to flags, environment and the `[kafka]` config section.

use crate::StoreArgs;
use crate::config::{Config, KafkaConfig};
use crate::output::{Format, kv_table, thousands};
use anyhow::{Context, Result, bail};
use clap::Args;
use kvwatch_ingest::DataDir;
use kvwatch_ingest::files::expand;
use kvwatch_ingest::kafka::{
    self, ClientOptions, ConsumeOptions, ConsumeReport, Metrics, Property, PublishOptions,
};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Connection flags shared by every Kafka command.
#[derive(Args, Clone, Default)]
pub struct KafkaClientArgs {
    /// Bootstrap brokers, e.g. `localhost:9092` or `NAMESPACE.servicebus.windows.net:9093`.
    #[arg(long, env = "KVWATCH_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// A librdkafka property `KEY=VALUE`, applied over kvwatch's defaults (repeatable). A value
    /// `${env:NAME}` or `${file:PATH}` is read from there, so secrets stay off the command line.
    /// The environment variable takes one property per line.
    #[arg(
        short = 'X',
        long = "kafka-property",
        env = "KVWATCH_KAFKA_PROPERTIES",
        value_delimiter = '\n'
    )]
    properties: Vec<String>,
}

impl KafkaClientArgs {
    fn options(&self, cfg: &KafkaConfig) -> Result<ClientOptions> {
        let brokers = self
            .brokers
            .clone()
            .or_else(|| cfg.brokers.clone())
            .context(
                "no Kafka brokers: pass --brokers, set KVWATCH_KAFKA_BROKERS or [kafka] brokers",
            )?;
        let mut properties = Vec::new();
        for (k, v) in &cfg.properties {
            properties.push(Property {
                key: k.clone(),
                value: v.clone(),
            });
        }
        for p in self.properties.iter().filter(|p| !p.trim().is_empty()) {
            properties.push(Property::parse(p)?);
        }
        Ok(ClientOptions {
            brokers,
            properties,
        })
    }
}

#[derive(Args, Clone, Default)]
pub struct ConsumeFlags {
    #[command(flatten)]
    client: KafkaClientArgs,
    /// Topic to consume (repeatable, or comma-separated).
    #[arg(long = "topic", env = "KVWATCH_KAFKA_TOPICS", value_delimiter = ',')]
    topics: Vec<String>,
    /// Consumer group [default: kvwatch].
    #[arg(long, env = "KVWATCH_KAFKA_GROUP")]
    group: Option<String>,
    /// Records per stored batch [default: 100000].
    #[arg(long, env = "KVWATCH_KAFKA_BATCH_ROWS")]
    batch_rows: Option<usize>,
    /// Message bytes per stored batch, in MiB [default: 64].
    #[arg(long, env = "KVWATCH_KAFKA_BATCH_MB")]
    batch_mb: Option<usize>,
    /// Longest a record waits before its batch is stored, in milliseconds [default: 2000].
    #[arg(long, env = "KVWATCH_KAFKA_BATCH_LINGER_MS")]
    batch_linger_ms: Option<u64>,
    /// Largest message body (after gzip expansion) in KiB; larger ones are quarantined
    /// [default: 16384].
    #[arg(long, env = "KVWATCH_KAFKA_MAX_MESSAGE_KB")]
    max_message_kb: Option<usize>,
    /// Also send a copy of every message with quarantined content to this topic.
    #[arg(long, env = "KVWATCH_KAFKA_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// Seconds between progress log lines and lag statistics [default: 30].
    #[arg(long, env = "KVWATCH_KAFKA_STATS_INTERVAL_SECS")]
    stats_interval_secs: Option<u64>,
    /// Seconds between compactions of small files; 0 disables [default: 600].
    #[arg(long, env = "KVWATCH_KAFKA_COMPACT_INTERVAL_SECS")]
    compact_interval_secs: Option<u64>,
    /// Threads parsing message bodies; 1 parses on the polling thread [default: one per
    /// core, at most 4].
    #[arg(long = "kafka-parse-threads", env = "KVWATCH_KAFKA_PARSE_THREADS")]
    parse_threads: Option<usize>,
}

impl ConsumeFlags {
    /// Whether any Kafka source is configured (for `serve`).
    pub(crate) fn configured(&self, cfg: &KafkaConfig) -> bool {
        self.client.brokers.is_some() || cfg.brokers.is_some()
    }

    pub(crate) fn options(&self, cfg: &KafkaConfig) -> Result<ConsumeOptions> {
        let d = ConsumeOptions::default();
        let topics = if self.topics.is_empty() {
            cfg.topics.clone()
        } else {
            self.topics.clone()
        };
        let topics: Vec<String> = topics
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if topics.is_empty() {
            bail!("no topic: pass --topic, set KVWATCH_KAFKA_TOPICS or [kafka] topics");
        }
        let compact = self
            .compact_interval_secs
            .or(cfg.compact_interval_secs)
            .map(|s| (s > 0).then(|| Duration::from_secs(s)))
            .unwrap_or(d.compact_interval);
        Ok(ConsumeOptions {
            client: self.client.options(cfg)?,
            topics,
            group: self
                .group
                .clone()
                .or_else(|| cfg.group.clone())
                .unwrap_or(d.group),
            batch_rows: self
                .batch_rows
                .or(cfg.batch_rows)
                .unwrap_or(d.batch_rows)
                .max(1),
            batch_bytes: self
                .batch_mb
                .or(cfg.batch_mb)
                .map(|m| m << 20)
                .unwrap_or(d.batch_bytes)
                .max(1),
            batch_linger: self
                .batch_linger_ms
                .or(cfg.batch_linger_ms)
                .map(Duration::from_millis)
                .unwrap_or(d.batch_linger),
            max_message_bytes: self
                .max_message_kb
                .or(cfg.max_message_kb)
                .map(|k| k << 10)
                .unwrap_or(d.max_message_bytes)
                .max(1),
            dead_letter_topic: self
                .dead_letter_topic
                .clone()
                .or_else(|| cfg.dead_letter_topic.clone()),
            stats_interval: self
                .stats_interval_secs
                .or(cfg.stats_interval_secs)
                .map(|s| Duration::from_secs(s.max(1)))
                .unwrap_or(d.stats_interval),
            compact_interval: compact,
            parse_threads: self
                .parse_threads
                .or(cfg.parse_threads)
                .unwrap_or(d.parse_threads)
                .max(1),
        })
    }
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    flags: ConsumeFlags,
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
    format: Format,
}

#[derive(Args)]
pub struct PublishArgs {
    /// Files, directories (walked for *.json, *.jsonl, *.ndjson, *.csv, *.gz) or `-` for stdin.
    #[arg(required = true)]
    paths: Vec<String>,
    #[command(flatten)]
    client: KafkaClientArgs,
    /// Topic to publish to.
    #[arg(long, env = "KVWATCH_PUBLISH_TOPIC")]
    topic: Option<String>,
    /// Envelope message size limit in KiB (Event Hubs accepts up to 1024) [default: 512].
    #[arg(long, env = "KVWATCH_PUBLISH_MESSAGE_KB")]
    message_kb: Option<usize>,
    /// Send each input line verbatim as one message instead of regrouping records.
    #[arg(long, env = "KVWATCH_PUBLISH_RAW")]
    raw: bool,
    #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
    format: Format,
}

pub async fn cmd_consume(data: &DataDir, cfg: &Config, a: ConsumeArgs) -> Result<ExitCode> {
    let opts = a.flags.options(&cfg.kafka)?;
    let shutdown = crate::shutdown_on_signal()?;
    let metrics = Arc::new(Metrics::default());
    let every = opts.stats_interval.as_secs_f64();
    let writer = data
        .writer(a.store.options(cfg))
        .with_context(|| format!("opening the event store {}", data.root().display()))?;
    // People watching see progress whatever the log level.
    let mut last = 0u64;
    let progress = move |m: &Metrics| {
        let records = m.records.load(Ordering::Relaxed);
        let lag: i64 = m.lag().values().filter(|l| **l > 0).sum();
        eprintln!(
            "consume: {} records stored ({}/s), {} quarantined, lag {} messages",
            thousands(records),
            thousands((records.saturating_sub(last) as f64 / every) as u64),
            thousands(m.quarantined.load(Ordering::Relaxed)),
            thousands(lag as u64)
        );
        last = records;
    };
    let handle = kafka::spawn(writer, opts, metrics, shutdown, progress)
        .context("starting the consumer thread")?;
    let report = tokio::task::spawn_blocking(move || handle.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    print_consume_report(&report, a.format)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_consume_report(r: &ConsumeReport, format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(r)?)?;
        return Ok(());
    }
    let positions = r
        .positions
        .iter()
        .map(|(k, v)| format!("{k}@{v}"))
        .collect::<Vec<_>>()
        .join(" ");
    writeln!(out, "kvwatch consume")?;
    kv_table(
        &mut out,
        &[
            ("messages", thousands(r.messages)),
            ("records", thousands(r.records)),
            ("events stored", thousands(r.events)),
            ("activity stored", thousands(r.activity)),
            ("quarantined", thousands(r.quarantined)),
            ("duplicates skipped", thousands(r.duplicates)),
            ("redelivered, skipped", thousands(r.replayed_skipped)),
            ("dead-lettered", thousands(r.dead_lettered)),
            ("batches", thousands(r.batches)),
            ("elapsed", format!("{:.1} s", r.elapsed_secs)),
            ("records/s", thousands(r.records_per_sec as u64)),
            ("positions", positions),
        ],
    )?;
    Ok(())
}

pub async fn cmd_publish(cfg: &Config, a: PublishArgs) -> Result<ExitCode> {
    let (inputs, skipped) = expand(&a.paths)?;
    for s in &skipped {
        eprintln!("publish: skipping {} (not a log file name)", s.display());
    }
    let d = PublishOptions::default();
    let opts = PublishOptions {
        client: a.client.options(&cfg.kafka)?,
        topic: a
            .topic
            .clone()
            .or_else(|| cfg.kafka.publish_topic.clone())
            .or_else(|| cfg.kafka.topics.first().cloned())
            .context("no topic: pass --topic, set KVWATCH_PUBLISH_TOPIC or [kafka] topics")?,
        message_bytes: a
            .message_kb
            .or(cfg.kafka.message_kb)
            .map(|k| k << 10)
            .unwrap_or(d.message_bytes),
        raw: a.raw,
    };
    let report = tokio::task::spawn_blocking(move || {
        kafka::publish(inputs, &opts, |p| {
            eprintln!(
                "publish: {} records in {} messages",
                thousands(p.records),
                thousands(p.messages)
            )
        })
    })
    .await??;
    let mut out = std::io::stdout().lock();
    if a.format == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(out, "kvwatch publish")?;
        kv_table(
            &mut out,
            &[
                ("inputs", thousands(report.files)),
                ("records", thousands(report.records)),
                ("messages", thousands(report.messages)),
                (
                    "sent verbatim (not records)",
                    thousands(report.unsplittable),
                ),
                (
                    "bytes",
                    format!("{:.1} MiB", report.bytes as f64 / 1048576.0),
                ),
                ("elapsed", format!("{:.1} s", report.elapsed_secs)),
                ("records/s", thousands(report.records_per_sec as u64)),
            ],
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
