//! Which scans evaluate their filter inside the Parquet decode.
//!
//! A filter pushed into the decode ("late materialisation") reads its own columns first and
//! decodes the other columns only for the rows it keeps. That pays when it keeps few rows:
//! `principal_upn = '…'` over a week (5.4 ms against 14.6 ms evaluated after the scan). When
//! it keeps most rows, it costs: the reader turns the filter's bits into row selections and
//! back into masks, then filters every other column. `operation LIKE '%Get'` keeps 72 % of the
//! events, and a GROUP BY of the reads took 42.7 ms pushed down against 26.8 ms after the scan.
//!
//! DataFusion 55 decides for all scans of a session at once. Store sessions switch it off
//! (`query::session_config`) and [`SelectivePushdown`], run before DataFusion's filter
//! pushdown, switches it back on for a Parquet scan when
//! - its filter has a conjunct that compares a column with constants for equality
//!   (`=`, `IN (…)`, or an `OR` of such): the shape that picks few events out of many;
//! - or it is below a hash join (either side: DataFusion picks the probe side later) or a
//!   top-k sort: DataFusion pushes the join's key set and the running top-k bound into the
//!   scan at run time, and those keep few rows (the rule pack's joins: mass-retrieval took
//!   3.4 s with its join filter in the decode and 5.3 s without).
//!
//! Other filters (suffix and infix `LIKE`, ranges, function calls) run after the scan; the
//! scan still prunes row groups and pages with them. Results never depend on it.

use datafusion::common::config::ConfigOptions;
use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, InListExpr, Literal, TryCastExpr,
};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use std::sync::Arc;

/// Turns filter pushdown on for the scans it pays for (see the module documentation).
#[derive(Debug, Default)]
pub struct SelectivePushdown;

impl PhysicalOptimizerRule for SelectivePushdown {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        mark(plan, false)
    }

    fn name(&self) -> &str {
        "kvwatch_selective_pushdown"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with pushdown on for the scans that get it; `filtered`: a run-time filter (a join's
/// keys, a top-k bound) will reach the scans below.
fn mark(plan: Arc<dyn ExecutionPlan>, filtered: bool) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(scan) = pushed(&plan, filtered) {
        return Ok(scan);
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>()
        && let Some(scan) = pushed(
            filter.input(),
            filtered || selective(filter.predicate().as_ref()),
        )
    {
        return replace_children_if_necessary(plan, vec![scan]);
    }
    // Both sides of a join: DataFusion's join selection, which runs later, may swap them.
    let below = filtered
        || plan.is::<HashJoinExec>()
        || plan
            .downcast_ref::<SortExec>()
            .is_some_and(|s| s.fetch().is_some());
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    if children.is_empty() {
        return Ok(plan);
    }
    let new = children
        .into_iter()
        .map(|child| mark(child, below))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, new)
}

/// `node` with pushdown on, when it is a Parquet scan and `on`.
fn pushed(node: &Arc<dyn ExecutionPlan>, on: bool) -> Option<Arc<dyn ExecutionPlan>> {
    if !on {
        return None;
    }
    let exec = node.downcast_ref::<DataSourceExec>()?;
    let config = exec.data_source().downcast_ref::<FileScanConfig>()?;
    let source = config.file_source().downcast_ref::<ParquetSource>()?;
    let mut config = config.clone();
    config.file_source = Arc::new(source.clone().with_pushdown_filters(true));
    Some(DataSourceExec::from_data_source(config))
}

/// Whether `e` has the shape of a filter that keeps few rows: equality of a column with
/// constants, in some conjunct.
fn selective(e: &dyn PhysicalExpr) -> bool {
    if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        return match b.op() {
            Operator::And => selective(b.left().as_ref()) || selective(b.right().as_ref()),
            Operator::Or => selective(b.left().as_ref()) && selective(b.right().as_ref()),
            Operator::Eq => {
                (column(b.left().as_ref()) && constant(b.right().as_ref()))
                    || (constant(b.left().as_ref()) && column(b.right().as_ref()))
            }
            _ => false,
        };
    }
    if let Some(l) = e.downcast_ref::<InListExpr>() {
        return !l.negated()
            && column(l.expr().as_ref())
            && l.list().iter().all(|x| constant(x.as_ref()));
    }
    false
}

/// A column, perhaps cast.
fn column(e: &dyn PhysicalExpr) -> bool {
    if e.is::<Column>() {
        return true;
    }
    if let Some(c) = e.downcast_ref::<CastExpr>() {
        return column(c.expr().as_ref());
    }
    if let Some(c) = e.downcast_ref::<TryCastExpr>() {
        return column(c.expr().as_ref());
    }
    false
}

fn constant(e: &dyn PhysicalExpr) -> bool {
    e.is::<Literal>()
}

#[cfg(test)]
mod tests {
    use crate::query::text;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};

    /// Two small Parquet files; the plans of a store session and the rows of both sessions.
    #[tokio::test]
    async fn selective_filters_are_pushed_and_broad_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let plain = SessionContext::new();
        let path = dir.path().join("t.parquet");
        let copy = format!(
            "COPY (SELECT CAST(value AS BIGINT) AS i, \
             CASE WHEN value % 4 = 0 THEN 'KeyList' ELSE concat('Secret', CAST(value % 7 AS VARCHAR), 'Get') END AS op \
             FROM generate_series(1, 20000)) TO '{}' STORED AS PARQUET",
            path.display()
        );
        plain.sql(&copy).await.unwrap().collect().await.unwrap();
        let ours = crate::query::empty_context();
        for ctx in [&plain, &ours] {
            ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
        }
        let plan = |sql: String| {
            let ours = ours.clone();
            async move { text(&ours, &format!("EXPLAIN {sql}")).await }
        };
        // (query, filter evaluated in the decode)
        let cases = [
            ("SELECT count(*) FROM t WHERE op = 'KeyList'", true),
            (
                "SELECT count(*) FROM t WHERE op IN ('Secret1Get', 'Secret2Get')",
                true,
            ),
            (
                "SELECT count(*) FROM t WHERE op LIKE '%Get' AND i = 9",
                true,
            ),
            ("SELECT count(*) FROM t WHERE op = 'KeyList' OR i = 9", true),
            ("SELECT count(*) FROM t WHERE op LIKE '%Get'", false),
            ("SELECT count(*) FROM t WHERE i > 100", false),
            (
                "SELECT count(*) FROM t WHERE op = 'KeyList' OR i > 9",
                false,
            ),
            ("SELECT count(*) FROM t WHERE op NOT IN ('KeyList')", false),
            // A top-k's bound reaches the scan at run time.
            (
                "SELECT i FROM t WHERE i > 100 ORDER BY i DESC LIMIT 3",
                true,
            ),
        ];
        for (sql, pushed) in cases {
            let p = plan(sql.to_string()).await;
            // A filter left to the plan shows as FilterExec; a pushed one only in the scan.
            assert_eq!(!p.contains("FilterExec"), pushed, "{sql}\n{p}");
            assert_eq!(text(&ours, sql).await, text(&plain, sql).await, "{sql}");
        }
        // Below a hash join, scans keep pushdown for the join's run-time key filter.
        let p = plan(
            "SELECT count(*) FROM t a JOIN (SELECT i FROM t WHERE op = 'KeyList') b ON a.i = b.i \
             WHERE a.i > 10"
                .into(),
        )
        .await;
        assert!(p.contains("HashJoinExec"), "{p}");
        assert!(!p.contains("FilterExec: i@0 > 10"), "{p}");
    }
}
