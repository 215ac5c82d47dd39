//! Push forwarding of alerts to SIEMs: Microsoft Sentinel (Logs Ingestion API), Splunk HEC,
//! syslog (RFC 5424 with CEF over TCP, TLS or UDP) and signed webhooks.
//!
//! Each sink runs on its own thread and reads the alert store's change feed
//! (`AlertStore::changes`) from its own durable cursor (`sink_cursors`). The cursor moves only
//! after every alert of a batch has been either delivered (a 2xx, an acknowledged HEC event,
//! a written syslog frame) or recorded as a dead letter, so a crash or restart redelivers
//! rather than loses: delivery is at least once. Transient failures (connection errors,
//! timeouts, 408, 429, 5xx) are retried for ever with exponential backoff and jitter, honouring
//! `Retry-After`; permanent refusals (other 4xx) go to `sink_dead_letters`, visible in the API
//! and metrics and never counted as delivered, until an operator asks for a retry.

mod config;
pub mod format;
mod transport;

pub use config::*;

pub use transport::hmac_sha256_hex;

use kvwatch_detect::{Alert, AlertStore, AlertStoreError};
use kvwatch_ingest::DataDir;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("sink {sink}: {msg}")]
    Config { sink: String, msg: String },
    #[error(transparent)]
    Store(#[from] AlertStoreError),
}

pub use kvwatch_ingest::secret::Secret;

/// Live counters of one sink (Vector-style: one struct, read by `/metrics` and `/sinks`).
#[derive(Debug, Default)]
pub struct SinkStatus {
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    /// Alerts delivered (a 2xx, an acknowledged HEC event, a written syslog frame).
    pub delivered: AtomicU64,
    /// Requests or connections that failed and were retried.
    pub retries: AtomicU64,
    /// Alerts refused permanently and put on the dead-letter list.
    pub dead_lettered: AtomicU64,
    /// Alerts below the sink's `min_severity`.
    pub skipped: AtomicU64,
    /// Syslog UDP messages cut to the datagram limit.
    pub truncated: AtomicU64,
    /// Requests sent (successful or not).
    pub requests: AtomicU64,
    /// The durable cursor: every change up to here is delivered or dead-lettered.
    pub cursor: AtomicI64,
    /// Unix seconds of the last delivery.
    pub last_success: AtomicI64,
    pub last_error: Mutex<Option<String>>,
    /// The sink thread has stopped (on shutdown or a fatal store error).
    pub stopped: AtomicBool,
}

impl SinkStatus {
    pub fn new(cfg: &SinkConfig) -> Self {
        Self {
            name: cfg.name.clone(),
            kind: cfg.kind.type_name(),
            target: cfg.kind.target(),
            ..Default::default()
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// How one send failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Worth retrying: connection trouble, timeouts, 408, 429, 5xx.
    Transient {
        status: Option<u16>,
        retry_after: Option<Duration>,
        msg: String,
    },
    /// The receiver refused the content for good (4xx other than 408/429).
    Permanent { status: Option<u16>, msg: String },
    /// 413: smaller batches may pass.
    TooLarge { msg: String },
}

/// A delivery channel: renders one alert as an item and sends a batch of items.
pub(crate) trait Transport: Send {
    fn item(&self, seq: i64, a: &Alert) -> Vec<u8>;
    fn send(&mut self, items: &[Vec<u8>], status: &SinkStatus) -> Result<(), SendError>;
}

/// Starts a sink's thread.
pub fn spawn(
    data: &DataDir,
    cfg: SinkConfig,
    status: Arc<SinkStatus>,
    stop: CancellationToken,
) -> std::thread::JoinHandle<Result<(), ForwardError>> {
    let data = data.to_owned();
    std::thread::Builder::new()
        .name(format!("sink-{}", cfg.name))
        .spawn(move || {
            let r = run(&data, &cfg, &status, &stop);
            if let Err(e) = &r {
                tracing::error!(sink = %cfg.name, error = %e, "sink.stopped_on_error");
                status.set_error(Some(e.to_string()));
            }
            status.stopped.store(true, Ordering::Relaxed);
            r
        })
        .expect("spawning a thread")
}

/// Sleeps up to `d`, waking early when `stop` is cancelled; returns whether it was.
fn nap(d: Duration, stop: &CancellationToken) -> bool {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if stop.is_cancelled() {
            return true;
        }
        std::thread::sleep((end - std::time::Instant::now()).min(Duration::from_millis(50)));
    }
    stop.is_cancelled()
}

fn now_nanos() -> i64 {
    kvwatch_ingest::store::now_nanos()
}

/// The sink loop: dead letters an operator asked to retry first, then the change feed.
fn run(
    data: &DataDir,
    cfg: &SinkConfig,
    status: &SinkStatus,
    stop: &CancellationToken,
) -> Result<(), ForwardError> {
    let store = AlertStore::open(data)?;
    // Under a leadership lease, nothing goes out once the lease has ended.
    let leased = data.lease().is_some();
    let mut transport = transport::build(cfg)?;
    let mut cursor = store.sink_cursor(&cfg.name)?;
    status.cursor.store(cursor, Ordering::Relaxed);
    tracing::info!(sink = %cfg.name, kind = cfg.kind.type_name(), target = %cfg.kind.target(), cursor, "sink.started");
    while !stop.is_cancelled() {
        let retry = store.retry_queue(&cfg.name, cfg.batch_size)?;
        if !retry.is_empty() {
            if leased {
                store.check_lease()?;
            }
            let Some(out) = deliver(cfg, &mut *transport, &store, status, stop, &retry)? else {
                break;
            };
            let ok: Vec<&str> = out.delivered.iter().map(|s| s.as_str()).collect();
            store.remove_dead_letters(&cfg.name, &ok)?;
            tracing::info!(sink = %cfg.name, redelivered = ok.len(), dead = out.dead, "sink.dead_letters_retried");
            continue;
        }
        let rows = store.changes(cursor, cfg.batch_size)?;
        let Some(last) = rows.last().map(|r| r.0) else {
            if nap(cfg.poll_interval, stop) {
                break;
            }
            continue;
        };
        let (send, skip): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(_, a)| cfg.min_severity.is_none_or(|m| a.severity >= m));
        status
            .skipped
            .fetch_add(skip.len() as u64, Ordering::Relaxed);
        if leased && !send.is_empty() {
            store.check_lease()?;
        }
        if !send.is_empty() && deliver(cfg, &mut *transport, &store, status, stop, &send)?.is_none()
        {
            break;
        }
        store.set_sink_cursor(&cfg.name, last, now_nanos())?;
        cursor = last;
        status.cursor.store(cursor, Ordering::Relaxed);
    }
    tracing::info!(sink = %cfg.name, cursor, "sink.stopped");
    Ok(())
}

/// What became of a batch.
struct Delivered {
    /// IDs of alerts delivered.
    delivered: Vec<String>,
    /// Alerts dead-lettered.
    dead: usize,
}

/// Sends `rows` in chunks of at most `max_batch_bytes`, retrying transient failures until
/// they pass or `stop` is set (then `None`: nothing after the last delivered chunk counts).
fn deliver(
    cfg: &SinkConfig,
    t: &mut dyn Transport,
    store: &AlertStore,
    status: &SinkStatus,
    stop: &CancellationToken,
    rows: &[(i64, Alert)],
) -> Result<Option<Delivered>, ForwardError> {
    let items: Vec<Vec<u8>> = rows.iter().map(|(s, a)| t.item(*s, a)).collect();
    // Chunks as index ranges, cut by size; a 413 splits a chunk in two.
    let mut queue: std::collections::VecDeque<std::ops::Range<usize>> = Default::default();
    let mut start = 0;
    let mut size = 0;
    for (i, it) in items.iter().enumerate() {
        if i > start && size + it.len() + 1 > cfg.max_batch_bytes {
            queue.push_back(start..i);
            start = i;
            size = 0;
        }
        size += it.len() + 1;
    }
    queue.push_back(start..items.len());
    let mut out = Delivered {
        delivered: Vec::new(),
        dead: 0,
    };
    while let Some(range) = queue.pop_front() {
        let mut attempt = 0u32;
        loop {
            status.requests.fetch_add(1, Ordering::Relaxed);
            match t.send(&items[range.clone()], status) {
                Ok(()) => {
                    let n = range.len() as u64;
                    status.delivered.fetch_add(n, Ordering::Relaxed);
                    status
                        .last_success
                        .store(now_nanos() / 1_000_000_000, Ordering::Relaxed);
                    status.set_error(None);
                    out.delivered
                        .extend(rows[range.clone()].iter().map(|(_, a)| a.id.clone()));
                    break;
                }
                Err(SendError::TooLarge { msg }) if range.len() > 1 => {
                    let mid = range.start + range.len() / 2;
                    tracing::warn!(sink = %cfg.name, alerts = range.len(), error = %msg, "sink.batch_too_large_splitting");
                    queue.push_front(mid..range.end);
                    queue.push_front(range.start..mid);
                    break;
                }
                Err(SendError::TooLarge { msg }) => {
                    dead_letter(cfg, store, status, &rows[range.clone()], Some(413), &msg)?;
                    out.dead += range.len();
                    break;
                }
                Err(SendError::Permanent { status: code, msg }) => {
                    dead_letter(cfg, store, status, &rows[range.clone()], code, &msg)?;
                    out.dead += range.len();
                    break;
                }
                Err(SendError::Transient {
                    status: code,
                    retry_after,
                    msg,
                }) => {
                    status.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = retry_after
                        .map(|d| d.min(Duration::from_secs(600)))
                        .unwrap_or_else(|| backoff(attempt, cfg.max_backoff));
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(sink = %cfg.name, status = ?code, attempt, wait_ms = wait.as_millis() as u64, error = %msg, "sink.retrying");
                    status.set_error(Some(match code {
                        Some(c) => format!("HTTP {c}: {msg}"),
                        None => msg,
                    }));
                    if nap(wait, stop) {
                        return Ok(None);
                    }
                }
            }
        }
    }
    Ok(Some(out))
}

fn dead_letter(
    cfg: &SinkConfig,
    store: &AlertStore,
    status: &SinkStatus,
    rows: &[(i64, Alert)],
    code: Option<u16>,
    msg: &str,
) -> Result<(), ForwardError> {
    let ids: Vec<(i64, &str)> = rows.iter().map(|(s, a)| (*s, a.id.as_str())).collect();
    store.add_dead_letters(&cfg.name, &ids, code, msg, now_nanos())?;
    status
        .dead_lettered
        .fetch_add(rows.len() as u64, Ordering::Relaxed);
    status.set_error(Some(match code {
        Some(c) => format!("HTTP {c}: {msg}"),
        None => msg.to_owned(),
    }));
    tracing::error!(sink = %cfg.name, status = ?code, alerts = rows.len(), error = %msg, "sink.dead_lettered");
    Ok(())
}

/// Exponential backoff from 250 ms, capped, with "equal jitter" (half fixed, half random) so
/// that many sinks recovering together do not retry in step.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(250)
        .saturating_mul(1u32 << attempt.min(16))
        .min(max);
    let half = base / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(10);
        let first = backoff(0, max);
        assert!(first >= Duration::from_millis(125) && first <= Duration::from_millis(250));
        let late = backoff(30, max);
        assert!(late >= Duration::from_secs(5) && late <= max, "{late:?}");
    }
}
