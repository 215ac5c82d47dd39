//! Files through a broker and back: publish inputs as Azure-shaped messages, consume them into
//! a store until every published record is stored and the topic has gone quiet, and report it
//! like a file ingest. The demo's Kafka path.

use super::{ClientOptions, ConsumeOptions, KafkaError, Metrics, PublishOptions, consume, publish};
use crate::data::DataDir;
use crate::files::{IngestReport, Input};
use crate::parse::ParseCounts;
use crate::store::{WriteOptions, WriteStats};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the topic may stay quiet with records still missing before the round trip fails.
const QUIET_LIMIT: Duration = Duration::from_secs(120);

/// Publishes `inputs` to `topic` and consumes them back into the store in `data`.
pub fn round_trip(
    data: &DataDir,
    store: WriteOptions,
    inputs: Vec<Input>,
    brokers: &str,
    topic: &str,
) -> Result<IngestReport, KafkaError> {
    let started = Instant::now();
    let client = ClientOptions {
        brokers: brokers.to_owned(),
        properties: Vec::new(),
    };
    let files = inputs.len() as u64;
    let published = publish(
        inputs,
        &PublishOptions {
            client: client.clone(),
            topic: topic.to_owned(),
            ..Default::default()
        },
        |_| {},
    )?;
    let opts = ConsumeOptions {
        client,
        topics: vec![topic.to_owned()],
        // A group of its own: this run reads the topic from its start.
        group: format!("kvwatch-demo-{}", crate::store::now_nanos()),
        batch_linger: Duration::from_millis(500),
        compact_interval: None,
        ..Default::default()
    };
    let writer = data.writer(store.clone())?;
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let (m, s) = (metrics.clone(), stop.clone());
    let handle = std::thread::spawn(move || consume(writer, opts, m, s, &mut |_| {}));
    let mut last = (0, Instant::now());
    let mut stalled = None;
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        let records = metrics.records.load(Ordering::Relaxed);
        let messages = metrics.messages.load(Ordering::Relaxed);
        if messages != last.0 {
            last = (messages, Instant::now());
        }
        if records >= published.records && last.1.elapsed() >= Duration::from_secs(2) {
            break;
        }
        if last.1.elapsed() >= QUIET_LIMIT {
            stalled = Some(records);
            break;
        }
    }
    stop.cancel();
    let r = handle
        .join()
        .map_err(|_| KafkaError::Writer("the consumer thread panicked".into()))??;
    if let Some(records) = stalled {
        return Err(KafkaError::Writer(format!(
            "consumed {records} of {} published records, then nothing for {} s",
            published.records,
            QUIET_LIMIT.as_secs()
        )));
    }
    let mut writer = data.writer(store)?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(writer.compact())?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(IngestReport {
        files,
        parsed: ParseCounts {
            records: r.records,
            events: r.events,
            activity: r.activity,
            quarantined: r.quarantined,
            ..Default::default()
        },
        stored: WriteStats {
            events: r.events,
            activity: r.activity,
            quarantine: r.quarantined,
            duplicates: r.duplicates,
            files_written: r.batches,
        },
        elapsed_secs: elapsed,
        records_per_sec: r.records as f64 / elapsed.max(1e-9),
        ..Default::default()
    })
}
