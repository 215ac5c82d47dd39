//! Continuous detection, for `kvwatch serve` and `kvwatch detect --follow`: a pass whenever
//! the event store commits, and at least every `interval` (for rules held back by their own
//! interval, and for a watermark that moves while nothing arrives).
//!
//! Commits are noticed by polling the manifest's stamp (a `stat`, every `commit_poll`), which
//! also sees a store written by another process (`kvwatch consume` beside `detect --follow`).
//! A pass that fails is counted and retried at the next commit or interval (nothing was marked
//! covered, so the same data is evaluated again); a store that does not exist yet (a fresh
//! consumer has not committed) is waited for; an alert store opened while the disk refused
//! writes is reopened before the next pass, so the loop recovers by itself once the disk does.
//! A pass that panics is a failed pass too: the service keeps consuming, serving and retrying.

use crate::anomaly::ModelConfig;
use crate::engine::EngineOptions;
use crate::rule::Rule;
use crate::run::{DetectReport, PassMetrics, PassOptions, incremental};
use crate::store::AlertStore;
use futures::FutureExt;
use kvwatch_ingest::DataDir;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How continuous detection runs.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// The longest wait between passes when the store commits nothing.
    pub interval: Duration,
    /// How often the store is checked for a new commit.
    pub commit_poll: Duration,
    /// Watermark policy and memory pool of the rule engine.
    pub engine: EngineOptions,
    /// The behavioural models' settings; `None` runs the rules only.
    pub models: Option<ModelConfig>,
    /// Evidence event IDs kept per alert.
    pub max_evidence: usize,
}

/// What one turn of the loop did: a pass's report, or why it failed.
pub enum PassOutcome<'a> {
    Done(&'a DetectReport),
    Failed(&'a str),
}

/// A listener for passes, as a service holds it.
pub type PassListener = Box<dyn FnMut(PassOutcome<'_>) + Send>;

/// Runs passes until `shutdown` is cancelled; `on_pass` hears of each one that did something
/// (and of each failure).
pub async fn follow(
    data: &DataDir,
    rules: &[Rule],
    opts: &FollowOptions,
    metrics: &PassMetrics,
    shutdown: &CancellationToken,
    mut on_pass: impl FnMut(PassOutcome<'_>),
) {
    let mut store: Option<AlertStore> = None;
    let mut seen = None;
    let mut last_pass: Option<Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let stamp = data.commit_stamp();
        let due = stamp.is_some()
            && (stamp != seen || last_pass.is_none_or(|t| t.elapsed() >= opts.interval));
        if due {
            // Taken before the pass: a commit during the pass is seen at the next poll.
            seen = stamp;
            last_pass = Some(Instant::now());
            // A bug in one pass must not end detection for the life of the service: the
            // panic is a failed pass, logged and counted, and the next pass starts afresh.
            let caught = AssertUnwindSafe(pass(data, rules, opts, &mut store))
                .catch_unwind()
                .await;
            let outcome = match caught {
                Ok(r) => r,
                Err(p) => {
                    store = None;
                    Err(format!("detection pass panicked: {}", panic_text(&*p)))
                }
            };
            match outcome {
                Ok(r) => {
                    metrics.passes.fetch_add(1, Relaxed);
                    metrics
                        .rule_failures
                        .fetch_add(r.failed.len() as u64, Relaxed);
                    metrics.created.fetch_add(r.totals.created, Relaxed);
                    metrics.updated.fetch_add(r.totals.updated, Relaxed);
                    metrics.folded.fetch_add(r.totals.folded, Relaxed);
                    metrics.new_files.fetch_add(r.new_files as u64, Relaxed);
                    metrics.last_pass_ms.store(r.elapsed_ms, Relaxed);
                    if let Some(w) = r.watermark_ns {
                        metrics
                            .watermark
                            .store((w.max(0) / 1_000_000_000) as u64, Relaxed);
                    }
                    metrics.last_pass_end.store(
                        (kvwatch_ingest::store::now_nanos() / 1_000_000_000) as u64,
                        Relaxed,
                    );
                    if r.mode != "up-to-date" {
                        tracing::info!(
                            created = r.totals.created,
                            updated = r.totals.updated,
                            folded = r.totals.folded,
                            new_files = r.new_files,
                            deferred = r.deferred.len(),
                            watermark = r.watermark.as_deref().unwrap_or("-"),
                            elapsed_ms = r.elapsed_ms,
                            "detect.pass"
                        );
                        on_pass(PassOutcome::Done(&r));
                    }
                }
                Err(e) => {
                    metrics.failures.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, "detect.pass_failed");
                    on_pass(PassOutcome::Failed(&e));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.commit_poll) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!("detect.stopped");
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// One incremental pass, (re)opening the alert store first when needed.
async fn pass(
    data: &DataDir,
    rules: &[Rule],
    opts: &FollowOptions,
    store: &mut Option<AlertStore>,
) -> Result<DetectReport, String> {
    // A store opened while the disk refused writes is read-only; it is dropped before opening
    // anew (SQLite would otherwise keep the new connection read-only too).
    if store.as_ref().is_none_or(|s| s.is_read_only()) {
        drop(store.take());
        let mut s = AlertStore::open(data).map_err(|e| e.to_string())?;
        s.max_evidence = opts.max_evidence.max(1);
        *store = Some(s);
    }
    let st = store.as_mut().expect("opened above");
    let pass = PassOptions {
        models: opts.models.as_ref(),
        engine: opts.engine,
        honour_intervals: true,
    };
    let r = incremental(data, rules, &pass, st, &mut |_, _, _| {})
        .await
        .map_err(|e| e.to_string());
    // Not kept while read-only: SQLite shares a file's shared-memory index among a process's
    // connections, and a read-only one held here would make the API's writers read-only too.
    if st.is_read_only() {
        drop(store.take());
    }
    r
}
