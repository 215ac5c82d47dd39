//! One query, in the calling process: guard, session, plan, bounded collection. The SQL worker
//! runs this for each request; nothing else should call it with text written by a person,
//! because a statement that crashes the planner would end the caller.

use super::guard::{self, Refusal};
use super::{SqlError, SqlLimits, SqlResult, Tables};
use datafusion::arrow::array::RecordBatch;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use kvwatch_ingest::DataDir;
use std::time::Instant;

/// A session with the tables of `tables` over the current store snapshot, a memory pool and
/// no disk manager.
async fn session(
    data: &DataDir,
    memory_bytes: usize,
    tables: Tables,
) -> Result<SessionContext, SqlError> {
    let internal = |e: &dyn std::fmt::Display| SqlError::Internal(e.to_string());
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_bytes, 1.0)
        .with_cache_manager(kvwatch_ingest::query::shared_caches())
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(|e| internal(&e))?;
    let ctx = kvwatch_ingest::query::context_with(runtime);
    data.register(&ctx).await.map_err(|e| internal(&e))?;
    if tables == Tables::Analyst {
        // Quarantined input is raw and unparsed: it is for operators (`kvwatch query`).
        ctx.deregister_table("quarantine")
            .map_err(|e| internal(&e))?;
    }
    Ok(ctx)
}

/// What [`run`] ended with when it was refused before planning: the refusal still holds the
/// parsed statement, so that the caller decides how to dispose of it.
pub enum Outcome {
    Done(SqlResult),
    Failed(SqlError),
    Refused(Refusal),
}

/// Runs one query against the store in `data` within `limits`.
pub async fn run(data: &DataDir, sql: &str, limits: SqlLimits, tables: Tables) -> Outcome {
    let started = Instant::now();
    let statement = match guard::check(sql, limits.shape, tables == Tables::Operator) {
        Ok(s) => s,
        Err(r) => return Outcome::Refused(r),
    };
    let engine =
        |e: datafusion::error::DataFusionError| SqlError::from_engine(&e, limits.memory_bytes);
    let work = async {
        let ctx = session(data, limits.memory_bytes, tables).await?;
        let state = ctx.state();
        let refs = state.resolve_table_references(&statement).map_err(engine)?;
        let store_err = |e: kvwatch_detect::AlertStoreError| SqlError::Internal(e.to_string());
        if refs.iter().any(|r| r.table() == "alerts") {
            kvwatch_detect::table::register_alerts(&ctx, data).map_err(store_err)?;
        }
        if refs.iter().any(|r| r.table() == "alert_history") {
            kvwatch_detect::table::register_alert_history(&ctx, data).map_err(store_err)?;
        }
        let plan = state.statement_to_plan(statement).await.map_err(engine)?;
        kvwatch_ingest::query::read_only()
            .verify_plan(&plan)
            .map_err(|e| SqlError::Refused(super::public_message(&e.to_string())))?;
        let stream = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(engine)?
            .execute_stream()
            .await
            .map_err(engine)?;
        let schema = stream.schema();
        collect(stream, limits)
            .await
            .map(|(b, rows, truncated)| (schema, b, rows, truncated))
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Err(_) => Outcome::Failed(SqlError::Timeout(limits.timeout)),
        Ok(Err(e)) => Outcome::Failed(e),
        Ok(Ok((schema, batches, rows, truncated))) => Outcome::Done(SqlResult {
            schema,
            batches,
            rows,
            truncated,
            elapsed: started.elapsed(),
        }),
    }
}

/// Collects a result up to the row and byte limits.
async fn collect(
    mut stream: datafusion::execution::SendableRecordBatchStream,
    limits: SqlLimits,
) -> Result<(Vec<RecordBatch>, usize, bool), SqlError> {
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut bytes = 0usize;
    while let Some(b) = stream.next().await {
        let b = b.map_err(|e| SqlError::from_engine(&e, limits.memory_bytes))?;
        if b.num_rows() == 0 {
            continue;
        }
        let size = b.get_array_memory_size();
        let room_rows = limits.max_rows - rows;
        let room_bytes = limits.max_result_bytes.saturating_sub(bytes);
        if b.num_rows() <= room_rows && size <= room_bytes {
            rows += b.num_rows();
            bytes += size;
            batches.push(b);
            if rows == limits.max_rows {
                // The limit is reached exactly: truncated only if anything follows.
                let more = loop {
                    match stream.next().await {
                        Some(Ok(n)) if n.num_rows() == 0 => continue,
                        Some(Ok(_)) => break true,
                        Some(Err(e)) => {
                            return Err(SqlError::from_engine(&e, limits.memory_bytes));
                        }
                        None => break false,
                    }
                };
                return Ok((batches, rows, more));
            }
            continue;
        }
        // Take what fits: rows by count, bytes by the batch's average row size.
        let per_row = size.div_ceil(b.num_rows()).max(1);
        let take = room_rows.min(room_bytes / per_row);
        if take > 0 {
            batches.push(b.slice(0, take));
            rows += take;
        } else if rows == 0 {
            return Err(SqlError::Query(format!(
                "a single row is larger than the result limit ({} MiB): select fewer or narrower columns",
                limits.max_result_bytes >> 20
            )));
        }
        return Ok((batches, rows, true));
    }
    Ok((batches, rows, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn go(
        data: &std::path::Path,
        sql: &str,
        limits: SqlLimits,
    ) -> Result<SqlResult, SqlError> {
        match run(&DataDir::new(data), sql, limits, Tables::Analyst).await {
            Outcome::Done(r) => Ok(r),
            Outcome::Failed(e) => Err(e),
            Outcome::Refused(r) => Err(r.into_error()),
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
            match go(dir.path(), sql, limits).await {
                Err(SqlError::Query(m)) => {
                    let store = dir.path().display().to_string();
                    assert!(!m.contains(&store), "{m}");
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        let r = go(dir.path(), "SELECT count(*) AS n FROM events", limits)
            .await
            .unwrap();
        assert_eq!(r.rows, 1);
        // The analyst's documented tables and the time-bucket functions are there.
        let r = go(
            dir.path(),
            "SELECT hour_start(\"TimeGenerated\") FROM azure_diagnostics, information_schema.tables LIMIT 1",
            limits,
        )
        .await
        .unwrap();
        assert_eq!(r.rows, 0);
    }

    #[tokio::test]
    async fn rows_bytes_time_and_memory_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SqlLimits {
            max_rows: 1000,
            timeout: Duration::from_millis(500),
            memory_bytes: 64 << 20,
            ..SqlLimits::default()
        };
        let r = go(
            dir.path(),
            "SELECT * FROM generate_series(1, 100000)",
            limits,
        )
        .await
        .unwrap();
        assert_eq!(r.rows, 1000);
        assert!(r.truncated);
        let exact = go(dir.path(), "SELECT * FROM generate_series(1, 1000)", limits)
            .await
            .unwrap();
        assert_eq!((exact.rows, exact.truncated), (1000, false));
        let narrow = SqlLimits {
            max_result_bytes: 1 << 20,
            ..limits
        };
        let r = go(
            dir.path(),
            "SELECT repeat('x', 10000) FROM generate_series(1, 900)",
            narrow,
        )
        .await
        .unwrap();
        assert!(r.truncated && r.rows > 0 && r.rows < 900, "{}", r.rows);
        assert!(matches!(
            go(dir.path(), "SELECT repeat('x', 2000000)", narrow).await,
            Err(SqlError::Query(_))
        ));
        let slow = "SELECT count(*) FROM generate_series(1, 10000000000) a";
        assert!(matches!(
            go(dir.path(), slow, limits).await,
            Err(SqlError::Timeout(_))
        ));
        let big_sort =
            "SELECT value, repeat('x', 200) FROM generate_series(1, 5000000) ORDER BY value DESC";
        let long = SqlLimits {
            timeout: Duration::from_secs(60),
            ..limits
        };
        assert_eq!(
            go(dir.path(), big_sort, long).await.unwrap_err(),
            SqlError::Memory(64 << 20),
            "a sort over the memory limit must fail, not spill to disk"
        );
    }

    mod random_sql {
        //! Random statements through the guard and the planner: whatever the text, the
        //! answer is a result or an error, never a crash. The planner runs here in the test
        //! process on a thread with the worker's stack, as it does in the worker.
        use super::*;
        use proptest::prelude::*;

        const COLUMNS: &[&str] = &[
            "vault",
            "operation",
            "caller_ip",
            "http_status",
            "time",
            "principal_upn",
            "object_name",
            "duration_ms",
            "1",
            "'x'",
            "NULL",
            "TRUE",
            "2.5",
        ];
        const BINARY: &[&str] = &[
            "+", "-", "*", "/", "%", "||", "AND", "OR", "=", "<>", "<", ">=", "LIKE", "IS NOT",
        ];
        const FUNCTIONS: &[&str] = &[
            "abs",
            "lower",
            "upper",
            "length",
            "coalesce",
            "md5",
            "trim",
            "hour_start",
            "array_length",
            "cardinality",
            "nullif",
            "sqrt",
        ];

        fn expr() -> impl Strategy<Value = String> {
            let leaf = prop::sample::select(COLUMNS).prop_map(str::to_owned);
            leaf.prop_recursive(6, 64, 4, |inner| {
                prop_oneof![
                    (inner.clone(), prop::sample::select(BINARY), inner.clone())
                        .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
                    (
                        prop::sample::select(FUNCTIONS),
                        prop::collection::vec(inner.clone(), 1..3)
                    )
                        .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
                    (inner.clone(), inner.clone(), inner.clone())
                        .prop_map(|(c, a, b)| format!("CASE WHEN {c} THEN {a} ELSE {b} END")),
                    inner.clone().prop_map(|e| format!("NOT {e}")),
                    inner.prop_map(|e| format!("(SELECT max({e}) FROM events)")),
                ]
            })
        }

        fn statement() -> impl Strategy<Value = String> {
            let tables =
                prop::sample::select(&["events", "activity", "alerts", "azure_diagnostics"][..]);
            prop_oneof![
                (expr(), tables.clone(), expr()).prop_map(|(e, t, w)| {
                    format!("SELECT {e} AS a FROM {t} WHERE {w} LIMIT 5")
                }),
                (expr(), tables.clone(), expr()).prop_map(|(e, t, g)| {
                    format!("SELECT {g} AS g, count({e}) AS n FROM {t} GROUP BY 1 ORDER BY 2 DESC")
                }),
                (expr(), 1usize..400)
                    .prop_map(|(e, n)| { vec![format!("SELECT {e} AS a"); n].join(" UNION ALL ") }),
                // Long flat chains of one operator, the shape that overflowed the planner.
                (
                    prop::sample::select(COLUMNS),
                    prop::sample::select(BINARY),
                    1usize..5000
                )
                    .prop_map(|(c, op, n)| format!(
                        "SELECT {}",
                        vec![c; n].join(&format!(" {op} "))
                    )),
                // Token soup: anything a person might paste.
                prop::collection::vec(
                    prop::sample::select(
                        &[
                            "SELECT",
                            "FROM",
                            "WHERE",
                            "(",
                            ")",
                            ",",
                            "events",
                            "1",
                            "'a'",
                            "+",
                            "OR",
                            "NOT",
                            "CASE",
                            "WHEN",
                            "THEN",
                            "END",
                            "[",
                            "]",
                            "::",
                            "AS",
                            "GROUP BY",
                            "ORDER BY",
                            "UNION",
                            "JOIN",
                            "ON",
                            ";",
                            "--",
                            "/*",
                            "*/",
                            "COPY",
                            "TO",
                            "'/etc/passwd'",
                            "WITH",
                            "x",
                            "*",
                            "EXPLAIN",
                        ][..]
                    ),
                    0..120
                )
                .prop_map(|t| t.join(" ")),
            ]
        }

        fn plan(sql: String) {
            let dir = tempfile::tempdir().unwrap();
            let limits = SqlLimits {
                timeout: std::time::Duration::from_secs(2),
                memory_bytes: 64 << 20,
                ..SqlLimits::default()
            };
            let path = dir.path().to_owned();
            std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    match rt.block_on(run(&DataDir::new(&path), &sql, limits, Tables::Analyst)) {
                        Outcome::Refused(r) => {
                            // Refused text is leaked, as the worker does, not dropped deep.
                            let _ = r.leak();
                        }
                        Outcome::Failed(_) | Outcome::Done(_) => {}
                    }
                })
                .unwrap()
                .join()
                .expect("planning a random statement panicked");
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

            #[test]
            fn any_statement_gets_an_answer_not_a_crash(sql in statement()) {
                plan(sql);
            }
        }
    }
}
