//! Kafka message bodies → Arrow columns, on the poll thread or on a pool of parser threads.
//!
//! The poll thread keeps everything that depends on order: offsets, gap detection, the batch's
//! positions and when to cut it. Only the parsing (the expensive part, about 100 k records/s per
//! core) moves to the pool: messages are handed out round-robin with a copy of their body, each
//! thread parses into columns of its own, and cutting a batch sends every thread a flush that it
//! answers, in order, after the messages it was given before. So a batch holds exactly the
//! messages its positions cover, whichever thread parsed them, and the store sorts and
//! de-duplicates rows as it would for one thread.

use super::deadletter::{DeadLetter, dead_letter};
use super::message::{origin, parse_message};
use crate::activity::ActivityRow;
use crate::audit::EventRow;
use crate::batch::{
    Columns, activity_columns, events_columns, push_activity, push_event, push_quarantine,
    quarantine_columns,
};
use crate::parse::{ParseCounts, RowSink};
use crate::store::now_nanos;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

pub(super) type Tp = (String, i32);
pub(super) type Positions = BTreeMap<Tp, i64>;

/// Rows parsed from some messages, with what they add to the batch.
pub(super) struct Parsed {
    pub events: Columns,
    pub activity: Columns,
    pub quarantine: Columns,
    pub counts: ParseCounts,
    /// Newest event time per partition (the partitions' watermark marks).
    pub marks: Positions,
    /// Ingest time stamped on the rows; set by the first message.
    now: Option<i64>,
    quarantined: u64,
    first_reason: Option<String>,
    /// Newest event time of the message being parsed (`i64::MIN`: none yet).
    newest: i64,
}

impl Parsed {
    pub fn new() -> Parsed {
        Parsed {
            events: events_columns(),
            activity: activity_columns(),
            quarantine: quarantine_columns(),
            counts: ParseCounts::default(),
            marks: Positions::new(),
            now: None,
            quarantined: 0,
            first_reason: None,
            newest: i64::MIN,
        }
    }

    fn now(&mut self) -> i64 {
        *self.now.get_or_insert_with(now_nanos)
    }

    /// A row for a stretch of the log that was never delivered (retention, truncation).
    pub fn offset_gap(&mut self, source: &str, reason: &str) {
        let now = self.now();
        push_quarantine(&mut self.quarantine, source, reason, "", now);
    }
}

impl RowSink for Parsed {
    fn event(&mut self, row: &EventRow<'_>, source: &str) {
        self.newest = self.newest.max(row.time_ns);
        let now = self.now();
        push_event(&mut self.events, row, source, now);
    }
    fn activity(&mut self, row: &ActivityRow, source: &str) {
        self.newest = self.newest.max(row.time_ns);
        let now = self.now();
        push_activity(&mut self.activity, row, source, now);
    }
    fn quarantine(&mut self, source: &str, reason: &str, raw: &str) {
        tracing::debug!(source, reason, "quarantined");
        self.quarantined += 1;
        if self.first_reason.is_none() {
            self.first_reason = Some(reason.to_owned());
        }
        let now = self.now();
        push_quarantine(&mut self.quarantine, source, reason, raw, now);
    }
}

/// What parsing needs besides the message.
pub(super) struct ParseEnv {
    pub max_message_bytes: usize,
    pub dead_letter: Option<DeadLetter>,
    /// Records parsed into the open batch so far (all threads), for cutting by size.
    records: AtomicU64,
    /// Messages and payload bytes of the open batch parsed so far (all threads).
    messages: AtomicU64,
    bytes: AtomicU64,
    /// Records and payload bytes parsed since start, for the bytes-per-record estimate.
    all_records: AtomicU64,
    all_bytes: AtomicU64,
    /// Which batch is open: messages of a batch already cut, still being parsed, do not
    /// count toward the next one.
    generation: AtomicU64,
}

/// Bytes per record assumed before anything was parsed: below a compact audit record (~700
/// bytes), so a first batch is cut early rather than late.
const PRIOR_BYTES_PER_RECORD: u64 = 512;

impl ParseEnv {
    pub fn new(max_message_bytes: usize, dead_letter: Option<DeadLetter>) -> Self {
        Self {
            max_message_bytes,
            dead_letter,
            records: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            all_records: AtomicU64::new(0),
            all_bytes: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Records in the open batch of `submitted` messages holding `submitted_bytes`: those
    /// parsed, plus the bytes still queued at the bytes-per-record seen so far (exact without
    /// a pool, where nothing is queued). Never less than one record per queued message, so a
    /// burst of small messages polled before any parse finishes still cuts on time.
    pub fn batch_records(&self, submitted: u64, submitted_bytes: u64) -> u64 {
        let parsed = self.messages.load(Ordering::Relaxed);
        let records = self.records.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let all_records = self.all_records.load(Ordering::Relaxed);
        let per_record = self
            .all_bytes
            .load(Ordering::Relaxed)
            .checked_div(all_records)
            .unwrap_or(PRIOR_BYTES_PER_RECORD)
            .max(1);
        let queued = submitted.saturating_sub(parsed);
        let queued_bytes = submitted_bytes.saturating_sub(bytes);
        records + (queued_bytes / per_record).max(queued)
    }

    /// The open batch's generation, for messages handed to a parser thread.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// A batch was cut: count the next one from zero.
    pub fn reset(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.records.store(0, Ordering::Relaxed);
        self.messages.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }

    fn parsed(&self, generation: u64, records: u64, bytes: u64) {
        self.all_records.fetch_add(records, Ordering::Relaxed);
        self.all_bytes.fetch_add(bytes, Ordering::Relaxed);
        if generation != self.generation() {
            return;
        }
        self.records.fetch_add(records, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Parses one message of batch `generation` into `into`; a message with quarantined content
/// is logged and, when a dead-letter topic is set, copied there.
pub(super) fn parse_one(
    env: &ParseEnv,
    generation: u64,
    into: &mut Parsed,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: Option<&[u8]>,
) {
    let before = into.quarantined;
    into.newest = i64::MIN;
    let c = parse_message(
        payload,
        &origin(topic, partition, offset),
        env.max_message_bytes,
        into,
    );
    into.counts.add(&c);
    env.parsed(generation, c.records, payload.map_or(0, |p| p.len() as u64));
    if into.newest != i64::MIN {
        let newest = into.newest;
        let m = into
            .marks
            .entry((topic.to_owned(), partition))
            .or_insert(newest);
        *m = (*m).max(newest);
    }
    if into.quarantined > before {
        let reason = into.first_reason.take().unwrap_or_default();
        tracing::warn!(topic, partition, offset, reason = %reason, "message content quarantined");
        if let Some(d) = &env.dead_letter {
            dead_letter(d, topic, partition, offset, payload, &reason);
        }
    }
    into.first_reason = None;
}

enum Job {
    Message {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        payload: Option<Vec<u8>>,
        generation: u64,
    },
    Flush(mpsc::SyncSender<Parsed>),
}

/// Parser threads, fed round-robin.
pub(super) struct Pool {
    senders: Vec<mpsc::SyncSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: usize,
    topics: BTreeMap<String, Arc<str>>,
}

impl Pool {
    /// `threads` parser threads (at least two; one thread parses on the poll thread instead).
    pub fn start(threads: usize, env: Arc<ParseEnv>) -> std::io::Result<Pool> {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(2) {
            // A few hundred messages in flight per thread: enough to keep it busy, bounded.
            let (tx, rx) = mpsc::sync_channel::<Job>(256);
            let env = env.clone();
            let h = std::thread::Builder::new()
                .name(format!("kvwatch-kafka-parse-{i}"))
                .spawn(move || {
                    let mut open = Parsed::new();
                    for job in rx {
                        match job {
                            Job::Message {
                                topic,
                                partition,
                                offset,
                                payload,
                                generation,
                            } => parse_one(
                                &env,
                                generation,
                                &mut open,
                                &topic,
                                partition,
                                offset,
                                payload.as_deref(),
                            ),
                            Job::Flush(reply) => {
                                let _ = reply.send(std::mem::replace(&mut open, Parsed::new()));
                            }
                        }
                    }
                })?;
            senders.push(tx);
            handles.push(h);
        }
        Ok(Pool {
            senders,
            threads: handles,
            next: 0,
            topics: BTreeMap::new(),
        })
    }

    /// Hands a message to the next thread (waits while that thread is 256 messages behind).
    pub fn submit(
        &mut self,
        generation: u64,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
    ) {
        let topic = match self.topics.get(topic) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(topic);
                self.topics.insert(topic.to_owned(), t.clone());
                t
            }
        };
        let job = Job::Message {
            topic,
            partition,
            offset,
            payload: payload.map(<[u8]>::to_vec),
            generation,
        };
        let i = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        // A parser thread only ends with the pool; a send cannot fail before that.
        let _ = self.senders[i].send(job);
    }

    /// Asks every thread for what it parsed since the last flush. Each answers once it has
    /// parsed the messages handed to it before: the caller may go on submitting the next
    /// batch's messages meanwhile, and waits on the receivers only when it needs the parts.
    pub fn flush(&self) -> Vec<mpsc::Receiver<Parsed>> {
        self.senders
            .iter()
            .map(|s| {
                let (tx, rx) = mpsc::sync_channel(1);
                let _ = s.send(Job::Flush(tx));
                rx
            })
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.senders.clear();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ParseEnv;

    #[test]
    fn a_batch_polled_before_any_parse_is_sized_by_its_bytes() {
        let env = ParseEnv::new(1 << 20, None);
        // 30 messages of 20 records (~14 KB each) queued, none parsed yet: the estimate must
        // see hundreds of records, not one per message.
        assert!(env.batch_records(30, 30 * 14_000) >= 400);
        // Tiny messages still count one record each.
        assert_eq!(env.batch_records(50, 50), 50);
        // Once parsed, the real bytes per record take over and parsed records are exact.
        env.parsed(0, 20, 14_000);
        assert_eq!(env.batch_records(1, 14_000), 20);
        assert_eq!(env.batch_records(2, 28_000), 40);
        env.reset();
        assert_eq!(env.batch_records(0, 0), 0);
        // A message of the batch just cut, parsed late, does not count toward the next.
        env.parsed(0, 20, 14_000);
        assert_eq!(env.batch_records(0, 0), 0);
    }
}
