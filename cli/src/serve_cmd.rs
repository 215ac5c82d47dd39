//! `kvwatch serve` (the long-running service: HTTP API, Kafka source, continuous detection,
//! SIEM forwarders), `kvwatch apikey` and `kvwatch sinks`.

use crate::StoreArgs;
use crate::config::Config;
use crate::detect_cmd::{self, Shutdown};
use crate::kafka_cmd::{ConsumeFlags, print_consume_report, spawn_consumer};
use crate::output::Format;
use anyhow::{Context, Result, bail};
use clap::Args;
use kvwatch_api::forward;
use kvwatch_ingest::kafka::Metrics;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The all-in-one service: the Kafka source (when configured) and continuous detection in one
/// process, stopped gracefully by SIGINT/SIGTERM.
pub async fn cmd_serve(data: &Path, cfg: &Config, a: ServeArgs) -> Result<ExitCode> {
    // Before anything slow: a SIGTERM during start-up still stops the service gracefully.
    let mut shutdown = Shutdown::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::default());
    let listen = a
        .listen
        .clone()
        .or_else(|| cfg.api.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    // Migrates an older alert store before readers and forwarders use it.
    kvwatch_detect::AlertStore::open(data)
        .with_context(|| format!("opening the alert store in {}", data.display()))?;
    let sinks = if a.no_forward {
        Vec::new()
    } else {
        forward::parse_sinks(&cfg.sinks_json()?)?
    };
    let schedules = cfg
        .reports_json()?
        .iter()
        .map(kvwatch_api::report::schedule::parse_schedule)
        .collect::<Result<Vec<_>, _>>()?;
    let keys = kvwatch_api::KeyStore::open(data)?;
    if keys.list()?.iter().all(|k| k.revoked_at.is_some()) {
        eprintln!(
            "serve: no active API keys; every API call will be refused until you run `kvwatch apikey create --role reader --name NAME`"
        );
    }
    eprintln!("serve: API on http://{}", listener.local_addr()?);
    let min_free = a.min_free_mb.or(cfg.api.min_free_mb).unwrap_or(64) << 20;
    let mut state = kvwatch_api::ApiState::new(
        data.to_owned(),
        keys,
        a.consume.configured(&cfg.kafka).then(|| metrics.clone()),
        a.sql.pool(cfg, data)?,
        min_free,
    );
    let d = kvwatch_api::ConnLimits::default();
    let conn_limits = kvwatch_api::ConnLimits {
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
    };
    state.rules = detect_cmd::load_rules(cfg, &a.detect.source, true)
        .await?
        .iter()
        .map(|r| r.detail())
        .collect();
    state.sql_limits = a.sql.limits(cfg);
    let mut forwarders = Vec::new();
    for sink in sinks {
        let status = Arc::new(forward::SinkStatus::new(&sink));
        eprintln!(
            "serve: forwarding alerts to {} ({} {})",
            sink.name, status.kind, status.target
        );
        state.sinks.push(status.clone());
        forwarders.push(forward::spawn(data, sink, status, stop.clone()));
    }
    let scheduler = (!schedules.is_empty()).then(|| {
        let mut tuning =
            kvwatch_api::report::ReportOptions::new(kvwatch_api::report::Kind::Compliance, 0, 1);
        a.report.apply(cfg, &mut tuning);
        eprintln!("serve: {} scheduled reports", schedules.len());
        let sch = kvwatch_api::report::schedule::Scheduler::new(data, schedules, tuning);
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = sch.tick(chrono::Utc::now()).await {
                    tracing::error!(error = %e, "report.schedule_failed");
                }
                for _ in 0..20 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        })
    });
    let pass_metrics = Arc::new(kvwatch_detect::run::PassMetrics::default());
    state.detect = Some(pass_metrics.clone());
    let state = Arc::new(state);
    state.disk.probe();
    let prober = {
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let stopped = async {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            };
            state.disk.run(Duration::from_secs(5), stopped).await;
        })
    };
    let pool = state.sql.clone();
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(kvwatch_api::serve(
        listener,
        state,
        async move {
            let _ = api_stopped.await;
        },
        conn_limits,
    ));
    let consumer = if a.consume.configured(&cfg.kafka) {
        let opts = a.consume.options(&cfg.kafka)?;
        Some(spawn_consumer(
            data,
            cfg,
            &a.store,
            opts,
            metrics.clone(),
            stop.clone(),
        )?)
    } else {
        eprintln!("serve: no Kafka source configured; running detection over the store only");
        None
    };
    let detect = detect_cmd::follow(data, cfg, &a.detect, &mut shutdown, &pass_metrics, || {
        // A consumer that died (store full, bad credentials at start) stops the service.
        consumer.as_ref().is_some_and(|c| c.is_finished())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    // Running analyst queries end now rather than hold the shutdown for their timeout.
    pool.close();
    let _ = api_stop.send(());
    api.await?.context("HTTP API")?;
    let _ = prober.await;
    if let Some(t) = scheduler {
        let _ = t.await;
    }
    for f in forwarders {
        match tokio::task::spawn_blocking(move || f.join()).await? {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("serve: {e}"),
            Err(_) => eprintln!("serve: a forwarder thread panicked"),
        }
    }
    if let Some(c) = consumer {
        let report = tokio::task::spawn_blocking(move || c.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
        print_consume_report(&report, Format::Table)?;
    }
    detect?;
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

pub fn cmd_apikey(data: &Path, c: ApikeyCmd) -> Result<ExitCode> {
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

pub fn cmd_sinks(data: &Path, cfg: &Config, c: SinksCmd) -> Result<ExitCode> {
    let sinks = forward::parse_sinks(&cfg.sinks_json()?)?;
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
