//! Copying a whole store into an empty PostgreSQL one (`kvwatch alerts migrate`): every
//! table as it is, change numbers and history sequence included, so the sinks' cursors and
//! the change feed carry on where they were. The derived tables (entity terms, totals) are
//! rebuilt by the destination's triggers. One transaction: a copy that fails leaves the
//! destination empty.

use super::db::{Dialect, Row, Sql, Val};
use super::{AlertStore, AlertStoreError, Result};

/// The tables copied, with their columns (in the order both schemas define them).
const TABLES: &[(&str, &str)] = &[
    (
        "alerts",
        "id, rule_id, title, description, severity, severity_rank, status, dedup_key, first_seen, last_seen, created_at, updated_at, event_count, occurrences, vaults, principals, ips, objects, tactics, techniques, summary, evidence, evidence_truncated, change_seq, assignee",
    ),
    (
        "occurrences",
        "id, alert_id, rule_id, window_start, first_seen, last_seen, event_count, severity, summary, body, updated_at",
    ),
    ("covered_files", "path, min_time, max_time"),
    (
        "rule_runs",
        "rule_id, last_run_at, window_from, window_to, occurrences, elapsed_ms",
    ),
    ("rule_state", "rule_id, pending, judged_to"),
    (
        "alert_history",
        "seq, alert_id, at, actor, action, old, new",
    ),
    ("sink_cursors", "sink, change_seq, updated_at"),
    (
        "sink_dead_letters",
        "sink, alert_id, change_seq, at, http_status, error, retry",
    ),
];

/// Rows read and written per statement.
const CHUNK: usize = 500;

/// What a copy moved: rows per table, in copy order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
}

impl AlertStore {
    /// Copies every row of this (SQLite) store into `dest`, a PostgreSQL store that holds no
    /// alerts yet; `progress(table, rows so far)` is called as rows go.
    pub fn copy_into(
        &self,
        dest: &AlertStore,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<CopyReport> {
        if self.dialect() != Dialect::Sqlite || dest.dialect() != Dialect::Postgres {
            return Err(AlertStoreError::Copy(
                "copies go from a SQLite store into a PostgreSQL one".into(),
            ));
        }
        dest.db.tx(|to| {
            let existing: i64 = count(to, "alerts")? + count(to, "alert_history")?;
            if existing > 0 {
                return Err(AlertStoreError::Copy(format!(
                    "the destination already holds {existing} alert or history rows; copy into an empty database"
                )));
            }
            to.exec("SELECT set_config('kvwatch.copying', 'on', true)", &[])?;
            let mut report = CopyReport::default();
            for (table, cols) in TABLES {
                let n = cols.split(", ").count();
                let mut last_rowid = i64::MIN;
                let mut copied = 0_u64;
                loop {
                    let mut rows: Vec<Row> = self.db.with(|from| {
                        from.query(
                            &format!(
                                "SELECT rowid, {cols} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
                            ),
                            &[Val::Int(last_rowid), Val::from(CHUNK)],
                        )
                    })?;
                    let Some(last) = rows.last() else { break };
                    last_rowid = last.get(0)?;
                    let mut params = Vec::with_capacity(rows.len() * n);
                    let mut tuples = Vec::with_capacity(rows.len());
                    for r in &mut rows {
                        let first = params.len();
                        let mut vals = r.take_all().into_iter().skip(1);
                        params.extend(&mut vals);
                        tuples.push(format!(
                            "({})",
                            (first + 1..=first + n)
                                .map(|i| format!("?{i}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    to.exec(
                        &format!("INSERT INTO {table} ({cols}) VALUES {}", tuples.join(", ")),
                        &params,
                    )?;
                    copied += rows.len() as u64;
                    progress(table, copied);
                }
                report.tables.push(((*table).to_owned(), copied));
            }
            to.exec("DELETE FROM alert_totals", &[])?;
            to.exec(
                "INSERT INTO alert_totals SELECT severity, status, count(*) FROM alerts GROUP BY 1, 2",
                &[],
            )?;
            // The planner's statistics, so the first listings use the indexes.
            to.exec("ANALYZE", &[])?;
            // New history entries continue after the copied ones.
            to.exec(
                "SELECT setval(pg_get_serial_sequence('alert_history', 'seq'), coalesce(max(seq), 0) + 1, false) FROM alert_history",
                &[],
            )?;
            for (table, copied) in &report.tables {
                let there = count(to, table)?;
                if there != *copied as i64 {
                    return Err(AlertStoreError::Copy(format!(
                        "{table}: copied {copied} rows but the destination holds {there}"
                    )));
                }
            }
            Ok(report)
        })
    }
}

fn count(db: &mut dyn Sql, table: &str) -> Result<i64> {
    match db.one(&format!("SELECT count(*) FROM {table}"), &[])? {
        Some(r) => r.get(0),
        None => Ok(0),
    }
}
