//! Occurrences in, alerts out: upserting an evaluation's occurrences by their deterministic
//! IDs, folding a new occurrence into an open alert of the same rule and dedup key within the
//! suppression period (counted and logged, never silent), and re-deriving an alert from its
//! occurrences whenever one changes.
//!
//! Folding is a function of the occurrences, not of the order they arrived in: a key's
//! untouched alerts (status `new`, no assignee) are re-chained after every change, in event
//! order, exactly as a single pass over all the data would have folded them, and each alert
//! is named after the first occurrence of its chain. An occurrence that arrives late (a
//! lagging partition, a file from last week) and belongs before an alert's first one therefore
//! re-keys that alert; the old ID's history moves along with a note of the change. Alerts an
//! analyst has touched are never re-keyed.

use super::db::{Sql, vals};
use super::{AlertStore, Result, json, rank, unjson};
use crate::alert::{AlertMeta, Occurrence, Principal, Severity, union_into};
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
    /// Stored occurrences the data no longer supports (records that arrived late
    /// contradicted them), taken out of their alerts.
    pub withdrawn: u64,
}

impl std::ops::AddAssign for ApplyStats {
    fn add_assign(&mut self, o: Self) {
        self.created += o.created;
        self.updated += o.updated;
        self.folded += o.folded;
        self.unchanged += o.unchanged;
        self.withdrawn += o.withdrawn;
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
        let max_evidence = self.max_evidence;
        self.db.tx(|tx| {
        let mut stats = ApplyStats::default();
        let supp = meta.suppression_ns;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
        for o in occs {
            keys.insert((o.rule_id.clone(), o.dedup_key.clone()));
            let body = json(o);
            let existing = tx.one(
                "SELECT alert_id, first_seen, last_seen, event_count, body FROM occurrences WHERE id = ?1",
                vals![&o.id],
            )?;
            if let Some(r) = existing {
                let (alert_id, f, l, c, old_body): (String, i64, i64, i64, String) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
                if f == o.first_seen && l == o.last_seen && c == o.event_count && old_body == body {
                    stats.unchanged += 1;
                    continue;
                }
                tx.exec(
                    "UPDATE occurrences SET first_seen=?2, last_seen=?3, event_count=?4, severity=?5, summary=?6, body=?7, updated_at=?8 WHERE id=?1",
                    vals![&o.id, o.first_seen, o.last_seen, o.event_count, o.severity.as_str(), &o.summary, body, now],
                )?;
                stats.updated += 1;
                touched.insert(alert_id);
                continue;
            }
            // A new window: fold into an open alert of the same key within the suppression period.
            let target: Option<String> = tx
                .one(
                    "SELECT id FROM alerts WHERE rule_id = ?1 AND dedup_key = ?2 AND status != 'resolved'
                       AND last_seen >= ?3 AND first_seen <= ?4
                     ORDER BY first_seen LIMIT 1",
                    vals![
                        &o.rule_id,
                        &o.dedup_key,
                        o.first_seen.saturating_sub(supp),
                        o.last_seen.saturating_add(supp)
                    ],
                )?
                .map(|r| r.get(0))
                .transpose()?;
            let alert_id = match target {
                Some(a) => {
                    stats.folded += 1;
                    tracing::info!(rule = %o.rule_id, alert = %a, occurrence = %o.id, key = %o.dedup_key, "alert.folded");
                    a
                }
                None => {
                    tx.exec(
                        "INSERT INTO alerts (id, rule_id, title, description, severity, severity_rank, status, dedup_key,
                            first_seen, last_seen, created_at, updated_at, event_count, occurrences, vaults, principals,
                            ips, objects, tactics, techniques, summary, evidence)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'new', ?7, ?8, ?9, ?10, ?10, 0, 0, '[]', '[]', '[]', '[]', ?11, ?12, '', '[]')",
                        vals![
                            &o.id,
                            &o.rule_id,
                            meta.title,
                            meta.description,
                            o.severity.as_str(),
                            rank(o.severity),
                            &o.dedup_key,
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
            tx.exec(
                "INSERT INTO occurrences (id, alert_id, rule_id, window_start, first_seen, last_seen, event_count, severity, summary, body, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                vals![&o.id, &alert_id, &o.rule_id, o.window_start, o.first_seen, o.last_seen, o.event_count, o.severity.as_str(), &o.summary, body, now],
            )?;
            touched.insert(alert_id);
        }
        for (rule, key) in &keys {
            rechain(tx, rule, key, supp, now, &mut touched)?;
        }
        for a in &touched {
            recompute(tx, a, now, max_evidence)?;
        }
        Ok(stats)
        })
    }

    /// Takes out the stored occurrences of `rule_id` in the windows `[w0, w1)` that the
    /// rule's latest evaluation of exactly those windows did not produce again (`keep` holds
    /// the IDs it did produce). For a rule that judges complete data this is what records
    /// arriving after their verdict do: a gap they fill was no silence, a read they show
    /// earlier makes a "first" read not the first. Each withdrawal is noted in the alert's
    /// history; an alert left with no occurrence is resolved by detection, so an analyst and
    /// every sink following the change feed see it closed, with the reason, rather than
    /// having it vanish. Alerts an analyst resolved or suppressed keep their status.
    pub fn withdraw(
        &mut self,
        meta: &AlertMeta<'_>,
        rule_id: &str,
        windows: (i64, i64),
        keep: &BTreeSet<&str>,
        now: i64,
    ) -> Result<u64> {
        let max_evidence = self.max_evidence;
        self.db.tx(|tx| {
        let stale: Vec<(String, String, String)> = tx
            .query(
                "SELECT o.id, o.alert_id, a.dedup_key FROM occurrences o JOIN alerts a ON a.id = o.alert_id
                 WHERE o.rule_id = ?1 AND o.window_start >= ?2 AND o.window_start < ?3
                 ORDER BY o.window_start, o.id",
                vals![rule_id, windows.0, windows.1],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .collect::<Result<Vec<(String, String, String)>>>()?
            .into_iter()
            .filter(|(id, _, _)| !keep.contains(id.as_str()))
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut keys: BTreeSet<String> = BTreeSet::new();
        for (occ, alert, key) in &stale {
            tx.exec("DELETE FROM occurrences WHERE id = ?1", vals![occ])?;
            tx.exec(
                "INSERT INTO alert_history (alert_id, at, actor, action, old, new)
                 VALUES (?1, ?2, 'detection', 'withdrawn', ?3, 'records that arrived later no longer support this occurrence')",
                vals![alert, now, occ],
            )?;
            tracing::info!(rule = %rule_id, alert = %alert, occurrence = %occ, "alert.occurrence_withdrawn");
            touched.insert(alert.clone());
            keys.insert(key.clone());
        }
        for key in &keys {
            rechain(tx, rule_id, key, meta.suppression_ns, now, &mut touched)?;
        }
        for a in &touched {
            if occurrence_count(tx, a)? > 0 {
                recompute(tx, a, now, max_evidence)?;
                continue;
            }
            let status: Option<String> = tx
                .one("SELECT status FROM alerts WHERE id = ?1", vals![a])?
                .map(|r| r.get(0))
                .transpose()?;
            let Some(status) = status else { continue };
            let closes = status == "new" || status == "acknowledged";
            tx.exec(
                "UPDATE alerts SET occurrences = 0, updated_at = ?2,
                    status = CASE WHEN ?3 THEN 'resolved' ELSE status END,
                    summary = 'Withdrawn by detection: records that arrived later contradict it. Was: ' || summary
                 WHERE id = ?1",
                vals![a, now, closes],
            )?;
            if closes {
                tx.exec(
                    "INSERT INTO alert_history (alert_id, at, actor, action, old, new) VALUES (?1, ?2, 'detection', 'status', ?3, 'resolved')",
                    vals![a, now, status],
                )?;
            }
            tracing::warn!(rule = %rule_id, alert = %a, "alert.withdrawn");
        }
        Ok(stale.len() as u64)
        })
    }

    /// Occurrences of one alert, oldest first.
    pub fn occurrences(&self, alert_id: &str) -> Result<Vec<Occurrence>> {
        self.db.with(|db| {
            db.query(
                "SELECT body FROM occurrences WHERE alert_id = ?1 ORDER BY window_start, id",
                vals![alert_id],
            )?
            .iter()
            .map(|r| unjson("occurrences.body", &r.get::<String>(0)?))
            .collect()
        })
    }
}

/// Folds a key's untouched alerts again from their occurrences in event order, as one pass
/// over all the data would; adds the alerts whose occurrences changed to `touched`.
fn rechain(
    tx: &mut dyn Sql,
    rule_id: &str,
    key: &str,
    supp: i64,
    now: i64,
    touched: &mut BTreeSet<String>,
) -> Result<()> {
    struct Row {
        id: String,
        alert: String,
        first: i64,
        last: i64,
    }
    let rows: Vec<Row> = tx
        .query(
            "SELECT o.id, o.alert_id, o.first_seen, o.last_seen FROM occurrences o
               JOIN alerts a ON a.id = o.alert_id
             WHERE a.rule_id = ?1 AND a.dedup_key = ?2 AND a.status = 'new' AND a.assignee IS NULL
             ORDER BY o.window_start, o.id",
            vals![rule_id, key],
        )?
        .iter()
        .map(|r| {
            Ok(Row {
                id: r.get(0)?,
                alert: r.get(1)?,
                first: r.get(2)?,
                last: r.get(3)?,
            })
        })
        .collect::<Result<_>>()?;
    // Chains in event order: an occurrence joins the open chain when it lies within the
    // suppression period of it (the rule `apply` follows for data arriving in order).
    let mut chains: Vec<(usize, i64, i64, Vec<usize>)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        match chains.last_mut() {
            Some(c)
                if r.first <= c.2.saturating_add(supp) && r.last >= c.1.saturating_sub(supp) =>
            {
                c.1 = c.1.min(r.first);
                c.2 = c.2.max(r.last);
                c.3.push(i);
            }
            _ => chains.push((i, r.first, r.last, vec![i])),
        }
    }
    let settled = chains
        .iter()
        .all(|c| c.3.iter().all(|&i| rows[i].alert == rows[c.0].id));
    if settled {
        return Ok(());
    }
    let old: BTreeSet<&str> = rows.iter().map(|r| r.alert.as_str()).collect();
    for (founder, _, _, members) in &chains {
        let id = &rows[*founder].id;
        if !old.contains(id.as_str()) {
            // The chain's first occurrence founds the alert: a copy of the alert it was in,
            // under its own ID (recompute fills in the rest).
            tx.exec(
                "INSERT INTO alerts (id, rule_id, title, description, severity, severity_rank, status, dedup_key,
                    first_seen, last_seen, created_at, updated_at, event_count, occurrences, vaults, principals,
                    ips, objects, tactics, techniques, summary, evidence)
                 SELECT ?1, rule_id, title, description, severity, severity_rank, 'new', dedup_key,
                    first_seen, last_seen, created_at, ?3, 0, 0, '[]', '[]', '[]', '[]', tactics, techniques, '', '[]'
                 FROM alerts WHERE id = ?2",
                vals![id, &rows[*founder].alert, now],
            )?;
            tracing::info!(rule = %rule_id, alert = %id, key = %key, "alert.rekeyed");
        }
        for &m in members {
            if rows[m].alert != *id {
                tx.exec(
                    "UPDATE occurrences SET alert_id = ?2 WHERE id = ?1",
                    vals![&rows[m].id, id],
                )?;
                touched.insert(rows[m].alert.clone());
            }
        }
        touched.insert(id.clone());
    }
    // Alerts left without occurrences were merged or re-keyed: their trail follows their
    // first occurrence, and they go.
    let chain_of = |occ: &str| {
        chains
            .iter()
            .find(|c| c.3.iter().any(|&i| rows[i].id == occ))
            .map(|c| rows[c.0].id.clone())
    };
    for a in old {
        if occurrence_count(tx, a)? > 0 {
            continue;
        }
        let first_occ = rows.iter().find(|r| r.alert == a).map(|r| r.id.as_str());
        let Some(into) = first_occ.and_then(chain_of) else {
            continue;
        };
        // The incident was first detected when the earliest of its parts was.
        tx.exec(
            "UPDATE alerts SET created_at = (SELECT min(created_at) FROM alerts WHERE id IN (?1, ?2))
             WHERE id = ?2",
            vals![a, &into],
        )?;
        tx.exec(
            "UPDATE alert_history SET alert_id = ?2 WHERE alert_id = ?1",
            vals![a, &into],
        )?;
        tx.exec(
            "INSERT INTO alert_history (alert_id, at, actor, action, old, new) VALUES (?1, ?2, 'detection', 'merged', ?3, ?1)",
            vals![&into, now, a],
        )?;
        tx.exec(
            "DELETE FROM sink_dead_letters WHERE alert_id = ?1",
            vals![a],
        )?;
        tx.exec("DELETE FROM alert_terms WHERE alert_id = ?1", vals![a])?;
        tx.exec("DELETE FROM alerts WHERE id = ?1", vals![a])?;
        touched.remove(a);
    }
    Ok(())
}

fn occurrence_count(tx: &mut dyn Sql, alert_id: &str) -> Result<i64> {
    match tx.one(
        "SELECT count(*) FROM occurrences WHERE alert_id = ?1",
        vals![alert_id],
    )? {
        Some(r) => r.get(0),
        None => Ok(0),
    }
}

/// Re-derives an alert from its occurrences.
fn recompute(tx: &mut dyn Sql, alert_id: &str, now: i64, max_evidence: usize) -> Result<()> {
    let bodies: Vec<String> = tx
        .query(
            "SELECT body FROM occurrences WHERE alert_id = ?1 ORDER BY window_start, id",
            vals![alert_id],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect::<Result<_>>()?;
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
    tx.exec(
        "UPDATE alerts SET severity=?2, severity_rank=?3, first_seen=?4, last_seen=?5, updated_at=?6, event_count=?7,
            occurrences=?8, vaults=?9, principals=?10, ips=?11, objects=?12, summary=?13, evidence=?14, evidence_truncated=?15
         WHERE id=?1",
        vals![
            alert_id,
            severity.as_str(),
            rank(severity),
            first,
            lastt,
            now,
            count,
            occs.len(),
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
