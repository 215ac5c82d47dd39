//! `count(DISTINCT s)` and `array_agg(DISTINCT s)` over strings, computed for all groups at
//! once.
//!
//! DataFusion 55 has no grouped accumulator for either over strings: every group of a
//! `GROUP BY` gets its own accumulator object (a row converter and a hash table each), and
//! emitting 100 k groups costs about a second. The rule pack groups reads per principal and
//! hour and collects the distinct vaults, addresses and items of each group
//! (`kv-read-burst-distinct` spent 3 of its 7 s there over 10 M events).
//!
//! [`register`] replaces the session's `count` and `array_agg` with wrappers that delegate
//! everything to DataFusion's functions, except that a `DISTINCT` call over one string argument
//! without `ORDER BY` is computed by [`DistinctStrings`]: every value of the column is stored
//! once (an interner), and each group keeps the ids of its distinct values. The results are the
//! same as DataFusion's: `count(DISTINCT s)` ignores NULL; `array_agg(DISTINCT s)` keeps one NULL
//! element when the group saw NULL (unless `IGNORE NULLS`) and is NULL for a group with no rows.
//! Element order in the list is first-seen order, which no caller may rely on (SQL gives none).

use datafusion::arrow::array::{
    Array, ArrayAccessor, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, StringBuilder,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{HashMap, HashSet, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::{
    AggregateFunction, AggregateFunctionParams, WindowFunctionParams,
};
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, Expr, GroupsAccumulator,
    Operator, ReversedUDAF, SetMonotonicity, Signature, StatisticsArgs,
};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// Which aggregate a [`GroupedDistinct`] wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Count,
    List,
}

/// DataFusion's `count` or `array_agg`, with [`DistinctStrings`] for `DISTINCT` over strings.
#[derive(Debug, PartialEq, Eq, Hash)]
struct GroupedDistinct {
    inner: Arc<AggregateUDF>,
    kind: Kind,
}

impl GroupedDistinct {
    fn ours(&self, args: &AccumulatorArgs) -> bool {
        args.is_distinct
            && args.order_bys.is_empty()
            && args.exprs.len() == 1
            && matches!(
                args.expr_fields[0].data_type(),
                DataType::Utf8 | DataType::Utf8View
            )
    }

    fn imp(&self) -> &Arc<dyn AggregateUDFImpl> {
        self.inner.inner()
    }
}

impl AggregateUDFImpl for GroupedDistinct {
    fn name(&self) -> &str {
        self.imp().name()
    }
    fn aliases(&self) -> &[String] {
        self.imp().aliases()
    }
    fn schema_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.imp().schema_name(params)
    }
    fn human_display(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.imp().human_display(params)
    }
    fn window_function_schema_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.imp().window_function_schema_name(params)
    }
    fn display_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.imp().display_name(params)
    }
    fn window_function_display_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.imp().window_function_display_name(params)
    }
    fn signature(&self) -> &Signature {
        self.imp().signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.imp().return_type(arg_types)
    }
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.imp().return_field(arg_fields)
    }
    fn is_nullable(&self) -> bool {
        self.imp().is_nullable()
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.imp().accumulator(args)
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.imp().state_fields(args)
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.ours(&args) || self.imp().groups_accumulator_supported(args)
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        if !self.ours(&args) {
            return self.imp().create_groups_accumulator(args);
        }
        let keep_null = self.kind == Kind::List && !args.ignore_nulls;
        #[cfg(test)]
        tests::CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let views = args.expr_fields[0].data_type() == &DataType::Utf8View;
        Ok(Box::new(DistinctStrings::new(self.kind, keep_null, views)))
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.imp().create_sliding_accumulator(args)
    }
    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        let kind = self.kind;
        Ok(Arc::clone(self.imp())
            .with_beneficial_ordering(beneficial_ordering)?
            .map(|imp| {
                Arc::new(GroupedDistinct {
                    inner: Arc::new(AggregateUDF::new_from_shared_impl(imp)),
                    kind,
                }) as Arc<dyn AggregateUDFImpl>
            }))
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.imp().order_sensitivity()
    }
    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.imp().simplify()
    }
    fn simplify_expr_op_literal(
        &self,
        agg_function: &AggregateFunction,
        arg: &Expr,
        op: Operator,
        lit: &Expr,
        arg_is_left: bool,
    ) -> Result<Option<Expr>> {
        self.imp()
            .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        self.imp().reverse_expr()
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.imp().coerce_types(arg_types)
    }
    fn is_descending(&self) -> Option<bool> {
        self.imp().is_descending()
    }
    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.imp().value_from_stats(statistics_args)
    }
    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.imp().default_value(data_type)
    }
    fn supports_null_handling_clause(&self) -> bool {
        self.imp().supports_null_handling_clause()
    }
    fn supports_within_group_clause(&self) -> bool {
        self.imp().supports_within_group_clause()
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.imp().documentation()
    }
    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.imp().set_monotonicity(data_type)
    }
}

/// The distinct strings of every group. Values are interned once for all groups; a group
/// holds the ids of its values in first-seen order, with a hash set beside them once it has
/// more than [`SMALL`] (most groups have a handful: a principal's vaults, addresses).
#[derive(Debug)]
pub struct DistinctStrings {
    kind: Kind,
    keep_null: bool,
    /// Whether the values are string views (`Utf8View`, how the store's tables are read)
    /// rather than `Utf8`: the lists it returns are of the same type.
    views: bool,
    ids: HashMap<Arc<str>, u32>,
    values: Vec<Arc<str>>,
    value_bytes: usize,
    groups: Vec<Group>,
    /// Heap bytes of the groups' id lists and sets, kept as they change: `size` is asked
    /// after every batch and must not walk a million groups.
    group_bytes: usize,
}

/// Groups up to this many values find duplicates by a linear scan.
const SMALL: usize = 16;

#[derive(Debug, Default)]
struct Group {
    /// Whether any row of the group was seen (a list aggregate over no rows is NULL).
    seen: bool,
    /// Whether the group saw NULL.
    null: bool,
    ids: Vec<u32>,
    index: Option<HashSet<u32>>,
}

impl Group {
    fn insert(&mut self, id: u32) {
        if let Some(index) = &mut self.index {
            if index.insert(id) {
                self.ids.push(id);
            }
            return;
        }
        if self.ids.contains(&id) {
            return;
        }
        self.ids.push(id);
        if self.ids.len() > SMALL {
            self.index = Some(self.ids.iter().copied().collect());
        }
    }

    fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 4 + self.index.as_ref().map_or(0, |i| i.capacity() * 8)
    }
}

impl DistinctStrings {
    fn new(kind: Kind, keep_null: bool, views: bool) -> Self {
        DistinctStrings {
            kind,
            keep_null,
            views,
            ids: HashMap::default(),
            values: Vec::new(),
            value_bytes: 0,
            groups: Vec::new(),
            group_bytes: 0,
        }
    }

    fn id(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        let owned: Arc<str> = value.into();
        self.value_bytes += owned.len();
        self.ids.insert(Arc::clone(&owned), id);
        self.values.push(owned);
        id
    }

    fn add(&mut self, group: usize, value: Option<&str>) {
        match value {
            Some(v) => {
                let id = self.id(v);
                let g = &mut self.groups[group];
                let before = g.heap_bytes();
                g.seen = true;
                g.insert(id);
                self.group_bytes += g.heap_bytes() - before;
            }
            None => {
                let g = &mut self.groups[group];
                g.seen = true;
                g.null = true;
            }
        }
    }

    /// Adds every row of the string column `values` that `filter` keeps to its group.
    fn add_rows(
        &mut self,
        values: &ArrayRef,
        groups: impl Fn(usize) -> usize,
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        if let Some(strings) = values.as_string_opt::<i32>() {
            self.add_all(strings, groups, filter);
        } else if let Some(strings) = values.as_string_view_opt() {
            self.add_all(strings, groups, filter);
        } else {
            return exec_err!("distinct strings over {}", values.data_type());
        }
        Ok(())
    }

    fn add_all<'a>(
        &mut self,
        strings: impl ArrayAccessor<Item = &'a str>,
        groups: impl Fn(usize) -> usize,
        filter: Option<&BooleanArray>,
    ) {
        for row in 0..strings.len() {
            if filter.is_none_or(|m| m.is_valid(row) && m.value(row)) {
                let v = strings.is_valid(row).then(|| strings.value(row));
                self.add(groups(row), v);
            }
        }
    }

    /// The groups' values as lists of strings (string views when the argument was), NULL for
    /// a group with no rows; with `null`, a group that saw NULL gets one NULL element.
    fn lists(&self, groups: &[Group], null: bool) -> Result<ListArray> {
        let mut strings = StringBuilder::new();
        let mut offsets = Vec::with_capacity(groups.len() + 1);
        offsets.push(0i32);
        let mut len = 0i32;
        for g in groups {
            for &id in &g.ids {
                strings.append_value(&self.values[id as usize]);
            }
            len += g.ids.len() as i32;
            if null && g.null {
                strings.append_null();
                len += 1;
            }
            offsets.push(len);
        }
        let mut values: ArrayRef = Arc::new(strings.finish());
        if self.views {
            // Views over the same buffer: no string is copied again.
            values = cast(&values, &DataType::Utf8View)?;
        }
        let valid = NullBuffer::from_iter(groups.iter().map(|g| g.seen));
        Ok(ListArray::new(
            Arc::new(Field::new_list_field(values.data_type().clone(), true)),
            OffsetBuffer::new(offsets.into()),
            values,
            Some(valid),
        ))
    }
}

impl DistinctStrings {
    fn take(&mut self, emit_to: EmitTo) -> Vec<Group> {
        let groups = emit_to.take_needed(&mut self.groups);
        self.group_bytes -= groups.iter().map(Group::heap_bytes).sum::<usize>();
        groups
    }
}

impl GroupsAccumulator for DistinctStrings {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Group::default);
        self.add_rows(&values[0], |row| group_indices[row], opt_filter)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = self.take(emit_to);
        Ok(match self.kind {
            Kind::Count => Arc::new(Int64Array::from_iter_values(
                groups.iter().map(|g| g.ids.len() as i64),
            )),
            Kind::List => Arc::new(self.lists(&groups, self.keep_null)?),
        })
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = self.take(emit_to);
        // The partial state is the list of each group's distinct values (DataFusion's own
        // state for both aggregates); NULL travels as an element so the final step keeps it.
        let lists = self.lists(&groups, true)?;
        Ok(vec![Arc::new(match self.kind {
            // `count`'s state is never NULL: a group with no rows has an empty list.
            Kind::Count => {
                let (field, offsets, values, _) = lists.into_parts();
                ListArray::new(field, offsets, values, None)
            }
            Kind::List => lists,
        })])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Group::default);
        let lists = values[0].as_list::<i32>();
        for (row, &group) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            self.groups[group].seen = true;
            self.add_rows(&lists.value(row), |_| group, None)?;
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own group: its value as a one-element list.
        let mut each = DistinctStrings::new(self.kind, true, self.views);
        each.groups.resize_with(values[0].len(), Group::default);
        each.add_rows(&values[0], |row| row, opt_filter)?;
        each.state(EmitTo::All)
    }

    fn size(&self) -> usize {
        self.value_bytes
            + self.values.capacity() * std::mem::size_of::<Arc<str>>()
            + self.ids.capacity() * (std::mem::size_of::<Arc<str>>() + 4 + 8)
            + self.groups.capacity() * std::mem::size_of::<Group>()
            + self.group_bytes
    }
}

/// Replaces `count` and `array_agg` in `ctx` with their grouped-distinct wrappers.
pub fn register(ctx: &SessionContext) {
    for (inner, kind) in [
        (
            datafusion::functions_aggregate::count::count_udaf(),
            Kind::Count,
        ),
        (
            datafusion::functions_aggregate::array_agg::array_agg_udaf(),
            Kind::List,
        ),
    ] {
        ctx.register_udaf(AggregateUDF::from(GroupedDistinct { inner, kind }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionConfig;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(super) static CREATED: AtomicUsize = AtomicUsize::new(0);

    /// Eight batches of (g, k, s, u): 500 groups, some with one value, some with hundreds (past
    /// the linear-scan size), NULL strings here and there, one group of NULLs only; the
    /// strings as `Utf8View` with `views`.
    fn table(views: bool) -> Arc<MemTable> {
        let string = if views {
            DataType::Utf8View
        } else {
            DataType::Utf8
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int32, false),
            Field::new("k", DataType::Int32, false),
            Field::new("s", string.clone(), true),
            Field::new("u", string.clone(), true),
        ]));
        let mut batches = Vec::new();
        let mut x: u64 = 7;
        for _ in 0..8 {
            let (mut g, mut k, mut s, mut u) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..4000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let group = ((x >> 33) % 500) as i32;
                let spread = if group % 10 == 0 {
                    400
                } else {
                    1 + group as u64 % 7
                };
                g.push(group);
                k.push(((x >> 20) % 10) as i32);
                s.push(match (group, (x >> 13) % 50) {
                    (499, _) | (_, 0) => None,
                    _ => Some(format!("v{}", (x >> 40) % spread)),
                });
                u.push((!(x >> 7).is_multiple_of(9)).then(|| format!("u{}", (x >> 50) % 5)));
            }
            batches.push(
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int32Array::from(g)),
                        Arc::new(Int32Array::from(k)),
                        cast(&StringArray::from(s), &string).unwrap(),
                        cast(&StringArray::from(u), &string).unwrap(),
                    ],
                )
                .unwrap(),
            );
        }
        Arc::new(
            MemTable::try_new(schema, vec![batches[..4].to_vec(), batches[4..].to_vec()]).unwrap(),
        )
    }

    /// Rows as text with every list's elements sorted, the rows sorted.
    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = Vec::new();
        for b in &batches {
            for row in 0..b.num_rows() {
                let mut cells = Vec::new();
                for c in b.columns() {
                    let v = ScalarValue::try_from_array(c, row).unwrap();
                    cells.push(match v {
                        ScalarValue::List(l) if !l.is_null(0) => {
                            let items = l.value(0);
                            let mut items: Vec<String> = (0..items.len())
                                .map(|i| {
                                    ScalarValue::try_from_array(&items, i).unwrap().to_string()
                                })
                                .collect();
                            items.sort();
                            format!("[{}]", items.join(","))
                        }
                        v => v.to_string(),
                    });
                }
                out.push(cells.join("|"));
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn grouped_distinct_strings_agree_with_datafusion() {
        // Distinct aggregates over two arguments: over one, DataFusion rewrites the query
        // into a GROUP BY of that argument and no distinct aggregate is left.
        let queries = [
            "SELECT g, count(DISTINCT s) AS n, array_agg(DISTINCT u) AS l, array_agg(DISTINCT s) \
             FROM t GROUP BY g",
            "SELECT g, count(DISTINCT s) FILTER (WHERE k > 6) AS n, \
             array_agg(DISTINCT u) FILTER (WHERE k > 6) AS l FROM t GROUP BY g",
            "SELECT k, count(DISTINCT s), array_agg(DISTINCT s), count(DISTINCT u), count(*), \
             count(s) FROM t GROUP BY k",
            "SELECT g % 3 AS h, count(DISTINCT s || 'x') AS n, array_agg(DISTINCT u) FROM t \
             WHERE g > 100 GROUP BY 1",
            "SELECT count(DISTINCT s), array_agg(DISTINCT u) FROM t",
            "SELECT g, count(DISTINCT s), count(DISTINCT u) FROM t WHERE g > 1000 GROUP BY g",
        ];
        // The partial step gives up pre-aggregating at once in the second configuration, so
        // rows go to the final step as single-value states (`convert_to_state`).
        for (skip_partial, views) in [(false, false), (true, false), (false, true), (true, true)] {
            let config = || {
                let c = SessionConfig::new()
                    .with_target_partitions(2)
                    .with_batch_size(1000);
                if skip_partial {
                    c.set_usize(
                        "datafusion.execution.skip_partial_aggregation_probe_rows_threshold",
                        1,
                    )
                    .set_str(
                        "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold",
                        "0.0",
                    )
                } else {
                    c
                }
            };
            let theirs = SessionContext::new_with_config(config());
            let ours = SessionContext::new_with_config(config());
            register(&ours);
            for ctx in [&theirs, &ours] {
                ctx.register_table("t", table(views)).unwrap();
            }
            for sql in queries {
                let before = CREATED.load(Ordering::Relaxed);
                let expected = rows(&theirs, sql).await;
                let got = rows(&ours, sql).await;
                assert_eq!(
                    got, expected,
                    "{sql} (skip partial: {skip_partial}, views: {views})"
                );
                if sql.contains("GROUP BY") && !sql.contains("1000") {
                    assert!(!expected.is_empty());
                    assert!(
                        CREATED.load(Ordering::Relaxed) > before,
                        "{sql}: not grouped"
                    );
                }
            }
        }
    }

    /// Under a memory pool too small for its groups, the final aggregation spills its states
    /// to disk and merges them back: the answers are DataFusion's own.
    #[tokio::test]
    async fn grouped_distinct_strings_spill_and_agree() {
        let data = "CREATE TABLE big AS SELECT v % 60000 AS g, 'p' || (v % 7) AS s, \
                    CASE WHEN v % 11 = 0 THEN NULL ELSE 'u' || (v % 5) END AS u \
                    FROM generate_series(1, 300000) AS t(v)";
        let sql =
            "SELECT g, count(DISTINCT s) AS n, array_agg(DISTINCT u) AS l FROM big GROUP BY g";
        let theirs = SessionContext::new();
        let ours = crate::query::spilling_context(3 << 20).unwrap();
        for ctx in [&theirs, &ours] {
            ctx.sql(data).await.unwrap().collect().await.unwrap();
        }
        let expected = rows(&theirs, sql).await;
        assert_eq!(expected.len(), 60000);
        let before = CREATED.load(Ordering::Relaxed);
        assert_eq!(rows(&ours, sql).await, expected);
        assert!(CREATED.load(Ordering::Relaxed) > before, "not grouped");
        let plan = crate::query::text(&ours, &format!("EXPLAIN ANALYZE {sql}")).await;
        let spills: usize = plan
            .split("spill_count=")
            .skip(1)
            .map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .sum();
        assert!(spills > 0, "no spill:\n{plan}");
    }
}
