//! Detection passes: backfill over an explicit range, and incremental runs that evaluate what
//! the event store gained since the last run, late data included.
//!
//! An incremental run compares the manifest with the files the alert store has covered. The
//! time ranges of the new files (merged when closer than a day) are evaluated by every rule,
//! which re-opens every window those events fall into, however old. Only after the alerts are
//! stored is the new file set recorded as covered, so a crash in between re-evaluates (and the
//! deterministic occurrence IDs make that harmless) instead of skipping.

use crate::anomaly::ModelConfig;
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::rule::Rule;
use crate::store::{AlertStore, AlertStoreError, ApplyStats};
use kvwatch_ingest::DataDir;
use kvwatch_ingest::Table;
use kvwatch_ingest::store::now_nanos;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Alerts(#[from] AlertStoreError),
    #[error(transparent)]
    Models(#[from] crate::anomaly::ModelError),
}

/// What one rule did in a pass.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    pub rule_id: String,
    pub occurrences: usize,
    #[serde(flatten)]
    pub stats: ApplyStats,
    pub elapsed_ms: u64,
    /// Bytes the rule's query wrote to disk because the detection memory pool was full: a
    /// rule that spills every pass runs slower than it would with a larger `--memory-mb`.
    pub spilled_bytes: u64,
}

/// What a detection pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DetectReport {
    /// `backfill`, `incremental` or `up-to-date`.
    pub mode: String,
    /// Evaluated event-time ranges, as RFC 3339 pairs.
    pub ranges: Vec<(String, String)>,
    /// The store's watermark: complete-data rules judged event time before it.
    pub watermark: Option<String>,
    #[serde(skip)]
    pub watermark_ns: Option<i64>,
    pub new_files: usize,
    /// Rules with new data that waited for their interval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    pub rules: Vec<RuleReport>,
    /// Rules whose evaluation failed in this pass (a query error, a memory pool too small):
    /// their ranges stay pending and the next pass evaluates them again; the other rules'
    /// alerts are stored meanwhile.
    pub failed: Vec<RuleFailure>,
    /// The behavioural models' pass, when enabled.
    pub models: Option<crate::anomaly::ModelReport>,
    #[serde(flatten)]
    pub totals: ApplyStats,
    pub elapsed_ms: u64,
}

/// A rule that failed in a pass, and why.
#[derive(Debug, Clone, Serialize)]
pub struct RuleFailure {
    pub rule_id: String,
    pub error: String,
}

/// Merges `[min, max]` intervals that overlap or lie within `gap` of each other.
pub fn merge_ranges(mut r: Vec<(i64, i64)>, gap: i64) -> Vec<(i64, i64)> {
    r.sort();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(gap) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// The behavioural models' entry in the alert store's `rule_state`.
const MODELS: &str = "anomaly-models";

/// How a detection pass runs.
#[derive(Debug, Clone, Default)]
pub struct PassOptions<'a> {
    /// The behavioural models' settings; `None` runs the rules only.
    pub models: Option<&'a ModelConfig>,
    /// Watermark policy and memory pool of the rule engine.
    pub engine: EngineOptions,
    /// Continuous detection: a rule evaluated less than its `interval` ago waits, and the
    /// ranges it did not evaluate are kept for its next run.
    pub honour_intervals: bool,
}

/// Evaluates one rule over `ranges` and stores its occurrences.
async fn evaluate_rule(
    engine: &Engine,
    rule: &Rule,
    ranges: &[(i64, i64)],
    alerts: &mut AlertStore,
) -> Result<RuleReport, DetectError> {
    let mut stats = ApplyStats::default();
    let mut n = 0;
    let mut spilled_bytes = 0;
    let started = Instant::now();
    for &(from, to) in ranges {
        let ev = engine.evaluate(rule, from, to).await?;
        n += ev.occurrences.len();
        spilled_bytes += ev.spilled_bytes as u64;
        stats += alerts.apply(&rule.meta(), &ev.occurrences, now_nanos())?;
        // A complete-data rule's verdicts on these windows are now final for the data the
        // store holds: what it no longer finds was contradicted by records that came late.
        if rule.doc.complete && ev.windows.1 > ev.windows.0 {
            let keep: std::collections::BTreeSet<&str> =
                ev.occurrences.iter().map(|o| o.id.as_str()).collect();
            stats.withdrawn +=
                alerts.withdraw(&rule.meta(), rule.id(), ev.windows, &keep, now_nanos())?;
        }
        alerts.record_run(
            rule.id(),
            now_nanos(),
            ev.windows,
            ev.occurrences.len(),
            ev.elapsed.as_millis() as u64,
        )?;
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(
        rule = rule.id(),
        occurrences = n,
        elapsed_ms,
        "rule.evaluated"
    );
    Ok(RuleReport {
        rule_id: rule.id().to_owned(),
        occurrences: n,
        stats,
        elapsed_ms,
        spilled_bytes,
    })
}

/// One rule's result with an engine failure (a query error, a memory pool too small, a run
/// past its deadline) recorded in `failed` instead of ending the pass: one rule's failure must
/// not blind the others. Store errors still end the pass.
fn contained(
    rule: &Rule,
    r: Result<RuleReport, DetectError>,
    failed: &mut Vec<RuleFailure>,
) -> Result<Option<RuleReport>, DetectError> {
    match r {
        Ok(r) => Ok(Some(r)),
        Err(DetectError::Engine(e)) => {
            tracing::error!(rule = rule.id(), error = %e, "detect.rule_failed");
            failed.push(RuleFailure {
                rule_id: rule.id().to_owned(),
                error: e.to_string(),
            });
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn fmt_ranges(r: &[(i64, i64)]) -> Vec<(String, String)> {
    use kvwatch_ingest::time::format_ns;
    r.iter()
        .map(|(a, b)| (format_ns(*a), format_ns(*b)))
        .collect()
}

/// Runs the models when enabled and adds their alert counts to `totals`.
async fn models_pass(
    root: &DataDir,
    models: Option<&ModelConfig>,
    alerts: &mut AlertStore,
    range: Option<(i64, i64)>,
    complete_to: Option<i64>,
    totals: &mut ApplyStats,
) -> Result<Option<crate::anomaly::ModelReport>, DetectError> {
    let Some(cfg) = models.filter(|m| m.enabled) else {
        return Ok(None);
    };
    let r = crate::anomaly::run_models(root, cfg, alerts, range, complete_to).await?;
    *totals += r.stats;
    Ok(Some(r))
}

/// Evaluates every rule over `[from, to)` (event time, ns), and the models (rebuilding their
/// baselines from the whole store) when `opts.models` is given.
pub async fn backfill(
    root: &DataDir,
    rules: &[Rule],
    opts: &PassOptions<'_>,
    from: i64,
    to: i64,
    alerts: &mut AlertStore,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<DetectReport, DetectError> {
    let started = Instant::now();
    let engine = Engine::open_with(root, &opts.engine, now_nanos())?;
    let ranges = vec![(from, to)];
    let mut reports = Vec::new();
    let mut totals = ApplyStats::default();
    let mut failed = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        progress(i, rules.len(), rule.id());
        // Rerunning the range evaluates a failed rule again.
        let Some(r) = contained(
            rule,
            evaluate_rule(&engine, rule, &ranges, alerts).await,
            &mut failed,
        )?
        else {
            continue;
        };
        totals += r.stats;
        reports.push(r);
    }
    progress(rules.len(), rules.len(), "");
    let wm = engine.watermark();
    let models = models_pass(
        root,
        opts.models,
        alerts,
        Some((from, to)),
        engine.stream_watermark(),
        &mut totals,
    )
    .await?;
    Ok(DetectReport {
        mode: "backfill".into(),
        ranges: fmt_ranges(&ranges),
        watermark: wm.map(kvwatch_ingest::time::format_ns),
        watermark_ns: wm,
        new_files: 0,
        deferred: Vec::new(),
        failed,
        rules: reports,
        models,
        totals,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Evaluates whatever the store gained since the last incremental run (everything, the first
/// time), and for complete-data rules whatever the watermark passed since, then records the
/// store's files as covered.
pub async fn incremental(
    root: &DataDir,
    rules: &[Rule],
    opts: &PassOptions<'_>,
    alerts: &mut AlertStore,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<DetectReport, DetectError> {
    let started = Instant::now();
    let now = now_nanos();
    let engine = Engine::open_with(root, &opts.engine, now)?;
    let covered = alerts.covered_files()?;
    let m = engine.manifest();
    let all: Vec<(String, i64, i64)> = [Table::Events, Table::Activity]
        .into_iter()
        .flat_map(|t| m.files(t).iter())
        .map(|f| (f.path.clone(), f.min_time, f.max_time))
        .collect();
    let new: Vec<(i64, i64)> = all
        .iter()
        .filter(|(p, _, _)| !covered.contains(p))
        .map(|(_, a, b)| (*a, b.saturating_add(1)))
        .collect();
    let new_files = new.len();
    let ranges = merge_ranges(new, DAY_NS);
    let wm = engine.watermark();
    let mut reports = Vec::new();
    let mut deferred = Vec::new();
    let mut failed = Vec::new();
    let mut evaluated: Vec<(i64, i64)> = Vec::new();
    let mut totals = ApplyStats::default();
    for (i, rule) in rules.iter().enumerate() {
        let mut st = alerts.rule_state(rule.id())?;
        let mut todo = st.pending.clone();
        todo.extend(ranges.iter().copied());
        if rule.doc.complete
            && let (Some(w), Some(judged)) = (wm, st.judged_to)
            && w > judged
        {
            todo.push((judged, w));
        }
        if todo.is_empty() {
            continue;
        }
        let todo = merge_ranges(todo, DAY_NS);
        let interval = rule.doc.interval.nanos();
        let due = !opts.honour_intervals
            || st
                .last_run_at
                .is_none_or(|t| now.saturating_sub(t) >= interval);
        if !due {
            if st.pending != todo {
                st.pending = todo;
                alerts.set_rule_state(rule.id(), &st)?;
            }
            deferred.push(rule.id().to_owned());
            continue;
        }
        progress(i, rules.len(), rule.id());
        let Some(r) = contained(
            rule,
            evaluate_rule(&engine, rule, &todo, alerts).await,
            &mut failed,
        )?
        else {
            // Its ranges stay pending (a rerun of a range it partly applied updates the same
            // occurrences).
            st.pending = todo;
            alerts.set_rule_state(rule.id(), &st)?;
            continue;
        };
        totals += r.stats;
        reports.push(r);
        evaluated.extend(todo);
        st.pending.clear();
        if rule.doc.complete {
            st.judged_to = wm.max(st.judged_to);
        }
        alerts.set_rule_state(rule.id(), &st)?;
    }
    progress(rules.len(), rules.len(), "");
    // The models run on new files, and when the watermark moved past hours they held back.
    let held = engine.stream_watermark();
    let mut models_state = alerts.rule_state(MODELS)?;
    let models_due =
        opts.models.is_some_and(|m| m.enabled) && (new_files > 0 || models_state.judged_to != held);
    if new_files == 0 && reports.is_empty() && failed.is_empty() && !models_due {
        return Ok(DetectReport {
            mode: "up-to-date".into(),
            watermark: wm.map(kvwatch_ingest::time::format_ns),
            watermark_ns: wm,
            deferred,
            elapsed_ms: started.elapsed().as_millis() as u64,
            ..Default::default()
        });
    }
    let models = if models_due {
        let r = models_pass(root, opts.models, alerts, None, held, &mut totals).await?;
        models_state.judged_to = held;
        alerts.set_rule_state(MODELS, &models_state)?;
        r
    } else {
        None
    };
    alerts.replace_covered(&all)?;
    Ok(DetectReport {
        mode: "incremental".into(),
        ranges: fmt_ranges(&merge_ranges(evaluated, 0)),
        watermark: wm.map(kvwatch_ingest::time::format_ns),
        watermark_ns: wm,
        new_files,
        deferred,
        failed,
        rules: reports,
        models,
        totals,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::merge_ranges;

    #[test]
    fn ranges_merge_within_gap() {
        assert_eq!(
            merge_ranges(vec![(10, 20), (0, 5), (22, 30), (100, 110)], 2),
            vec![(0, 5), (10, 30), (100, 110)]
        );
    }
}

/// Counters of a long-running detection loop (one struct, read by `/metrics`).
#[derive(Debug, Default)]
pub struct PassMetrics {
    pub passes: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    /// Rule evaluations that failed inside otherwise completed passes (retried).
    pub rule_failures: std::sync::atomic::AtomicU64,
    pub created: std::sync::atomic::AtomicU64,
    pub updated: std::sync::atomic::AtomicU64,
    pub folded: std::sync::atomic::AtomicU64,
    pub new_files: std::sync::atomic::AtomicU64,
    pub last_pass_ms: std::sync::atomic::AtomicU64,
    /// Unix seconds at the end of the last successful pass.
    pub last_pass_end: std::sync::atomic::AtomicU64,
    /// Unix seconds of the store's watermark at the last pass.
    pub watermark: std::sync::atomic::AtomicU64,
}
