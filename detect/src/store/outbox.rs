//! What the SIEM forwarders keep in the alert store: each sink's cursor on the change feed
//! (moved only after delivery), the alerts a sink refused for good (dead letters), and the
//! queue of dead letters an operator asked to send again.

use super::db::vals;
use super::{AlertStore, Result, alert_columns, changes_of};
use crate::alert::Alert;

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
        self.db.with(|db| {
            match db.one(
                "SELECT change_seq FROM sink_cursors WHERE sink = ?1",
                vals![sink],
            )? {
                Some(r) => r.get(0),
                None => Ok(0),
            }
        })
    }

    /// Records that `sink` has everything up to change `seq`. Never moves a cursor back.
    pub fn set_sink_cursor(&self, sink: &str, seq: i64, now: i64) -> Result<()> {
        self.db.tx(|db| {
            db.exec(
                "INSERT INTO sink_cursors (sink, change_seq, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (sink) DO UPDATE SET updated_at = ?3, change_seq = CASE \
                 WHEN sink_cursors.change_seq > ?2 THEN sink_cursors.change_seq ELSE ?2 END",
                vals![sink, seq, now],
            )
        })?;
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
        let status = http_status.map(i64::from);
        self.db.tx(|tx| {
            for (seq, id) in alerts {
                tx.exec(
                    "INSERT INTO sink_dead_letters \
                     (sink, alert_id, change_seq, at, http_status, error, retry) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0) ON CONFLICT (sink, alert_id) DO UPDATE SET \
                     change_seq = ?3, at = ?4, http_status = ?5, error = ?6, retry = 0",
                    vals![sink, *id, *seq, now, status, error],
                )?;
            }
            Ok(())
        })
    }

    /// Dead letters, newest first; all sinks when `sink` is `None`.
    pub fn dead_letters(&self, sink: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        // One statement per case: PostgreSQL cannot type a parameter that is only tested for
        // NULL.
        let rows = self.db.with(|db| match sink {
            Some(s) => db.query(
                "SELECT sink, alert_id, change_seq, at, http_status, error, retry FROM sink_dead_letters \
                 WHERE sink = ?1 ORDER BY at DESC, alert_id LIMIT ?2",
                vals![s, limit],
            ),
            None => db.query(
                "SELECT sink, alert_id, change_seq, at, http_status, error, retry FROM sink_dead_letters \
                 ORDER BY at DESC, alert_id LIMIT ?1",
                vals![limit],
            ),
        })?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    sink: r.get(0)?,
                    alert_id: r.get(1)?,
                    change_seq: r.get(2)?,
                    at: r.get(3)?,
                    http_status: r.get(4)?,
                    error: r.get(5)?,
                    retry: r.get(6)?,
                })
            })
            .collect()
    }

    /// Dead-letter counts per sink.
    pub fn dead_letter_counts(&self) -> Result<Vec<(String, i64)>> {
        self.db
            .with(|db| {
                db.query(
                    "SELECT sink, count(*) FROM sink_dead_letters GROUP BY sink ORDER BY sink",
                    &[],
                )
            })?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }

    /// Marks a sink's dead letters for another delivery attempt; returns how many.
    pub fn retry_dead_letters(&self, sink: &str) -> Result<usize> {
        let n = self.db.with(|db| {
            db.exec(
                "UPDATE sink_dead_letters SET retry = 1 WHERE sink = ?1 AND retry = 0",
                vals![sink],
            )
        })?;
        Ok(n as usize)
    }

    /// The alerts of `sink`'s dead letters that are marked for retry, with their current
    /// change numbers.
    pub fn retry_queue(&self, sink: &str, limit: usize) -> Result<Vec<(i64, Alert)>> {
        changes_of(self.db.with(|db| {
            db.query(
                &format!(
                    "SELECT {} FROM sink_dead_letters d JOIN alerts a ON a.id = d.alert_id \
                     WHERE d.sink = ?1 AND d.retry = 1 ORDER BY a.change_seq LIMIT ?2",
                    alert_columns("a")
                ),
                vals![sink, limit],
            )
        })?)
    }

    /// Removes dead letters that have now been delivered.
    pub fn remove_dead_letters(&self, sink: &str, alert_ids: &[&str]) -> Result<()> {
        self.db.tx(|tx| {
            for id in alert_ids {
                tx.exec(
                    "DELETE FROM sink_dead_letters WHERE sink = ?1 AND alert_id = ?2",
                    vals![sink, *id],
                )?;
            }
            Ok(())
        })
    }
}
