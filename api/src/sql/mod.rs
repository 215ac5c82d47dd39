//! Analyst SQL (`POST /api/v1/query`): read-only by construction, bounded in rows, time and
//! memory.
//!
//! Four independent guards, so that one mistake does not open the store:
//! 1. the text must parse as exactly one plain `SELECT`/`WITH` query (no `COPY`, DDL, DML,
//!    `SET`, `EXPLAIN ANALYZE` or extension statements);
//! 2. the plan is verified again with DDL, DML and statements disabled;
//! 3. the session knows only `events`, `activity`, `alerts`, `alert_history` and the
//!    `azure_diagnostics` view;
//!    URL tables (`FROM '/etc/passwd'`) are off and DataFusion's core has no file-reading
//!    functions, so no path outside the store can be named;
//! 4. the runtime has a memory limit and no disk manager, so a query cannot spill to (write)
//!    the filesystem, and results stop at a row limit and a timeout.

use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bounds of one analyst query.
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    /// Rows returned at most; more set `truncated`.
    pub max_rows: usize,
    /// Wall-clock limit for planning and execution.
    pub timeout: Duration,
    /// Memory the query's operators may hold (sorts, joins, aggregates).
    pub memory_bytes: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            timeout: Duration::from_secs(30),
            memory_bytes: 1 << 30,
        }
    }
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The statement is not a read-only query (HTTP 400).
    #[error("refused: {0}")]
    Refused(String),
    /// The query failed to plan or run: unknown column, type error, memory limit (HTTP 400).
    #[error("query failed: {0}")]
    Query(#[from] DataFusionError),
    /// The query ran past the timeout and was cancelled (HTTP 408).
    #[error("query cancelled after {0:?} (the limit)")]
    Timeout(Duration),
    #[error(transparent)]
    Store(#[from] kvwatch_ingest::store::StoreError),
    #[error(transparent)]
    Alerts(#[from] kvwatch_detect::AlertStoreError),
}

/// A finished query.
pub struct SqlResult {
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// The query had more rows than the limit.
    pub truncated: bool,
    pub elapsed: Duration,
}

/// Checks that `sql` is one read-only query and returns it parsed.
pub fn check(sql: &str) -> Result<DfStatement, SqlError> {
    let mut statements =
        DFParser::parse_sql(sql).map_err(|e| SqlError::Refused(format!("not valid SQL: {e}")))?;
    if statements.len() != 1 {
        return Err(SqlError::Refused(format!(
            "exactly one statement is allowed, found {}",
            statements.len()
        )));
    }
    let statement = statements.pop_front().expect("one statement");
    match &statement {
        DfStatement::Statement(s) if matches!(**s, SqlStatement::Query(_)) => Ok(statement),
        DfStatement::CopyTo(_) => Err(SqlError::Refused("COPY is not allowed".into())),
        DfStatement::CreateExternalTable(_) => Err(SqlError::Refused(
            "CREATE EXTERNAL TABLE is not allowed".into(),
        )),
        other => {
            let text = other.to_string();
            let verb = text.split_whitespace().next().unwrap_or("this statement");
            Err(SqlError::Refused(format!(
                "only SELECT queries are allowed, not {}",
                verb.to_uppercase()
            )))
        }
    }
}

/// A session with the analyst's tables over the current store snapshot, a memory limit and
/// no disk manager.
async fn session(data: &Path, memory_bytes: usize) -> Result<SessionContext, SqlError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_bytes, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()?;
    let state = SessionStateBuilder::new()
        .with_config(kvwatch_ingest::query::session_config())
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    if data.join(kvwatch_ingest::store::MANIFEST).exists() {
        kvwatch_ingest::query::register_store(&ctx, data).await?;
    } else {
        for t in kvwatch_ingest::schema::Table::ALL {
            kvwatch_ingest::query::register_files(&ctx, t.name(), t, &[])?;
        }
        ctx.sql(kvwatch_ingest::query::AZURE_DIAGNOSTICS_VIEW)
            .await?;
    }
    // Quarantined input is raw and unparsed: it is for operators (`kvwatch query`), not the API.
    ctx.deregister_table("quarantine")?;
    Ok(ctx)
}

/// Runs one analyst query against the store in `data`.
pub async fn run(data: &Path, sql: &str, limits: SqlLimits) -> Result<SqlResult, SqlError> {
    let started = Instant::now();
    let statement = check(sql)?;
    let work = async {
        let ctx = session(data, limits.memory_bytes).await?;
        let state = ctx.state();
        let refs = state.resolve_table_references(&statement)?;
        if refs.iter().any(|r| r.table() == "alerts") {
            kvwatch_detect::table::register_alerts(&ctx, data)?;
        }
        if refs.iter().any(|r| r.table() == "alert_history") {
            kvwatch_detect::table::register_alert_history(&ctx, data)?;
        }
        let plan = state.statement_to_plan(statement).await?;
        kvwatch_ingest::query::read_only().verify_plan(&plan)?;
        let mut stream = ctx
            .execute_logical_plan(plan)
            .await?
            .execute_stream()
            .await?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut truncated = false;
        while let Some(b) = stream.next().await {
            let b = b?;
            let room = limits.max_rows - rows;
            if b.num_rows() > room {
                batches.push(b.slice(0, room));
                rows += room;
                truncated = true;
                break;
            }
            rows += b.num_rows();
            batches.push(b);
        }
        Ok::<_, SqlError>((batches, rows, truncated))
    };
    let (batches, rows, truncated) = tokio::time::timeout(limits.timeout, work)
        .await
        .map_err(|_| SqlError::Timeout(limits.timeout))??;
    Ok(SqlResult {
        batches,
        rows,
        truncated,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_queries_pass_the_parser_guard() {
        for ok in [
            "SELECT 1",
            "select * from events where vault = 'x' limit 5",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "SELECT 1 UNION ALL SELECT 2",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "COPY events TO '/tmp/x.csv'",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO events SELECT * FROM events",
            "DROP TABLE events",
            "SET datafusion.execution.batch_size = 1",
            "SELECT 1; SELECT 2",
            "EXPLAIN ANALYZE SELECT 1",
            "CREATE VIEW v AS SELECT 1",
            "",
            "SELEC 1",
        ] {
            assert!(
                matches!(check(bad), Err(SqlError::Refused(_))),
                "{bad} was not refused"
            );
        }
    }

    #[tokio::test]
    async fn the_session_reads_no_file_outside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SqlLimits::default();
        for sql in [
            "SELECT * FROM '/etc/passwd'",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM read_parquet('/etc/passwd')",
            "SELECT * FROM quarantine",
        ] {
            assert!(
                matches!(run(dir.path(), sql, limits).await, Err(SqlError::Query(_))),
                "{sql} ran"
            );
        }
        let r = run(dir.path(), "SELECT count(*) AS n FROM events", limits)
            .await
            .unwrap();
        assert_eq!(r.rows, 1);
    }

    #[tokio::test]
    async fn rows_time_and_memory_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SqlLimits {
            max_rows: 1000,
            timeout: Duration::from_millis(500),
            memory_bytes: 64 << 20,
        };
        let r = run(
            dir.path(),
            "SELECT * FROM generate_series(1, 100000)",
            limits,
        )
        .await
        .unwrap();
        assert_eq!(r.rows, 1000);
        assert!(r.truncated);
        let slow = "SELECT count(*) FROM generate_series(1, 10000000000) a";
        assert!(matches!(
            run(dir.path(), slow, limits).await,
            Err(SqlError::Timeout(_))
        ));
        let big_sort =
            "SELECT value, repeat('x', 200) FROM generate_series(1, 5000000) ORDER BY value DESC";
        let long = SqlLimits {
            timeout: Duration::from_secs(60),
            ..limits
        };
        assert!(
            matches!(
                run(dir.path(), big_sort, long).await,
                Err(SqlError::Query(_))
            ),
            "a sort over the memory limit must fail, not spill to disk"
        );
    }
}
