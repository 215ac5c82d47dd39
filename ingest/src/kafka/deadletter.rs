//! The dead-letter topic: a copy of every message whose content was quarantined, with where it
//! came from and why, for whoever fixes the producer.

use super::KafkaError;
use super::config::ClientOptions;
use super::metrics::Metrics;
use rdkafka::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use std::sync::Arc;
use std::time::Duration;

pub(super) struct DeadLetter {
    topic: String,
    producer: BaseProducer<DlqContext>,
}

struct DlqContext {
    metrics: Arc<Metrics>,
}
impl ClientContext for DlqContext {}
impl ProducerContext for DlqContext {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => Metrics::add(&self.metrics.dead_lettered, 1),
            Err((e, _)) => {
                Metrics::add(&self.metrics.dead_letter_failures, 1);
                tracing::error!(error = %e, "dead-letter copy not delivered (the quarantine table still holds it)");
            }
        }
    }
}

impl DeadLetter {
    pub(super) fn new(
        client: &ClientOptions,
        topic: &str,
        metrics: Arc<Metrics>,
    ) -> Result<DeadLetter, KafkaError> {
        let cfg = client.client_config(&[
            ("client.id", format!("kvwatch-dlq-{}", std::process::id())),
            ("linger.ms", "50".into()),
        ])?;
        let producer = cfg.create_with_context(DlqContext { metrics })?;
        Ok(DeadLetter {
            topic: topic.to_owned(),
            producer,
        })
    }

    /// Waits until every copy sent so far is delivered (or failed).
    pub(super) fn flush(&self, timeout: Duration) -> rdkafka::error::KafkaResult<()> {
        self.producer.flush(timeout)
    }
}

pub(super) fn dead_letter(
    d: &DeadLetter,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: Option<&[u8]>,
    reason: &str,
) {
    let part = partition.to_string();
    let off = offset.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "kvwatch-source-topic",
            value: Some(topic),
        })
        .insert(Header {
            key: "kvwatch-source-partition",
            value: Some(&part),
        })
        .insert(Header {
            key: "kvwatch-source-offset",
            value: Some(&off),
        })
        .insert(Header {
            key: "kvwatch-reason",
            value: Some(reason),
        });
    let key = format!("{topic}/{partition}@{offset}");
    let mut record = BaseRecord::to(&d.topic)
        .key(&key)
        .payload(payload.unwrap_or_default())
        .headers(headers);
    loop {
        match d.producer.send(record) {
            Ok(()) => break,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                d.producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => {
                Metrics::add(&d.producer.context().metrics.dead_letter_failures, 1);
                tracing::error!(error = %e, "dead-letter copy not queued");
                break;
            }
        }
    }
    d.producer.poll(Duration::ZERO);
}
