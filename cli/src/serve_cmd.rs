//! `kvwatch serve` (the long-running service: HTTP API, Kafka source, continuous detection,
//! SIEM forwarders), `kvwatch apikey` and `kvwatch sinks`.

use crate::StoreArgs;
use crate::config::Config;
use crate::detect_cmd;
use crate::kafka_cmd::{ConsumeFlags, print_consume_report};
use crate::output::Format;
use anyhow::{Context, Result, bail};
use clap::Args;
use kvwatch_api::forward;
use kvwatch_api::service::{Service, ServiceOptions};
use kvwatch_ingest::DataDir;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the HTTP API [default: 127.0.0.1:8080].
    #[arg(long, env = "KVWATCH_LISTEN")]
    listen: Option<String>,
    #[command(flatten)]
    sql: crate::sql_cmd::SqlArgs,
    /// Open connections at most; more are answered 503 at once [default: 512].
    #[arg(long, env = "KVWATCH_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a client has to send a request's header; also how long a keep-alive
    /// connection may wait for its next request [default: 10].
    #[arg(long, env = "KVWATCH_HEADER_READ_TIMEOUT_SECS")]
    header_read_timeout_secs: Option<u64>,
    /// Seconds a connection may stay silent while none of its requests is being handled
    /// (e.g. a client that stopped reading its answer) [default: 60].
    #[arg(long, env = "KVWATCH_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Free disk space, in MiB, below which the service reports not ready [default: 64].
    #[arg(long, env = "KVWATCH_MIN_FREE_MB")]
    min_free_mb: Option<u64>,
    /// This node's name in the leadership lease, when nodes share a PostgreSQL alert store
    /// (--alerts) [default: host name and process ID].
    #[arg(long, env = "KVWATCH_NODE_NAME")]
    node_name: Option<String>,
    /// Seconds a leadership lease lasts unrenewed: the longest a dead leader's work waits for
    /// a standby (which also takes up to a fifth of this to notice) [default: 15].
    #[arg(long, env = "KVWATCH_LEADER_LEASE_SECS")]
    leader_lease_secs: Option<u64>,
    /// Minutes a console session may stay unused before it ends [default: 60].
    #[arg(long, env = "KVWATCH_SESSION_IDLE_MINS")]
    session_idle_mins: Option<u64>,
    /// Hours after sign-in a console session ends, used or not [default: 12].
    #[arg(long, env = "KVWATCH_SESSION_MAX_HOURS")]
    session_max_hours: Option<u64>,
    /// Do not run the `[[sinks]]` forwarders of the config file (e.g. on a standby node).
    #[arg(long, env = "KVWATCH_NO_FORWARD")]
    no_forward: bool,
    #[command(flatten)]
    report: crate::report_cmd::ReportTuning,
    #[command(flatten)]
    consume: ConsumeFlags,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    detect: detect_cmd::FollowArgs,
}

/// The all-in-one service (`kvwatch_api::service`): flags, environment and the config file
/// mapped to its options; SIGINT/SIGTERM cancel it.
pub async fn cmd_serve(data: &DataDir, cfg: &Config, a: ServeArgs) -> Result<ExitCode> {
    // Before anything slow: a SIGTERM during start-up still stops the service gracefully.
    let shutdown = crate::shutdown_on_signal()?;
    let listen = a
        .listen
        .clone()
        .or_else(|| cfg.api.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let sinks = if a.no_forward {
        Vec::new()
    } else {
        forward::parse_sinks(&cfg.sinks)?
    };
    let schedules = cfg
        .reports
        .iter()
        .map(kvwatch_api::report::schedule::Schedule::from_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let mut report_tuning =
        kvwatch_api::report::ReportOptions::new(kvwatch_api::report::Kind::Compliance, 0, 1);
    a.report.apply(cfg, &mut report_tuning);
    let kafka = if a.consume.configured(&cfg.kafka) {
        Some((a.consume.options(&cfg.kafka)?, a.store.options(cfg)))
    } else {
        None
    };
    let d = kvwatch_api::ConnLimits::default();
    let opts = ServiceOptions {
        data: data.clone(),
        listen,
        conn: kvwatch_api::ConnLimits {
            max_connections: a
                .max_connections
                .or(cfg.api.max_connections)
                .unwrap_or(d.max_connections)
                .max(1),
            header_read_timeout: a
                .header_read_timeout_secs
                .or(cfg.api.header_read_timeout_secs)
                .map(|s| Duration::from_secs(s.max(1)))
                .unwrap_or(d.header_read_timeout),
            idle_timeout: a
                .idle_timeout_secs
                .or(cfg.api.idle_timeout_secs)
                .map(|s| Duration::from_secs(s.max(1)))
                .unwrap_or(d.idle_timeout),
        },
        sql_limits: a.sql.limits(cfg),
        pool: a.sql.pool(cfg, data)?,
        min_free: a.min_free_mb.or(cfg.api.min_free_mb).unwrap_or(64) << 20,
        session_idle: Duration::from_secs(
            60 * a
                .session_idle_mins
                .or(cfg.api.session_idle_mins)
                .unwrap_or(60)
                .max(1),
        ),
        session_max: Duration::from_secs(
            3600 * a
                .session_max_hours
                .or(cfg.api.session_max_hours)
                .unwrap_or(12)
                .max(1),
        ),
        kafka,
        rules: detect_cmd::load_rules(cfg, &a.detect.source, true).await?,
        follow: a.detect.follow_options(cfg),
        sinks,
        schedules,
        report_tuning,
        on_pass: Some(a.detect.pass_printer(cfg)),
        node: a
            .node_name
            .clone()
            .or_else(|| cfg.api.node_name.clone())
            .unwrap_or_else(kvwatch_api::leader::default_node_name),
        lease_ttl: Duration::from_secs(
            a.leader_lease_secs
                .or(cfg.api.leader_lease_secs)
                .unwrap_or(15)
                .max(2),
        ),
    };
    let service = Service::start(opts, shutdown)
        .await
        .with_context(|| format!("starting the service on {}", data.root().display()))?;
    for n in service.notices() {
        eprintln!("serve: {n}");
    }
    eprintln!("serve: API on http://{}", service.local_addr());
    let report = service.run().await?;
    for e in &report.sink_errors {
        eprintln!("serve: sink {e}");
    }
    if let Some(c) = &report.consume {
        print_consume_report(c, Format::Table)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum ApikeyCmd {
    /// Create a key; its secret is printed once and stored only as a hash.
    Create {
        /// reader (alerts, reports, metrics), analyst (+ alert updates, SQL), admin (+ keys, rules).
        #[arg(long)]
        role: String,
        /// A name for the key, shown in the API's logs (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
        format: Format,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
        format: Format,
    },
    /// Revoke a key by name; it stops working at once.
    Revoke { name: String },
}

pub fn cmd_apikey(data: &DataDir, c: ApikeyCmd) -> Result<ExitCode> {
    let keys = kvwatch_api::KeyStore::open(data)?;
    let mut out = std::io::stdout().lock();
    match c {
        ApikeyCmd::Create { role, name, format } => {
            let role = kvwatch_api::Role::parse(&role)?;
            let secret = keys.create(&name, role)?;
            if format == Format::Json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"name": name, "role": role, "key": secret})
                )?;
            } else {
                writeln!(out, "{secret}")?;
                eprintln!(
                    "apikey: created {name} ({}); the key above is shown only now",
                    role.as_str()
                );
            }
        }
        ApikeyCmd::List { format } => {
            let list = keys.list()?;
            if format == Format::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                for k in list {
                    writeln!(
                        out,
                        "{:<24} {:<8} {}",
                        k.name,
                        k.role.as_str(),
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    )?;
                }
            }
        }
        ApikeyCmd::Revoke { name } => {
            keys.revoke(&name)?;
            eprintln!("apikey: revoked {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum SinksCmd {
    /// The configured sinks with their cursors, lag and dead letters.
    List {
        #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
        format: Format,
    },
    /// Alerts a sink refused for good.
    DeadLetters {
        name: String,
        #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
        format: Format,
    },
    /// Queue a sink's dead letters for redelivery (the running service sends them).
    Retry { name: String },
}

pub fn cmd_sinks(data: &DataDir, cfg: &Config, c: SinksCmd) -> Result<ExitCode> {
    let sinks = forward::parse_sinks(&cfg.sinks)?;
    let store = kvwatch_detect::AlertStore::open(data)?;
    let known = |name: &str| -> Result<()> {
        if sinks.iter().any(|s| s.name == name) {
            Ok(())
        } else {
            bail!("no sink named {name:?} in the config file")
        }
    };
    let mut out = std::io::stdout().lock();
    match c {
        SinksCmd::List { format } => {
            let head = store.head_seq()?;
            let dead = store.dead_letter_counts()?;
            let rows: Vec<serde_json::Value> = sinks
                .iter()
                .map(|s| {
                    let cursor = store.sink_cursor(&s.name).unwrap_or(0);
                    serde_json::json!({
                        "name": s.name,
                        "type": s.kind.type_name(),
                        "target": s.kind.target(),
                        "cursor": cursor,
                        "lag": (head - cursor).max(0),
                        "dead_letters": dead.iter().find(|d| d.0 == s.name).map(|d| d.1).unwrap_or(0),
                    })
                })
                .collect();
            if format == Format::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<16} {:<11} {:>8} {:>8} {:>6}  target",
                    "sink", "type", "cursor", "lag", "dead"
                )?;
                for r in rows {
                    writeln!(
                        out,
                        "{:<16} {:<11} {:>8} {:>8} {:>6}  {}",
                        r["name"].as_str().unwrap_or(""),
                        r["type"].as_str().unwrap_or(""),
                        r["cursor"],
                        r["lag"],
                        r["dead_letters"],
                        r["target"].as_str().unwrap_or("")
                    )?;
                }
            }
        }
        SinksCmd::DeadLetters { name, format } => {
            known(&name)?;
            let list = store.dead_letters(Some(&name), 100_000)?;
            if format == Format::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                for d in &list {
                    writeln!(
                        out,
                        "{} {} {} {}{}",
                        kvwatch_ingest::time::format_ns(d.at),
                        d.alert_id,
                        d.http_status.map(|s| s.to_string()).unwrap_or("-".into()),
                        d.error,
                        if d.retry { " (queued for retry)" } else { "" }
                    )?;
                }
                writeln!(out, "{} dead letters", list.len())?;
            }
        }
        SinksCmd::Retry { name } => {
            known(&name)?;
            let n = store.retry_dead_letters(&name)?;
            eprintln!("sinks: {n} dead letters of {name} queued for redelivery");
        }
    }
    Ok(ExitCode::SUCCESS)
}
