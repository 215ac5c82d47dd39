//! Parse + normalise to Arrow, on generated realistic records (no I/O, no Parquet), next to
//! floors measured on the same lines and machine: kvwatch's scanner and serde_json splitting
//! each record into its top-level members (the least any parser must do), and serde_json
//! decoding it into a `serde_json::Value`. A second group, `store`, times the store's share of
//! an ingest on its own: the same records as Arrow batches, deduplicated and written as zstd
//! Parquet into a fresh data directory.
//! `cargo bench -p kvwatch-ingest --bench parse`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::record_batch::RecordBatch;
use kvwatch_ingest::activity::ActivityRow;
use kvwatch_ingest::audit::EventRow;
use kvwatch_ingest::batch::{Columns, events_columns, push_event};
use kvwatch_ingest::framing::Framer;
use kvwatch_ingest::parse::{Parser, RowSink};
use kvwatch_ingest::schema::Table;
use kvwatch_ingest::store::{StoreWriter, WriteOptions};
use std::hint::black_box;

struct ToArrow {
    cols: Columns,
    batches: usize,
    /// Keeps the finished batches (for the store bench) instead of dropping them.
    kept: Option<Vec<RecordBatch>>,
}

impl RowSink for ToArrow {
    fn event(&mut self, row: &EventRow<'_>, source: &str) {
        push_event(&mut self.cols, row, source, 0);
        if self.cols.len() >= 32 * 1024 {
            let b = self.cols.finish().unwrap();
            match &mut self.kept {
                Some(kept) => kept.push(b),
                None => drop(black_box(b)),
            }
            self.batches += 1;
        }
    }
    fn activity(&mut self, _row: &ActivityRow, _source: &str) {}
    fn quarantine(&mut self, _source: &str, reason: &str, _raw: &str) {
        panic!("generated input must parse: {reason}");
    }
}

/// A record split into borrowed keys and undecoded values by serde_json: the least work any
/// serde_json-based parser does.
struct SerdeSplit<'a>(Vec<(&'a str, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for SerdeSplit<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SerdeSplit<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(16);
                while let Some(k) = m.next_key::<&'de str>()? {
                    v.push((k, m.next_value()?));
                }
                Ok(SerdeSplit(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn corpus() -> (Vec<u8>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = kvwatch_datasets::GenConfig {
        days: 2,
        format: kvwatch_datasets::OutputFormat::Jsonl,
        attacks: Vec::new(),
        ..Default::default()
    };
    kvwatch_datasets::generate(&cfg, dir.path(), |_, _| {}).unwrap();
    let mut data = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir.path().join("jsonl"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        data.extend(std::fs::read(f).unwrap());
    }
    let lines = data.iter().filter(|b| **b == b'\n').count();
    (data, lines)
}

fn bench(c: &mut Criterion) {
    let (data, lines) = corpus();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(lines as u64));
    g.sample_size(10);
    // One sink for all iterations, as an ingest keeps one per parser thread: its builders
    // restart each full batch with that batch's capacity instead of growing from zero.
    let mut sink = ToArrow {
        cols: events_columns(),
        batches: 0,
        kept: None,
    };
    g.bench_function("jsonl_to_arrow", |b| {
        b.iter(|| {
            let mut p = Parser::new(&mut sink, "bench");
            let mut f = Framer::new(&data[..]);
            while let Some(frame) = f.next_frame().unwrap() {
                p.frame(&frame);
            }
            assert_eq!(p.counts.events as usize, lines);
            // Rows past the last full batch carry over to the next iteration, as in a stream.
        })
    });
    let text = std::str::from_utf8(&data).unwrap();
    g.bench_function("serde_json_split_members", |b| {
        b.iter(|| {
            let mut members = 0;
            for line in text.lines() {
                let obj: SerdeSplit<'_> = serde_json::from_str(line).unwrap();
                members += obj.0.len();
            }
            black_box(members)
        })
    });
    g.bench_function("scan_split_members", |b| {
        b.iter(|| {
            let mut members = 0;
            for line in text.lines() {
                members += kvwatch_ingest::scan::RawObject::parse(line)
                    .unwrap()
                    .fields
                    .len();
            }
            black_box(members)
        })
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            let mut members = 0;
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                members += v.as_object().map_or(0, |o| o.len());
            }
            black_box(members)
        })
    });
    g.finish();

    // The store's share of an ingest: the same records, already in Arrow batches of the ingest's
    // size, appended (dedup included) and committed as zstd Parquet into a fresh data directory.
    let mut sink = ToArrow {
        cols: events_columns(),
        batches: 0,
        kept: Some(Vec::new()),
    };
    let mut p = Parser::new(&mut sink, "bench");
    let mut f = Framer::new(&data[..]);
    while let Some(frame) = f.next_frame().unwrap() {
        p.frame(&frame);
    }
    let mut kept = sink.kept.take().unwrap();
    kept.push(sink.cols.finish().unwrap());
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(lines as u64));
    g.sample_size(10);
    g.bench_function("append_commit_events", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut w = StoreWriter::open(dir.path(), WriteOptions::default()).unwrap();
            for batch in &kept {
                w.append(Table::Events, batch).unwrap();
            }
            w.commit(None).unwrap();
            assert_eq!(w.stats().events as usize, lines);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
