//! What the SIEM forwarders keep in the alert store: each sink's cursor on the change feed
//! (moved only after delivery), the alerts a sink refused for good (dead letters), and the
//! queue of dead letters an operator asked to send again.

use super::{AlertStore, AlertStoreError, Result, alert_columns, change_seq_of, row_to_raw};
use crate::alert::Alert;
use rusqlite::{OptionalExtension, params};

/// An alert a sink refused permanently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub sink: String,
    pub alert_id: String,
    pub change_seq: i64,
    #[serde(serialize_with = "crate::alert::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub http_status: Option<i64>,
    pub error: String,
    /// An operator asked for it to be sent again.
    pub retry: bool,
}

impl AlertStore {
    /// The last change number delivered to `sink` (0 when it has delivered nothing).
    pub fn sink_cursor(&self, sink: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT change_seq FROM sink_cursors WHERE sink = ?1",
                params![sink],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Records that `sink` has everything up to change `seq`. Never moves a cursor back.
    pub fn set_sink_cursor(&self, sink: &str, seq: i64, now: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sink_cursors (sink, change_seq, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (sink) DO UPDATE SET change_seq = max(change_seq, ?2), updated_at = ?3",
            params![sink, seq, now],
        )?;
        Ok(())
    }

    /// Records alerts a sink refused for good. A later refusal of the same alert replaces
    /// the earlier entry.
    pub fn add_dead_letters(
        &self,
        sink: &str,
        alerts: &[(i64, &str)],
        http_status: Option<u16>,
        error: &str,
        now: i64,
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut st = tx.prepare(
                "INSERT OR REPLACE INTO sink_dead_letters \
                 (sink, alert_id, change_seq, at, http_status, error, retry) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
            )?;
            for (seq, id) in alerts {
                st.execute(params![sink, id, seq, now, http_status, error])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Dead letters, newest first; all sinks when `sink` is `None`.
    pub fn dead_letters(&self, sink: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut st = self.conn.prepare(
            "SELECT sink, alert_id, change_seq, at, http_status, error, retry FROM sink_dead_letters \
             WHERE ?1 IS NULL OR sink = ?1 ORDER BY at DESC, alert_id LIMIT ?2",
        )?;
        let rows = st.query_map(params![sink, limit as i64], |r| {
            Ok(DeadLetter {
                sink: r.get(0)?,
                alert_id: r.get(1)?,
                change_seq: r.get(2)?,
                at: r.get(3)?,
                http_status: r.get(4)?,
                error: r.get(5)?,
                retry: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Dead-letter counts per sink.
    pub fn dead_letter_counts(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT sink, count(*) FROM sink_dead_letters GROUP BY sink ORDER BY sink")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks a sink's dead letters for another delivery attempt; returns how many.
    pub fn retry_dead_letters(&self, sink: &str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE sink_dead_letters SET retry = 1 WHERE sink = ?1 AND retry = 0",
            params![sink],
        )?)
    }

    /// The alerts of `sink`'s dead letters that are marked for retry, with their current
    /// change numbers.
    pub fn retry_queue(&self, sink: &str, limit: usize) -> Result<Vec<(i64, Alert)>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {} FROM sink_dead_letters d JOIN alerts a ON a.id = d.alert_id \
             WHERE d.sink = ?1 AND d.retry = 1 ORDER BY a.change_seq LIMIT ?2",
            alert_columns("a")
        ))?;
        let rows = st.query_map(params![sink, limit as i64], |r| {
            Ok((change_seq_of(r)?, row_to_raw(r)?))
        })?;
        rows.map(|r| {
            let (seq, raw) = r.map_err(AlertStoreError::from)?;
            Ok((seq, raw.into_alert()?))
        })
        .collect()
    }

    /// Removes dead letters that have now been delivered.
    pub fn remove_dead_letters(&self, sink: &str, alert_ids: &[&str]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for id in alert_ids {
            tx.execute(
                "DELETE FROM sink_dead_letters WHERE sink = ?1 AND alert_id = ?2",
                params![sink, id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
