//! The optional config file (TOML). Precedence for every tunable: command-line flag, then
//! `KVWATCH_…` environment variable (both handled by clap), then this file, then the default.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The event store: a directory or an object-store URL.
    pub data: Option<String>,
    /// This node's local state directory (required when `data` is a URL).
    pub state: Option<PathBuf>,
    /// MiB of this node's cache of an object store's Parquet files.
    pub cache_mb: Option<u64>,
    /// The alert store's database shared by several nodes (`postgres://…`; the password may
    /// be `${env:…}`/`${file:…}`); unset: SQLite in the state directory.
    pub alerts: Option<String>,
    /// Object-store settings: `[storage]` with `account_name`, `access_key`, `sas_token`,
    /// `client_id`, … (values may be `${env:…}`/`${file:…}`).
    #[serde(default)]
    pub storage: BTreeMap<String, String>,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log: Option<String>,
    /// Log line format: `text` or `json`.
    pub log_format: Option<String>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub detect: DetectConfig,
    /// Kafka / Event Hubs source and publisher: `[kafka]` and `[kafka.properties]`.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// The HTTP API of `kvwatch serve`.
    #[serde(default)]
    pub api: ApiConfig,
    /// Report thresholds: `[report]`.
    #[serde(default)]
    pub report: ReportConfig,
    /// Behavioural models: `[models]` and `[models.weights]`.
    #[serde(default)]
    pub models: kvwatch_detect::anomaly::ModelConfig,
    /// Sigma field mapping overrides: `[sigma.keyvault]` and `[sigma.activitylogs]`, each
    /// `"sigma.field" = "column"`.
    #[serde(default)]
    pub sigma: kvwatch_detect::sigma::SigmaMap,
    /// Per-rule settings: `[rules.<rule-id>]` with `enabled` and a `params` table.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleConfig>,
    /// SIEM forwarders of `kvwatch serve`: `[[sinks]]` tables, each tagged by its `type`.
    #[serde(default)]
    pub sinks: Vec<kvwatch_api::forward::SinkSpec>,
    /// Scheduled reports of `kvwatch serve`: `[[reports]]` tables.
    #[serde(default)]
    pub reports: Vec<kvwatch_api::report::schedule::ScheduleSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Directory of rule files to use instead of the built-in pack.
    pub rules: Option<PathBuf>,
    /// Directory of Sigma rules loaded in addition to the pack.
    pub sigma: Option<PathBuf>,
    /// Longest wait between passes of continuous detection.
    pub interval_secs: Option<u64>,
    /// Milliseconds between checks of the store for a new commit.
    pub commit_poll_ms: Option<u64>,
    /// Seconds a record may arrive behind the newest of its Kafka partition.
    pub allowed_lateness_secs: Option<u64>,
    /// Seconds without records after which a partition is idle.
    pub idle_source_secs: Option<u64>,
    /// Memory the detection rules share, in MiB.
    pub memory_mb: Option<usize>,
    /// Seconds one rule may run in one pass.
    pub rule_timeout_secs: Option<u64>,
    /// Event IDs kept as evidence per alert.
    pub max_evidence: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    pub prod_pattern: Option<String>,
    pub nonprod_pattern: Option<String>,
    pub stale_days: Option<u32>,
    pub top_n: Option<usize>,
    pub cache_threshold: Option<u32>,
    pub gap_hours: Option<u32>,
    pub max_rows: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the API listens on.
    pub listen: Option<String>,
    /// Rows an analyst query returns at most.
    pub sql_max_rows: Option<usize>,
    /// Seconds an analyst query may run.
    pub sql_timeout_secs: Option<u64>,
    /// Memory an analyst query may hold, in MiB.
    pub sql_memory_mb: Option<usize>,
    /// Result bytes an analyst query returns at most, in MiB.
    pub sql_max_result_mb: Option<usize>,
    /// Deepest expression nesting (and most UNION terms) of an analyst query.
    pub sql_max_depth: Option<usize>,
    /// Analyst queries that run at once, each in its own worker process.
    pub sql_workers: Option<usize>,
    /// Open connections at most; more are answered 503.
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's header (also the keep-alive idle limit).
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a connection may stay silent while no request is being handled.
    pub idle_timeout_secs: Option<u64>,
    /// Free disk space, in MiB, below which the service reports not ready.
    pub min_free_mb: Option<u64>,
    /// Minutes a console session may stay unused.
    pub session_idle_mins: Option<u64>,
    /// Hours after sign-in a console session ends.
    pub session_max_hours: Option<u64>,
    /// This node's name in the leadership lease (nodes sharing a PostgreSQL alert store).
    pub node_name: Option<String>,
    /// Seconds a leadership lease lasts unrenewed.
    pub leader_lease_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
    pub group: Option<String>,
    pub batch_rows: Option<usize>,
    pub batch_mb: Option<usize>,
    pub batch_linger_ms: Option<u64>,
    pub max_message_kb: Option<usize>,
    pub dead_letter_topic: Option<String>,
    pub stats_interval_secs: Option<u64>,
    pub compact_interval_secs: Option<u64>,
    pub parse_threads: Option<usize>,
    /// `kvwatch publish`: target topic [default: the first of `topics`].
    pub publish_topic: Option<String>,
    /// `kvwatch publish`: envelope size limit in KiB.
    pub message_kb: Option<usize>,
    /// librdkafka properties; values may be `${env:NAME}` or `${file:PATH}`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub enabled: Option<bool>,
    /// How often continuous detection evaluates the rule (`30s`, `5m`, ...).
    pub interval: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub file_rows: Option<usize>,
    pub buffer_mb: Option<usize>,
    pub row_group_rows: Option<usize>,
    pub zstd_level: Option<i32>,
    pub compact_min_files: Option<usize>,
    pub retire_grace_secs: Option<u64>,
    pub retain_days: Option<u32>,
    pub orphan_grace_secs: Option<u64>,
    pub lease_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub batch_rows: Option<usize>,
    pub max_frame_mb: Option<usize>,
    pub compact: Option<bool>,
    pub mmap: Option<bool>,
    pub parse_threads: Option<usize>,
    pub split_mb: Option<usize>,
    /// `auto`, `resource-log`, `azure-diagnostics`, `azkv-audit-logs` or `azure-activity`.
    pub shape: Option<String>,
}

/// Loads the config file named by `--config`/`KVWATCH_CONFIG`, else `./kvwatch.toml` if present.
pub fn load(path: Option<&Path>) -> Result<Config> {
    let (path, required) = match path {
        Some(p) => (p.to_owned(), true),
        None => (PathBuf::from("kvwatch.toml"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
        }
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(e).with_context(|| format!("config file {}", path.display())),
    }
}
