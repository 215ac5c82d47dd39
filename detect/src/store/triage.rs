//! Analysts' changes to alerts (status, assignee, comments), each recorded in the alert's
//! audit trail under the key that made it.

use super::{AlertStore, AlertStoreError, Result};
use crate::alert::Status;
use rusqlite::{OptionalExtension, params};

/// One entry of an alert's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    #[serde(serialize_with = "crate::alert::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// The API key name (or `cli:<user>`) that made the change.
    pub actor: String,
    /// `status`, `assignee` or `comment`.
    pub action: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// An analyst's change to an alert; `None` fields are left alone.
#[derive(Debug, Clone, Default)]
pub struct AlertUpdate {
    pub status: Option<Status>,
    /// `Some(None)` clears the assignee.
    pub assignee: Option<Option<String>>,
    pub comment: Option<String>,
}

impl AlertStore {
    /// Changes an alert's workflow status (recorded in its history as `actor`).
    pub fn set_status(&self, id: &str, status: Status, actor: &str, now: i64) -> Result<()> {
        let update = AlertUpdate {
            status: Some(status),
            ..Default::default()
        };
        self.update(id, &update, actor, now)
    }

    /// Applies an analyst's update in one transaction, with one history entry per field
    /// that changed (and one per comment).
    pub fn update(&self, id: &str, u: &AlertUpdate, actor: &str, now: i64) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let current: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT status, assignee FROM alerts WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((old_status, old_assignee)) = current else {
            return Err(AlertStoreError::NoSuchAlert(id.to_owned()));
        };
        let history = |action: &str, old: Option<&str>, new: Option<&str>| {
            tx.execute(
                "INSERT INTO alert_history (alert_id, at, actor, action, old, new) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, now, actor, action, old, new],
            )
        };
        let mut changed = false;
        if let Some(s) = u.status.filter(|s| s.as_str() != old_status) {
            history("status", Some(&old_status), Some(s.as_str()))?;
            changed = true;
        }
        if let Some(a) = u.assignee.as_ref().filter(|a| **a != old_assignee) {
            history("assignee", old_assignee.as_deref(), a.as_deref())?;
            changed = true;
        }
        if let Some(c) = &u.comment {
            history("comment", None, Some(c))?;
            changed = true;
        }
        if changed {
            tx.execute(
                "UPDATE alerts SET status = ?2, assignee = ?3, updated_at = ?4 WHERE id = ?1",
                params![
                    id,
                    u.status.map(Status::as_str).unwrap_or(&old_status),
                    u.assignee.clone().unwrap_or(old_assignee),
                    now
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The audit trail of one alert, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry>> {
        let mut st = self.conn.prepare(
            "SELECT at, actor, action, old, new FROM alert_history WHERE alert_id = ?1 ORDER BY seq",
        )?;
        let rows = st.query_map(params![id], |r| {
            Ok(HistoryEntry {
                at: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                old: r.get(3)?,
                new: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every audit-trail entry with its alert ID, in order.
    pub fn all_history(&self) -> Result<Vec<(String, HistoryEntry)>> {
        let mut st = self.conn.prepare(
            "SELECT alert_id, at, actor, action, old, new FROM alert_history ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get(0)?,
                HistoryEntry {
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    old: r.get(4)?,
                    new: r.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
