//! Rule evaluation with DataFusion.
//!
//! A rule is one SQL query over the views `events` and `activity`. The engine evaluates it
//! over a whole time range in one plan: the SQL buckets time itself (`date_bin({{window}},
//! time)`), so a week of backfill costs one scan, not 168. For a range `[from, to)` the engine
//! exposes events in `[W0 - history, to + lookback + window)` where `W0 = floor(from - lookback)`
//! and keeps the rows whose `window_start` lies in `[W0, to)`: exactly the windows that events
//! in the range can touch, each computed from all of its data. Re-evaluating a range after late
//! data therefore recomputes the affected windows completely, and the deterministic occurrence
//! IDs make the result an update, not a duplicate.

use crate::alert::Severity;
use crate::alert::{Occurrence, Principal, union_into};
use crate::rule::{REQUIRED_COLUMNS, Rule, RuleError, StoreValues, template_names};
use crate::udf;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionContext, col, lit};
use kvwatch_ingest::DataDir;
use kvwatch_ingest::location::Location;
use kvwatch_ingest::query::{empty_context, read_only, spilling_context};
use kvwatch_ingest::store::Manifest;
use kvwatch_ingest::store::now_nanos;
use kvwatch_ingest::tables::register_sorted_files;
use kvwatch_ingest::time::format_ns;
use kvwatch_ingest::watermark::{Watermark, WatermarkPolicy};
use kvwatch_ingest::{StoreError, Table};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors while evaluating rules.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rule {rule}: {source}")]
    Query {
        rule: String,
        source: datafusion::error::DataFusionError,
    },
    #[error("rule {rule}: stopped after {secs} s, its deadline (--rule-timeout-secs)")]
    Timeout { rule: String, secs: u64 },
    #[error("rule {rule}: output column {column}: {message}")]
    Output {
        rule: String,
        column: String,
        message: String,
    },
}

/// One value of a rule's output row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Time(i64),
    List(Vec<String>),
}

impl Cell {
    fn text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Str(s) => Some(s.clone()),
            Cell::Int(i) => Some(i.to_string()),
            Cell::Float(f) => Some(format!("{f}")),
            Cell::Bool(b) => Some(b.to_string()),
            Cell::Time(t) => Some(format_ns(*t)),
            Cell::List(l) => Some(l.join(",")),
        }
    }

    fn strings(&self) -> Vec<String> {
        match self {
            Cell::Null => Vec::new(),
            Cell::List(l) => l.iter().filter(|s| !s.is_empty()).cloned().collect(),
            other => other.text().into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    /// The value in a human sentence: lists show five items and how many more.
    fn display(&self) -> String {
        match self {
            Cell::List(l) => {
                let mut s = l.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
                if l.len() > 5 {
                    s.push_str(&format!(" and {} more", l.len() - 5));
                }
                s
            }
            other => other.text().unwrap_or_else(|| "-".into()),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Str(s) => Value::String(s.clone()),
            Cell::Int(i) => Value::from(*i),
            Cell::Float(f) => Value::from(*f),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Time(t) => Value::String(format_ns(*t)),
            Cell::List(l) => Value::from(l.clone()),
        }
    }
}

fn ts_lit(ns: i64) -> datafusion::prelude::Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// SQL text of a timestamp literal, for `{{data_start}}`.
pub fn sql_timestamp(ns: i64) -> String {
    let s = format_ns(ns);
    // 2026-03-02T10:00:00.123456789Z -> 2026-03-02 10:00:00.123456789
    format!(
        "TIMESTAMP '{}'",
        s.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

/// Converts one output column to cells.
fn column_cells(rule: &str, name: &str, a: &ArrayRef) -> Result<Vec<Cell>, EngineError> {
    let err = |m: String| EngineError::Output {
        rule: rule.to_owned(),
        column: name.to_owned(),
        message: m,
    };
    let c = |t: &DataType| cast(a, t).map_err(|e| err(e.to_string()));
    let n = a.len();
    let cells = match a.data_type() {
        DataType::Null => vec![Cell::Null; n],
        DataType::Boolean => {
            let b = a.as_any().downcast_ref::<BooleanArray>().expect("bool");
            (0..n)
                .map(|i| {
                    if b.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Bool(b.value(i))
                    }
                })
                .collect()
        }
        t if t.is_integer() => {
            let v = c(&DataType::Int64)?;
            let v = v.as_any().downcast_ref::<Int64Array>().expect("i64");
            v.iter().map(|x| x.map_or(Cell::Null, Cell::Int)).collect()
        }
        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
            let v = c(&DataType::Float64)?;
            let v = v.as_any().downcast_ref::<Float64Array>().expect("f64");
            v.iter()
                .map(|x| x.map_or(Cell::Null, Cell::Float))
                .collect()
        }
        DataType::Timestamp(_, tz) => {
            let v = c(&DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()))?;
            let v = v
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .expect("ts");
            v.iter().map(|x| x.map_or(Cell::Null, Cell::Time)).collect()
        }
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(..)
        | DataType::ListView(_) => {
            let v = c(&DataType::List(Arc::new(Field::new(
                "item",
                DataType::Utf8,
                true,
            ))))?;
            let v = v.as_any().downcast_ref::<ListArray>().expect("list");
            (0..n)
                .map(|i| {
                    if v.is_null(i) {
                        return Cell::List(Vec::new());
                    }
                    let inner = v.value(i);
                    let s = inner.as_any().downcast_ref::<StringArray>().expect("utf8");
                    let mut items: Vec<String> = s.iter().flatten().map(str::to_owned).collect();
                    // `array_agg` lists come in the order the rows met the aggregation, which
                    // depends on how the events are split into files and batches; sorted,
                    // an alert's lists are a function of the data alone.
                    items.sort_unstable();
                    items.dedup();
                    Cell::List(items)
                })
                .collect()
        }
        _ => {
            let v = c(&DataType::Utf8)?;
            let v = v.as_any().downcast_ref::<StringArray>().expect("utf8");
            v.iter()
                .map(|x| x.map_or(Cell::Null, |s| Cell::Str(s.to_owned())))
                .collect()
        }
    };
    Ok(cells)
}

/// Rows of a batch as column → cell maps.
pub fn batch_rows(rule: &str, b: &RecordBatch) -> Result<Vec<BTreeMap<String, Cell>>, EngineError> {
    let schema = b.schema();
    let mut cols = Vec::with_capacity(b.num_columns());
    for (f, a) in schema.fields().iter().zip(b.columns()) {
        cols.push((f.name().clone(), column_cells(rule, f.name(), a)?));
    }
    Ok((0..b.num_rows())
        .map(|i| {
            cols.iter()
                .map(|(n, c)| (n.clone(), c[i].clone()))
                .collect()
        })
        .collect())
}

/// Replaces `{column}` in a summary template with the row's values.
pub fn render_summary(template: &str, row: &BTreeMap<String, Cell>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('}') {
            Some(j) if row.contains_key(&after[..j]) => {
                out.push_str(&row[&after[..j]].display());
                rest = &after[j + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Names in `{…}` of a summary template.
fn summary_names(t: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else { break };
        v.push(after[..j].to_owned());
        rest = &after[j + 1..];
    }
    v
}

/// Builds the occurrence of one output row.
pub fn occurrence(rule: &Rule, row: &BTreeMap<String, Cell>) -> Result<Occurrence, EngineError> {
    let id = rule.id();
    let time = |c: &str| match row.get(c) {
        Some(Cell::Time(t)) => Ok(*t),
        other => Err(EngineError::Output {
            rule: id.to_owned(),
            column: c.to_owned(),
            message: format!("expected a timestamp, got {other:?}"),
        }),
    };
    let window_start = time("window_start")?;
    let first_seen = time("first_seen")?;
    let last_seen = time("last_seen")?;
    let event_count = match row.get("event_count") {
        Some(Cell::Int(i)) => *i,
        other => {
            return Err(EngineError::Output {
                rule: id.to_owned(),
                column: "event_count".into(),
                message: format!("expected an integer, got {other:?}"),
            });
        }
    };
    let strings = |cols: &[String]| {
        let mut out: Vec<String> = Vec::new();
        for c in cols {
            if let Some(cell) = row.get(c) {
                union_into(&mut out, &cell.strings());
            }
        }
        out
    };
    let one = |c: &Option<String>| {
        c.as_ref()
            .and_then(|c| row.get(c))
            .and_then(Cell::text)
            .filter(|s| !s.is_empty())
    };
    let mut principals: Vec<Principal> = Vec::new();
    for p in &rule.doc.entities.principals {
        let pr = Principal {
            oid: one(&p.oid),
            upn: one(&p.upn),
            appid: one(&p.appid),
            kind: one(&p.kind),
        };
        if !pr.is_empty() && !principals.contains(&pr) {
            principals.push(pr);
        }
    }
    let dedup_key = rule
        .doc
        .dedup
        .iter()
        .map(|c| row.get(c).and_then(Cell::text).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("|");
    let severity = match row.get("severity") {
        Some(Cell::Str(s)) => Severity::parse(s).unwrap_or(rule.doc.severity),
        _ => rule.doc.severity,
    };
    let mut h = blake3::Hasher::new();
    h.update(id.as_bytes());
    h.update(b"\0");
    h.update(dedup_key.as_bytes());
    h.update(b"\0");
    h.update(&window_start.to_le_bytes());
    let occ_id = h.finalize().to_hex()[..32].to_owned();
    Ok(Occurrence {
        id: occ_id,
        rule_id: id.to_owned(),
        dedup_key,
        window_start,
        first_seen,
        last_seen,
        event_count,
        severity,
        summary: render_summary(&rule.doc.summary, row),
        principals,
        vaults: strings(&rule.doc.entities.vaults),
        ips: strings(&rule.doc.entities.ips),
        objects: strings(&rule.doc.entities.objects),
        evidence: row.get("event_ids").map(Cell::strings).unwrap_or_default(),
        fields: row.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
    })
}

/// The result of evaluating one rule.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub rule_id: String,
    pub occurrences: Vec<Occurrence>,
    pub elapsed: Duration,
    /// Bytes the rule's operators wrote to disk because the memory pool was full.
    pub spilled_bytes: usize,
    /// The window range that was (re)computed.
    pub windows: (i64, i64),
}

/// Evaluates rules against one manifest snapshot of a store.
pub struct Engine {
    location: Option<Location>,
    manifest: Manifest,
    /// Event time before which the store's data is complete (`None`: empty store).
    watermark: Option<Watermark>,
    ctx: SessionContext,
    rule_timeout: Duration,
}

fn overlapping(location: &Location, m: &Manifest, t: Table, from: i64, to: i64) -> Vec<String> {
    m.files(t)
        .iter()
        .filter(|f| f.max_time >= from && f.min_time < to)
        .map(|f| location.file(&f.path))
        .collect()
}

/// How an engine reads the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// How the store's watermark is derived (complete-data rules judge only before it).
    pub watermark: WatermarkPolicy,
    /// Memory the rules' operators share; beyond it sorts and aggregations spill to disk. An
    /// operator that cannot spill (a join's hash table) fails its rule alone instead.
    pub memory_bytes: usize,
    /// How long one rule may run on one pass before it is stopped and counted as failed (its
    /// ranges stay pending): a rule written badly, or data it was not written for, never
    /// holds detection up for the other rules.
    pub rule_timeout: Duration,
}

/// Default [`EngineOptions::memory_bytes`]: 2 GiB. The pack's backfill over a week of 10 M
/// events peaks at ~0.5 GiB resident under it (BENCHMARKS.md).
pub const DEFAULT_MEMORY_BYTES: usize = 2 << 30;

/// Default [`EngineOptions::rule_timeout`]: far above the slowest rule of the pack over a
/// week of 10 M events (about 11 s on two cores).
pub const DEFAULT_RULE_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            watermark: WatermarkPolicy::default(),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            rule_timeout: DEFAULT_RULE_TIMEOUT,
        }
    }
}

impl Engine {
    /// An engine over the store in `data` (its current manifest), with default options.
    pub fn open(data: &DataDir) -> Result<Engine, EngineError> {
        Self::open_with(data, &EngineOptions::default(), now_nanos())
    }

    /// An engine over the store in `data`, whose watermark is taken at `now`.
    pub fn open_with(
        data: &DataDir,
        opts: &EngineOptions,
        now: i64,
    ) -> Result<Engine, EngineError> {
        let manifest = data.snapshot()?;
        let watermark = manifest.watermark(&opts.watermark, now);
        let ctx = spilling_context(opts.memory_bytes).map_err(|source| EngineError::Query {
            rule: "-".into(),
            source,
        })?;
        udf::register(&ctx);
        // Rules name the selective side of a join first (six grants against 14 M reads), and
        // that side is the one to hash. DataFusion's estimates (a flat 20 % per filter) would
        // swap them: kv-corr-grant-then-read then built a 2 GB hash table of reads, which
        // cannot spill. The pack's fixtures and benchmark hold the order (rules/README.md).
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .optimizer
            .join_reordering = false;
        data.location().register(&ctx);
        Ok(Engine {
            location: Some(data.location().clone()),
            manifest,
            watermark,
            ctx,
            rule_timeout: opts.rule_timeout,
        })
    }

    /// An engine over empty tables, for checking that rules plan.
    pub fn empty() -> Engine {
        let ctx = empty_context();
        udf::register(&ctx);
        Engine {
            location: None,
            manifest: Manifest::default(),
            watermark: None,
            ctx,
            rule_timeout: DEFAULT_RULE_TIMEOUT,
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Time of the store's first and last event, if any.
    pub fn data_range(&self) -> Option<(i64, i64)> {
        self.manifest.time_range()
    }

    async fn register_range(&self, from: i64, to: i64) -> Result<(), EngineError> {
        let q = |source| EngineError::Query {
            rule: "-".into(),
            source,
        };
        for (t, base, view) in [
            (Table::Events, "__events", "events"),
            (Table::Activity, "__activity", "activity"),
        ] {
            let _ = self.ctx.deregister_table(base).map_err(q)?;
            let _ = self.ctx.deregister_table(view).map_err(q)?;
            match &self.location {
                Some(location) => {
                    let paths = overlapping(location, &self.manifest, t, from, to);
                    // Rules window over time per vault or principal (`lag`, sessions): the
                    // declared order lets those plans merge sorted files instead of sorting
                    // the range (39 s and 3.9 GiB for a week of 10 M events, against 45 s and
                    // 5 GiB without it).
                    register_sorted_files(&self.ctx, base, t, &paths).map_err(q)?;
                }
                None => {
                    let empty = MemTable::try_new(t.scan_schema(), vec![vec![]]).map_err(q)?;
                    self.ctx.register_table(base, Arc::new(empty)).map_err(q)?;
                }
            }
            let df = self.ctx.table(base).await.map_err(q)?;
            let df = df
                .filter(
                    col("time")
                        .gt_eq(ts_lit(from))
                        .and(col("time").lt(ts_lit(to))),
                )
                .map_err(q)?;
            self.ctx.register_table(view, df.into_view()).map_err(q)?;
        }
        Ok(())
    }

    /// The event time before which the store's data is complete.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark.as_ref().map(|w| w.complete_to)
    }

    /// The watermark while a streaming source holds it back (records are still arriving);
    /// `None` when all the store holds is all there is.
    pub fn stream_watermark(&self) -> Option<i64> {
        self.watermark
            .as_ref()
            .filter(|w| w.held_by.is_some())
            .map(|w| w.complete_to)
    }

    /// The store-dependent builtins as SQL literals (the epoch for an empty store).
    pub fn store_values(&self) -> StoreValues {
        StoreValues {
            data_start: sql_timestamp(self.data_range().map_or(0, |r| r.0)),
            watermark: sql_timestamp(self.watermark().unwrap_or(0)),
        }
    }

    /// Plans `rule` and checks its output columns; the error names the file and line.
    pub async fn check(&self, rule: &Rule) -> Result<(), RuleError> {
        let invalid = |m: String| RuleError::Invalid {
            file: rule.file.clone(),
            line: rule.sql_line,
            message: m,
        };
        self.register_range(0, 1)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        let sql = rule.render(&self.store_values());
        shape_check(&sql).map_err(invalid)?;
        let df = self
            .ctx
            .sql_with_options(&sql, read_only())
            .await
            .map_err(|e| invalid(format!("SQL does not plan: {e}")))?;
        let schema = df.schema().clone();
        let has = |c: &str| {
            schema
                .field_with_unqualified_name(c)
                .ok()
                .map(|f| f.data_type().clone())
        };
        for c in REQUIRED_COLUMNS {
            let Some(t) = has(c) else {
                return Err(invalid(format!("the SQL must return a column named {c}")));
            };
            let ok = match *c {
                "window_start" | "first_seen" | "last_seen" => {
                    matches!(t, DataType::Timestamp(..))
                }
                "event_count" => t.is_integer(),
                "event_ids" => matches!(t, DataType::List(_) | DataType::LargeList(_)),
                _ => true,
            };
            if !ok {
                return Err(invalid(format!(
                    "column {c} has type {t}, which does not fit"
                )));
            }
        }
        let mut names: Vec<String> = rule.doc.dedup.clone();
        names.extend(rule.doc.entities.columns().into_iter().map(str::to_owned));
        names.extend(summary_names(&rule.doc.summary));
        for n in names {
            if has(&n).is_none() {
                return Err(invalid(format!(
                    "column {n} (named by dedup, entities or summary) is not in the SQL output"
                )));
            }
        }
        if let Some(t) = has("severity")
            && !matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
        {
            return Err(invalid(format!(
                "column severity has type {t}; it must be text"
            )));
        }
        Ok(())
    }

    /// The windows `[W0, W1)` and the event range `[E0, E1)` for evaluating `[from, to)`.
    ///
    /// A rule that judges complete data only (`complete: true`) sees every event up to the
    /// store's newest (a record after the watermark still proves a vault was alive) and
    /// judges only windows that start before the watermark.
    pub fn plan_range(&self, rule: &Rule, from: i64, to: i64) -> ((i64, i64), (i64, i64)) {
        let w = rule.doc.window.nanos();
        let start = from.saturating_sub(rule.lookback().nanos());
        let w0 = start.div_euclid(w).saturating_mul(w);
        let e0 = w0.saturating_sub(rule.history().nanos());
        let e1 = to.saturating_add(rule.lookback().nanos()).saturating_add(w);
        if rule.doc.complete {
            let newest = self.data_range().map_or(e1, |r| r.1.saturating_add(1));
            let w1 = to.min(self.watermark().unwrap_or(i64::MIN));
            return ((w0, w1), (e0, e1.max(newest)));
        }
        ((w0, to), (e0, e1))
    }

    /// Evaluates `rule` for every window that events in `[from, to)` can touch.
    pub async fn evaluate(
        &self,
        rule: &Rule,
        from: i64,
        to: i64,
    ) -> Result<Evaluation, EngineError> {
        let started = Instant::now();
        let ((w0, w1), (e0, e1)) = self.plan_range(rule, from, to);
        if w1 <= w0 {
            // Nothing the watermark has passed yet.
            return Ok(Evaluation {
                rule_id: rule.id().to_owned(),
                occurrences: Vec::new(),
                elapsed: started.elapsed(),
                spilled_bytes: 0,
                windows: (w0, w0),
            });
        }
        let q = |source| EngineError::Query {
            rule: rule.id().to_owned(),
            source,
        };
        self.register_range(e0, e1).await?;
        let sql = rule.render(&self.store_values());
        let run = async {
            let df = self
                .ctx
                .sql_with_options(&sql, read_only())
                .await
                .map_err(q)?;
            let df = df
                .filter(
                    col("window_start")
                        .gt_eq(ts_lit(w0))
                        .and(col("window_start").lt(ts_lit(w1))),
                )
                .map_err(q)?;
            let plan = df.create_physical_plan().await.map_err(q)?;
            let batches =
                datafusion::physical_plan::collect(Arc::clone(&plan), self.ctx.task_ctx())
                    .await
                    .map_err(q)?;
            Ok::<_, EngineError>((batches, spilled_bytes(plan.as_ref())))
        };
        // DataFusion's operators yield to the runtime between batches, so dropping the
        // query at the deadline stops it.
        let (batches, spilled) = tokio::time::timeout(self.rule_timeout, run)
            .await
            .map_err(|_| EngineError::Timeout {
                rule: rule.id().to_owned(),
                secs: self.rule_timeout.as_secs(),
            })??;
        let mut occurrences = Vec::new();
        for b in &batches {
            for row in batch_rows(rule.id(), b)? {
                occurrences.push(occurrence(rule, &row)?);
            }
        }
        occurrences
            .sort_by(|a, b| (a.window_start, &a.dedup_key).cmp(&(b.window_start, &b.dedup_key)));
        if spilled > 0 {
            tracing::info!(
                rule = rule.id(),
                spilled_bytes = spilled,
                "rule spilled to disk: the detection memory pool (--memory-mb) was full"
            );
        }
        Ok(Evaluation {
            rule_id: rule.id().to_owned(),
            occurrences,
            elapsed: started.elapsed(),
            spilled_bytes: spilled,
            windows: (w0, w1),
        })
    }
}

/// Bytes every operator of an executed plan spilled to disk.
fn spilled_bytes(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> usize {
    plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0)
        + plan
            .children()
            .into_iter()
            .map(|c| spilled_bytes(c.as_ref()))
            .sum::<usize>()
}

/// Checks every rule plans against the schemas; the first failure names file and line.
/// A rule's SQL must be one statement within the shape limits analyst SQL has: a rule file is
/// text written by a person too.
fn shape_check(sql: &str) -> Result<(), String> {
    use datafusion::sql::parser::{DFParser, Statement};
    let statements = DFParser::parse_sql(sql).map_err(|e| format!("SQL does not parse: {e}"))?;
    for s in &statements {
        if let Statement::Statement(s) = s {
            kvwatch_ingest::sqlshape::measure(s, kvwatch_ingest::sqlshape::Shape::default())
                .map_err(|m| format!("SQL is too complex: {m}"))?;
        }
    }
    Ok(())
}

pub async fn check_all(rules: &[Rule]) -> Result<(), RuleError> {
    let engine = Engine::empty();
    for r in rules {
        engine.check(r).await?;
    }
    Ok(())
}

/// Template names a rule uses (for `rules show`).
pub fn parameters_used(rule: &Rule) -> Vec<String> {
    let mut v = template_names(&rule.doc.sql);
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rule_nested_too_deep_is_refused_at_load() {
        let deep = format!(
            "SELECT vault FROM events WHERE {}",
            vec!["vault = 'x'"; 600].join(" OR ")
        );
        let e = super::shape_check(&deep).unwrap_err();
        assert!(e.contains("too complex") && e.contains("256"), "{e}");
        assert!(super::shape_check("SELECT vault FROM events WHERE vault IN ('a', 'b')").is_ok());
    }
}
