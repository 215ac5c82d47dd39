//! Partial aggregation over string keys that hashes each distinct string once, not each row.
//!
//! A `GROUP BY vault, principal_upn` over a week of reads spent about a third of its time in
//! DataFusion's grouping: every row's strings hashed (long ones through the heap), probed and
//! compared byte by byte, though a day's file holds a few hundred distinct values per column.
//! The Parquet reader hands those columns as string views decoded from the column chunk's
//! dictionary page, and every batch of a chunk shares the dictionary's buffer. So two rows
//! whose 16-byte views are equal hold the same string: an inline view (up to 12 bytes) *is*
//! the string, and a long view names a buffer, an offset and a length.
//!
//! [`InternedGroupKeys`] (a physical optimizer rule, run after DataFusion's own) replaces a
//! partial `AggregateExec` whose keys are string views, optionally with integer-like keys
//! (dates, hours, codes), by an [`InternedAggregateExec`]. For each key column it maps a
//! row's view to a dense value id through a small table of views; only a view not seen before
//! hashes its string (to find the id of an equal string behind a different view). The ids of
//! a row's keys make its group, and DataFusion's own group accumulators do the rest. The
//! output (keys, then each aggregate's state) is what the `AggregateExec` would emit, so the
//! final aggregation above is unchanged.
//!
//! - A view table is kept while the batches' buffers are the same ones (it holds them, so a
//!   freed buffer's address cannot come back with other bytes); inline views are kept always.
//! - Values a view table has not seen still meet by their bytes: plain-encoded pages, a
//!   batch that concatenates several chunks, or computed strings only cost a probe more.
//! - Memory is reserved from the session's pool as the groups grow. When the pool refuses,
//!   the groups so far are emitted and the table starts again: a partial aggregate may emit
//!   a group more than once, as DataFusion's own does when it spills or skips.
//! - When groups come near one per row (over 80 % after 100,000 rows, DataFusion's
//!   threshold for skipping partial aggregation), each batch's groups are emitted at once.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array, downcast_array,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer};
use datafusion::arrow::compute::{cast, concat, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, aggregate_expressions};
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, InputOrderMode,
    PlanProperties,
};
use foldhash::fast::RandomState;
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Keys a group packs into one 128-bit word, 32 bits of value id each.
const MAX_KEYS: usize = 4;
/// Rows seen before the groups-per-row ratio decides whether aggregating here pays.
const PROBE_ROWS: usize = 100_000;
/// Groups per row above which each batch's groups are emitted at once.
const PASS_THROUGH_RATIO: f64 = 0.8;

/// Replaces partial aggregations over string-view keys (see the module documentation).
#[derive(Debug, Default)]
pub struct InternedGroupKeys;

impl PhysicalOptimizerRule for InternedGroupKeys {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(if eligible(&node) {
                Transformed::yes(Arc::new(InternedAggregateExec::new(node)) as _)
            } else {
                Transformed::no(node)
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "kvwatch_interned_group_keys"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A key type whose values are compared as 64-bit integers.
fn integer_like(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | Date32
            | Date64
            | Timestamp(_, _)
            | Time32(_)
            | Time64(_)
            | Duration(_)
    )
}

/// A plain partial `AggregateExec` (one grouping set, no ordered input, no top-k limit, no
/// dynamic filter) whose keys are string views, with integer-like keys allowed beside them,
/// and whose aggregates all have group accumulators.
fn eligible(node: &Arc<dyn ExecutionPlan>) -> bool {
    let Some(agg) = node.downcast_ref::<AggregateExec>() else {
        return false;
    };
    let group = agg.group_expr();
    if *agg.mode() != AggregateMode::Partial
        || !group.is_single()
        || group.expr().is_empty()
        || group.expr().len() > MAX_KEYS
        || agg.limit_options().is_some()
        || *agg.input_order_mode() != InputOrderMode::Linear
        || !node.dynamic_expressions_produced().is_empty()
        || !agg
            .aggr_expr()
            .iter()
            .all(|a| a.groups_accumulator_supported())
    {
        return false;
    }
    let schema = agg.input().schema();
    let Ok(types) = group
        .expr()
        .iter()
        .map(|(e, _)| e.data_type(&schema))
        .collect::<Result<Vec<_>>>()
    else {
        return false;
    };
    types.contains(&DataType::Utf8View)
        && types
            .iter()
            .all(|t| *t == DataType::Utf8View || integer_like(t))
}

/// A partial aggregation by interned keys, standing in for the `AggregateExec` it was made
/// from: same input, same output schema and properties, same accumulators.
#[derive(Debug)]
pub struct InternedAggregateExec {
    /// The `AggregateExec` this node runs.
    inner: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl InternedAggregateExec {
    fn new(inner: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            inner,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    fn agg(&self) -> &AggregateExec {
        self.inner
            .downcast_ref::<AggregateExec>()
            .expect("built from an AggregateExec")
    }
}

impl DisplayAs for InternedAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Interned")?;
        self.agg().fmt_as(t, f)
    }
}

impl ExecutionPlan for InternedAggregateExec {
    fn name(&self) -> &str {
        "InternedAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.inner.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.inner.maintains_input_order()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.agg().input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let inner = Arc::clone(&self.inner).replace_children(children, options)?;
        Ok(if eligible(&inner) {
            Arc::new(Self::new(inner))
        } else {
            inner
        })
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let agg = self.agg();
        let input = agg.input().execute(partition, Arc::clone(&context))?;
        let table = Table::new(agg, partition, &context, &self.metrics)?;
        Ok(interned(input, table))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    #[allow(deprecated)]
    fn partition_statistics(
        &self,
        partition: Option<usize>,
    ) -> Result<Arc<datafusion::common::Statistics>> {
        self.inner.partition_statistics(partition)
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::LowerEqual
    }
}

/// The output of `table` over `input`. The input is polled until it ends and never again: a
/// stream that has ended may wait for ever when polled once more (a repartition's output
/// waits on its channel again, whose senders the repartition still holds).
fn interned(input: SendableRecordBatchStream, table: Table) -> SendableRecordBatchStream {
    let schema = Arc::clone(&table.schema);
    let stream = futures::stream::unfold(
        Some((Some(input), table, VecDeque::new())),
        |state| async move {
            let (mut input, mut table, mut out) = state?;
            loop {
                if let Some(batch) = out.pop_front() {
                    return Some((Ok(batch), Some((input, table, out))));
                }
                let source = input.as_mut()?;
                let step = match source.next().await {
                    Some(Ok(batch)) => table.add(&batch, &mut out),
                    Some(Err(e)) => Err(e),
                    None => {
                        input = None;
                        table.finish(&mut out)
                    }
                };
                if let Err(e) = step {
                    return Some((Err(e), None));
                }
            }
        },
    );
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// A direct-mapped cache from 128-bit keys (views, packed value ids) to ids: a multiply, a
/// load and a compare per lookup where a hash map hashes, probes and branches. A miss costs
/// nothing but the lookup behind it.
struct Slots {
    keys: Box<[u128; SLOTS]>,
    ids: Box<[u32; SLOTS]>,
}

/// No view has this length, and no packing of value ids uses every bit.
const EMPTY: u128 = u128::MAX;
/// A row whose id is not known yet.
const MISS: u32 = u32::MAX;
const SLOT_BITS: u32 = 12;
const SLOTS: usize = 1 << SLOT_BITS;

impl Slots {
    fn new() -> Self {
        Self {
            keys: Box::new([EMPTY; SLOTS]),
            ids: Box::new([0; SLOTS]),
        }
    }

    #[inline]
    fn slot(key: u128) -> usize {
        let h = ((key as u64) ^ ((key >> 64) as u64).rotate_left(29))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> (64 - SLOT_BITS)) as usize
    }

    /// The id cached for `key`, or [`MISS`].
    #[inline]
    fn get(&self, key: u128) -> u32 {
        let s = Self::slot(key);
        if self.keys[s] == key {
            self.ids[s]
        } else {
            MISS
        }
    }

    #[inline]
    fn put(&mut self, key: u128, id: u32) {
        let s = Self::slot(key);
        self.keys[s] = key;
        self.ids[s] = id;
    }

    fn retain(&mut self, keep: impl Fn(u128) -> bool) {
        for k in self.keys.iter_mut() {
            if *k != EMPTY && !keep(*k) {
                *k = EMPTY;
            }
        }
    }

    fn size(&self) -> usize {
        SLOTS * 20
    }
}

/// Whether a view holds its string inline (and so means the same string in any array).
fn inline_view(view: u128) -> bool {
    (view as u32) <= 12
}

/// The value ids of one key column.
struct KeyColumn {
    /// A string-view column (else integer-like).
    strings: bool,
    by_bytes: HashMap<Box<[u8]>, u32, RandomState>,
    by_int: HashMap<i64, u32, RandomState>,
    /// Views seen with the buffers in `held`, and inline views from any batch: the recent
    /// ones in `slots`, all in `by_view`.
    slots: Slots,
    by_view: HashMap<u128, u32, RandomState>,
    held: Vec<Buffer>,
    null: Option<u32>,
    len: u32,
    /// The distinct values in id order, a chunk per batch that brought new ones.
    chunks: Vec<ArrayRef>,
    /// Bytes behind `by_bytes`' keys and `chunks`.
    bytes: usize,
    /// This batch's value id of each row.
    ids: Vec<u32>,
}

impl KeyColumn {
    fn new(strings: bool) -> Self {
        Self {
            strings,
            by_bytes: HashMap::default(),
            by_int: HashMap::default(),
            slots: Slots::new(),
            by_view: HashMap::default(),
            held: Vec::new(),
            null: None,
            len: 0,
            chunks: Vec::new(),
            bytes: 0,
            ids: Vec::new(),
        }
    }

    fn fresh_id(len: &mut u32, fresh: &mut Vec<u32>, row: usize) -> u32 {
        fresh.push(row as u32);
        *len += 1;
        *len - 1
    }

    /// Fills `ids` with the value id of each row of `array`.
    fn intern(&mut self, array: &ArrayRef) -> Result<()> {
        let rows = array.len();
        let nulls = array.logical_nulls();
        let is_null = |i: usize| nulls.as_ref().is_some_and(|n: &NullBuffer| n.is_null(i));
        let mut fresh = Vec::new();
        self.ids.clear();
        self.ids.reserve(rows);
        if self.strings {
            let a = array.as_string_view();
            let same = a.data_buffers().len() == self.held.len()
                && a.data_buffers()
                    .iter()
                    .zip(&self.held)
                    .all(|(x, y)| x.ptr_eq(y));
            if !same {
                // Long views point into buffers; only inline views outlive them.
                self.by_view.retain(|v, _| inline_view(*v));
                self.slots.retain(inline_view);
                self.held = a.data_buffers().to_vec();
            }
            // First the rows whose view is cached, in a loop that only reads; then the rest.
            let views = a.views();
            self.ids.extend(views.iter().map(|&v| self.slots.get(v)));
            if let Some(nulls) = &nulls {
                for i in (0..rows).filter(|&i| nulls.is_null(i)) {
                    self.ids[i] = MISS;
                }
            }
            for i in 0..rows {
                if self.ids[i] != MISS {
                    continue;
                }
                if is_null(i) {
                    self.ids[i] = *self
                        .null
                        .get_or_insert_with(|| Self::fresh_id(&mut self.len, &mut fresh, i));
                    continue;
                }
                let view = views[i];
                let id = match self.by_view.get(&view) {
                    Some(&id) => id,
                    None => {
                        let s = a.value(i).as_bytes();
                        let id = match self.by_bytes.get(s) {
                            Some(&id) => id,
                            None => {
                                let id = Self::fresh_id(&mut self.len, &mut fresh, i);
                                self.by_bytes.insert(s.into(), id);
                                self.bytes += s.len();
                                id
                            }
                        };
                        self.by_view.insert(view, id);
                        id
                    }
                };
                self.slots.put(view, id);
                self.ids[i] = id;
            }
        } else {
            let ints = cast(array, &DataType::Int64)?;
            let ints = ints.as_primitive::<Int64Type>();
            for i in 0..rows {
                let id = if is_null(i) {
                    *self
                        .null
                        .get_or_insert_with(|| Self::fresh_id(&mut self.len, &mut fresh, i))
                } else {
                    let x = ints.value(i);
                    match self.by_int.get(&x) {
                        Some(&id) => id,
                        None => {
                            let id = Self::fresh_id(&mut self.len, &mut fresh, i);
                            self.by_int.insert(x, id);
                            id
                        }
                    }
                };
                self.ids.push(id);
            }
        }
        if !fresh.is_empty() {
            let mut chunk = take(array, &UInt32Array::from(fresh), None)?;
            if self.strings {
                // Copy the new strings out, not the batch's buffers they point into.
                chunk = Arc::new(chunk.as_string_view().gc());
            }
            self.bytes += chunk.get_array_memory_size();
            self.chunks.push(chunk);
        }
        Ok(())
    }

    /// The distinct values, in id order.
    fn values(&self) -> Result<ArrayRef> {
        let parts: Vec<&dyn Array> = self.chunks.iter().map(|c| c.as_ref()).collect();
        Ok(concat(&parts)?)
    }

    fn size(&self) -> usize {
        self.bytes
            + self.by_bytes.capacity() * 28
            + self.by_int.capacity() * 16
            + self.by_view.capacity() * 24
            + self.slots.size()
            + self.ids.capacity() * 4
    }
}

/// The groups of one partition: interned keys, their combinations, the accumulators.
struct Table {
    schema: SchemaRef,
    keys_exprs: Vec<Arc<dyn PhysicalExpr>>,
    keys: Vec<KeyColumn>,
    /// With two keys or more: a group's value ids packed, and each key's value id per group.
    combos: HashMap<u128, u32, RandomState>,
    combo_slots: Slots,
    members: Vec<Vec<u32>>,
    args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    group_indices: Vec<usize>,
    reservation: MemoryReservation,
    batch_size: usize,
    rows_in: usize,
    pass_through: bool,
    baseline: BaselineMetrics,
    early_emits: Count,
    skipped_rows: Count,
    peak: Gauge,
}

impl Table {
    fn new(
        agg: &AggregateExec,
        partition: usize,
        context: &Arc<TaskContext>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Self> {
        let input_schema = agg.input().schema();
        let keys_exprs: Vec<_> = agg
            .group_expr()
            .expr()
            .iter()
            .map(|(e, _)| Arc::clone(e))
            .collect();
        let keys = keys_exprs
            .iter()
            .map(|e| {
                Ok(KeyColumn::new(
                    e.data_type(&input_schema)? == DataType::Utf8View,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let accumulators = agg
            .aggr_expr()
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        let reservation = MemoryConsumer::new(format!("InternedAggregateExec[{partition}]"))
            .with_can_spill(true)
            .register(context.memory_pool());
        Ok(Self {
            schema: agg.schema(),
            members: vec![Vec::new(); keys.len()],
            keys_exprs,
            keys,
            combos: HashMap::default(),
            combo_slots: Slots::new(),
            args: aggregate_expressions(agg.aggr_expr(), agg.mode(), 0)?,
            filters: agg.filter_expr().to_vec(),
            accumulators,
            group_indices: Vec::new(),
            reservation,
            batch_size: context.session_config().batch_size(),
            rows_in: 0,
            pass_through: false,
            baseline: BaselineMetrics::new(metrics, partition),
            early_emits: MetricBuilder::new(metrics).counter("early_emits", partition),
            skipped_rows: MetricBuilder::new(metrics)
                .counter("skipped_aggregation_rows", partition),
            peak: MetricBuilder::new(metrics).gauge("peak_mem_used", partition),
        })
    }

    fn groups(&self) -> usize {
        if self.keys.len() == 1 {
            self.keys[0].len as usize
        } else {
            self.members[0].len()
        }
    }

    /// Aggregates `batch`; queues output when memory or the groups-per-row ratio says so.
    fn add(&mut self, batch: &RecordBatch, out: &mut VecDeque<RecordBatch>) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let timer = self.baseline.elapsed_compute().timer();
        for (key, expr) in self.keys.iter_mut().zip(&self.keys_exprs) {
            let array = expr.evaluate(batch)?.into_array(rows)?;
            key.intern(&array)?;
        }
        self.group_indices.clear();
        if self.keys.len() == 1 {
            let ids = &self.keys[0].ids;
            self.group_indices.extend(ids.iter().map(|&id| id as usize));
        } else {
            let pack = |row: usize| {
                self.keys.iter().enumerate().fold(0u128, |acc, (j, k)| {
                    acc | (u128::from(k.ids[row]) << (32 * j))
                })
            };
            let mut ids: Vec<u32> = (0..rows)
                .map(|row| self.combo_slots.get(pack(row)))
                .collect();
            for (row, id) in ids.iter_mut().enumerate() {
                if *id != MISS {
                    continue;
                }
                let packed = pack(row);
                *id = match self.combos.get(&packed) {
                    Some(&g) => g,
                    None => {
                        let g = self.members[0].len() as u32;
                        for (members, key) in self.members.iter_mut().zip(&self.keys) {
                            members.push(key.ids[row]);
                        }
                        self.combos.insert(packed, g);
                        g
                    }
                };
                self.combo_slots.put(packed, *id);
            }
            self.group_indices.extend(ids.iter().map(|&g| g as usize));
        }
        let groups = self.groups();
        for ((acc, args), filter) in self
            .accumulators
            .iter_mut()
            .zip(&self.args)
            .zip(&self.filters)
        {
            let values = args
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(rows))
                .collect::<Result<Vec<_>>>()?;
            let filter = filter
                .as_ref()
                .map(|f| f.evaluate(batch)?.into_array(rows))
                .transpose()?;
            let filter = filter.as_ref().map(|f| downcast_array::<BooleanArray>(f));
            acc.update_batch(&values, &self.group_indices, filter.as_ref(), groups)?;
        }
        self.rows_in += rows;
        if self.pass_through {
            self.skipped_rows.add(rows);
        }
        if !self.pass_through
            && self.rows_in >= PROBE_ROWS
            && groups as f64 >= PASS_THROUGH_RATIO * self.rows_in as f64
        {
            self.pass_through = true;
        }
        let size = self.size();
        let refused = self.reservation.try_resize(size).is_err();
        self.peak.set_max(self.reservation.size());
        drop(timer);
        if self.pass_through || refused || groups >= u32::MAX as usize / 2 {
            if refused {
                self.early_emits.add(1);
            }
            self.emit(out)?;
        }
        Ok(())
    }

    /// The input is done: emits every group.
    fn finish(&mut self, out: &mut VecDeque<RecordBatch>) -> Result<()> {
        self.emit(out)
    }

    fn size(&self) -> usize {
        self.keys.iter().map(KeyColumn::size).sum::<usize>()
            + self.combos.capacity() * 24
            + self.combo_slots.size()
            + self.members.iter().map(|m| m.capacity() * 4).sum::<usize>()
            + self.group_indices.capacity() * 8
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }

    /// Queues the groups so far (keys, then each aggregate's state) in batches of the
    /// session's size, and starts an empty table.
    fn emit(&mut self, out: &mut VecDeque<RecordBatch>) -> Result<()> {
        let groups = self.groups();
        if groups == 0 {
            return Ok(());
        }
        let _timer = self.baseline.elapsed_compute().timer();
        let single = self.keys.len() == 1;
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (key, members) in self.keys.iter_mut().zip(&mut self.members) {
            let values = key.values()?;
            columns.push(if single {
                values
            } else {
                take(&values, &UInt32Array::from(std::mem::take(members)), None)?
            });
            *key = KeyColumn::new(key.strings);
        }
        self.combos = HashMap::default();
        self.combo_slots = Slots::new();
        for acc in &mut self.accumulators {
            columns.extend(acc.state(EmitTo::All)?);
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        self.baseline.record_output(batch.num_rows());
        let mut offset = 0;
        while offset < groups {
            let len = self.batch_size.max(1).min(groups - offset);
            out.push_back(batch.slice(offset, len));
            offset += len;
        }
        self.reservation.resize(self.size());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::query::text;
    use datafusion::arrow::array::Array;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};

    /// Rows of a query as sorted lines of its table.
    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let mut lines: Vec<String> = text(ctx, sql).await.lines().map(String::from).collect();
        lines.sort();
        lines
    }

    /// Two files of `rows` rows each, one dictionary-encoded in small row groups and one
    /// plain-encoded, registered as `t` in a store session and in a plain DataFusion one.
    /// `s`: a few values, inline and long, empty and null; `u`: `distinct` long values that
    /// share their first four bytes; `d` a date, `n` an integer with nulls, `b` a boolean.
    async fn sessions(
        dir: &std::path::Path,
        rows: usize,
        distinct: usize,
        ours: SessionContext,
    ) -> (SessionContext, SessionContext) {
        let plain = SessionContext::new();
        for (i, options) in [
            "'format.max_row_group_size' '3000'",
            "'format.dictionary_enabled' 'false'",
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.join(format!("part-{i}.parquet"));
            let copy = format!(
                "COPY (SELECT \
                   CASE value % 5 WHEN 0 THEN 'SecretGet' WHEN 1 THEN 'CertificateGetIssuers' \
                     WHEN 2 THEN '' WHEN 3 THEN NULL ELSE 'a-rather-long-operation-name' END AS s, \
                   concat('user', CAST((value * 7919 + {i}) % {distinct} AS VARCHAR), '@contoso.example') AS u, \
                   CAST(to_timestamp(1714953600 + (value % 9) * 86400) AS DATE) AS d, \
                   CASE WHEN value % 11 = 0 THEN NULL ELSE CAST(value % 13 AS BIGINT) END AS n, \
                   value % 3 = 0 AS b \
                 FROM generate_series(1, {rows})) TO '{}' STORED AS PARQUET OPTIONS ({options})",
                path.display()
            );
            plain.sql(&copy).await.unwrap().collect().await.unwrap();
        }
        let dir = format!("{}/", dir.display());
        for ctx in [&plain, &ours] {
            ctx.register_parquet("t", &dir, ParquetReadOptions::default())
                .await
                .unwrap();
        }
        (plain, ours)
    }

    /// Every GROUP BY shape the rule takes answers as plain DataFusion does, over dictionary
    /// and plain pages, nulls, empty, inline and long strings, one to four keys, aggregate
    /// filters and distinct counts; shapes it does not take keep DataFusion's operator.
    #[tokio::test]
    async fn string_group_bys_answer_as_datafusion_does() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, ours) = sessions(dir.path(), 20_000, 700, crate::query::empty_context()).await;
        for (sql, interned) in [
            ("SELECT s, count(*) AS c FROM t GROUP BY s", true),
            (
                "SELECT s, u, count(*) AS c, sum(n) AS sn, min(n) AS lo, max(u) AS hi \
                 FROM t GROUP BY s, u",
                true,
            ),
            (
                "SELECT u, d, count(DISTINCT s) AS ds, count(n) AS cn FROM t GROUP BY u, d",
                true,
            ),
            (
                "SELECT s, b, n, count(*) FILTER (WHERE n > 3) AS c FROM t GROUP BY s, b, n",
                true,
            ),
            (
                "SELECT s, u, d, b, count(*) AS c FROM t WHERE n IS NOT NULL GROUP BY 1, 2, 3, 4",
                true,
            ),
            (
                "SELECT u, count(*) AS c FROM t WHERE s LIKE '%Get' GROUP BY u \
                 ORDER BY c DESC, u LIMIT 7",
                true,
            ),
            // Five keys, or no string key: DataFusion's own aggregation.
            (
                "SELECT s, u, d, b, n, count(*) AS c FROM t GROUP BY 1, 2, 3, 4, 5",
                false,
            ),
            ("SELECT d, n, count(*) AS c FROM t GROUP BY d, n", false),
        ] {
            let plan = text(&ours, &format!("EXPLAIN {sql}")).await;
            assert_eq!(
                plan.contains("InternedAggregateExec"),
                interned,
                "{sql}\n{plan}"
            );
            let (a, b) = (rows(&ours, sql).await, rows(&plain, sql).await);
            assert!(a.len() > 4, "{sql}: {a:?}");
            assert_eq!(a, b, "{sql}");
        }
    }

    /// The interned aggregation of `ctx`'s plan for `sql`.
    async fn node(
        ctx: &SessionContext,
        sql: &str,
    ) -> std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan> {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let mut found = None;
        plan.apply(|n| {
            if n.name() == "InternedAggregateExec" {
                found = Some(std::sync::Arc::clone(n));
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found.unwrap_or_else(|| panic!("{sql}"))
    }

    /// A metric of `node` summed over its partitions.
    fn metric(node: &dyn datafusion::physical_plan::ExecutionPlan, name: &str) -> usize {
        node.metrics()
            .unwrap()
            .sum_by_name(name)
            .map_or(0, |v| v.as_usize())
    }

    /// Out of memory, the groups so far go out and the table starts again: the partial
    /// states still add up to the right counts per key.
    #[tokio::test]
    async fn out_of_memory_groups_go_out_early_and_still_add_up() {
        use datafusion::arrow::array::{AsArray, RecordBatch};
        use datafusion::arrow::datatypes::Int64Type;
        use datafusion::execution::TaskContext;
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use std::collections::HashMap;
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let (plain, ours) =
            sessions(dir.path(), 30_000, 20_000, crate::query::empty_context()).await;
        let sql = "SELECT u, s, count(*) AS c FROM t GROUP BY u, s";
        let node = node(&ours, sql).await;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(1 << 20)))
            .build_arc()
            .unwrap();
        let task = Arc::new(
            TaskContext::default()
                .with_session_config(ours.copied_config())
                .with_runtime(runtime),
        );
        /// Adds each row's count (third column) to its key (first two columns).
        fn add_counts(
            batches: &[RecordBatch],
            into: &mut HashMap<(Option<String>, Option<String>), i64>,
        ) {
            for batch in batches {
                let (u, s) = (
                    batch.column(0).as_string_view(),
                    batch.column(1).as_string_view(),
                );
                let c = batch.column(2).as_primitive::<Int64Type>();
                for i in 0..batch.num_rows() {
                    let key = |a: &datafusion::arrow::array::StringViewArray| {
                        a.is_valid(i).then(|| a.value(i).to_string())
                    };
                    *into.entry((key(u), key(s))).or_default() += c.value(i);
                }
            }
        }
        let (mut counts, mut partial_rows) = (HashMap::new(), 0);
        for p in 0..node.properties().partitioning.partition_count() {
            let stream = node.execute(p, Arc::clone(&task)).unwrap();
            let batches = datafusion::physical_plan::common::collect(stream)
                .await
                .unwrap();
            partial_rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
            add_counts(&batches, &mut counts);
        }
        assert!(metric(node.as_ref(), "early_emits") > 0);
        assert!(
            partial_rows > counts.len(),
            "{partial_rows} partial rows, {} groups",
            counts.len()
        );
        let mut expected = HashMap::new();
        add_counts(
            &plain.sql(sql).await.unwrap().collect().await.unwrap(),
            &mut expected,
        );
        assert_eq!(counts, expected);
    }

    /// Near one group per row, each batch's groups go out at once, and the answer holds.
    #[tokio::test]
    async fn near_unique_keys_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, ours) =
            sessions(dir.path(), 120_000, 110_000, crate::query::empty_context()).await;
        let sql = "SELECT u, d, count(*) AS c, max(n) AS m FROM t GROUP BY u, d";
        let node = node(&ours, sql).await;
        let task = ours.task_ctx();
        datafusion::physical_plan::collect(std::sync::Arc::clone(&node), task)
            .await
            .unwrap();
        assert!(metric(node.as_ref(), "skipped_aggregation_rows") > 0);
        assert_eq!(rows(&ours, sql).await, rows(&plain, sql).await);
    }

    /// The operator never polls its input after the input ended: here an input that waits
    /// for ever when polled again, as a repartition's output can.
    #[tokio::test]
    async fn an_ended_input_is_not_polled_again() {
        use datafusion::arrow::array::RecordBatch;
        use datafusion::error::Result;
        use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
        use futures::Stream;
        use std::pin::Pin;
        use std::task::{Context, Poll};

        /// Its batches, one end, then `Pending` for ever.
        struct EndsOnce(std::vec::IntoIter<RecordBatch>, bool);
        impl Stream for EndsOnce {
            type Item = Result<RecordBatch>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                match self.0.next() {
                    Some(b) => Poll::Ready(Some(Ok(b))),
                    None if self.1 => Poll::Pending,
                    None => {
                        self.1 = true;
                        Poll::Ready(None)
                    }
                }
            }
        }

        let dir = tempfile::tempdir().unwrap();
        let (plain, ours) = sessions(dir.path(), 5_000, 300, crate::query::empty_context()).await;
        let sql = "SELECT u, s, count(*) AS c FROM t GROUP BY u, s";
        let node = node(&ours, sql).await;
        let exec = node.downcast_ref::<super::InternedAggregateExec>().unwrap();
        let agg = exec.agg();
        let task = ours.task_ctx();
        let mut groups = 0;
        for p in 0..agg.input().properties().partitioning.partition_count() {
            let stream = agg
                .input()
                .execute(p, std::sync::Arc::clone(&task))
                .unwrap();
            let schema = stream.schema();
            let batches = datafusion::physical_plan::common::collect(stream)
                .await
                .unwrap();
            let input = Box::pin(RecordBatchStreamAdapter::new(
                schema,
                EndsOnce(batches.into_iter(), false),
            ));
            let table = super::Table::new(agg, p, &task, &exec.metrics).unwrap();
            // On a thread of its own, so that a wait for ever fails the test instead.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let out = rt.block_on(datafusion::physical_plan::common::collect(super::interned(
                    input, table,
                )));
                let _ = tx.send(out);
            });
            let out = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("the output ends")
                .unwrap();
            groups += out.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        assert!(groups >= rows(&plain, sql).await.len() - 4, "{groups}");
    }
}
