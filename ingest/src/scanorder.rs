//! Scans read in any order when nothing in the query needs their order.
//!
//! The store writes each file sorted by time and records that in the Parquet footer
//! (`sorting_columns`), and the detection engine declares the order too: window functions over
//! time (`lag`, sessions) then merge sorted files instead of sorting a week of events. Every
//! other query pays for that order. DataFusion keeps a file group's rows in order (no work
//! stealing between partitions), repartitions them with an order-preserving merge, and runs a
//! time-bucket aggregation in its partially-sorted mode: `kv-deny-burst` over 10 M events took
//! 3.1 s with the order and 2.1 s without it.
//!
//! [`UnorderedScans`] runs before DataFusion's own physical optimizer rules. When no operator of
//! a plan uses a scan's order — a window function over time per principal reading the scan's
//! rows, an aggregate with `ORDER BY` arguments, `ORDER BY time` over a scan — it forgets the
//! recorded order of every file scan, so the rules after it plan the query as over unordered
//! data. A plan that uses an order is left alone. A window over aggregated rows (bursts per
//! hour, then a count over earlier hours) sorts those few rows instead.
//! Results never depend on it: an operator that needs order says so, and `ORDER BY` still sorts.

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use std::sync::Arc;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct UnorderedScans;

/// Whether some operator of `plan` uses the recorded order of a file scan: it requires its
/// input in an order of which the scan's rows already satisfy a key (a window over time per
/// principal runs on time-ordered rows without sorting them), or it sorts rows that arrive in
/// the order of its leading key (a sort that merges sorted files, a top-k that stops early).
/// Only inputs that reach a scan through filters and projections count: above an aggregation
/// or a join the order came through operators this rule exists to free from it.
fn needs_order(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let mut needs = false;
    plan.apply(|node| {
        let required = node.required_input_ordering();
        for (i, child) in node.children().into_iter().enumerate() {
            if !ordered_scan_below(child) {
                continue;
            }
            let order = child.equivalence_properties();
            let requirement = required.get(i).cloned().flatten();
            needs = match (node.downcast_ref::<SortExec>(), requirement) {
                (Some(sort), _) => order.ordering_satisfy([sort.expr().first().clone()])?,
                // An aggregation asks to keep whatever order its input has (that is what puts
                // it in the partially-sorted mode); it needs one only for ordered arguments
                // (`array_agg(x ORDER BY time)`).
                (None, Some(_))
                    if node.downcast_ref::<AggregateExec>().is_some_and(|a| {
                        a.aggr_expr().iter().all(|e| e.order_bys().is_empty())
                    }) =>
                {
                    false
                }
                (None, Some(requirement)) => {
                    let mut any = false;
                    for key in requirement.first().iter() {
                        any = any || order.ordering_satisfy_requirement([key.clone()])?;
                    }
                    any
                }
                (None, None) => false,
            };
            if needs {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(needs)
}

/// Whether `plan` is a file scan with a recorded order, or reaches one through operators that
/// keep their input's rows in order (filters, projections).
fn ordered_scan_below(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut node = plan;
    loop {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>() {
            return exec
                .data_source()
                .downcast_ref::<FileScanConfig>()
                .is_some_and(|c| !c.output_ordering.is_empty());
        }
        if !(node.is::<FilterExec>() || node.is::<ProjectionExec>()) {
            return false;
        }
        match node.children()[..] {
            [child] => node = child,
            _ => return false,
        }
    }
}

/// `node` without a recorded order, if it is a file scan that has one and no limit (a limited
/// scan may be reading a prefix in order).
fn unordered(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let exec = node.downcast_ref::<DataSourceExec>()?;
    let config = exec.data_source().downcast_ref::<FileScanConfig>()?;
    if config.limit.is_some() || (config.output_ordering.is_empty() && !config.preserve_order) {
        return None;
    }
    let mut config = config.clone();
    config.output_ordering.clear();
    config.preserve_order = false;
    Some(DataSourceExec::from_data_source(config))
}

impl PhysicalOptimizerRule for UnorderedScans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if needs_order(&plan)? {
            return Ok(plan);
        }
        // Bottom up, so that every operator above a changed scan is rebuilt and derives its
        // properties (an aggregate's sorted mode among them) from the unordered input.
        plan.transform_up(|node| {
            Ok(match unordered(&node) {
                Some(scan) => Transformed::yes(scan),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "kvwatch_unordered_scans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// DataFusion's physical optimizer rules after [`UnorderedScans`] and
/// [`crate::pushdown::SelectivePushdown`], then [`crate::groupkeys::InternedGroupKeys`] (last,
/// so that no DataFusion rule has to know its node).
pub fn physical_optimizer_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> = vec![
        Arc::new(UnorderedScans),
        Arc::new(crate::pushdown::SelectivePushdown),
    ];
    rules.extend(datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules);
    rules.push(Arc::new(crate::groupkeys::InternedGroupKeys));
    rules
}

#[cfg(test)]
mod tests {
    use crate::query::context_with;
    use datafusion::execution::runtime_env::RuntimeEnv;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    /// Two Parquet files sorted by `ts`, declared so, read by a store session and by a plain
    /// DataFusion session.
    async fn sessions(dir: &std::path::Path) -> (SessionContext, SessionContext) {
        let plain = SessionContext::new();
        for (i, start) in [0, 5000].into_iter().enumerate() {
            let path = dir.join(format!("part-{i}.parquet"));
            plain
                .sql(&format!(
                    "COPY (SELECT v AS ts, v % 7 AS a, 'p' || (v % 13) AS s \
                     FROM generate_series({start}, {start} + 4999) AS g(v) ORDER BY ts) \
                     TO '{}' STORED AS PARQUET",
                    path.display()
                ))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
        }
        let ddl = format!(
            "CREATE EXTERNAL TABLE t (ts BIGINT NOT NULL, a BIGINT NOT NULL, s VARCHAR NOT NULL) \
             STORED AS PARQUET WITH ORDER (ts ASC) LOCATION '{}/'",
            dir.display()
        );
        let ours = context_with(Arc::new(RuntimeEnv::default()));
        for ctx in [&plain, &ours] {
            ctx.sql(&ddl).await.unwrap();
        }
        (plain, ours)
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> String {
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string()
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let text = crate::query::text(ctx, sql).await;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// A query that uses the files' order keeps it (no sort of its rows, a top-k that merges
    /// sorted files); one that does not reads them unordered; every query answers as plain
    /// DataFusion does.
    #[tokio::test]
    async fn scans_keep_their_order_only_for_operators_that_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, ours) = sessions(dir.path()).await;
        for (sql, ordered) in [
            (
                "SELECT a, ts / 600 AS b, count(*) AS n FROM t GROUP BY a, ts / 600",
                false,
            ),
            (
                "SELECT s, count(DISTINCT a) AS n FROM t WHERE ts > 100 GROUP BY s",
                false,
            ),
            (
                "SELECT ts, a, ts - lag(ts) OVER (PARTITION BY a ORDER BY ts) AS gap FROM t",
                true,
            ),
            ("SELECT ts, s FROM t WHERE a = 3 ORDER BY ts LIMIT 5", true),
            (
                "SELECT a, array_agg(ts ORDER BY ts) AS l FROM t WHERE ts < 40 GROUP BY a",
                true,
            ),
        ] {
            // Plain DataFusion keeps the declared order for every one of them.
            assert!(
                plan(&plain, sql).await.contains("output_ordering="),
                "{sql}"
            );
            let ours_plan = plan(&ours, sql).await;
            assert_eq!(
                ours_plan.contains("output_ordering="),
                ordered,
                "{sql}\n{ours_plan}"
            );
            if ordered {
                assert!(
                    !ours_plan.contains("SortExec: expr=[ts"),
                    "{sql}\n{ours_plan}"
                );
            }
            assert_eq!(rows(&ours, sql).await, rows(&plain, sql).await, "{sql}");
        }
    }
}
