//! Analysts' changes to alerts (status, assignee, comments), each recorded in the alert's
//! audit trail under the key that made it.

use super::db::{Row, vals};
use super::{AlertStore, AlertStoreError, Result};
use crate::alert::Status;

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
        self.db.tx(|tx| {
            let Some(r) = tx.one(
                "SELECT status, assignee FROM alerts WHERE id = ?1",
                vals![id],
            )?
            else {
                return Err(AlertStoreError::NoSuchAlert(id.to_owned()));
            };
            let (old_status, old_assignee): (String, Option<String>) = (r.get(0)?, r.get(1)?);
            let mut history = |action: &str, old: Option<&str>, new: Option<&str>| {
                tx.exec(
                    "INSERT INTO alert_history (alert_id, at, actor, action, old, new) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    vals![id, now, actor, action, old, new],
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
                tx.exec(
                    "UPDATE alerts SET status = ?2, assignee = ?3, updated_at = ?4 WHERE id = ?1",
                    vals![
                        id,
                        u.status.map(Status::as_str).unwrap_or(&old_status),
                        u.assignee.clone().unwrap_or(old_assignee),
                        now
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// The audit trail of one alert, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry>> {
        self.db
            .with(|db| {
                db.query(
                    "SELECT at, actor, action, old, new FROM alert_history WHERE alert_id = ?1 ORDER BY seq",
                    vals![id],
                )
            })?
            .iter()
            .map(|r| entry(r, 0))
            .collect()
    }

    /// Every audit-trail entry with its alert ID, in order.
    pub fn all_history(&self) -> Result<Vec<(String, HistoryEntry)>> {
        self.db
            .with(|db| {
                db.query(
                    "SELECT alert_id, at, actor, action, old, new FROM alert_history ORDER BY seq",
                    &[],
                )
            })?
            .iter()
            .map(|r| Ok((r.get(0)?, entry(r, 1)?)))
            .collect()
    }
}

/// The history entry in columns `at, actor, action, old, new` from column `i` on.
fn entry(r: &Row, i: usize) -> Result<HistoryEntry> {
    Ok(HistoryEntry {
        at: r.get(i)?,
        actor: r.get(i + 1)?,
        action: r.get(i + 2)?,
        old: r.get(i + 3)?,
        new: r.get(i + 4)?,
    })
}
