//! Counters of the Kafka consumer, shared with the service's `/metrics` endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Counters of a running consumer: one field per thing an operator asks about. Shared with
/// the service's `/metrics` endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    pub messages: AtomicU64,
    pub message_bytes: AtomicU64,
    pub records: AtomicU64,
    pub events: AtomicU64,
    pub activity: AtomicU64,
    pub quarantined: AtomicU64,
    pub duplicates: AtomicU64,
    /// Messages below the store's position (redelivered after a crash or rebalance), dropped.
    pub replayed_skipped: AtomicU64,
    pub batches: AtomicU64,
    pub last_batch_latency_ms: AtomicU64,
    pub max_batch_latency_ms: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dead_letter_failures: AtomicU64,
    pub kafka_errors: AtomicU64,
    pub rebalances: AtomicU64,
    /// Messages skipped over by the log itself (retention), recorded in quarantine.
    pub offset_gap_messages: AtomicU64,
    /// Consumer lag per `topic/partition`, from librdkafka statistics (-1 = unknown).
    pub lag: Mutex<BTreeMap<String, i64>>,
    /// 1 while the store refuses writes (disk full or read-only) and the writer retries.
    pub store_stalled: AtomicU64,
    /// Attempts to store a batch again after the store refused it.
    pub store_retries: AtomicU64,
    /// Batches dropped because another node of a shared store had already stored some of
    /// their messages; the consumer then re-read its partitions from the store's positions.
    pub fenced_batches: AtomicU64,
    /// Why the store last refused a batch (cleared when a batch is stored).
    pub store_error: Mutex<Option<String>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic on another thread is already fatal for the consumer; the data is still sound.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub(super) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub(super) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn lag(&self) -> BTreeMap<String, i64> {
        lock(&self.lag).clone()
    }

    /// Why the store refuses batches now, if it does.
    pub fn store_error(&self) -> Option<String> {
        (Self::get(&self.store_stalled) == 1)
            .then(|| lock(&self.store_error).clone())
            .flatten()
    }
}
