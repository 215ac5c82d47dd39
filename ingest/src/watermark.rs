//! Event-time progress: how far the store's data is complete.
//!
//! The model is the Flink/Beam one. Every streaming source (one Kafka partition) records, in
//! the same manifest commit as its rows, the newest event time it has delivered and when (wall
//! clock) it last delivered anything: a [`SourceMark`]. The store's **watermark** is the event
//! time before which no more records are expected:
//!
//! * with active streaming sources: the oldest of their newest event times, minus the allowed
//!   lateness (Azure delivers resource logs minutes late and out of order within a partition);
//! * a source that has delivered nothing for `idle_after` is idle and does not hold the
//!   watermark back (an Event Hubs partition that no vault hashes to would otherwise stop
//!   detection);
//! * with no active streaming source (files only, or every partition idle): just after the
//!   newest event time in the store. A file is committed whole, so what the store holds is all there is.
//!
//! Rules that judge what is *missing* (silence) judge only event time before the watermark, so
//! records that are late or on a lagging partition never make a vault look silent. Rules that
//! count what is present fire at once and update as late data arrives.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One streaming source's progress, as committed with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMark {
    /// Newest event time (ns) the source has delivered.
    pub max_time: i64,
    /// Wall clock (ns) of the last commit that carried rows from the source (or, for a
    /// source that has delivered nothing yet, of when it was first assigned).
    pub updated_at: i64,
    /// The source had records waiting to be read at the last commit (a lagging partition):
    /// it is never idle, however long since it delivered.
    #[serde(default)]
    pub behind: bool,
}

/// How the watermark is derived from the marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkPolicy {
    /// How late (in event time) a record may arrive behind its source's newest record.
    pub lateness: Duration,
    /// A source silent for this long (wall clock) is idle and does not hold the watermark.
    pub idle_after: Duration,
}

impl Default for WatermarkPolicy {
    fn default() -> Self {
        Self {
            // Key Vault audit records arrive up to ~10 minutes late; Azure Monitor documents
            // resource-log latency of up to about 15 minutes.
            lateness: Duration::from_secs(15 * 60),
            idle_after: Duration::from_secs(5 * 60),
        }
    }
}

/// The store's event-time completeness at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Watermark {
    /// Event time (ns) before which the data is taken to be complete.
    pub complete_to: i64,
    /// The source holding the watermark back, when it is a streaming source.
    pub held_by: Option<String>,
    /// Streaming sources that are active / idle.
    pub active_sources: usize,
    pub idle_sources: usize,
}

fn ns(d: Duration) -> i64 {
    (d.as_nanos() as i128).min(i64::MAX as i128) as i64
}

/// The watermark of a store whose streaming sources stand at `marks` and whose events span
/// `range` (oldest, newest), under `policy` at wall-clock `now` (ns); `None` for an empty
/// store. It never falls below the oldest stored event: a partition assigned but silent holds
/// everything back, which is "nothing complete", not a date in 1677.
pub fn watermark<'a>(
    marks: impl IntoIterator<Item = (&'a String, &'a SourceMark)>,
    range: Option<(i64, i64)>,
    policy: &WatermarkPolicy,
    now: i64,
) -> Option<Watermark> {
    let (oldest, newest) = range?;
    // Exclusive: the newest stored event itself is complete.
    let newest = newest.saturating_add(1);
    let idle_after = ns(policy.idle_after);
    let (active, idle): (Vec<_>, Vec<_>) = marks
        .into_iter()
        .partition(|(_, m)| m.behind || now.saturating_sub(m.updated_at) < idle_after);
    let slowest = active.iter().min_by_key(|(k, m)| (m.max_time, *k));
    let wm = match slowest {
        Some((key, m)) => Watermark {
            complete_to: m
                .max_time
                .saturating_sub(ns(policy.lateness))
                .min(newest)
                .max(oldest),
            held_by: Some((*key).clone()),
            active_sources: active.len(),
            idle_sources: idle.len(),
        },
        None => Watermark {
            complete_to: newest,
            held_by: None,
            active_sources: 0,
            idle_sources: idle.len(),
        },
    };
    Some(wm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const MIN: i64 = 60 * 1_000_000_000;

    fn at(newest: i64, marks: &[(&str, i64, i64)], now: i64) -> Option<Watermark> {
        let marks: BTreeMap<String, SourceMark> = marks
            .iter()
            .map(|(k, t, at)| {
                (
                    (*k).to_owned(),
                    SourceMark {
                        max_time: *t,
                        updated_at: *at,
                        behind: false,
                    },
                )
            })
            .collect();
        watermark(&marks, Some((0, newest)), &WatermarkPolicy::default(), now)
    }

    #[test]
    fn files_only_are_complete_to_their_newest_event() {
        let w = at(500 * MIN, &[], 0).unwrap();
        assert_eq!(w.complete_to, 500 * MIN + 1);
        assert_eq!(w.held_by, None);
        let none: BTreeMap<String, SourceMark> = BTreeMap::new();
        assert_eq!(watermark(&none, None, &WatermarkPolicy::default(), 0), None);
    }

    #[test]
    fn the_slowest_active_partition_minus_lateness_holds_it() {
        let now = 1000 * MIN;
        let marks = [
            ("kafka:kv/0", 500 * MIN, now - MIN),
            ("kafka:kv/1", 300 * MIN, now - 2 * MIN),
            // Idle for an hour: does not hold the watermark back.
            ("kafka:kv/2", 100 * MIN, now - 60 * MIN),
        ];
        let w = at(500 * MIN, &marks, now).unwrap();
        assert_eq!(w.complete_to, 285 * MIN);
        assert_eq!(w.held_by.as_deref(), Some("kafka:kv/1"));
        assert_eq!((w.active_sources, w.idle_sources), (2, 1));
        // Once every partition is idle, all that arrived is complete.
        let w = at(500 * MIN, &marks, now + 60 * MIN).unwrap();
        assert_eq!((w.complete_to, w.held_by), (500 * MIN + 1, None));
    }

    #[test]
    fn a_partition_that_delivered_nothing_holds_it_at_the_oldest_event() {
        let now = 1000 * MIN;
        let marks = [
            ("kafka:kv/0", 500 * MIN, now),
            ("kafka:kv/1", i64::MIN, now),
        ];
        let marks: BTreeMap<String, SourceMark> = marks
            .iter()
            .map(|(k, t, at)| {
                let m = SourceMark {
                    max_time: *t,
                    updated_at: *at,
                    behind: true,
                };
                ((*k).to_owned(), m)
            })
            .collect();
        let w = watermark(
            &marks,
            Some((200 * MIN, 500 * MIN)),
            &WatermarkPolicy::default(),
            now,
        )
        .unwrap();
        assert_eq!(w.complete_to, 200 * MIN);
        assert_eq!(w.held_by.as_deref(), Some("kafka:kv/1"));
    }
}
