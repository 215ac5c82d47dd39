//! Incidents: the evidence about one principal, accumulated across hours.
//!
//! A careful attacker keeps every hour below the alert threshold: three new secrets an hour
//! over a working day. Scored hour by hour that is nothing; as one incident it is plain. Each
//! principal's signals join its open incident, whose score decays with a half-life
//! (`half_life_hours`) and grows with every hour that brings evidence. An incident closes when
//! no evidence arrived for `horizon_hours` or its score decayed to almost nothing; the next
//! evidence opens a new one. The alert of an incident keeps one occurrence ID (principal and
//! first hour), so a growing incident updates its alert instead of raising new ones, and its
//! summary lists every piece of evidence with its numbers and hour.

use serde::{Deserialize, Serialize};

/// A reason and the points it adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub kind: &'static str,
    pub points: f64,
    pub reason: String,
}

/// How incidents grow and fade (from `[models]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub half_life_hours: f64,
    pub horizon_hours: i32,
    /// Points per sweep step.
    pub sweep: f64,
}

/// Evidence items kept per incident (the rest are counted).
const MAX_ITEMS: usize = 24;
/// Vaults, addresses and objects kept per incident.
const MAX_ENTITIES: usize = 50;

/// Signal kinds counted once per incident.
const CONTEXT: &[&str] = &[
    "off_hours",
    "new_agent",
    "new_app",
    "new_ip",
    "new_ip_workload",
    "new_family",
    "breadth",
    "new_principal",
];

/// One signal of one hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub hour: i32,
    pub kind: String,
    pub points: f64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub start_hour: i32,
    pub last_hour: i32,
    /// Score as of `last_hour`, decayed since the earlier evidence.
    pub score: f64,
    /// Highest score reached: the incident's severity.
    pub peak: f64,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Hours that brought evidence, and their events.
    pub hours: u32,
    pub events: u64,
    pub evidence: Vec<Evidence>,
    /// Evidence items beyond [`MAX_ITEMS`].
    pub omitted: u32,
    pub vaults: Vec<u32>,
    pub ips: Vec<u32>,
    pub objects: Vec<u32>,
    pub event_ids: Vec<String>,
    /// Objects new to the principal per (hour, vault), over the last day of the incident.
    #[serde(default)]
    pub sweep: Vec<(i32, u32, u32)>,
    /// Sweep steps already credited per vault.
    #[serde(default)]
    pub swept: Vec<(u32, u32)>,
    /// The principal was a workload with a settled set of objects when the incident began
    /// (the incident's own reads do not unsettle it).
    #[serde(default)]
    pub settled: bool,
}

/// New objects of one vault within a day before a sweep counts, and per step after that.
const SWEEP_FIRST: u32 = 8;
const SWEEP_STEP: u32 = 4;

/// What one hour of a principal adds to its incident.
pub struct HourEvidence<'a> {
    pub hour: i32,
    pub signals: &'a [Signal],
    pub first_seen: i64,
    pub last_seen: i64,
    pub events: u64,
    pub vaults: Vec<u32>,
    pub ips: Vec<u32>,
    pub objects: Vec<u32>,
    pub event_ids: Vec<String>,
    /// Objects new to the principal this hour, per vault: (vault, its name, count).
    pub new_per_vault: Vec<(u32, String, u32)>,
}

fn merge(into: &mut Vec<u32>, from: &[u32]) {
    for x in from {
        if into.len() >= MAX_ENTITIES {
            return;
        }
        if !into.contains(x) {
            into.push(*x);
        }
    }
}

impl Incident {
    /// The score at `hour`, decayed since the last evidence.
    pub fn decayed(&self, hour: i32, cfg: &Params) -> f64 {
        let age = (hour - self.last_hour).max(0) as f64;
        self.score * 0.5f64.powf(age / cfg.half_life_hours.max(0.1))
    }

    /// Whether evidence at `hour` still belongs to this incident.
    pub fn open_at(&self, hour: i32, cfg: &Params) -> bool {
        hour - self.last_hour <= cfg.horizon_hours && self.decayed(hour, cfg) >= 1.0
    }

    /// Reading through a vault: many objects of one vault new to the principal within a day,
    /// however thinly spread over the hours. Returns the signals for the steps crossed now.
    fn sweeps(&mut self, e: &HourEvidence<'_>, cfg: &Params) -> Vec<Signal> {
        self.sweep.retain(|(h, _, _)| e.hour - h < 24);
        let mut out = Vec::new();
        for (v, name, n) in &e.new_per_vault {
            self.sweep.push((e.hour, *v, *n));
            let total: u32 = self
                .sweep
                .iter()
                .filter(|(_, x, _)| x == v)
                .map(|(_, _, n)| n)
                .sum();
            if total < SWEEP_FIRST {
                continue;
            }
            let steps = 1 + (total - SWEEP_FIRST) / SWEEP_STEP;
            let credited = match self.swept.iter_mut().find(|(x, _)| x == v) {
                Some(c) => {
                    let before = c.1;
                    c.1 = c.1.max(steps);
                    before
                }
                None => {
                    self.swept.push((*v, steps));
                    0
                }
            };
            if steps > credited {
                out.push(Signal {
                    kind: "sweep",
                    points: cfg.sweep * (steps - credited) as f64,
                    reason: format!("{total} objects of {name} new to it within a day"),
                });
            }
        }
        out
    }

    pub fn add(&mut self, e: HourEvidence<'_>, cfg: &Params, max_event_ids: usize) {
        let sweeps = self.sweeps(&e, cfg);
        let signals: Vec<Signal> = e.signals.iter().cloned().chain(sweeps).collect();
        let e = HourEvidence {
            signals: &signals,
            ..e
        };
        // Context (odd hours, a new client, app, address, operation family, breadth) is one
        // fact per incident: a night of work is not evidence again every hour. New vaults,
        // new objects and volume are new evidence each time.
        let counted: Vec<f64> = e
            .signals
            .iter()
            .map(|s| {
                let context = CONTEXT.contains(&s.kind);
                if context && self.evidence.iter().any(|x| x.kind == s.kind) {
                    0.0
                } else {
                    s.points
                }
            })
            .collect();
        let points: f64 = counted.iter().sum();
        if self.hours == 0 {
            self.start_hour = e.hour;
            self.first_seen = e.first_seen;
            self.last_seen = e.last_seen;
        }
        self.score = self.decayed(e.hour, cfg) + points;
        self.peak = self.peak.max(self.score);
        self.last_hour = e.hour;
        self.first_seen = self.first_seen.min(e.first_seen);
        self.last_seen = self.last_seen.max(e.last_seen);
        self.hours += 1;
        self.events += e.events;
        for (s, points) in e.signals.iter().zip(counted) {
            if points == 0.0 && CONTEXT.contains(&s.kind) {
                continue;
            }
            if self.evidence.len() < MAX_ITEMS {
                self.evidence.push(Evidence {
                    hour: e.hour,
                    kind: s.kind.to_owned(),
                    points,
                    reason: s.reason.clone(),
                });
            } else {
                self.omitted += 1;
            }
        }
        merge(&mut self.vaults, &e.vaults);
        merge(&mut self.ips, &e.ips);
        merge(&mut self.objects, &e.objects);
        let room = max_event_ids.saturating_sub(self.event_ids.len());
        self.event_ids.extend(e.event_ids.into_iter().take(room));
    }

    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + 16
            + self
                .evidence
                .iter()
                .map(|e| std::mem::size_of::<Evidence>() + e.kind.len() + e.reason.len())
                .sum::<usize>()
            + 4 * (self.vaults.len() + self.ips.len() + self.objects.len())
            + self.event_ids.iter().map(|s| 24 + s.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(points: f64) -> Vec<Signal> {
        vec![Signal {
            kind: "new_objects",
            points,
            reason: format!("read objects worth {points}"),
        }]
    }

    fn hour(h: i32, s: &[Signal]) -> HourEvidence<'_> {
        HourEvidence {
            hour: h,
            signals: s,
            first_seen: h as i64 * 3600,
            last_seen: h as i64 * 3600 + 10,
            events: 3,
            vaults: vec![1],
            ips: vec![2],
            objects: vec![h as u32],
            event_ids: vec![format!("e{h}")],
            new_per_vault: vec![(1, "v".into(), 1)],
        }
    }

    #[test]
    fn small_hours_add_up_and_old_evidence_fades() {
        let cfg = Params {
            half_life_hours: 6.0,
            horizon_hours: 12,
            sweep: 10.0,
        };
        let mut i = Incident::default();
        let s = sig(12.0);
        for h in 100..108 {
            assert!(i.hours == 0 || i.open_at(h, &cfg));
            i.add(hour(h, &s), &cfg, 10);
        }
        // Eight hours of 12 points each, none alone near the low threshold of 30.
        assert!(i.peak > 45.0, "{}", i.peak);
        assert_eq!(
            (i.start_hour, i.last_hour, i.hours, i.events),
            (100, 107, 8, 24)
        );
        assert_eq!(i.objects.len(), 8);
        assert_eq!(i.event_ids.len(), 8);
        assert!(
            i.evidence
                .iter()
                .all(|e| e.points == 12.0 || e.kind == "sweep")
        );
        // One new object of vault v an hour: eight within the day make a sweep.
        let sweep = i
            .evidence
            .iter()
            .find(|e| e.kind == "sweep")
            .expect("a sweep");
        assert_eq!((sweep.hour, sweep.points), (107, 10.0));
        assert_eq!(sweep.reason, "8 objects of v new to it within a day");
        // A day later it has faded and closed.
        assert!(!i.open_at(107 + cfg.horizon_hours + 1, &cfg));
        let faded = i.decayed(107 + 4 * cfg.half_life_hours as i32, &cfg);
        assert!((faded - i.score / 16.0).abs() < 1e-9);
    }
}
