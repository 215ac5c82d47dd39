//! Analyst SQL (`POST /api/v1/query`, `kvwatch query`, the stats endpoint): read-only by
//! construction, bounded in shape, rows, bytes, time and memory, and run where it cannot hurt
//! the service.
//!
//! Layers, so that one mistake does not open the store or stop the service:
//! 1. [`guard`]: the text must parse as exactly one plain query, nested no deeper than the
//!    shape limits (a clear refusal instead of a stack overflow);
//! 2. the plan is verified again with DDL, DML and statements disabled;
//! 3. the session knows only the store's tables and views; URL tables are off and DataFusion's
//!    core has no file-reading functions, so no path outside the store can be named;
//! 4. the session has a memory pool and no disk manager, so a query cannot spill to (write)
//!    the filesystem, and results stop at a row and a byte limit;
//! 5. [`pool`]: the query runs in a separate worker process (`kvwatch sql-worker`) with an OS
//!    limit on its memory, at a lower CPU priority, killed at the deadline. A crash (a stack
//!    overflow in the planner), a loop that never yields or an allocation beyond the limit
//!    ends that worker, not the service; the caller gets a clear error and the pool a new
//!    worker.
//!
//! [`exec`] is what a worker runs for one request; [`worker`] is the worker's main loop and
//! the parent/worker protocol.

pub mod exec;
pub mod guard;
pub mod pool;
pub mod worker;

pub use guard::Shape;
pub use pool::{PoolOptions, SqlPool};

use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Bounds of one analyst query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Rows returned at most; more set `truncated`.
    pub max_rows: usize,
    /// Bytes of result (Arrow memory) returned at most; more set `truncated`.
    pub max_result_bytes: usize,
    /// Wall-clock limit for planning and execution.
    pub timeout: Duration,
    /// Memory the query's operators may hold (sorts, joins, aggregates). The worker process
    /// as a whole is limited to this plus the result limit plus [`pool::BASE_MEMORY`].
    pub memory_bytes: usize,
    /// Shape limits of the statement.
    pub shape: Shape,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            max_result_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            memory_bytes: 1 << 30,
            shape: Shape::default(),
        }
    }
}

/// Which tables a session shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tables {
    /// `events`, `activity`, `alerts`, `alert_history`, `azure_diagnostics` and
    /// `information_schema`: what the API and the console show.
    Analyst,
    /// The analyst's tables plus `quarantine` (raw, unparsed input): for operators at the CLI.
    Operator,
}

/// Why a query was not answered. Messages are for the person who wrote the query: they never
/// carry paths, backtraces or engine internals.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SqlError {
    /// The statement is not a read-only query (HTTP 400).
    #[error("refused: {0}")]
    Refused(String),
    /// The statement is nested deeper than the shape limits (HTTP 400).
    #[error("too complex: {0}")]
    TooComplex(String),
    /// The query failed to plan or run: unknown column, type error (HTTP 400).
    #[error("query failed: {0}")]
    Query(String),
    /// The query needed more memory than its limit (HTTP 400).
    #[error(
        "the query needed more memory than its limit ({} MiB): aggregate, filter or narrow the time range",
        .0 >> 20
    )]
    Memory(usize),
    /// The query ran past the timeout and was cancelled (HTTP 408).
    #[error("query cancelled after {0:?} (the limit)")]
    Timeout(Duration),
    /// Every worker is busy and none freed up in time (HTTP 503).
    #[error("every SQL worker is busy; retry shortly")]
    Busy,
    /// The worker ended without an answer for another reason (HTTP 500; details are logged).
    #[error("the query's worker process failed")]
    Crashed(String),
    /// The store or the worker could not be reached (HTTP 500; details are logged).
    #[error("the query could not be run")]
    Internal(String),
}

impl SqlError {
    /// A stable code for clients and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::Refused(_) => "refused",
            SqlError::TooComplex(_) => "too_complex",
            SqlError::Query(_) => "query_failed",
            SqlError::Memory(_) => "memory_limit",
            SqlError::Timeout(_) => "timeout",
            SqlError::Busy => "busy",
            SqlError::Crashed(_) => "worker_failed",
            SqlError::Internal(_) => "internal",
        }
    }

    /// What an operator needs in the log beyond the public message.
    pub fn internal_detail(&self) -> Option<&str> {
        match self {
            SqlError::Crashed(d) | SqlError::Internal(d) => Some(d),
            _ => None,
        }
    }

    /// Sorts an engine error into what the person who wrote the query may see: planning,
    /// schema, syntax and value errors keep their message (paths masked); memory exhaustion
    /// names the limit; anything internal to the engine or the store becomes `Internal`,
    /// whose detail is only logged.
    pub fn from_engine(e: &DataFusionError, memory_bytes: usize) -> SqlError {
        use datafusion::arrow::error::ArrowError;
        let root = e.find_root();
        // Functions that allocate by themselves report a failed allocation as an error of
        // their own kind: that is the memory limit too.
        let text = root.to_string();
        if text.contains("memory allocation failed") || text.contains("capacity overflow") {
            return SqlError::Memory(memory_bytes);
        }
        match root {
            DataFusionError::ResourcesExhausted(_) => SqlError::Memory(memory_bytes),
            DataFusionError::Plan(m)
            | DataFusionError::Execution(m)
            | DataFusionError::NotImplemented(m) => SqlError::Query(public_message(m)),
            DataFusionError::SchemaError(..) | DataFusionError::SQL(..) => {
                SqlError::Query(public_message(&root.message()))
            }
            DataFusionError::ArrowError(a, _) => match a.as_ref() {
                ArrowError::CastError(m)
                | ArrowError::ComputeError(m)
                | ArrowError::InvalidArgumentError(m)
                | ArrowError::ParseError(m)
                | ArrowError::ArithmeticOverflow(m) => SqlError::Query(public_message(m)),
                ArrowError::DivideByZero => SqlError::Query("division by zero".into()),
                ArrowError::MemoryError(_) => SqlError::Memory(memory_bytes),
                other => SqlError::Internal(other.to_string()),
            },
            other => SqlError::Internal(other.to_string()),
        }
    }
}

/// An engine message made fit for a client: the first line only (no backtrace, no "file a bug"
/// footer), absolute paths masked, at most 1,000 characters.
pub fn public_message(m: &str) -> String {
    let first = m
        .split(DataFusionError::BACK_TRACE_SEP)
        .next()
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .trim();
    let masked = mask_paths(first);
    if masked.chars().count() > 1000 {
        let cut: String = masked.chars().take(1000).collect();
        format!("{cut}…")
    } else {
        masked
    }
}

/// Replaces absolute filesystem paths (a `/` that starts a word and is followed by at least
/// one more `/`-separated component) with `<path>`.
fn mask_paths(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('/') {
        let starts_word = i == 0
            || rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_whitespace() || "'\"(=:".contains(c));
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || "'\"),".contains(c))
            .unwrap_or(tail.len());
        let word = &tail[..end];
        if starts_word && word[1..].contains('/') && word.len() > 2 {
            out.push_str(&rest[..i]);
            out.push_str("<path>");
            rest = &tail[end..];
        } else {
            out.push_str(&rest[..i + 1]);
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// A finished query.
#[derive(Debug)]
pub struct SqlResult {
    /// The result's columns (known even when there are no rows).
    pub schema: datafusion::arrow::datatypes::SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// The query had more rows (or bytes) than the limits.
    pub truncated: bool,
    pub elapsed: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_messages_keep_the_point_and_drop_internals() {
        assert_eq!(
            public_message(
                "Object Store error: /var/lib/kvwatch/events/date=2024-01-01/x.parquet not found"
            ),
            "Object Store error: <path> not found"
        );
        assert_eq!(public_message("No field named 'x'"), "No field named 'x'");
        assert_eq!(public_message("a / b and 1/2"), "a / b and 1/2");
        assert_eq!(
            public_message("first line\nThis issue was likely caused by a bug"),
            "first line"
        );
        let root = DataFusionError::ResourcesExhausted("Failed to allocate 10 bytes".into());
        let wrapped = DataFusionError::Context("while sorting".into(), Box::new(root));
        assert_eq!(
            SqlError::from_engine(&wrapped, 64 << 20),
            SqlError::Memory(64 << 20)
        );
        let internal = DataFusionError::Internal("Physical plan does not match".into());
        assert!(matches!(
            SqlError::from_engine(&internal, 0),
            SqlError::Internal(_)
        ));
        assert_eq!(
            SqlError::from_engine(&DataFusionError::Plan("table 'x' not found".into()), 0),
            SqlError::Query("table 'x' not found".into())
        );
    }
}
