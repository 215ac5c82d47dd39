//! `kvwatch serve` as one thing: the HTTP API, the Kafka source, continuous detection, the
//! SIEM forwarders, scheduled reports and the disk prober, assembled from one options struct
//! and stopped by one cancellation token.
//!
//! [`Service::start`] binds the listener and opens the stores, so that a bad address or an
//! unreadable store fails before anything runs; [`Service::run`] runs until the token is
//! cancelled (or a component the service cannot do without stops), then stops everything in
//! order: analyst queries are killed, HTTP connections drain, the forwarders and the scheduler
//! stop after their current step, and the consumer stores its open batch and commits.

use crate::forward::{self, SinkConfig, SinkStatus};
use crate::leader::Leadership;
use crate::listen::{self, ConnLimits};
use crate::report::ReportOptions;
use crate::report::schedule::{Schedule, Scheduler};
use crate::sql::{PoolOptions, SqlLimits};
use crate::state::ApiState;
use kvwatch_detect::follow::{FollowOptions, PassListener, PassOutcome, follow};
use kvwatch_detect::rule::Rule;
use kvwatch_detect::run::PassMetrics;
use kvwatch_ingest::kafka::{self, ConsumeOptions, ConsumeReport, KafkaError, Metrics};
use kvwatch_ingest::{DataDir, WriteOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Everything `serve` runs, as configured.
pub struct ServiceOptions {
    pub data: DataDir,
    /// Address of the HTTP API.
    pub listen: String,
    pub conn: ConnLimits,
    pub sql_limits: SqlLimits,
    pub pool: PoolOptions,
    /// Free disk space below which the service reports not ready.
    pub min_free: u64,
    /// A console session unused this long ends.
    pub session_idle: std::time::Duration,
    /// A console session ends this long after sign-in.
    pub session_max: std::time::Duration,
    /// The Kafka / Event Hubs source, when one is configured.
    pub kafka: Option<(ConsumeOptions, WriteOptions)>,
    /// The rule pack, loaded and checked.
    pub rules: Vec<Rule>,
    pub follow: FollowOptions,
    pub sinks: Vec<SinkConfig>,
    pub schedules: Vec<Schedule>,
    /// Report thresholds for the schedules.
    pub report_tuning: ReportOptions,
    /// Hears of every detection pass that did something, and of failures (the binary prints
    /// them); passes are logged either way.
    pub on_pass: Option<PassListener>,
    /// This node's name in the leadership lease (nodes sharing a PostgreSQL alert store).
    pub node: String,
    /// How long a leadership lease lasts unrenewed.
    pub lease_ttl: Duration,
}

/// Why the service could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("opening the alert store: {0}")]
    Alerts(#[from] kvwatch_detect::AlertStoreError),
    #[error("opening the key store: {0}")]
    Keys(#[from] crate::auth::AuthError),
    #[error("opening the event store: {0}")]
    Store(#[from] kvwatch_ingest::StoreError),
    #[error("the Kafka source: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the HTTP API: {0}")]
    Http(std::io::Error),
    #[error("{0}")]
    Task(String),
}

/// What the service did, reported when it stops.
#[derive(Debug, Default)]
pub struct ServiceReport {
    /// The Kafka source's totals, when there was one.
    pub consume: Option<ConsumeReport>,
    /// Forwarders that stopped on an error, with the error.
    pub sink_errors: Vec<String>,
}

/// A started service.
pub struct Service {
    addr: SocketAddr,
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    opts: ServiceOptions,
    detect: Arc<PassMetrics>,
    kafka: Option<Arc<Metrics>>,
    notices: Vec<String>,
    shutdown: CancellationToken,
    leadership: Option<Leadership>,
}

impl Service {
    /// Binds the listener, opens (and migrates) the alert store and the keys, and prepares
    /// the shared state. Nothing runs until [`Service::run`].
    pub async fn start(
        opts: ServiceOptions,
        shutdown: CancellationToken,
    ) -> Result<Service, ServiceError> {
        let listener = tokio::net::TcpListener::bind(&opts.listen)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: opts.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(ServiceError::Http)?;
        // Migrates an older alert store before readers and forwarders use it. On a disk that
        // refuses writes the store is still readable, and the service starts degraded.
        let mut notices = Vec::new();
        if let Err(e) = kvwatch_detect::AlertStore::open(&opts.data) {
            match &e {
                kvwatch_detect::AlertStoreError::Sql(db) if crate::error::is_disk_refusal(db) => {
                    notices.push(format!(
                        "the alert store cannot be written ({e}); serving reads"
                    ));
                }
                _ => return Err(e.into()),
            }
        }
        let keys = crate::KeyStore::open(&opts.data)?;
        if keys.list()?.iter().all(|k| k.revoked_at.is_some()) {
            notices.push("no active API keys; every API call will be refused until you run `kvwatch apikey create --role reader --name NAME`".into());
        }
        let kafka = opts.kafka.as_ref().map(|_| Arc::new(Metrics::default()));
        let mut state = ApiState::new(
            opts.data.clone(),
            keys,
            kafka.clone(),
            opts.pool.clone(),
            opts.min_free,
        );
        state.rules = opts.rules.iter().map(|r| r.detail()).collect();
        state.sessions = match opts.data.alerts_url() {
            Some(url) => crate::session::Sessions::shared(
                kvwatch_detect::store::pg::open(url)?,
                opts.session_idle,
                opts.session_max,
            ),
            None => crate::session::Sessions::new(opts.session_idle, opts.session_max),
        };
        state.sql_limits = opts.sql_limits;
        for sink in &opts.sinks {
            let status = Arc::new(SinkStatus::new(sink));
            notices.push(format!(
                "forwarding alerts to {} ({} {})",
                sink.name, status.kind, status.target
            ));
            state.sinks.push(status);
        }
        if !opts.schedules.is_empty() {
            notices.push(format!("{} scheduled reports", opts.schedules.len()));
        }
        if opts.kafka.is_none() {
            notices
                .push("no Kafka source configured; running detection over the store only".into());
        }
        let detect = Arc::new(PassMetrics::default());
        state.detect = Some(detect.clone());
        let leadership = match opts.data.alerts_url() {
            Some(url) => {
                let l = Leadership::new(url, &opts.node, opts.lease_ttl).await?;
                notices.push(format!(
                    "alert store shared in {} as node {}: detection, reports and forwarding run on one node at a time (lease {} s)",
                    kvwatch_ingest::secret::redact_url(url),
                    opts.node,
                    opts.lease_ttl.as_secs_f64()
                ));
                state.leader = Some(l.status.clone());
                Some(l)
            }
            None => None,
        };
        Ok(Service {
            leadership,
            addr,
            listener,
            state: Arc::new(state),
            opts,
            detect,
            kafka,
            notices,
            shutdown,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What an operator should know at start (sinks, schedules, missing keys…).
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// Runs every component until the shutdown token is cancelled, then stops them in order.
    pub async fn run(self) -> Result<ServiceReport, ServiceError> {
        let Service {
            listener,
            state,
            opts,
            detect,
            kafka,
            shutdown,
            leadership,
            ..
        } = self;
        state.disk.probe();
        let prober = {
            let (state, stop) = (state.clone(), shutdown.clone());
            tokio::spawn(async move {
                state
                    .disk
                    .run(Duration::from_secs(5), stop.cancelled_owned())
                    .await
            })
        };
        let pool = state.sql.clone();
        let http_stop = CancellationToken::new();
        let http = tokio::spawn(listen::serve(
            listener,
            state.clone(),
            http_stop.clone().cancelled_owned(),
            opts.conn,
        ));
        let consumer = match (opts.kafka, &kafka) {
            (Some((consume, store)), Some(metrics)) => {
                let writer = opts.data.writer(store)?;
                let handle =
                    kafka::spawn(writer, consume, metrics.clone(), shutdown.clone(), |_| {})
                        .map_err(|e| ServiceError::Task(format!("starting the consumer: {e}")))?;
                Some(handle)
            }
            _ => None,
        };
        // A consumer that stops by itself (bad credentials at start, a store error it cannot
        // retry) stops the service: running without its source would look healthy and be blind.
        let consumer = consumer.map(|handle| {
            let stop = shutdown.clone();
            tokio::task::spawn_blocking(move || {
                let r = handle.join();
                if !stop.is_cancelled() {
                    tracing::error!("kafka.consumer_stopped; stopping the service");
                    stop.cancel();
                }
                r
            })
        });
        let mut work = LeaderWork {
            sinks: opts.sinks,
            schedules: opts.schedules,
            report_tuning: opts.report_tuning,
            rules: opts.rules,
            follow: opts.follow,
            on_pass: opts.on_pass,
        };
        let sink_errors = match leadership {
            None => work.run(&opts.data, &state, &detect, &shutdown).await,
            Some(l) => {
                work.run_when_leading(&l, &opts.data, &state, &detect, &shutdown)
                    .await
            }
        };

        // Stop: queries first (they would hold the drain for their timeout), then HTTP.
        pool.close();
        http_stop.cancel();
        let mut report = ServiceReport {
            sink_errors,
            ..Default::default()
        };
        let http = http.await.map_err(|e| ServiceError::Task(e.to_string()))?;
        let _ = prober.await;
        if let Some(c) = consumer {
            let joined = c.await.map_err(|e| ServiceError::Task(e.to_string()))?;
            let r =
                joined.map_err(|_| ServiceError::Task("the consumer thread panicked".into()))?;
            report.consume = Some(r?);
        }
        http.map_err(ServiceError::Http)?;
        Ok(report)
    }
}

/// The work one node runs for all: detection (rules and models), scheduled reports, and
/// forwarding to the sinks.
struct LeaderWork {
    sinks: Vec<SinkConfig>,
    schedules: Vec<Schedule>,
    report_tuning: ReportOptions,
    rules: Vec<Rule>,
    follow: FollowOptions,
    on_pass: Option<PassListener>,
}

impl LeaderWork {
    /// Runs until `stop`; the errors of forwarders that stopped on one.
    async fn run(
        &mut self,
        data: &DataDir,
        state: &Arc<ApiState>,
        detect: &PassMetrics,
        stop: &CancellationToken,
    ) -> Vec<String> {
        let mut forwarders: Vec<(String, JoinHandle<Result<(), forward::ForwardError>>)> =
            Vec::new();
        for (sink, status) in self.sinks.iter().zip(state.sinks.iter()) {
            let handle = forward::spawn(data, sink.clone(), status.clone(), stop.clone());
            forwarders.push((sink.name.clone(), handle));
        }
        let scheduler = (!self.schedules.is_empty()).then(|| {
            let sch = Scheduler::new(data, self.schedules.clone(), self.report_tuning.clone());
            tokio::spawn(sch.run(Duration::from_secs(10), stop.clone()))
        });
        let on_pass = &mut self.on_pass;
        follow(
            data,
            &self.rules,
            &self.follow,
            detect,
            stop,
            |outcome| match on_pass.as_mut() {
                Some(f) => f(outcome),
                None => {
                    if let PassOutcome::Failed(e) = outcome {
                        tracing::warn!(error = %e, "detect.retrying_next_interval");
                    }
                }
            },
        )
        .await;
        if let Some(t) = scheduler {
            let _ = t.await;
        }
        let mut errors = Vec::new();
        for (name, f) in forwarders {
            match tokio::task::spawn_blocking(move || f.join()).await {
                Ok(Ok(Ok(()))) => {}
                // A term that ended: the next leader carries on from the cursor.
                Ok(Ok(Err(forward::ForwardError::Store(
                    kvwatch_detect::AlertStoreError::Fenced { .. },
                )))) => {}
                Ok(Ok(Err(e))) => errors.push(format!("{name}: {e}")),
                _ => errors.push(format!("{name}: the forwarder thread panicked")),
            }
        }
        errors
    }

    /// Waits for the leadership, runs the work for as long as this node holds it, and waits
    /// again when it is lost, until `shutdown` (when the lease is given up at once).
    async fn run_when_leading(
        mut self,
        leadership: &Leadership,
        data: &DataDir,
        state: &Arc<ApiState>,
        detect: &PassMetrics,
        shutdown: &CancellationToken,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(claim) = leadership.acquire(shutdown).await {
            let term = shutdown.child_token();
            let data = data.clone().with_lease(&claim.holder, claim.epoch);
            let (work, keep) = tokio::join!(
                async {
                    let e = self.run(&data, state, detect, &term).await;
                    term.cancel();
                    e
                },
                leadership.keep(claim.clone(), term.clone())
            );
            let () = keep;
            errors.extend(work);
            let stopping = shutdown.is_cancelled();
            leadership.end_term(claim, stopping).await;
            if stopping {
                break;
            }
        }
        errors
    }
}
