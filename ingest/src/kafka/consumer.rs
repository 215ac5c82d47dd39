//! The consumer loop. Two threads: the poll thread receives messages, parses them into Arrow
//! columns and cuts batches (by rows, bytes or age); the writer thread appends each batch to the
//! store and publishes it together with the partition positions it covers. Batches travel over
//! a channel of capacity one, so memory is bounded by about two batches plus librdkafka's
//! fetch queue (`queued.max.messages.kbytes`).
//!
//! Rebalances run inside `poll` (librdkafka calls back on the polling thread). A revocation cuts
//! the open batch, waits until the writer has stored it, commits the positions of the revoked
//! partitions to Kafka synchronously, and only then gives the partitions up: the next owner
//! starts exactly where this node's store ends.

use super::config::ClientOptions;
use super::deadletter::DeadLetter;
pub use super::metrics::Metrics;
use super::metrics::lock;
use super::parsepool::{ParseEnv, Parsed, Pool, Positions, Tp, parse_one};
use super::{KafkaError, checkpoint_key, crash_point, stored_positions};
use crate::location::Location;
use crate::parse::ParseCounts;
use crate::schema::Table;
use crate::store::{StoreError, StoreWriter, read_remote_manifest};
use datafusion::arrow::array::RecordBatch;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the partitions' lag (from librdkafka's statistics) is checked for a change.
const LAG_CHECK: Duration = Duration::from_millis(250);

/// A batch at least this fraction of a full one is cut as soon as every partition is read to
/// its end (see `Shared::due`).
const TAIL_FRACTION: usize = 8;

/// Settings of `kvwatch consume`.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub client: ClientOptions,
    pub topics: Vec<String>,
    pub group: String,
    /// A batch is cut at this many records…
    pub batch_rows: usize,
    /// …or this many message bytes…
    pub batch_bytes: usize,
    /// …or when its first message is this old.
    pub batch_linger: Duration,
    /// Larger message bodies (after gzip expansion) are quarantined.
    pub max_message_bytes: usize,
    /// Optional topic that receives a copy of every message that had quarantined content.
    pub dead_letter_topic: Option<String>,
    /// Interval of the progress log line and of librdkafka's lag statistics.
    pub stats_interval: Duration,
    /// Small files are merged this often (`None`: never).
    pub compact_interval: Option<Duration>,
    /// Threads parsing message bodies; 1 parses on the polling thread.
    pub parse_threads: usize,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            client: ClientOptions::default(),
            topics: Vec::new(),
            group: "kvwatch".into(),
            batch_rows: 100_000,
            batch_bytes: 64 << 20,
            batch_linger: Duration::from_secs(2),
            max_message_bytes: 16 << 20,
            dead_letter_topic: None,
            stats_interval: Duration::from_secs(30),
            compact_interval: Some(Duration::from_secs(600)),
            parse_threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(4),
        }
    }
}

/// What a consumer run did, printed when it stops.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsumeReport {
    pub messages: u64,
    pub records: u64,
    pub events: u64,
    pub activity: u64,
    pub quarantined: u64,
    pub duplicates: u64,
    pub replayed_skipped: u64,
    pub batches: u64,
    pub dead_lettered: u64,
    pub offset_gap_messages: u64,
    /// Batches dropped because another node had stored some of their messages first.
    pub fenced_batches: u64,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
    /// Next offset per `topic/partition` held by the store when the consumer stopped.
    pub positions: BTreeMap<String, i64>,
}

/// The open batch: the positions it reaches, and the rows parsed on the polling thread (all
/// of them with one parse thread; else the offset-gap rows, the pool holding the rest).
struct Batch {
    parsed: Parsed,
    positions: Positions,
    /// The first offset of each partition in the batch (the store must not hold a later
    /// position of it when the batch commits: see `StoreWriter::fence`).
    firsts: Positions,
    /// Messages accepted into the batch (parsed or queued for a parser thread).
    messages: u64,
    bytes: usize,
    started: Option<Instant>,
}

impl Batch {
    fn empty() -> Batch {
        Batch {
            parsed: Parsed::new(),
            positions: Positions::new(),
            firsts: Positions::new(),
            messages: 0,
            bytes: 0,
            started: None,
        }
    }
}

/// A batch as the poll loop cuts it: the part parsed on the poll thread, the parts the
/// parser threads are still finishing (each answers after the messages it was given before
/// the cut), and the partitions' state at the cut.
struct Cut {
    epoch: u64,
    parts: Vec<Parsed>,
    pending: Vec<mpsc::Receiver<Parsed>>,
    assigned: Vec<Tp>,
    behind: HashSet<Tp>,
    positions: Positions,
    firsts: Positions,
    started: Instant,
    done: Option<mpsc::SyncSender<Result<(), String>>>,
}

impl Cut {
    /// Waits for the parser threads' parts and builds the record batches and marks the store
    /// takes (on the writer thread, so the poll loop never waits for parsing).
    fn assemble(self, env: &ParseEnv) -> Result<Work, String> {
        let mut parts = self.parts;
        for rx in self.pending {
            parts.push(rx.recv().map_err(|_| "a parser thread ended".to_owned())?);
        }
        if let Some(d) = &env.dead_letter {
            // Dead-letter copies go out before the position that covers them is stored.
            if let Err(e) = d.flush(Duration::from_secs(30)) {
                tracing::error!(error = %e, "dead-letter flush failed (the quarantine table still holds the messages)");
            }
        }
        let mut batches = Vec::with_capacity(3 * parts.len());
        let mut counts = ParseCounts::default();
        let mut marks = Positions::new();
        for part in &mut parts {
            for (t, cols) in [
                (Table::Events, &mut part.events),
                (Table::Activity, &mut part.activity),
                (Table::Quarantine, &mut part.quarantine),
            ] {
                if !cols.is_empty() {
                    let rb = cols
                        .finish()
                        .map_err(|e| format!("building {} batch: {e}", t.name()))?;
                    batches.push((t, rb));
                }
            }
            counts.add(&part.counts);
            for (tp, t) in &part.marks {
                let m = marks.entry(tp.clone()).or_insert(*t);
                *m = (*m).max(*t);
            }
        }
        // Every assigned partition gets a mark, so one that has delivered nothing yet, or
        // lags, holds the watermark back.
        for tp in self.assigned {
            marks.entry(tp).or_insert(i64::MIN);
        }
        let marks = marks
            .into_iter()
            .map(|(tp, t)| {
                let b = self.behind.contains(&tp);
                (tp, (t, b))
            })
            .collect();
        Ok(Work {
            epoch: self.epoch,
            batches,
            positions: self.positions,
            firsts: self.firsts,
            marks,
            counts,
            started: self.started,
            done: self.done,
        })
    }
}

/// A batch ready for the store, on the writer thread.
struct Work {
    /// The cut's epoch (see `Shared::epoch`).
    epoch: u64,
    batches: Vec<(Table, RecordBatch)>,
    positions: Positions,
    firsts: Positions,
    /// Per assigned partition: newest event time in the batch (`i64::MIN`: none), and
    /// whether it had records waiting.
    marks: BTreeMap<Tp, (i64, bool)>,
    counts: ParseCounts,
    started: Instant,
    done: Option<mpsc::SyncSender<Result<(), String>>>,
}

/// State shared by the poll loop and the rebalance callback (which runs inside `poll`).
struct Shared {
    batch: Mutex<Batch>,
    /// Positions durably in the store, updated by the writer thread after each commit.
    durable: Mutex<Positions>,
    durable_version: AtomicU64,
    /// Next offset expected per assigned partition, and whether it is known (from the store or
    /// a commit) rather than "wherever the log starts". Messages below it are dropped; a
    /// message above a known position means the log lost messages before we read them.
    next: Mutex<HashMap<Tp, (i64, bool)>>,
    work_tx: Mutex<Option<mpsc::SyncSender<Cut>>>,
    writer_error: Mutex<Option<String>>,
    /// Parse settings and the dead-letter producer, shared with the parser threads.
    env: Arc<ParseEnv>,
    /// Parser threads (`None`: parse on the polling thread).
    pool: Mutex<Option<Pool>>,
    metrics: Arc<Metrics>,
    opts: ConsumeOptions,
    /// Assigned partitions that had records waiting at the last look (cached high watermarks).
    behind: Mutex<HashSet<Tp>>,
    /// Cancelled when the consumer is asked to stop: a writer retrying a refused batch gives up.
    stop: CancellationToken,
    /// Where the store is: a shared one is asked for positions at every assignment.
    location: Location,
    /// Counts the times the poll loop started over from the store's positions; every cut
    /// carries the epoch it was cut in.
    epoch: AtomicU64,
    /// Set by the writer when the store fenced a batch of this epoch: the poll loop drops
    /// what it has read since and seeks its partitions to the store's positions.
    resync: Mutex<Option<u64>>,
}

impl Shared {
    fn failed(&self) -> Option<String> {
        lock(&self.writer_error).clone()
    }

    /// Parses one message into the open batch.
    fn accept(&self, topic: &str, partition: i32, offset: i64, payload: Option<&[u8]>) {
        let tp = (topic.to_owned(), partition);
        let gap = {
            let mut next = lock(&self.next);
            let (expected, known) = next.get(&tp).copied().unwrap_or((0, false));
            if offset < expected {
                Metrics::add(&self.metrics.replayed_skipped, 1);
                return;
            }
            next.insert(tp.clone(), (offset + 1, true));
            (known && offset > expected).then_some(expected)
        };
        let m = &self.metrics;
        let mut b = lock(&self.batch);
        if b.started.is_none() {
            b.started = Some(Instant::now());
        }
        if let Some(from) = gap {
            // Retention removed messages before they were read (or the log was truncated):
            // the loss is recorded in the store, where an auditor will see it.
            let missing = offset - from;
            Metrics::add(&m.offset_gap_messages, missing as u64);
            tracing::error!(
                topic,
                partition,
                from,
                to = offset - 1,
                missing,
                "offset gap: messages missing from the log"
            );
            b.parsed.offset_gap(
                &format!("kafka:{topic}/{partition}@{from}-{}", offset - 1),
                &format!("offset gap: {missing} messages were not delivered (expired from retention or truncated before kvwatch read them)"),
            );
        }
        match lock(&self.pool).as_mut() {
            Some(pool) => pool.submit(self.env.generation(), topic, partition, offset, payload),
            None => parse_one(
                &self.env,
                self.env.generation(),
                &mut b.parsed,
                topic,
                partition,
                offset,
                payload,
            ),
        }
        b.bytes += payload.map_or(0, <[u8]>::len);
        b.messages += 1;
        b.firsts.entry(tp.clone()).or_insert(offset);
        b.positions.insert(tp, offset + 1);
        Metrics::add(&m.messages, 1);
        Metrics::add(&m.message_bytes, payload.map_or(0, |p| p.len() as u64));
    }

    /// Records which assigned partitions still have records waiting, from librdkafka's last
    /// statistics (`--stats-interval-secs`); unknown counts as waiting, which only delays
    /// absence verdicts, never hastens them. True when the set changed.
    fn refresh_behind(&self, lag: &BTreeMap<String, i64>) -> bool {
        let now: HashSet<Tp> = lock(&self.next)
            .keys()
            .filter(|(t, p)| lag.get(&format!("{t}/{p}")).is_none_or(|l| *l != 0))
            .cloned()
            .collect();
        let mut behind = lock(&self.behind);
        let changed = *behind != now;
        *behind = now;
        changed
    }

    /// Opens the batch if none is open, so the next cut commits the partitions' marks even
    /// when no message arrived.
    fn open_batch(&self) {
        lock(&self.batch).started.get_or_insert_with(Instant::now);
    }

    /// Whether the open batch should be cut now: full, old enough, or — when every assigned
    /// partition has been read to its end — big enough to be a backlog's last batch, which
    /// has nothing left to wait for (a trickle's small batches still linger, so a quiet
    /// stream does not become a file per message).
    fn due(&self, caught_up: bool) -> bool {
        let b = lock(&self.batch);
        let rows = self.env.batch_records(b.messages, b.bytes as u64) as usize;
        b.started.is_some_and(|s| {
            rows >= self.opts.batch_rows
                || b.bytes >= self.opts.batch_bytes
                || s.elapsed() >= self.opts.batch_linger
                || (caught_up
                    && (rows >= self.opts.batch_rows / TAIL_FRACTION
                        || b.bytes >= self.opts.batch_bytes / TAIL_FRACTION))
        })
    }

    /// Whether every assigned partition's number is in `at_end` (partitions that reported
    /// their end with nothing read since).
    fn all_at_end(&self, at_end: &HashSet<i32>) -> bool {
        let next = lock(&self.next);
        !next.is_empty() && next.keys().all(|(_, p)| at_end.contains(p))
    }

    /// Hands the open batch to the writer. With `wait`, returns once it is durable.
    fn cut(&self, wait: bool) -> Result<(), KafkaError> {
        if let Some(e) = self.failed() {
            return Err(KafkaError::Writer(e));
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let cut = {
            let mut guard = lock(&self.batch);
            let b = &mut *guard;
            if b.started.is_none() {
                return Ok(());
            }
            let parts = vec![std::mem::replace(&mut b.parsed, Parsed::new())];
            // The parser threads finish this batch while the poll loop goes on with the next;
            // the writer thread collects their parts.
            let pending = lock(&self.pool)
                .as_ref()
                .map(Pool::flush)
                .unwrap_or_default();
            self.env.reset();
            let started = b.started.take().unwrap_or_else(Instant::now);
            b.bytes = 0;
            b.messages = 0;
            Cut {
                epoch: self.epoch.load(Ordering::Acquire),
                parts,
                pending,
                assigned: lock(&self.next).keys().cloned().collect(),
                behind: lock(&self.behind).clone(),
                positions: std::mem::take(&mut b.positions),
                firsts: std::mem::take(&mut b.firsts),
                started,
                done: wait.then_some(done_tx),
            }
        };
        crash_point("kafka-before-write");
        let tx = lock(&self.work_tx).clone();
        let Some(tx) = tx else {
            return Err(KafkaError::Writer("writer already closed".into()));
        };
        tx.send(cut).map_err(|_| {
            KafkaError::Writer(
                self.failed()
                    .unwrap_or_else(|| "writer thread ended".into()),
            )
        })?;
        if wait {
            match done_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(KafkaError::Writer(e)),
                Err(_) => {
                    return Err(KafkaError::Writer(
                        self.failed()
                            .unwrap_or_else(|| "writer thread ended".into()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where each of `tps` starts: max(store position, group commit), `None` when neither
    /// knows it (the log's beginning). A shared store is read again first: another node may
    /// have stored these partitions further since this one last looked (the one that owned
    /// them before, even if it died before committing to Kafka). Records the starts as the
    /// next offsets expected.
    fn starts<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tps: &[Tp],
    ) -> Vec<(Tp, Option<i64>)> {
        if let Location::Remote(r) = &self.location {
            match read_remote_manifest(r) {
                Ok((m, _)) => {
                    let mut durable = lock(&self.durable);
                    for (tp, o) in stored_positions(&m) {
                        let d = durable.entry(tp).or_insert(o);
                        *d = (*d).max(o);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the shared store's positions; using this node's")
                }
            }
        }
        let durable = lock(&self.durable).clone();
        let mut tpl = TopicPartitionList::new();
        for (t, p) in tps {
            tpl.add_partition(t, *p);
        }
        let committed: HashMap<Tp, i64> = match consumer
            .committed_offsets(tpl, Duration::from_secs(10))
        {
            Ok(c) => c
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read committed offsets; starting from the store's positions");
                HashMap::new()
            }
        };
        let mut next = lock(&self.next);
        tps.iter()
            .map(|tp| {
                let start = match (durable.get(tp), committed.get(tp)) {
                    (Some(a), Some(b)) => Some(*a.max(b)),
                    (Some(a), None) => Some(*a),
                    (None, Some(b)) => Some(*b),
                    (None, None) => None,
                };
                next.insert(tp.clone(), (start.unwrap_or(0), start.is_some()));
                (tp.clone(), start)
            })
            .collect()
    }

    /// After the store fenced a batch of epoch `fenced` (another node had stored some of its
    /// messages): drops everything read since that batch's start — the open batch and any
    /// cut still queued, which the writer discards by epoch — and seeks every assigned
    /// partition to where the store has it. What this node read and the other stored is
    /// not stored twice, and nothing after the store's positions is skipped.
    fn resync<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, fenced: u64) {
        {
            let mut b = lock(&self.batch);
            *b = Batch::empty();
            // The parser threads' share of the dropped batch is dropped with it.
            drop(lock(&self.pool).as_ref().map(Pool::flush));
            self.env.reset();
            self.epoch.fetch_max(fenced + 1, Ordering::AcqRel);
        }
        let tps: Vec<Tp> = lock(&self.next).keys().cloned().collect();
        for ((t, p), start) in self.starts(consumer, &tps) {
            let to = start.map_or(Offset::Beginning, Offset::Offset);
            match consumer.seek(&t, p, to, Duration::from_secs(10)) {
                Ok(()) => {
                    tracing::info!(topic = %t, partition = p, start = ?start, "partition re-read from the store's position")
                }
                Err(e) => {
                    // The partition keeps its read position; `accept` still drops what the
                    // store already has, because `next` now starts at the store's position.
                    tracing::warn!(topic = %t, partition = p, error = %e, "seek to the store's position failed")
                }
            }
        }
    }

    /// Commits the durable positions of `only` (or of every assigned partition) to Kafka.
    fn commit_kafka<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        only: Option<&HashSet<Tp>>,
        mode: CommitMode,
    ) {
        let assigned: HashSet<Tp> = lock(&self.next).keys().cloned().collect();
        let durable = lock(&self.durable).clone();
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &durable {
            let tp = (t.clone(), *p);
            let wanted = match only {
                Some(set) => set.contains(&tp),
                None => assigned.contains(&tp),
            };
            if wanted {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = consumer.commit(&tpl, mode) {
            // Positions live in the store; a failed Kafka commit only delays lag reporting.
            tracing::warn!(error = %e, "kafka offset commit failed; will retry with the next batch");
        }
    }
}

/// librdkafka context: rebalances, statistics and logging.
struct Ctx {
    shared: Arc<Shared>,
}

impl ClientContext for Ctx {
    fn stats(&self, s: Statistics) {
        let mut lag = BTreeMap::new();
        for (t, topic) in &s.topics {
            for (p, part) in &topic.partitions {
                if *p >= 0 && lock(&self.shared.next).contains_key(&(t.clone(), *p)) {
                    lag.insert(format!("{t}/{p}"), part.consumer_lag);
                }
            }
        }
        *lock(&self.shared.metrics.lag) = lag;
    }

    /// Error events of the client. rdkafka reports the end of a partition here too (and then
    /// returns it from `poll`): that is news, not an error, and the poll loop uses it.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        Metrics::add(&self.shared.metrics.kafka_errors, 1);
        tracing::warn!(error = %error, reason, "kafka client error (librdkafka retries with backoff)");
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        Metrics::add(&self.shared.metrics.rebalances, 1);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, tpl);
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "partition assignment failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, tpl);
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "partition revocation failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                let _ = consumer.unassign();
                lock(&self.shared.next).clear();
            }
        }
    }
}

impl Ctx {
    /// Sets each assigned partition's start to max(store position, group commit).
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let tps: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for ((t, p), start) in self.shared.starts(consumer, &tps) {
            if let Some(o) = start {
                let _ = tpl.set_partition_offset(&t, p, Offset::Offset(o));
            }
            tracing::info!(topic = %t, partition = p, start = ?start, "partition assigned");
        }
    }

    /// Drains the open batch to the store and commits before the partitions go.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let gone: HashSet<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        if let Err(e) = self.shared.cut(true) {
            // Not stored: the positions stay where they were and the next owner re-reads.
            tracing::error!(error = %e, "could not store the open batch before revocation");
        }
        self.shared
            .commit_kafka(consumer, Some(&gone), CommitMode::Sync);
        let mut next = lock(&self.shared.next);
        for tp in &gone {
            next.remove(tp);
            tracing::info!(topic = %tp.0, partition = tp.1, "partition revoked after draining");
        }
    }
}

/// Runs the writer thread: append, publish with positions, report durability.
fn writer_loop(
    mut writer: StoreWriter,
    rx: mpsc::Receiver<Cut>,
    shared: Arc<Shared>,
) -> StoreWriter {
    let m = shared.metrics.clone();
    let mut last_compact = Instant::now();
    let compact_rt = tokio::runtime::Builder::new_current_thread().build();
    let mut discard_upto: Option<u64> = None;
    loop {
        let work = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(w) => Some(w),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let work = match work.map(|mut c| {
            let done = c.done.take();
            (c.assemble(&shared.env), done)
        }) {
            // Cut before the poll loop started over from the store: it continues a batch
            // that was not stored, so storing it would leave a hole.
            Some((Ok(w), done)) if discard_upto.is_some_and(|e| w.epoch <= e) => {
                if let Some(d) = done {
                    let _ = d.send(Err(SUPERSEDED.into()));
                }
                None
            }
            None => None,
            Some((Ok(w), done)) => Some(Work { done, ..w }),
            Some((Err(msg), done)) => {
                tracing::error!(error = %msg, "could not assemble a batch; the consumer stops without advancing");
                *lock(&shared.writer_error) = Some(msg.clone());
                if let Some(d) = done {
                    let _ = d.send(Err(msg));
                }
                break;
            }
        };
        if let Some(w) = work {
            let before = writer.stats();
            let result = match store_work(&mut writer, &w) {
                Ok(()) => Ok(()),
                // Another node stored some of these messages (it owned the partition before
                // a rebalance and stored late, or owns it too while the group settles):
                // storing them again would duplicate them. The batch and everything read
                // after it are dropped and the partitions read again from the store.
                Err(e @ StoreError::Fenced { .. }) => {
                    let _ = writer.recover();
                    tracing::warn!(error = %e, epoch = w.epoch, "batch fenced by another writer; re-reading from the store's positions");
                    Metrics::add(&m.fenced_batches, 1);
                    discard_upto = Some(w.epoch);
                    *lock(&shared.resync) = Some(w.epoch);
                    if let Some(d) = &w.done {
                        let _ = d.send(Err(SUPERSEDED.into()));
                    }
                    continue;
                }
                // Nothing of the batch is acknowledged yet: keep it and try again until the
                // store takes it (a full or read-only disk recovers) or the consumer stops.
                Err(e) => retry_work(&mut writer, &w, &shared, e),
            };
            match result {
                Ok(()) => {
                    lock(&shared.durable).extend(w.positions.clone());
                    shared.durable_version.fetch_add(1, Ordering::Release);
                    let after = writer.stats();
                    Metrics::add(&m.records, w.counts.records);
                    Metrics::add(&m.events, after.events.saturating_sub(before.events));
                    Metrics::add(&m.activity, after.activity.saturating_sub(before.activity));
                    Metrics::add(
                        &m.quarantined,
                        after.quarantine.saturating_sub(before.quarantine),
                    );
                    Metrics::add(
                        &m.duplicates,
                        after.duplicates.saturating_sub(before.duplicates),
                    );
                    Metrics::add(&m.batches, 1);
                    let ms = w.started.elapsed().as_millis() as u64;
                    m.last_batch_latency_ms.store(ms, Ordering::Relaxed);
                    m.max_batch_latency_ms.fetch_max(ms, Ordering::Relaxed);
                    crash_point("kafka-after-checkpoint");
                    if let Some(d) = w.done {
                        let _ = d.send(Ok(()));
                    }
                    writer.trim_ids(3);
                }
                Err(msg) => {
                    tracing::error!(error = %msg, "store write failed; the consumer stops without advancing");
                    *lock(&shared.writer_error) = Some(msg.clone());
                    if let Some(d) = w.done {
                        let _ = d.send(Err(msg));
                    }
                    break;
                }
            }
        }
        if let (Some(every), Ok(rt)) = (shared.opts.compact_interval, &compact_rt)
            && last_compact.elapsed() >= every
        {
            last_compact = Instant::now();
            match rt.block_on(writer.compact()) {
                Ok(r) if r.files_before > 0 || r.partitions_dropped > 0 => {
                    tracing::info!(
                        files_before = r.files_before,
                        files_after = r.files_after,
                        partitions_dropped = r.partitions_dropped,
                        orphans_removed = r.orphans_removed,
                        "compacted"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "compaction failed; will retry"),
            }
        }
    }
    writer
}

/// Appends a batch and publishes it with its positions in one manifest commit.
fn store_work(writer: &mut StoreWriter, w: &Work) -> Result<(), crate::store::StoreError> {
    for (t, b) in &w.batches {
        writer.append(*t, b)?;
    }
    for ((t, p), (newest, behind)) in &w.marks {
        writer.mark(&format!("kafka:{t}/{p}"), *newest, *behind);
    }
    for ((t, p), first) in &w.firsts {
        writer.fence(&checkpoint_key(t, *p), *first);
    }
    writer.commit_checkpoints(
        w.positions
            .iter()
            .map(|((t, p), o)| (checkpoint_key(t, *p), serde_json::json!(o))),
    )
}

/// The store refused a batch: start the writer over from the store on disk (dropping whatever
/// the failed write left half done) and store the batch again, backing off up to 30 s, until
/// it succeeds or the consumer is stopped. Kafka positions do not advance meanwhile, so
/// nothing is lost either way.
fn retry_work(
    writer: &mut StoreWriter,
    w: &Work,
    shared: &Shared,
    first: crate::store::StoreError,
) -> Result<(), String> {
    let m = &shared.metrics;
    let mut error = first.to_string();
    let mut wait = Duration::from_millis(500);
    m.store_stalled.store(1, Ordering::Relaxed);
    loop {
        tracing::error!(error = %error, retry_in_ms = wait.as_millis() as u64, "store refused a batch; retrying (positions do not advance)");
        *lock(&m.store_error) = Some(error.clone());
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if shared.stop.is_cancelled() {
                return Err(error);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        wait = (wait * 2).min(Duration::from_secs(30));
        Metrics::add(&m.store_retries, 1);
        let attempt = writer.recover().and_then(|()| store_work(writer, w));
        match attempt {
            Ok(()) => {
                m.store_stalled.store(0, Ordering::Relaxed);
                *lock(&m.store_error) = None;
                tracing::info!("store takes writes again; the batch is stored");
                return Ok(());
            }
            Err(e) => error = e.to_string(),
        }
    }
}

/// Why a cut was not stored: another node's store commit superseded it.
const SUPERSEDED: &str =
    "another node stored part of this batch; it is read again from the store's positions";

/// Starts [`consume`] on a thread of its own.
pub fn spawn(
    writer: StoreWriter,
    opts: ConsumeOptions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    mut progress: impl FnMut(&Metrics) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<Result<ConsumeReport, KafkaError>>> {
    std::thread::Builder::new()
        .name("kvwatch-kafka".into())
        .spawn(move || consume(writer, opts, metrics, shutdown, &mut progress))
}

fn consumer_config(opts: &ConsumeOptions) -> Result<ClientConfig, KafkaError> {
    let stats_ms = opts.stats_interval.as_millis().max(1000).to_string();
    opts.client.client_config(&[
        ("group.id", opts.group.clone()),
        ("client.id", format!("kvwatch-{}", std::process::id())),
        // Positions live in the store: no automatic commits, no automatic offset store.
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "earliest".into()),
        // Reaching a partition's end is reported, so a backlog's last batch is cut at once.
        ("enable.partition.eof", "true".into()),
        // Event Hubs' recommended group timings.
        ("session.timeout.ms", "30000".into()),
        ("heartbeat.interval.ms", "3000".into()),
        ("max.poll.interval.ms", "300000".into()),
        // Bounds librdkafka's prefetch per partition: memory stays flat when the store is slow.
        ("queued.max.messages.kbytes", "65536".into()),
        ("statistics.interval.ms", stats_ms),
    ])
}

/// Consumes until `shutdown` is cancelled, then stores the open batch and commits. Blocking:
/// run it on its own thread ([`spawn`]). `progress` is called every `stats_interval`.
pub fn consume(
    writer: StoreWriter,
    opts: ConsumeOptions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    progress: &mut dyn FnMut(&Metrics),
) -> Result<ConsumeReport, KafkaError> {
    if opts.topics.is_empty() {
        return Err(KafkaError::Config("no topic given (--topic)".into()));
    }
    let start = Instant::now();
    let durable = stored_positions(writer.manifest());
    let dead_letter = match &opts.dead_letter_topic {
        Some(topic) => Some(DeadLetter::new(&opts.client, topic, metrics.clone())?),
        None => None,
    };
    let (work_tx, work_rx) = mpsc::sync_channel::<Cut>(1);
    let env = Arc::new(ParseEnv::new(opts.max_message_bytes, dead_letter));
    let pool = match opts.parse_threads {
        0 | 1 => None,
        n => Some(Pool::start(n, env.clone())?),
    };
    let shared = Arc::new(Shared {
        batch: Mutex::new(Batch::empty()),
        durable: Mutex::new(durable),
        durable_version: AtomicU64::new(0),
        next: Mutex::new(HashMap::new()),
        work_tx: Mutex::new(Some(work_tx)),
        writer_error: Mutex::new(None),
        env,
        pool: Mutex::new(pool),
        behind: Mutex::new(HashSet::new()),
        metrics: metrics.clone(),
        opts: opts.clone(),
        stop: shutdown.clone(),
        location: writer.location(),
        epoch: AtomicU64::new(0),
        resync: Mutex::new(None),
    });
    let writer_shared = shared.clone();
    let writer_thread = std::thread::Builder::new()
        .name("kvwatch-kafka-writer".into())
        .spawn(move || writer_loop(writer, work_rx, writer_shared))?;

    let consumer: BaseConsumer<Ctx> = consumer_config(&opts)?.create_with_context(Ctx {
        shared: shared.clone(),
    })?;
    let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(topics = ?opts.topics, group = %opts.group, brokers = %opts.client.brokers, "consuming");

    let mut committed_version = 0;
    let mut last_log = Instant::now();
    let mut last_records = 0u64;
    let mut error_streak = 0u32;
    let mut last_lag_check = Instant::now();
    let mut result = Ok(());
    // Partition numbers read to their end with nothing since (librdkafka names only the
    // number; with several topics a mix-up only cuts a large batch a little early).
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut caught_up = false;
    while !shutdown.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                error_streak = 0;
                if !at_end.is_empty() {
                    at_end.remove(&msg.partition());
                    caught_up = false;
                }
                shared.accept(msg.topic(), msg.partition(), msg.offset(), msg.payload());
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                caught_up = shared.all_at_end(&at_end);
            }
            Some(Err(e)) => {
                Metrics::add(&metrics.kafka_errors, 1);
                error_streak = error_streak.saturating_add(1);
                tracing::warn!(error = %e, "kafka poll error");
                // librdkafka reconnects by itself; back off so a dead broker is not a busy loop.
                std::thread::sleep(Duration::from_millis(
                    (50u64 << error_streak.min(6)).min(2000),
                ));
            }
            None => {}
        }
        let fenced = lock(&shared.resync).take();
        if let Some(epoch) = fenced {
            shared.resync(&consumer, epoch);
            at_end.clear();
            caught_up = false;
        }
        // A partition that catches up (or starts lagging) while nothing arrives still has
        // to tell the store, or its stale `behind` would hold the watermark for good.
        let mut lag_changed = false;
        if last_lag_check.elapsed() >= LAG_CHECK {
            last_lag_check = Instant::now();
            lag_changed = shared.refresh_behind(&metrics.lag());
            if lag_changed {
                shared.open_batch();
            }
        }
        if (lag_changed || shared.due(caught_up))
            && let Err(e) = shared.cut(false)
        {
            result = Err(e);
            break;
        }
        let v = shared.durable_version.load(Ordering::Acquire);
        if v != committed_version {
            committed_version = v;
            shared.commit_kafka(&consumer, None, CommitMode::Async);
        }
        if last_log.elapsed() >= opts.stats_interval {
            let recs = Metrics::get(&metrics.records);
            let rate = (recs - last_records) as f64 / last_log.elapsed().as_secs_f64();
            last_records = recs;
            last_log = Instant::now();
            tracing::info!(
                records = recs,
                records_per_sec = rate.round(),
                quarantined = Metrics::get(&metrics.quarantined),
                duplicates = Metrics::get(&metrics.duplicates),
                batch_latency_ms = Metrics::get(&metrics.last_batch_latency_ms),
                lag = ?metrics.lag(),
                "consumer progress"
            );
            progress(&metrics);
        }
        if let Some(e) = shared.failed() {
            result = Err(KafkaError::Writer(e));
            break;
        }
    }
    if result.is_ok() {
        // Graceful stop: store what was read, then tell Kafka. A batch another node had
        // stored first is nothing lost: the store has its messages.
        result = match shared.cut(true) {
            Err(KafkaError::Writer(e)) if e == SUPERSEDED => Ok(()),
            r => r,
        };
        if result.is_ok() {
            shared.commit_kafka(&consumer, None, CommitMode::Sync);
        }
    }
    // Leaving the group revokes the partitions through the callback (nothing left to drain).
    consumer.unsubscribe();
    drop(consumer);
    lock(&shared.work_tx).take();
    let writer = writer_thread
        .join()
        .map_err(|_| KafkaError::Writer("writer thread panicked".into()))?;
    result?;
    let elapsed = start.elapsed().as_secs_f64();
    let m = &metrics;
    Ok(ConsumeReport {
        messages: Metrics::get(&m.messages),
        records: Metrics::get(&m.records),
        events: Metrics::get(&m.events),
        activity: Metrics::get(&m.activity),
        quarantined: Metrics::get(&m.quarantined),
        duplicates: Metrics::get(&m.duplicates),
        replayed_skipped: Metrics::get(&m.replayed_skipped),
        batches: Metrics::get(&m.batches),
        dead_lettered: Metrics::get(&m.dead_lettered),
        offset_gap_messages: Metrics::get(&m.offset_gap_messages),
        fenced_batches: Metrics::get(&m.fenced_batches),
        elapsed_secs: elapsed,
        records_per_sec: Metrics::get(&m.records) as f64 / elapsed.max(1e-9),
        positions: stored_positions(writer.manifest())
            .into_iter()
            .map(|((t, p), o)| (format!("{t}/{p}"), o))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            batch: Mutex::new(Batch::empty()),
            durable: Mutex::new(Positions::new()),
            durable_version: AtomicU64::new(0),
            next: Mutex::new(HashMap::new()),
            work_tx: Mutex::new(None),
            writer_error: Mutex::new(None),
            env: Arc::new(ParseEnv::new(1 << 20, None)),
            pool: Mutex::new(None),
            behind: Mutex::new(HashSet::new()),
            metrics: Arc::new(Metrics::default()),
            opts: ConsumeOptions::default(),
            stop: CancellationToken::new(),
            location: Location::Local(std::path::PathBuf::from(".")),
            epoch: AtomicU64::new(0),
            resync: Mutex::new(None),
        }
    }

    #[test]
    fn redeliveries_are_dropped_and_gaps_recorded() {
        let s = shared();
        let tp = ("kv".to_owned(), 1);
        // Known position 10 (from the store): 7 is a redelivery, 15 means 10..=14 are gone.
        lock(&s.next).insert(tp.clone(), (10, true));
        s.accept("kv", 1, 7, Some(b"{}"));
        assert_eq!(Metrics::get(&s.metrics.replayed_skipped), 1);
        s.accept("kv", 1, 15, Some(b"not json"));
        assert_eq!(Metrics::get(&s.metrics.offset_gap_messages), 5);
        let b = lock(&s.batch);
        // The gap row and the poison message's row.
        assert_eq!(b.parsed.quarantine.len(), 2);
        assert_eq!(b.positions[&tp], 16);
        drop(b);
        // Unknown start (log beginning): the first offset seen is not a gap.
        s.accept("kv", 2, 500, Some(b"{}"));
        assert_eq!(Metrics::get(&s.metrics.offset_gap_messages), 5);
        assert_eq!(lock(&s.next)[&("kv".to_owned(), 2)], (501, true));
    }
}
