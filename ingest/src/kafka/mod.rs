//! The Kafka / Azure Event Hubs source and the publisher that replays archives into a topic.
//!
//! Delivery guarantee: **effectively once into the store.** The consumer never trusts Kafka's
//! committed offsets for correctness. The next offset of every partition is written into the
//! store's manifest in the same atomic replacement that publishes the Parquet files holding the
//! rows up to that offset (the Quickwit pattern), so data and position cannot disagree:
//!
//! * crash before the manifest replacement: the new files are orphans, deleted on restart, and
//!   the manifest's old position makes the consumer read those messages again;
//! * crash after it: the position says they are stored, and the consumer starts after them.
//!
//! On every partition assignment the consumer seeks to the larger of the store's position and
//! the group's committed offset (another node may have stored past ours), and drops any message
//! below it. Kafka commits follow the store, for lag monitoring and for handing a partition to
//! another node; they are never ahead of what some store holds.
//!
//! [`consumer`] runs the loop, [`message`] turns one message body into rows, `parsepool`
//! parses message bodies on several threads, [`publish`] sends
//! files as Azure-shaped envelope messages, [`config`] holds client settings and secrets.

pub mod config;
pub mod consumer;
mod deadletter;
pub mod message;
mod metrics;
mod parsepool;
pub mod publish;
pub mod roundtrip;

pub use config::{ClientOptions, Property};
pub use consumer::{ConsumeOptions, ConsumeReport, Metrics, consume, spawn};
pub use publish::{PublishOptions, PublishReport, publish};
pub use roundtrip::round_trip;

pub use crate::fault::crash_point;
use crate::store::StoreError;

/// Errors of the Kafka source and publisher.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka configuration: {0}")]
    Config(String),
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the store writer stopped: {0}")]
    Writer(String),
    #[error(
        "publishing failed: {failed} of {sent} messages were not acknowledged by the broker (first error: {first})"
    )]
    Delivery {
        sent: u64,
        failed: u64,
        first: String,
    },
}

/// Manifest checkpoint key of a topic partition.
pub fn checkpoint_key(topic: &str, partition: i32) -> String {
    format!("kafka/{topic}/{partition}")
}

/// The Kafka positions a store's manifest holds: next offset to read per (topic, partition).
pub fn stored_positions(
    manifest: &crate::store::Manifest,
) -> std::collections::BTreeMap<(String, i32), i64> {
    manifest
        .checkpoints
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("kafka/")?;
            let (topic, part) = rest.rsplit_once('/')?;
            Some(((topic.to_owned(), part.parse().ok()?), v.as_i64()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_checkpoint_keys() {
        let mut m = crate::store::Manifest::default();
        m.checkpoints
            .insert(checkpoint_key("a/b", 3), serde_json::json!(17));
        m.checkpoints
            .insert("files/x".into(), serde_json::json!("other source"));
        let p = stored_positions(&m);
        assert_eq!(p.len(), 1);
        assert_eq!(p[&("a/b".to_owned(), 3)], 17);
    }
}
