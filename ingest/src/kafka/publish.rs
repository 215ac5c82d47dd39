//! `kvwatch publish`: sends log files to a topic the way Azure diagnostic settings do — records
//! grouped into `{"records":[…]}` envelope messages of bounded size, keys spread over the
//! partitions. Input that cannot be split into records is sent verbatim as a message of its
//! own, so that the consumer quarantines it with a reason instead of it vanishing here.

use super::KafkaError;
use super::config::ClientOptions;
use crate::files::{Input, open};
use crate::framing::{DEFAULT_MAX_FRAME, Framer};
use rdkafka::ClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Settings of `kvwatch publish`.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub client: ClientOptions,
    pub topic: String,
    /// Envelope messages are cut below this size (Event Hubs accepts up to 1 MB).
    pub message_bytes: usize,
    /// Send every input line verbatim as one message (replaying captured messages, poison tests).
    pub raw: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            client: ClientOptions::default(),
            topic: String::new(),
            message_bytes: 512 * 1024,
            raw: false,
        }
    }
}

/// What a publish run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishReport {
    pub files: u64,
    pub messages: u64,
    pub records: u64,
    /// Fragments that were not JSON records, sent verbatim.
    pub unsplittable: u64,
    pub bytes: u64,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
}

#[derive(Default)]
struct Delivery {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Delivery {}
impl ProducerContext for Delivery {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

struct Sender {
    producer: BaseProducer<Delivery>,
    topic: String,
    seq: u64,
    report: PublishReport,
}

impl Sender {
    fn send(&mut self, body: &[u8], records: u64) -> Result<(), KafkaError> {
        // Round-robin keys: consecutive messages land on different partitions, as Azure's
        // keyless sends do, while a replay of the same archive is laid out the same way.
        let key = self.seq.to_string();
        self.seq += 1;
        let mut rec = BaseRecord::to(&self.topic).key(&key).payload(body);
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    rec = r;
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.producer.poll(Duration::ZERO);
        self.report.messages += 1;
        self.report.records += records;
        self.report.bytes += body.len() as u64;
        Ok(())
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    records: Option<Vec<&'a RawValue>>,
}

/// Splits one JSON text into record texts: an envelope's records, an array's elements, or the
/// object itself. `None` when it is not JSON of those shapes.
fn records_of(text: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<&RawValue>() {
        let v = v.ok()?;
        let s = v.get().trim_start();
        if s.starts_with('[') {
            let items: Vec<&RawValue> = serde_json::from_str(v.get()).ok()?;
            out.extend(items.iter().map(|r| r.get()));
        } else if s.starts_with('{') {
            match serde_json::from_str::<Envelope<'_>>(v.get()) {
                Ok(Envelope { records: Some(r) }) => out.extend(r.iter().map(|r| r.get())),
                Ok(Envelope { records: None }) => out.push(v.get()),
                Err(_) => return None,
            }
        } else {
            return None;
        }
    }
    Some(out)
}

/// Publishes inputs and waits until the broker acknowledged every message. Any message the
/// broker did not acknowledge makes the whole run an error.
pub fn publish(
    inputs: Vec<Input>,
    opts: &PublishOptions,
    mut progress: impl FnMut(&PublishReport),
) -> Result<PublishReport, KafkaError> {
    if opts.topic.is_empty() {
        return Err(KafkaError::Config("no topic given (--topic)".into()));
    }
    let start = Instant::now();
    let max_msg = opts.message_bytes.max(1024);
    let cfg = opts.client.client_config(&[
        (
            "client.id",
            format!("kvwatch-publish-{}", std::process::id()),
        ),
        ("acks", "all".into()),
        ("linger.ms", "20".into()),
        ("queue.buffering.max.kbytes", "131072".into()),
        // Room for one oversized record sent alone; Event Hubs rejects more than 1 MB itself.
        (
            "message.max.bytes",
            (max_msg * 2 + 4096).max(1_000_000).to_string(),
        ),
    ])?;
    let producer: BaseProducer<Delivery> = cfg.create_with_context(Delivery::default())?;
    let mut s = Sender {
        producer,
        topic: opts.topic.clone(),
        seq: 0,
        report: PublishReport::default(),
    };
    let mut body: Vec<u8> = Vec::with_capacity(max_msg + 1024);
    let mut in_body = 0u64;
    let mut last_progress = Instant::now();
    for input in inputs {
        s.report.files += 1;
        let (reader, damage) = open(&input, false)?.into_parts();
        let framer = Framer::with_max(reader, DEFAULT_MAX_FRAME);
        let mut framer = if opts.raw {
            framer.lines_only()
        } else {
            framer
        };
        while let Some(frame) = framer.next_frame()? {
            if opts.raw {
                if !frame.bytes.iter().all(u8::is_ascii_whitespace) {
                    s.send(frame.bytes, 1)?;
                }
                continue;
            }
            let text = std::str::from_utf8(frame.bytes).ok();
            let records = if frame.oversized.is_some() {
                None
            } else {
                text.and_then(records_of)
            };
            let Some(records) = records else {
                s.report.unsplittable += 1;
                s.send(frame.bytes, 1)?;
                continue;
            };
            for r in records {
                if in_body > 0 && body.len() + r.len() + 2 > max_msg {
                    body.extend_from_slice(b"]}");
                    s.send(&body, in_body)?;
                    body.clear();
                    in_body = 0;
                }
                if in_body == 0 {
                    body.extend_from_slice(b"{\"records\":[");
                } else {
                    body.push(b',');
                }
                body.extend_from_slice(r.as_bytes());
                in_body += 1;
            }
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                progress(&s.report);
            }
        }
        // Records read before the damage were sent; the file's loss is reported, not hidden.
        if let Some(why) = damage.as_ref().and_then(|d| d.get()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {why}", input.label()),
            )
            .into());
        }
    }
    if in_body > 0 {
        body.extend_from_slice(b"]}");
        s.send(&body, in_body)?;
    }
    s.producer.flush(Duration::from_secs(120))?;
    let d = s.producer.context();
    let failed = d.failed.load(Ordering::Relaxed);
    let ok = d.ok.load(Ordering::Relaxed);
    if failed > 0 || ok != s.report.messages {
        return Err(KafkaError::Delivery {
            sent: s.report.messages,
            failed: s.report.messages - ok,
            first: d
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "not acknowledged before the flush timeout".into()),
        });
    }
    s.report.elapsed_secs = start.elapsed().as_secs_f64();
    s.report.records_per_sec = s.report.records as f64 / s.report.elapsed_secs.max(1e-9);
    Ok(s.report)
}

#[cfg(test)]
mod tests {
    use super::records_of;

    #[test]
    fn records_of_every_shape() {
        assert_eq!(
            records_of(r#"{"records":[{"a":1},{"b":2}]}"#).unwrap(),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(records_of(r#"[{"a":1}, {"b":2}]"#).unwrap().len(), 2);
        assert_eq!(records_of(r#"{"a":1}"#).unwrap(), [r#"{"a":1}"#]);
        assert_eq!(records_of(r#"{"a":1} {"b":2}"#).unwrap().len(), 2);
        assert!(records_of("{broken").is_none());
        assert!(records_of("42").is_none());
    }
}
