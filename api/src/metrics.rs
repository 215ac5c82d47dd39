//! `/metrics`: the service's counters in the Prometheus text format.

use crate::forward::SinkStatus;
use crate::health::Disk;
use crate::state::Shared;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A per-sink metric: name, type, help, and how to read it.
type SinkFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SinkStatus) -> i64,
);

pub(crate) async fn metrics(State(s): State<Shared>) -> Response {
    let mut out = String::new();
    out.push_str("# TYPE kvwatch_http_requests_total counter\n");
    for ((route, status), n) in s.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(
            out,
            "kvwatch_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# TYPE kvwatch_http_denied_total counter\nkvwatch_http_denied_total {}",
        s.denied.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP kvwatch_disk_writable 1 while the data directory takes writes\n# TYPE kvwatch_disk_writable gauge\nkvwatch_disk_writable {}",
        i64::from(s.disk.state() == Disk::Writable)
    );
    if let Some(l) = &s.leader {
        let _ = writeln!(
            out,
            "# HELP kvwatch_leader 1 while this node holds the leadership lease\n# TYPE kvwatch_leader gauge\nkvwatch_leader{{node=\"{}\"}} {}\n# HELP kvwatch_leader_epoch epoch of this node's latest term (0: never led)\n# TYPE kvwatch_leader_epoch gauge\nkvwatch_leader_epoch {}\n# TYPE kvwatch_leader_terms_total counter\nkvwatch_leader_terms_total {}",
            l.node
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n"),
            i64::from(l.leading.load(Ordering::Acquire)),
            l.epoch.load(Ordering::Acquire),
            l.terms.load(Ordering::Relaxed),
        );
    }
    let m = &s.sql.metrics;
    for (name, v, help) in [
        ("sql_queries_total", &m.queries, "analyst queries received"),
        ("sql_failed_total", &m.failed, "queries refused or failed"),
        (
            "sql_timeouts_total",
            &m.timeouts,
            "queries cancelled at the deadline",
        ),
        (
            "sql_memory_limited_total",
            &m.memory_limited,
            "queries stopped at the memory limit",
        ),
        (
            "sql_worker_crashes_total",
            &m.crashed,
            "workers that ended without an answer",
        ),
        (
            "sql_busy_total",
            &m.busy,
            "queries refused because every worker was busy",
        ),
        (
            "sql_workers_started_total",
            &m.spawned,
            "worker processes started",
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP kvwatch_{name} {help}\n# TYPE kvwatch_{name} counter\nkvwatch_{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    if let Some(k) = &s.kafka {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, v, help) in [
            ("kafka_messages_total", g(&k.messages), "messages received"),
            (
                "kafka_records_total",
                g(&k.records),
                "records stored or quarantined",
            ),
            ("kafka_events_total", g(&k.events), "audit events stored"),
            (
                "kafka_quarantined_total",
                g(&k.quarantined),
                "quarantine rows stored",
            ),
            (
                "kafka_duplicates_total",
                g(&k.duplicates),
                "rows dropped as duplicates",
            ),
            (
                "kafka_redelivered_skipped_total",
                g(&k.replayed_skipped),
                "messages below the stored position",
            ),
            ("kafka_batches_total", g(&k.batches), "batches committed"),
            (
                "kafka_dead_lettered_total",
                g(&k.dead_lettered),
                "copies sent to the dead-letter topic",
            ),
            (
                "kafka_offset_gap_messages_total",
                g(&k.offset_gap_messages),
                "messages missing from the log",
            ),
            ("kafka_errors_total", g(&k.kafka_errors), "client errors"),
            (
                "kafka_store_stalled",
                g(&k.store_stalled),
                "1 while the store refuses batches",
            ),
            (
                "kafka_store_retries_total",
                g(&k.store_retries),
                "batches tried again after the store refused them",
            ),
            (
                "kafka_fenced_batches_total",
                g(&k.fenced_batches),
                "batches another node had already stored, dropped and read again from the store's positions",
            ),
            (
                "kafka_last_batch_latency_ms",
                g(&k.last_batch_latency_ms),
                "first message to durable, last batch",
            ),
        ] {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP kvwatch_{name} {help}\n# TYPE kvwatch_{name} {kind}\nkvwatch_{name} {v}"
            );
        }
        out.push_str("# TYPE kvwatch_kafka_consumer_lag gauge\n");
        for (tp, lag) in k.lag() {
            let _ = writeln!(
                out,
                "kvwatch_kafka_consumer_lag{{partition=\"{tp}\"}} {lag}"
            );
        }
    }
    if let Some(d) = &s.detect {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, v, help) in [
            (
                "detect_passes_total",
                g(&d.passes),
                "detection passes completed",
            ),
            (
                "detect_pass_failures_total",
                g(&d.failures),
                "passes that failed (retried)",
            ),
            (
                "detect_rule_failures_total",
                g(&d.rule_failures),
                "rule evaluations that failed in a completed pass (their ranges are retried)",
            ),
            (
                "detect_alerts_created_total",
                g(&d.created),
                "alerts opened",
            ),
            (
                "detect_alerts_updated_total",
                g(&d.updated),
                "occurrences updated by late or longer activity",
            ),
            (
                "detect_alerts_folded_total",
                g(&d.folded),
                "occurrences folded into open alerts",
            ),
            (
                "detect_files_total",
                g(&d.new_files),
                "store files evaluated",
            ),
            (
                "detect_last_pass_ms",
                g(&d.last_pass_ms),
                "duration of the last pass",
            ),
            (
                "detect_last_pass_timestamp_seconds",
                g(&d.last_pass_end),
                "end of the last pass",
            ),
            (
                "detect_watermark_timestamp_seconds",
                g(&d.watermark),
                "event time before which the store is complete (rules about absence judge up to it)",
            ),
        ] {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP kvwatch_{name} {help}\n# TYPE kvwatch_{name} {kind}\nkvwatch_{name} {v}"
            );
        }
    }
    if !s.sinks.is_empty() {
        let head = s
            .read_alerts(|st| st.head_seq())
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        let dead: BTreeMap<String, i64> = s
            .read_alerts(|st| st.dead_letter_counts())
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let families: [SinkFamily; 9] = [
            ("sink_delivered_total", "counter", "alerts delivered", |x| {
                x.delivered.load(Ordering::Relaxed) as i64
            }),
            ("sink_requests_total", "counter", "delivery attempts", |x| {
                x.requests.load(Ordering::Relaxed) as i64
            }),
            (
                "sink_retries_total",
                "counter",
                "failed attempts retried",
                |x| x.retries.load(Ordering::Relaxed) as i64,
            ),
            (
                "sink_dead_lettered_total",
                "counter",
                "alerts refused for good",
                |x| x.dead_lettered.load(Ordering::Relaxed) as i64,
            ),
            (
                "sink_skipped_total",
                "counter",
                "alerts below min_severity",
                |x| x.skipped.load(Ordering::Relaxed) as i64,
            ),
            (
                "sink_truncated_total",
                "counter",
                "UDP syslog messages cut",
                |x| x.truncated.load(Ordering::Relaxed) as i64,
            ),
            (
                "sink_cursor",
                "gauge",
                "last change delivered or dead-lettered",
                |x| x.cursor.load(Ordering::Relaxed),
            ),
            (
                "sink_last_success_timestamp_seconds",
                "gauge",
                "time of the last delivery",
                |x| x.last_success.load(Ordering::Relaxed),
            ),
            ("sink_up", "gauge", "1 while the sink thread runs", |x| {
                i64::from(!x.stopped.load(Ordering::Relaxed))
            }),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(
                out,
                "# HELP kvwatch_{name} {help}\n# TYPE kvwatch_{name} {kind}"
            );
            for x in &s.sinks {
                let _ = writeln!(out, "kvwatch_{name}{{sink=\"{}\"}} {}", x.name, get(x));
            }
        }
        out.push_str(
            "# HELP kvwatch_sink_lag changes not yet delivered\n# TYPE kvwatch_sink_lag gauge\n",
        );
        for x in &s.sinks {
            let lag = (head - x.cursor.load(Ordering::Relaxed)).max(0);
            let _ = writeln!(out, "kvwatch_sink_lag{{sink=\"{}\"}} {lag}", x.name);
        }
        out.push_str("# HELP kvwatch_sink_dead_letters alerts on the dead-letter list\n# TYPE kvwatch_sink_dead_letters gauge\n");
        for x in &s.sinks {
            let n = dead.get(&x.name).copied().unwrap_or(0);
            let _ = writeln!(out, "kvwatch_sink_dead_letters{{sink=\"{}\"}} {n}", x.name);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
