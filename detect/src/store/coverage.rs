//! Detection's bookkeeping: which event-store files it has covered (so an incremental pass
//! evaluates exactly the files it has not, however late they arrived) and when each rule last
//! ran.

use super::{AlertStore, Result};
use rusqlite::params;
use std::collections::BTreeSet;

impl AlertStore {
    /// Records a rule run (for `kvwatch rules list` and monitoring).
    pub fn record_run(
        &self,
        rule_id: &str,
        now: i64,
        windows: (i64, i64),
        occurrences: usize,
        elapsed_ms: u64,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO rule_runs (rule_id, last_run_at, window_from, window_to, occurrences, elapsed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (rule_id) DO UPDATE SET last_run_at=?2, window_from=?3, window_to=?4, occurrences=?5, elapsed_ms=?6",
            params![rule_id, now, windows.0, windows.1, occurrences as i64, elapsed_ms as i64],
        )?;
        Ok(())
    }

    /// Event-store files detection has covered.
    pub fn covered_files(&self) -> Result<BTreeSet<String>> {
        let mut st = self.conn.prepare("SELECT path FROM covered_files")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Records `files` (path, min time, max time) as the covered set: the manifest snapshot
    /// whose alerts were just stored. Paths compaction removed drop out.
    pub fn replace_covered(&mut self, files: &[(String, i64, i64)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM covered_files", [])?;
        for (p, a, b) in files {
            tx.execute(
                "INSERT OR REPLACE INTO covered_files (path, min_time, max_time) VALUES (?1, ?2, ?3)",
                params![p, a, b],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
