//! Detection passes: backfill over an explicit range, and incremental runs that evaluate what
//! the event store gained since the last run, late data included.
//!
//! An incremental run compares the manifest with the files the alert store has covered. The
//! time ranges of the new files (merged when closer than a day) are evaluated by every rule,
//! which re-opens every window those events fall into, however old. Only after the alerts are
//! stored is the new file set recorded as covered, so a crash in between re-evaluates (and the
//! deterministic occurrence IDs make that harmless) instead of skipping.

use crate::anomaly::ModelConfig;
use crate::engine::{Engine, EngineError};
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
}

/// What a detection pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DetectReport {
    /// `backfill`, `incremental` or `up-to-date`.
    pub mode: String,
    /// Evaluated event-time ranges, as RFC 3339 pairs.
    pub ranges: Vec<(String, String)>,
    pub new_files: usize,
    pub rules: Vec<RuleReport>,
    /// The behavioural models' pass, when enabled.
    pub models: Option<crate::anomaly::ModelReport>,
    #[serde(flatten)]
    pub totals: ApplyStats,
    pub elapsed_ms: u64,
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

async fn evaluate_ranges(
    engine: &Engine,
    rules: &[Rule],
    ranges: &[(i64, i64)],
    alerts: &mut AlertStore,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<(Vec<RuleReport>, ApplyStats), DetectError> {
    let mut reports = Vec::new();
    let mut totals = ApplyStats::default();
    for (i, rule) in rules.iter().enumerate() {
        progress(i, rules.len(), rule.id());
        let mut stats = ApplyStats::default();
        let mut n = 0;
        let started = Instant::now();
        for &(from, to) in ranges {
            let ev = engine.evaluate(rule, from, to).await?;
            n += ev.occurrences.len();
            stats += alerts.apply(&rule.meta(), &ev.occurrences, now_nanos())?;
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
        totals += stats;
        reports.push(RuleReport {
            rule_id: rule.id().to_owned(),
            occurrences: n,
            stats,
            elapsed_ms,
        });
    }
    progress(rules.len(), rules.len(), "");
    Ok((reports, totals))
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
    totals: &mut ApplyStats,
) -> Result<Option<crate::anomaly::ModelReport>, DetectError> {
    let Some(cfg) = models.filter(|m| m.enabled) else {
        return Ok(None);
    };
    let r = crate::anomaly::run_models(root, cfg, alerts, range).await?;
    *totals += r.stats;
    Ok(Some(r))
}

/// Evaluates every rule over `[from, to)` (event time, ns), and the models (rebuilding their
/// baselines from the whole store) when `models` is given.
pub async fn backfill(
    root: &DataDir,
    rules: &[Rule],
    models: Option<&ModelConfig>,
    from: i64,
    to: i64,
    alerts: &mut AlertStore,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<DetectReport, DetectError> {
    let started = Instant::now();
    let engine = Engine::open(root)?;
    let ranges = vec![(from, to)];
    let (rules_r, mut totals) = evaluate_ranges(&engine, rules, &ranges, alerts, progress).await?;
    let models = models_pass(root, models, alerts, Some((from, to)), &mut totals).await?;
    Ok(DetectReport {
        mode: "backfill".into(),
        ranges: fmt_ranges(&ranges),
        new_files: 0,
        rules: rules_r,
        models,
        totals,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Evaluates whatever the store gained since the last incremental run (everything, the first
/// time), then records the store's files as covered.
pub async fn incremental(
    root: &DataDir,
    rules: &[Rule],
    models: Option<&ModelConfig>,
    alerts: &mut AlertStore,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<DetectReport, DetectError> {
    let started = Instant::now();
    let engine = Engine::open(root)?;
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
    if new.is_empty() {
        return Ok(DetectReport {
            mode: "up-to-date".into(),
            elapsed_ms: started.elapsed().as_millis() as u64,
            ..Default::default()
        });
    }
    let ranges = merge_ranges(new, DAY_NS);
    let (rules_r, mut totals) = evaluate_ranges(&engine, rules, &ranges, alerts, progress).await?;
    let models = models_pass(root, models, alerts, None, &mut totals).await?;
    alerts.replace_covered(&all)?;
    Ok(DetectReport {
        mode: "incremental".into(),
        ranges: fmt_ranges(&ranges),
        new_files,
        rules: rules_r,
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
    pub created: std::sync::atomic::AtomicU64,
    pub updated: std::sync::atomic::AtomicU64,
    pub folded: std::sync::atomic::AtomicU64,
    pub new_files: std::sync::atomic::AtomicU64,
    pub last_pass_ms: std::sync::atomic::AtomicU64,
    /// Unix seconds at the end of the last successful pass.
    pub last_pass_end: std::sync::atomic::AtomicU64,
}
