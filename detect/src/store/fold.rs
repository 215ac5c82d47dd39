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
        let tx = self.conn.transaction()?;
        let mut stats = ApplyStats::default();
        let supp = meta.suppression_ns;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
        for o in occs {
            keys.insert((o.rule_id.clone(), o.dedup_key.clone()));
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
        for (rule, key) in &keys {
            rechain(&tx, rule, key, supp, now, &mut touched)?;
        }
        for a in &touched {
            recompute(&tx, a, now, self.max_evidence)?;
        }
        tx.commit()?;
        Ok(stats)
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
        let tx = self.conn.transaction()?;
        let stale: Vec<(String, String, String)> = {
            let mut st = tx.prepare_cached(
                "SELECT o.id, o.alert_id, a.dedup_key FROM occurrences o JOIN alerts a ON a.id = o.alert_id
                 WHERE o.rule_id = ?1 AND o.window_start >= ?2 AND o.window_start < ?3
                 ORDER BY o.window_start, o.id",
            )?;
            st.query_map(params![rule_id, windows.0, windows.1], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|(id, _, _)| !keep.contains(id.as_str()))
            .collect()
        };
        if stale.is_empty() {
            return Ok(0);
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut keys: BTreeSet<String> = BTreeSet::new();
        for (occ, alert, key) in &stale {
            tx.execute("DELETE FROM occurrences WHERE id = ?1", params![occ])?;
            tx.execute(
                "INSERT INTO alert_history (alert_id, at, actor, action, old, new)
                 VALUES (?1, ?2, 'detection', 'withdrawn', ?3, 'records that arrived later no longer support this occurrence')",
                params![alert, now, occ],
            )?;
            tracing::info!(rule = %rule_id, alert = %alert, occurrence = %occ, "alert.occurrence_withdrawn");
            touched.insert(alert.clone());
            keys.insert(key.clone());
        }
        for key in &keys {
            rechain(&tx, rule_id, key, meta.suppression_ns, now, &mut touched)?;
        }
        for a in &touched {
            if occurrence_count(&tx, a)? > 0 {
                recompute(&tx, a, now, self.max_evidence)?;
                continue;
            }
            let status: Option<String> = tx
                .query_row("SELECT status FROM alerts WHERE id = ?1", params![a], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(status) = status else { continue };
            let closes = status == "new" || status == "acknowledged";
            tx.execute(
                "UPDATE alerts SET occurrences = 0, updated_at = ?2,
                    status = CASE WHEN ?3 THEN 'resolved' ELSE status END,
                    summary = 'Withdrawn by detection: records that arrived later contradict it. Was: ' || summary
                 WHERE id = ?1",
                params![a, now, closes],
            )?;
            if closes {
                tx.execute(
                    "INSERT INTO alert_history (alert_id, at, actor, action, old, new) VALUES (?1, ?2, 'detection', 'status', ?3, 'resolved')",
                    params![a, now, status],
                )?;
            }
            tracing::warn!(rule = %rule_id, alert = %a, "alert.withdrawn");
        }
        tx.commit()?;
        Ok(stale.len() as u64)
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

/// Folds a key's untouched alerts again from their occurrences in event order, as one pass
/// over all the data would; adds the alerts whose occurrences changed to `touched`.
fn rechain(
    tx: &rusqlite::Transaction<'_>,
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
    let mut st = tx.prepare_cached(
        "SELECT o.id, o.alert_id, o.first_seen, o.last_seen FROM occurrences o
           JOIN alerts a ON a.id = o.alert_id
         WHERE a.rule_id = ?1 AND a.dedup_key = ?2 AND a.status = 'new' AND a.assignee IS NULL
         ORDER BY o.window_start, o.id",
    )?;
    let rows: Vec<Row> = st
        .query_map(params![rule_id, key], |r| {
            Ok(Row {
                id: r.get(0)?,
                alert: r.get(1)?,
                first: r.get(2)?,
                last: r.get(3)?,
            })
        })?
        .collect::<std::result::Result<_, _>>()?;
    drop(st);
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
            tx.execute(
                "INSERT INTO alerts (id, rule_id, title, description, severity, severity_rank, status, dedup_key,
                    first_seen, last_seen, created_at, updated_at, event_count, occurrences, vaults, principals,
                    ips, objects, tactics, techniques, summary, evidence)
                 SELECT ?1, rule_id, title, description, severity, severity_rank, 'new', dedup_key,
                    first_seen, last_seen, created_at, ?3, 0, 0, '[]', '[]', '[]', '[]', tactics, techniques, '', '[]'
                 FROM alerts WHERE id = ?2",
                params![id, rows[*founder].alert, now],
            )?;
            tracing::info!(rule = %rule_id, alert = %id, key = %key, "alert.rekeyed");
        }
        for &m in members {
            if rows[m].alert != *id {
                tx.execute(
                    "UPDATE occurrences SET alert_id = ?2 WHERE id = ?1",
                    params![rows[m].id, id],
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
        tx.execute(
            "UPDATE alerts SET created_at = min(created_at, (SELECT created_at FROM alerts WHERE id = ?1))
             WHERE id = ?2",
            params![a, into],
        )?;
        tx.execute(
            "UPDATE alert_history SET alert_id = ?2 WHERE alert_id = ?1",
            params![a, into],
        )?;
        tx.execute(
            "INSERT INTO alert_history (alert_id, at, actor, action, old, new) VALUES (?1, ?2, 'detection', 'merged', ?3, ?1)",
            params![into, now, a],
        )?;
        tx.execute(
            "DELETE FROM sink_dead_letters WHERE alert_id = ?1",
            params![a],
        )?;
        tx.execute("DELETE FROM alert_terms WHERE alert_id = ?1", params![a])?;
        tx.execute("DELETE FROM alerts WHERE id = ?1", params![a])?;
        touched.remove(a);
    }
    Ok(())
}

fn occurrence_count(tx: &rusqlite::Transaction<'_>, alert_id: &str) -> Result<i64> {
    Ok(tx.query_row(
        "SELECT count(*) FROM occurrences WHERE alert_id = ?1",
        params![alert_id],
        |r| r.get(0),
    )?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use kvwatch_ingest::DataDir;

    const H: i64 = 3_600_000_000_000;

    fn occ(hour: i64) -> Occurrence {
        Occurrence {
            id: format!("occ-{hour:03}"),
            rule_id: "r".into(),
            dedup_key: "k".into(),
            window_start: hour * H,
            first_seen: hour * H,
            last_seen: hour * H + H / 2,
            event_count: 1,
            severity: Severity::Medium,
            summary: format!("hour {hour}"),
            principals: Vec::new(),
            vaults: vec!["v".into()],
            ips: Vec::new(),
            objects: Vec::new(),
            evidence: vec![format!("e{hour}")],
            fields: Default::default(),
        }
    }

    /// Rule metadata with a 2-hour suppression period.
    fn meta() -> AlertMeta<'static> {
        static NONE: Vec<String> = Vec::new();
        AlertMeta {
            title: "t",
            description: "d",
            tactics: &NONE,
            techniques: &NONE,
            suppression_ns: 2 * H,
        }
    }

    /// (alert ID, occurrence IDs) of every alert, in ID order.
    fn shape(dir: &std::path::Path, order: &[i64]) -> Vec<(String, Vec<String>)> {
        let data = DataDir::new(dir);
        let mut s = AlertStore::open(&data).unwrap();
        let meta = meta();
        for h in order {
            s.apply(&meta, &[occ(*h)], 0).unwrap();
        }
        let mut st = s
            .conn
            .prepare("SELECT alert_id, id FROM occurrences ORDER BY alert_id, id")
            .unwrap();
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
        {
            let (a, o) = r.unwrap();
            match out.last_mut() {
                Some((last, v)) if *last == a => v.push(o),
                _ => out.push((a, vec![o])),
            }
        }
        let alerts: i64 = s
            .conn
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(alerts as usize, out.len(), "no alert without occurrences");
        out
    }

    #[test]
    fn folding_does_not_depend_on_arrival_order() {
        // Two chains within the 2-hour suppression: hours 0, 1, 3 and 10, 11.
        let hours = [0, 1, 3, 10, 11];
        let want = shape(tempfile::tempdir().unwrap().path(), &hours);
        assert_eq!(
            want,
            vec![
                (
                    "occ-000".into(),
                    vec!["occ-000".into(), "occ-001".into(), "occ-003".into()]
                ),
                ("occ-010".into(), vec!["occ-010".into(), "occ-011".into()]),
            ]
        );
        for order in [[11, 10, 3, 1, 0], [3, 11, 0, 10, 1], [10, 1, 11, 3, 0]] {
            let got = shape(tempfile::tempdir().unwrap().path(), &order);
            assert_eq!(got, want, "arrival order {order:?}");
        }
        // An occurrence between two alerts that bridges them merges them into the first.
        let bridged = shape(tempfile::tempdir().unwrap().path(), &[0, 4, 2]);
        assert_eq!(bridged.len(), 1, "{bridged:?}");
        assert_eq!(bridged[0].0, "occ-000");
    }

    #[test]
    fn totals_kept_by_triggers_match_a_full_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = AlertStore::open(&DataDir::new(dir.path())).unwrap();
        let meta = meta();
        let same = |s: &AlertStore| {
            let mut full = s.counts(i64::MIN, i64::MAX).unwrap();
            full.by_rule.clear();
            assert_eq!(s.totals().unwrap(), full);
        };
        // Inserts, a fold, a bridging occurrence that merges two alerts (a delete), a higher
        // severity, analysts' status changes.
        s.apply(&meta, &[occ(0), occ(4), occ(10), occ(20), occ(30)], 0)
            .unwrap();
        same(&s);
        assert_eq!(s.totals().unwrap().total, 5);
        s.apply(&meta, &[occ(2)], 0).unwrap();
        let mut high = occ(30);
        high.severity = Severity::High;
        s.apply(&meta, &[high], 0).unwrap();
        same(&s);
        s.set_status("occ-020", crate::alert::Status::Suppressed, "ana", 1)
            .unwrap();
        s.set_status("occ-030", crate::alert::Status::Resolved, "ana", 2)
            .unwrap();
        same(&s);
        assert_eq!(s.totals().unwrap().total, 4);
    }

    #[test]
    fn withdrawing_shrinks_an_alert_resolves_an_empty_one_and_spares_analyst_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = AlertStore::open(&DataDir::new(dir.path())).unwrap();
        let meta = meta();
        // Alert occ-000 holds hours 0 and 1; alert occ-010 holds hour 10; occ-020 is suppressed.
        s.apply(&meta, &[occ(0), occ(1), occ(10), occ(20)], 0)
            .unwrap();
        s.set_status("occ-020", crate::alert::Status::Suppressed, "ana", 1)
            .unwrap();
        let status = |s: &AlertStore, id: &str| -> (String, i64) {
            s.conn
                .query_row(
                    "SELECT status, occurrences FROM alerts WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
        };
        // Windows [0 h, 24 h) re-evaluated: only hour 0 is still found.
        let keep: BTreeSet<&str> = ["occ-000"].into_iter().collect();
        let n = s.withdraw(&meta, "r", (0, 24 * H), &keep, 5).unwrap();
        assert_eq!(n, 3);
        assert_eq!(status(&s, "occ-000"), ("new".into(), 1));
        assert_eq!(status(&s, "occ-010"), ("resolved".into(), 0));
        assert_eq!(status(&s, "occ-020"), ("suppressed".into(), 0));
        let h = s.history("occ-010").unwrap();
        assert!(h.iter().any(|e| e.action == "withdrawn"), "{h:?}");
        assert!(
            h.iter()
                .any(|e| e.actor == "detection" && e.new.as_deref() == Some("resolved")),
            "{h:?}"
        );
        // Windows outside the range are not touched, and a second pass finds nothing more.
        assert_eq!(s.withdraw(&meta, "r", (0, 24 * H), &keep, 6).unwrap(), 0);
    }
}
