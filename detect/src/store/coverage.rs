//! Detection's bookkeeping: which event-store files it has covered (so an incremental pass
//! evaluates exactly the files it has not, however late they arrived), when each rule last
//! ran, what each rule still has to evaluate, and how far complete-data rules have judged.

use super::db::vals;
use super::{AlertStore, Result, json, unjson};

/// What one rule still owes continuous detection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleState {
    /// Event-time ranges committed since the rule last ran, held back by its interval.
    pub pending: Vec<(i64, i64)>,
    /// The watermark up to which a complete-data rule has judged.
    pub judged_to: Option<i64>,
    /// Wall clock of the rule's last evaluation.
    pub last_run_at: Option<i64>,
}
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
        self.db.tx(|db| {
            db.exec(
                "INSERT INTO rule_runs (rule_id, last_run_at, window_from, window_to, occurrences, elapsed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (rule_id) DO UPDATE SET last_run_at=?2, window_from=?3, window_to=?4, occurrences=?5, elapsed_ms=?6",
                vals![rule_id, now, windows.0, windows.1, occurrences, elapsed_ms as i64],
            )
        })?;
        Ok(())
    }

    /// The last run of every rule that ran: rule ID → (wall clock ns, occurrences found,
    /// milliseconds it took).
    pub fn rule_runs(&self) -> Result<std::collections::BTreeMap<String, (i64, i64, i64)>> {
        self.db
            .with(|db| {
                db.query(
                    "SELECT rule_id, last_run_at, occurrences, elapsed_ms FROM rule_runs",
                    &[],
                )
            })?
            .iter()
            .map(|r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
            .collect()
    }

    /// A rule's continuous-detection state (empty for a rule never run).
    pub fn rule_state(&self, rule_id: &str) -> Result<RuleState> {
        let (row, last_run_at) = self.db.with(|db| {
            let row: Option<(String, Option<i64>)> = db
                .one(
                    "SELECT pending, judged_to FROM rule_state WHERE rule_id = ?1",
                    vals![rule_id],
                )?
                .map(|r| Ok::<_, super::AlertStoreError>((r.get(0)?, r.get(1)?)))
                .transpose()?;
            let last: Option<i64> = db
                .one(
                    "SELECT last_run_at FROM rule_runs WHERE rule_id = ?1",
                    vals![rule_id],
                )?
                .map(|r| r.get(0))
                .transpose()?;
            Ok((row, last))
        })?;
        let (pending, judged_to) = match row {
            Some((p, j)) => (unjson("rule_state.pending", &p)?, j),
            None => (Vec::new(), None),
        };
        Ok(RuleState {
            pending,
            judged_to,
            last_run_at,
        })
    }

    /// Records what a rule still owes and how far it has judged.
    pub fn set_rule_state(&self, rule_id: &str, st: &RuleState) -> Result<()> {
        self.db.tx(|db| {
            db.exec(
                "INSERT INTO rule_state (rule_id, pending, judged_to) VALUES (?1, ?2, ?3)
                 ON CONFLICT (rule_id) DO UPDATE SET pending = ?2, judged_to = ?3",
                vals![rule_id, json(&st.pending), st.judged_to],
            )
        })?;
        Ok(())
    }

    /// Event-store files detection has covered.
    pub fn covered_files(&self) -> Result<BTreeSet<String>> {
        self.db
            .with(|db| db.query("SELECT path FROM covered_files", &[]))?
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Records `files` (path, min time, max time) as the covered set: the manifest snapshot
    /// whose alerts were just stored. Paths compaction removed drop out.
    pub fn replace_covered(&mut self, files: &[(String, i64, i64)]) -> Result<()> {
        self.db.tx(|tx| {
            tx.exec("DELETE FROM covered_files", &[])?;
            for (p, a, b) in files {
                tx.exec(
                    "INSERT INTO covered_files (path, min_time, max_time) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (path) DO UPDATE SET min_time = ?2, max_time = ?3",
                    vals![p, *a, *b],
                )?;
            }
            Ok(())
        })
    }

    /// Scheduled reports' progress: schedule name → the newest slot produced (ns).
    pub fn report_slots(&self) -> Result<std::collections::BTreeMap<String, i64>> {
        self.db
            .with(|db| db.query("SELECT schedule, last_slot_ns FROM report_slots", &[]))?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }

    /// Records the newest slot produced of each schedule in `slots` (leader work: fenced).
    pub fn set_report_slots(&self, slots: &std::collections::BTreeMap<String, i64>) -> Result<()> {
        self.db.tx(|db| {
            for (name, slot) in slots {
                db.exec(
                    "INSERT INTO report_slots (schedule, last_slot_ns) VALUES (?1, ?2)
                     ON CONFLICT (schedule) DO UPDATE SET last_slot_ns = ?2",
                    vals![name, *slot],
                )?;
            }
            Ok(())
        })
    }
}
