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
    pub records: AtomicU64,
    /// Messages of the open batch parsed so far (all threads).
    pub messages: AtomicU64,
}

impl ParseEnv {
    /// Records in the open batch of `submitted` messages: those parsed, plus the messages
    /// still queued at the batch's records-per-message so far (exact without a pool).
    pub fn batch_records(&self, submitted: u64) -> u64 {
        let records = self.records.load(Ordering::Relaxed);
        let parsed = self.messages.load(Ordering::Relaxed);
        let per_message = records.checked_div(parsed).unwrap_or(1);
        records + submitted.saturating_sub(parsed) * per_message.max(1)
    }

    /// A batch was cut: count the next one from zero.
    pub fn reset(&self) {
        self.records.store(0, Ordering::Relaxed);
        self.messages.store(0, Ordering::Relaxed);
    }
}

/// Parses one message into `into`; a message with quarantined content is logged and, when a
/// dead-letter topic is set, copied there.
pub(super) fn parse_one(
    env: &ParseEnv,
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
    env.records.fetch_add(c.records, Ordering::Relaxed);
    env.messages.fetch_add(1, Ordering::Relaxed);
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
                            } => parse_one(
                                &env,
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
    pub fn submit(&mut self, topic: &str, partition: i32, offset: i64, payload: Option<&[u8]>) {
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
        };
        let i = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        // A parser thread only ends with the pool; a send cannot fail before that.
        let _ = self.senders[i].send(job);
    }

    /// Everything parsed since the last flush, one part per thread.
    pub fn flush(&self) -> Vec<Parsed> {
        let replies: Vec<_> = self
            .senders
            .iter()
            .map(|s| {
                let (tx, rx) = mpsc::sync_channel(1);
                let _ = s.send(Job::Flush(tx));
                rx
            })
            .collect();
        replies
            .into_iter()
            .filter_map(|rx| rx.recv().ok())
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
