//! Occurrences in, alerts out: upserting an evaluation's occurrences by their deterministic
//! IDs, folding a new occurrence into an open alert of the same rule and dedup key within the
//! suppression period (counted and logged, never silent), and re-deriving an alert from its
//! occurrences whenever one changes.

use super::{AlertStore, Result, json, rank, unjson};
use crate::alert::{AlertMeta, Occurrence, Principal, Severity, union_into};
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeSet;

/// What applying one evaluation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyStats {
    /// Alerts opened.
    pub created: u64,
    /// Existing occurrences whose data changed (late events, longer bursts).
    pub updated: u64,
    /// New occurrences folded into an open alert inside the suppression period.
    pub folded: u64,
    /// Occurrences seen before with nothing new.
    pub unchanged: u64,
}

impl std::ops::AddAssign for ApplyStats {
    fn add_assign(&mut self, o: Self) {
        self.created += o.created;
        self.updated += o.updated;
        self.folded += o.folded;
        self.unchanged += o.unchanged;
    }
}

impl AlertStore {
    /// Stores one analytic's occurrences (upsert + fold), in one transaction.
    pub fn apply(
        &mut self,
        meta: &AlertMeta<'_>,
        occs: &[Occurrence],
        now: i64,
    ) -> Result<ApplyStats> {
        let tx = self.conn.transaction()?;
        let mut stats = ApplyStats::default();
        let supp = meta.suppression_ns;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for o in occs {
            let body = json(o);
            let existing: Option<(String, i64, i64, i64, String)> = tx
                .query_row(
                    "SELECT alert_id, first_seen, last_seen, event_count, body FROM occurrences WHERE id = ?1",
                    params![o.id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            if let Some((alert_id, f, l, c, old_body)) = existing {
                if f == o.first_seen && l == o.last_seen && c == o.event_count && old_body == body {
                    stats.unchanged += 1;
                    continue;
                }
                tx.execute(
                    "UPDATE occurrences SET first_seen=?2, last_seen=?3, event_count=?4, severity=?5, summary=?6, body=?7, updated_at=?8 WHERE id=?1",
                    params![o.id, o.first_seen, o.last_seen, o.event_count, o.severity.as_str(), o.summary, body, now],
                )?;
                stats.updated += 1;
                touched.insert(alert_id);
                continue;
            }
            // A new window: fold into an open alert of the same key within the suppression period.
            let target: Option<String> = tx
                .query_row(
                    "SELECT id FROM alerts WHERE rule_id = ?1 AND dedup_key = ?2 AND status != 'resolved'
                       AND last_seen >= ?3 AND first_seen <= ?4
                     ORDER BY first_seen LIMIT 1",
                    params![
                        o.rule_id,
                        o.dedup_key,
                        o.first_seen.saturating_sub(supp),
                        o.last_seen.saturating_add(supp)
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            let alert_id = match target {
                Some(a) => {
                    stats.folded += 1;
                    tracing::info!(rule = %o.rule_id, alert = %a, occurrence = %o.id, key = %o.dedup_key, "alert.folded");
                    a
                }
                None => {
                    tx.execute(
                        "INSERT INTO alerts (id, rule_id, title, description, severity, severity_rank, status, dedup_key,
                            first_seen, last_seen, created_at, updated_at, event_count, occurrences, vaults, principals,
                            ips, objects, tactics, techniques, summary, evidence)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'new', ?7, ?8, ?9, ?10, ?10, 0, 0, '[]', '[]', '[]', '[]', ?11, ?12, '', '[]')",
                        params![
                            o.id,
                            o.rule_id,
                            meta.title,
                            meta.description,
                            o.severity.as_str(),
                            rank(o.severity),
                            o.dedup_key,
                            o.first_seen,
                            o.last_seen,
                            now,
                            json(&meta.tactics),
                            json(&meta.techniques)
                        ],
                    )?;
                    stats.created += 1;
                    tracing::info!(rule = %o.rule_id, alert = %o.id, severity = %o.severity, key = %o.dedup_key, "alert.created");
                    o.id.clone()
                }
            };
            tx.execute(
                "INSERT INTO occurrences (id, alert_id, rule_id, window_start, first_seen, last_seen, event_count, severity, summary, body, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![o.id, alert_id, o.rule_id, o.window_start, o.first_seen, o.last_seen, o.event_count, o.severity.as_str(), o.summary, body, now],
            )?;
            touched.insert(alert_id);
        }
        for a in &touched {
            recompute(&tx, a, now, self.max_evidence)?;
        }
        tx.commit()?;
        Ok(stats)
    }

    /// Occurrences of one alert, oldest first.
    pub fn occurrences(&self, alert_id: &str) -> Result<Vec<Occurrence>> {
        let mut st = self.conn.prepare(
            "SELECT body FROM occurrences WHERE alert_id = ?1 ORDER BY window_start, id",
        )?;
        let rows = st.query_map(params![alert_id], |r| r.get::<_, String>(0))?;
        rows.map(|r| unjson("occurrences.body", &r?)).collect()
    }
}

/// Re-derives an alert from its occurrences.
fn recompute(
    tx: &rusqlite::Transaction<'_>,
    alert_id: &str,
    now: i64,
    max_evidence: usize,
) -> Result<()> {
    let mut st =
        tx.prepare("SELECT body FROM occurrences WHERE alert_id = ?1 ORDER BY window_start, id")?;
    let bodies: Vec<String> = st
        .query_map(params![alert_id], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let occs: Vec<Occurrence> = bodies
        .iter()
        .map(|b| unjson("occurrences.body", b))
        .collect::<Result<_>>()?;
    let Some(last) = occs.last() else {
        return Ok(());
    };
    let mut vaults = Vec::new();
    let mut principals: Vec<Principal> = Vec::new();
    let mut ips = Vec::new();
    let mut objects = Vec::new();
    let mut evidence: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut severity = Severity::Informational;
    for o in &occs {
        union_into(&mut vaults, &o.vaults);
        union_into(&mut principals, &o.principals);
        union_into(&mut ips, &o.ips);
        union_into(&mut objects, &o.objects);
        severity = severity.max(o.severity);
        for e in &o.evidence {
            if evidence.len() >= max_evidence {
                truncated = true;
                break;
            }
            evidence.push(e.clone());
        }
    }
    let first = occs.iter().map(|o| o.first_seen).min().unwrap_or(0);
    let lastt = occs.iter().map(|o| o.last_seen).max().unwrap_or(0);
    let count: i64 = occs.iter().map(|o| o.event_count).sum();
    let summary = if occs.len() > 1 {
        format!(
            "{} ({} occurrences folded into this alert, {count} events in all)",
            last.summary,
            occs.len()
        )
    } else {
        last.summary.clone()
    };
    tx.execute(
        "UPDATE alerts SET severity=?2, severity_rank=?3, first_seen=?4, last_seen=?5, updated_at=?6, event_count=?7,
            occurrences=?8, vaults=?9, principals=?10, ips=?11, objects=?12, summary=?13, evidence=?14, evidence_truncated=?15
         WHERE id=?1",
        params![
            alert_id,
            severity.as_str(),
            rank(severity),
            first,
            lastt,
            now,
            count,
            occs.len() as i64,
            json(&vaults),
            json(&principals),
            json(&ips),
            json(&objects),
            summary,
            json(&evidence),
            truncated
        ],
    )?;
    Ok(())
}
