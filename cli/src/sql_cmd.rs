//! `kvwatch query`, the bounds every analyst query runs under (shared with `serve`), and the
//! hidden `kvwatch sql-worker` the query pool starts.

use crate::config::Config;
use crate::output::{self, Format};
use anyhow::{Result, bail};
use clap::Args;
use kvwatch_api::sql::{PoolOptions, Shape, SqlLimits, SqlPool, Tables};
use kvwatch_ingest::DataDir;
use std::process::ExitCode;
use std::time::Duration;

/// Bounds of an analyst query (flags of `serve` and `query`).
#[derive(Args, Clone, Default)]
pub struct SqlArgs {
    /// Rows an analyst query returns at most [default: 10000; `kvwatch query`: all].
    #[arg(long, env = "KVWATCH_SQL_MAX_ROWS")]
    sql_max_rows: Option<usize>,
    /// Seconds an analyst query may run; it is cancelled (its worker killed) after
    /// [default: 30; `kvwatch query`: 3600].
    #[arg(long, env = "KVWATCH_SQL_TIMEOUT_SECS")]
    sql_timeout_secs: Option<u64>,
    /// Memory an analyst query's operators may hold, in MiB; its worker process may hold this
    /// plus twice the result limit plus 384 MiB [default: 1024].
    #[arg(long, env = "KVWATCH_SQL_MEMORY_MB")]
    sql_memory_mb: Option<usize>,
    /// Result an analyst query returns at most, in MiB (Arrow memory)
    /// [default: 64; `kvwatch query`: 1024].
    #[arg(long, env = "KVWATCH_SQL_MAX_RESULT_MB")]
    sql_max_result_mb: Option<usize>,
    /// Deepest expression nesting, and most UNION/INTERSECT/EXCEPT terms, of a query
    /// [default: 256].
    #[arg(long, env = "KVWATCH_SQL_MAX_DEPTH")]
    sql_max_depth: Option<usize>,
    /// Analyst queries that run at once, each in its own worker process [default: 2].
    #[arg(long, env = "KVWATCH_SQL_WORKERS")]
    sql_workers: Option<usize>,
}

impl SqlArgs {
    /// The limits of the API's analyst SQL: flags, environment, `[api]`, defaults.
    pub fn limits(&self, cfg: &Config) -> SqlLimits {
        self.limits_with(cfg, SqlLimits::default(), true)
    }

    /// The limits of `kvwatch query`, the operator's tool: the same guard, memory limit and
    /// worker, but by default every row (up to 1 GiB of result) and an hour to run; the
    /// `[api]` row, result and time settings are the API's and do not apply.
    pub fn cli_limits(&self, cfg: &Config) -> SqlLimits {
        let d = SqlLimits {
            max_rows: usize::MAX,
            max_result_bytes: 1 << 30,
            timeout: Duration::from_secs(3600),
            ..SqlLimits::default()
        };
        self.limits_with(cfg, d, false)
    }

    fn limits_with(&self, cfg: &Config, d: SqlLimits, api: bool) -> SqlLimits {
        let none = crate::config::ApiConfig::default();
        let c = if api { &cfg.api } else { &none };
        let depth = self
            .sql_max_depth
            .or(cfg.api.sql_max_depth)
            .unwrap_or(d.shape.max_depth)
            .clamp(8, 4096);
        SqlLimits {
            max_rows: self
                .sql_max_rows
                .or(c.sql_max_rows)
                .unwrap_or(d.max_rows)
                .max(1),
            max_result_bytes: self
                .sql_max_result_mb
                .or(c.sql_max_result_mb)
                .map(|m| m.max(1) << 20)
                .unwrap_or(d.max_result_bytes),
            timeout: self
                .sql_timeout_secs
                .or(c.sql_timeout_secs)
                .map(|s| Duration::from_secs(s.max(1)))
                .unwrap_or(d.timeout),
            memory_bytes: self
                .sql_memory_mb
                .or(cfg.api.sql_memory_mb)
                .map(|m| m.max(16) << 20)
                .unwrap_or(d.memory_bytes),
            shape: Shape {
                max_depth: depth,
                max_set_terms: depth,
            },
        }
    }

    pub fn pool(&self, cfg: &Config, data: &DataDir) -> Result<PoolOptions> {
        let mut o = PoolOptions::new(data.clone())?;
        o.workers = self.sql_workers.or(cfg.api.sql_workers).unwrap_or(2).max(1);
        Ok(o)
    }
}

#[derive(Args)]
pub struct QueryArgs {
    /// The SQL query (SELECT only).
    sql: String,
    #[arg(long, value_enum, default_value = "table", env = "KVWATCH_FORMAT")]
    format: Format,
    #[command(flatten)]
    bounds: SqlArgs,
}

/// `kvwatch query`: the operator's view (with `quarantine`), under the same bounds and in
/// the same kind of worker process as the API's analyst SQL.
pub async fn cmd_query(data: &DataDir, cfg: &Config, a: QueryArgs) -> Result<ExitCode> {
    if !data.has_events() && !data.root().exists() {
        bail!(
            "no event store at {} (run `kvwatch ingest` first, or pass --data)",
            data.root().display()
        );
    }
    let limits = a.bounds.cli_limits(cfg);
    let mut pool = a.bounds.pool(cfg, data)?;
    pool.workers = 1;
    let pool = SqlPool::new(pool);
    let res = pool.run(&a.sql, limits, Tables::Operator).await;
    pool.close();
    let res = res?;
    let mut out = std::io::stdout().lock();
    output::write_result(&mut out, &res.schema, &res.batches, a.format)?;
    if res.truncated {
        eprintln!(
            "query: the result was cut at {} rows (--sql-max-rows, --sql-max-result-mb)",
            res.rows
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kvwatch sql-worker`: serves queries on stdin/stdout for the pool of the parent process.
pub fn cmd_sql_worker(data: &DataDir) -> ExitCode {
    ExitCode::from(kvwatch_api::sql::worker::main(data.clone()).clamp(0, 255) as u8)
}
