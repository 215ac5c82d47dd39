//! Detection quality against ground truth: recall, alerts on benign activity per million
//! events, and time to detect.
//!
//! An attack counts as detected when at least one alert names its actor (any of the label's
//! object ID, UPN, appid) or one of its IPs, and the alert's evidence window overlaps the
//! attack window (widened by a tolerance, because rules bucket time into windows). An alert
//! about a vault rather than a caller (no principals, no IPs: an audit stream going silent)
//! matches by vault instead. Alerts that match no attack are alerts on benign activity.

use crate::Labels;
use crate::attacks::Label;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A principal named by an alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub upn: Option<String>,
    #[serde(default)]
    pub appid: Option<String>,
}

/// The parts of an alert the scorer needs (field names as `kvwatch alerts --format json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredAlert {
    pub id: String,
    pub rule_id: String,
    #[serde(default)]
    pub severity: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    #[serde(default)]
    pub principals: Vec<Principal>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub vaults: Vec<String>,
    /// Wall-clock time the alert was raised (absent in alert files from older versions).
    #[serde(default)]
    pub detected_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackResult {
    pub id: String,
    pub kind: String,
    pub detected: bool,
    /// Alert IDs that caught it, with their rule IDs.
    pub alerts: Vec<(String, String)>,
    /// Seconds from attack start to the earliest matching alert's first evidence.
    pub time_to_detect_secs: Option<f64>,
    /// Wall-clock seconds from the attack's first event reaching the store to the first
    /// matching alert being raised (needs arrival times and `detected_at`).
    pub wall_time_to_detect_secs: Option<f64>,
}

/// Recall over the attacks of one class (`loud`, or a careful class).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClassRecall {
    pub attacks: usize,
    pub detected: usize,
    pub recall: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub attacks: Vec<AttackResult>,
    pub detected: usize,
    pub recall: f64,
    /// Recall per attack class ([`crate::attacks::class_of`]).
    pub classes: BTreeMap<String, ClassRecall>,
    pub alerts: usize,
    pub benign_alerts: usize,
    /// Benign alerts of severity medium or higher.
    pub benign_alerts_medium_plus: usize,
    pub events: u64,
    pub benign_alerts_per_million_events: f64,
    pub mean_time_to_detect_secs: Option<f64>,
    /// Over the attacks with a wall-clock time to detect: their median and maximum.
    pub median_wall_time_to_detect_secs: Option<f64>,
    pub max_wall_time_to_detect_secs: Option<f64>,
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn eq(a: &Option<String>, b: &Option<String>) -> bool {
    matches!((a, b), (Some(x), Some(y)) if x.eq_ignore_ascii_case(y))
}

/// Does `alert` name the label's actor or one of its IPs?
pub fn names_actor(alert: &ScoredAlert, label: &Label) -> bool {
    let by_principal = alert.principals.iter().any(|p| {
        eq(&p.oid, &label.actor.oid) || eq(&p.upn, &label.actor.upn)
            // An appid alone is shared by every user of a client (Azure CLI), so it only counts
            // for application identities, which have no UPN.
            || (label.actor.upn.is_none() && eq(&p.appid, &label.actor.appid))
    });
    let by_ip = alert.ips.iter().any(|ip| label.ips.iter().any(|l| l == ip));
    let vault_scoped = alert.principals.is_empty() && alert.ips.is_empty();
    let by_vault = vault_scoped
        && alert
            .vaults
            .iter()
            .any(|v| label.vaults.iter().any(|l| l.eq_ignore_ascii_case(v)));
    by_principal || by_ip || by_vault
}

/// Scores alerts against labels. `tolerance_secs` widens each attack window on both sides.
/// `arrivals` holds, per attack ID, when its first event reached the store (wall clock); with
/// the alerts' `detected_at` it gives the wall-clock time to detect of a streamed run.
pub fn score(
    labels: &Labels,
    alerts: &[ScoredAlert],
    tolerance_secs: i64,
    arrivals: &BTreeMap<String, DateTime<Utc>>,
) -> EvalReport {
    let tol = chrono::Duration::seconds(tolerance_secs);
    let mut matched = vec![false; alerts.len()];
    let mut results = Vec::new();
    for l in &labels.attacks {
        let (Some(start), Some(end)) = (parse_time(&l.start), parse_time(&l.end)) else {
            results.push(AttackResult {
                id: l.id.clone(),
                kind: l.kind.clone(),
                detected: false,
                alerts: Vec::new(),
                time_to_detect_secs: None,
                wall_time_to_detect_secs: None,
            });
            continue;
        };
        let mut hits = Vec::new();
        let mut ttd: Option<f64> = None;
        let mut wall: Option<f64> = None;
        let arrived = arrivals.get(&l.id);
        for (i, a) in alerts.iter().enumerate() {
            let overlaps = a.first_seen <= end + tol && a.last_seen >= start - tol;
            if overlaps && names_actor(a, l) {
                matched[i] = true;
                hits.push((a.id.clone(), a.rule_id.clone()));
                let d = ((a.first_seen - start).num_milliseconds() as f64 / 1000.0).max(0.0);
                ttd = Some(ttd.map_or(d, |t: f64| t.min(d)));
                if let (Some(at), Some(from)) = (a.detected_at, arrived) {
                    let w = ((at - *from).num_milliseconds() as f64 / 1000.0).max(0.0);
                    wall = Some(wall.map_or(w, |t: f64| t.min(w)));
                }
            }
        }
        results.push(AttackResult {
            id: l.id.clone(),
            kind: l.kind.clone(),
            detected: !hits.is_empty(),
            alerts: hits,
            time_to_detect_secs: ttd,
            wall_time_to_detect_secs: wall,
        });
    }
    let detected = results.iter().filter(|r| r.detected).count();
    let benign: Vec<&ScoredAlert> = alerts
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(a, _)| a)
        .collect();
    let medium_plus = benign
        .iter()
        .filter(|a| {
            matches!(
                a.severity.to_ascii_lowercase().as_str(),
                "medium" | "high" | "critical"
            )
        })
        .count();
    let ttds: Vec<f64> = results
        .iter()
        .filter_map(|r| r.time_to_detect_secs)
        .collect();
    let mut walls: Vec<f64> = results
        .iter()
        .filter_map(|r| r.wall_time_to_detect_secs)
        .collect();
    walls.sort_by(f64::total_cmp);
    let mut classes: BTreeMap<String, ClassRecall> = BTreeMap::new();
    for r in &results {
        let c = classes
            .entry(crate::attacks::class_of(&r.kind).to_owned())
            .or_default();
        c.attacks += 1;
        c.detected += r.detected as usize;
        c.recall = c.detected as f64 / c.attacks as f64;
    }
    EvalReport {
        classes,
        median_wall_time_to_detect_secs: (!walls.is_empty()).then(|| walls[walls.len() / 2]),
        max_wall_time_to_detect_secs: walls.last().copied(),
        detected,
        recall: if results.is_empty() {
            0.0
        } else {
            detected as f64 / results.len() as f64
        },
        alerts: alerts.len(),
        benign_alerts: benign.len(),
        benign_alerts_medium_plus: medium_plus,
        events: labels.events,
        benign_alerts_per_million_events: if labels.events == 0 {
            0.0
        } else {
            benign.len() as f64 * 1e6 / labels.events as f64
        },
        mean_time_to_detect_secs: if ttds.is_empty() {
            None
        } else {
            Some(ttds.iter().sum::<f64>() / ttds.len() as f64)
        },
        attacks: results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::Actor;

    fn label(id: &str, oid: &str, ip: &str, start: &str, end: &str) -> Label {
        Label {
            id: id.into(),
            kind: "k".into(),
            actor: Actor {
                oid: Some(oid.into()),
                upn: Some(format!("{oid}@x")),
                appid: Some("04b07795-8ddb-461a-bbee-02f9e1bf7b46".into()),
            },
            ips: vec![ip.into()],
            vaults: vec!["v".into()],
            start: start.into(),
            end: end.into(),
            description: String::new(),
        }
    }

    fn alert(
        id: &str,
        sev: &str,
        oid: Option<&str>,
        ip: Option<&str>,
        first: &str,
        last: &str,
    ) -> ScoredAlert {
        ScoredAlert {
            id: id.into(),
            rule_id: format!("rule-{id}"),
            severity: sev.into(),
            first_seen: parse_time(first).unwrap(),
            last_seen: parse_time(last).unwrap(),
            principals: oid
                .map(|o| {
                    vec![Principal {
                        oid: Some(o.into()),
                        upn: None,
                        appid: Some("04b07795-8ddb-461a-bbee-02f9e1bf7b46".into()),
                    }]
                })
                .unwrap_or_default(),
            ips: ip.map(|i| vec![i.into()]).unwrap_or_default(),
            vaults: vec![],
            detected_at: None,
        }
    }

    fn labels() -> Labels {
        Labels {
            seed: 1,
            start: "2024-05-06".into(),
            days: 7,
            scale: 1,
            events: 2_000_000,
            activity: 0,
            attacks: vec![
                label(
                    "a1",
                    "o1",
                    "1.1.1.1",
                    "2024-05-07T10:00:00Z",
                    "2024-05-07T10:30:00Z",
                ),
                label(
                    "a2",
                    "o2",
                    "2.2.2.2",
                    "2024-05-08T02:00:00Z",
                    "2024-05-08T03:00:00Z",
                ),
                label(
                    "a3",
                    "o3",
                    "3.3.3.3",
                    "2024-05-09T02:00:00Z",
                    "2024-05-09T03:00:00Z",
                ),
                label(
                    "a4",
                    "o4",
                    "4.4.4.4",
                    "2024-05-10T02:00:00Z",
                    "2024-05-10T03:00:00Z",
                ),
            ],
        }
    }

    #[test]
    fn known_recall_and_benign_rate() {
        let alerts = vec![
            // Names a1's actor inside its window: a hit, 5 minutes after the start.
            alert(
                "x1",
                "high",
                Some("O1"),
                None,
                "2024-05-07T10:05:00Z",
                "2024-05-07T10:20:00Z",
            ),
            // Names a2's IP: a hit.
            alert(
                "x2",
                "medium",
                None,
                Some("2.2.2.2"),
                "2024-05-08T02:10:00Z",
                "2024-05-08T02:50:00Z",
            ),
            // Names a3's actor but a day later: benign.
            alert(
                "x3",
                "medium",
                Some("o3"),
                None,
                "2024-05-10T12:00:00Z",
                "2024-05-10T13:00:00Z",
            ),
            // Overlaps a4's window but names someone else: benign, low.
            alert(
                "x4",
                "low",
                Some("zz"),
                None,
                "2024-05-10T02:00:00Z",
                "2024-05-10T02:30:00Z",
            ),
            // Shares only the Azure CLI appid with a4 (a user): not a match.
            alert(
                "x5",
                "low",
                Some("other"),
                None,
                "2024-05-10T02:00:00Z",
                "2024-05-10T02:30:00Z",
            ),
        ];
        let r = score(&labels(), &alerts, 0, &BTreeMap::new());
        assert_eq!(r.detected, 2);
        assert!((r.recall - 0.5).abs() < 1e-9);
        assert_eq!(r.benign_alerts, 3);
        assert_eq!(r.benign_alerts_medium_plus, 1);
        assert!((r.benign_alerts_per_million_events - 1.5).abs() < 1e-9);
        assert_eq!(r.attacks[0].time_to_detect_secs, Some(300.0));
        assert_eq!(
            r.attacks[0].alerts,
            vec![("x1".to_owned(), "rule-x1".to_owned())]
        );
        assert!(!r.attacks[2].detected && !r.attacks[3].detected);
        assert_eq!(r.mean_time_to_detect_secs, Some((300.0 + 600.0) / 2.0));
    }

    #[test]
    fn vault_scoped_alerts_match_by_vault_only() {
        let mut silent = alert(
            "s1",
            "medium",
            None,
            None,
            "2024-05-09T02:30:00Z",
            "2024-05-09T09:00:00Z",
        );
        silent.vaults = vec!["V".into()];
        assert!(names_actor(&silent, &labels().attacks[2]));
        silent.vaults = vec!["other".into()];
        assert!(!names_actor(&silent, &labels().attacks[2]));
        // An alert naming a principal is judged by the principal, not by the vault.
        let mut someone = alert(
            "s2",
            "medium",
            Some("zz"),
            None,
            "2024-05-09T02:30:00Z",
            "2024-05-09T09:00:00Z",
        );
        someone.vaults = vec!["v".into()];
        assert!(!names_actor(&someone, &labels().attacks[2]));
    }

    #[test]
    fn tolerance_widens_windows_and_no_alerts_is_zero_recall() {
        let alerts = vec![alert(
            "x3",
            "medium",
            Some("o3"),
            None,
            "2024-05-09T03:30:00Z",
            "2024-05-09T04:00:00Z",
        )];
        assert_eq!(score(&labels(), &alerts, 0, &BTreeMap::new()).detected, 0);
        assert_eq!(
            score(&labels(), &alerts, 3600, &BTreeMap::new()).detected,
            1
        );
        let none = score(&labels(), &[], 3600, &BTreeMap::new());
        assert_eq!(
            (none.detected, none.recall, none.benign_alerts),
            (0, 0.0, 0)
        );
    }

    #[test]
    fn wall_time_to_detect_runs_from_arrival_to_the_first_alert_raised() {
        let t = |s: &str| parse_time(s).unwrap();
        let mut late = alert(
            "x1",
            "high",
            Some("o1"),
            None,
            "2024-05-07T10:05:00Z",
            "2024-05-07T10:20:00Z",
        );
        late.detected_at = Some(t("2026-12-01T12:00:09Z"));
        let mut early = late.clone();
        early.id = "x9".into();
        early.detected_at = Some(t("2026-12-01T12:00:02.500Z"));
        let mut arrivals = BTreeMap::new();
        arrivals.insert("a1".to_owned(), t("2026-12-01T12:00:00Z"));
        let r = score(&labels(), &[late.clone(), early], 0, &arrivals);
        assert_eq!(r.attacks[0].wall_time_to_detect_secs, Some(2.5));
        assert_eq!(r.median_wall_time_to_detect_secs, Some(2.5));
        // No arrival known (a batch file, another store): no wall-clock figure.
        let r = score(&labels(), &[late], 0, &BTreeMap::new());
        assert_eq!(r.attacks[0].wall_time_to_detect_secs, None);
        assert_eq!(r.max_wall_time_to_detect_secs, None);
    }
}
