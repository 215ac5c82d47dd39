//! Signals and their combination: one principal's hour against its baseline → a risk score,
//! a severity and the reasons, with their numbers.

use super::baseline::{Baselines, HOUR_NS, Principal, Series, hour_of_week, known, touch};
use super::stats::{Moments, surprise, upper_tail};
use crate::alert::Severity;
use crate::alert::{Occurrence, Principal as AlertPrincipal};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One successful event, interned.
#[derive(Debug, Clone)]
pub struct Ev {
    pub time: i64,
    pub principal: u32,
    pub vault: u32,
    pub family: u32,
    /// `vault/type/name` of material reads, exports and crypto operations.
    pub object: Option<u32>,
    pub ip: Option<u32>,
    pub network: Option<u32>,
    pub agent: Option<u32>,
    pub app: Option<u32>,
    pub event_id: String,
}

/// How an alert names the principal.
#[derive(Debug, Clone, Default)]
pub struct PrincipalInfo {
    pub oid: Option<String>,
    pub upn: Option<String>,
    pub appid: Option<String>,
    pub kind: Option<String>,
}

/// Points each signal adds to the risk score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    pub new_principal: f64,
    pub new_vault: f64,
    pub new_ip: f64,
    pub new_network: f64,
    pub new_agent: f64,
    pub new_app: f64,
    pub new_family: f64,
    pub per_new_object: f64,
    pub max_new_objects: f64,
    pub volume: f64,
    pub max_volume: f64,
    pub off_hours: f64,
    pub breadth: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            new_principal: 10.0,
            new_vault: 15.0,
            new_ip: 10.0,
            new_network: 10.0,
            new_agent: 10.0,
            new_app: 10.0,
            new_family: 15.0,
            per_new_object: 4.0,
            max_new_objects: 30.0,
            volume: 30.0,
            max_volume: 50.0,
            off_hours: 15.0,
            breadth: 20.0,
        }
    }
}

/// Model parameters (all configurable under `[models]` in `kvwatch.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub enabled: bool,
    /// No signals until the data (and each vault) has this much history.
    pub learning_hours: i32,
    /// Something last seen longer ago than this counts as new again.
    pub decay_hours: i32,
    /// Volume is anomalous below this tail probability.
    pub p_threshold: f64,
    /// Volume needs at least this many events in the hour, and three times the expectation.
    pub min_volume: u64,
    /// Hours of series history before volume is judged.
    pub min_series_hours: i32,
    /// Days of activity before "never active at this hour" counts.
    pub min_active_days: u32,
    /// Score thresholds for low, medium and high.
    pub low: f64,
    pub medium: f64,
    pub high: f64,
    /// Event IDs kept per principal-hour.
    pub max_evidence: usize,
    pub weights: Weights,
    /// The Sentinel-style daily series per caller IP.
    pub ip_series: super::series::SeriesConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            enabled: true,
            learning_hours: 24,
            decay_hours: 30 * 24,
            p_threshold: 1e-6,
            min_volume: 20,
            min_series_hours: 24,
            min_active_days: 3,
            low: 30.0,
            medium: 45.0,
            high: 65.0,
            max_evidence: 200,
            weights: Weights::default(),
            ip_series: Default::default(),
        }
    }
}

impl ModelConfig {
    pub fn severity(&self, score: f64) -> Option<Severity> {
        if score >= self.high {
            Some(Severity::High)
        } else if score >= self.medium {
            Some(Severity::Medium)
        } else if score >= self.low {
            Some(Severity::Low)
        } else {
            None
        }
    }
}

/// One principal's events in one hour.
#[derive(Debug, Default)]
pub struct Activity<'a> {
    pub events: Vec<&'a Ev>,
}

/// A reason and the points it adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub kind: &'static str,
    pub points: f64,
    pub reason: String,
}

fn distinct<T: Ord + Copy>(it: impl Iterator<Item = T>) -> Vec<T> {
    it.collect::<BTreeSet<T>>().into_iter().collect()
}

/// The signals of `act` (principal `pid` at `hour`) against the baseline before the hour.
pub fn signals(
    b: &Baselines,
    cfg: &ModelConfig,
    hour: i32,
    pid: u32,
    act: &Activity<'_>,
) -> Vec<Signal> {
    let w = &cfg.weights;
    let name = |i: u32| b.strings.name(i).to_owned();
    let mut out = Vec::new();
    let Some(first) = b.data_first else {
        return out;
    };
    if hour < first + cfg.learning_hours {
        return out;
    }
    let vaults = distinct(act.events.iter().map(|e| e.vault));
    let mature = |v: u32| {
        b.vault_first
            .get(&v)
            .is_some_and(|f| hour >= f + cfg.learning_hours)
    };
    if !vaults.iter().any(|&v| mature(v)) {
        return out;
    }
    let Some(p) = b
        .principals
        .get(&pid)
        .filter(|p| hour - p.last_hour <= cfg.decay_hours)
    else {
        out.push(Signal {
            kind: "new_principal",
            points: w.new_principal,
            reason: format!(
                "first activity of this principal ({} events on {})",
                act.events.len(),
                vaults
                    .iter()
                    .map(|&v| name(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
        let peers = b.peer_breadth_quantile(0.99);
        if vaults.len() as u32 > peers.max(2) {
            out.push(Signal {
                kind: "breadth",
                points: w.breadth,
                reason: format!(
                    "touched {} vaults in its first hour (99% of principals never exceed {peers})",
                    vaults.len()
                ),
            });
        }
        return out;
    };
    let d = cfg.decay_hours;
    let mut novel = |kind: &'static str,
                     points: f64,
                     what: &str,
                     map: &HashMap<u32, super::baseline::Seen>,
                     items: Vec<u32>| {
        let new: Vec<String> = items
            .into_iter()
            .filter(|i| !known(map.get(i), hour, d))
            .map(name)
            .collect();
        if !new.is_empty() {
            out.push(Signal {
                kind,
                points,
                reason: format!(
                    "{what} {} not seen for this principal in {} days",
                    new.join(", "),
                    d / 24
                ),
            });
        }
    };
    novel(
        "new_vault",
        w.new_vault,
        "vault",
        &p.vaults,
        vaults.iter().copied().filter(|&v| mature(v)).collect(),
    );
    novel(
        "new_ip",
        w.new_ip,
        "IP",
        &p.ips,
        distinct(act.events.iter().filter_map(|e| e.ip)),
    );
    novel(
        "new_network",
        w.new_network,
        "network",
        &p.networks,
        distinct(act.events.iter().filter_map(|e| e.network)),
    );
    novel(
        "new_agent",
        w.new_agent,
        "client",
        &p.agents,
        distinct(act.events.iter().filter_map(|e| e.agent)),
    );
    novel(
        "new_app",
        w.new_app,
        "app",
        &p.apps,
        distinct(act.events.iter().filter_map(|e| e.app)),
    );
    novel(
        "new_family",
        w.new_family,
        "operation family",
        &p.families,
        distinct(act.events.iter().map(|e| e.family)),
    );

    let objects = distinct(act.events.iter().filter_map(|e| e.object));
    let new_objects: Vec<u32> = objects
        .iter()
        .copied()
        .filter(|o| !known(p.objects.get(o), hour, d))
        .collect();
    if !new_objects.is_empty() {
        out.push(Signal {
            kind: "new_objects",
            points: (w.per_new_object * new_objects.len() as f64).min(w.max_new_objects),
            reason: format!(
                "read {} object(s) it never used before ({} known): {}",
                new_objects.len(),
                p.objects.len(),
                new_objects
                    .iter()
                    .take(5)
                    .map(|&o| name(o))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }

    // Volume per (vault, family) against the series' seasonal expectation.
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for e in &act.events {
        *counts
            .entry(((e.vault as u64) << 32) | e.family as u64)
            .or_default() += 1;
    }
    let mut best: Option<(f64, String)> = None;
    for (key, &k) in &counts {
        let Some(s) = p.series.get(key) else { continue };
        if s.hours(hour) < cfg.min_series_hours || k < cfg.min_volume {
            continue;
        }
        let lambda = s.expected(hour);
        if (k as f64) < 3.0 * lambda {
            continue;
        }
        let Some(m) = Moments::from_sums(s.sum, s.sumsq, s.hours(hour) as f64) else {
            continue;
        };
        let pval = upper_tail(k, lambda, m);
        if pval < cfg.p_threshold {
            let sv = surprise(pval);
            if best.as_ref().is_none_or(|(b, _)| sv > *b) {
                let (vault, fam) = ((key >> 32) as u32, (key & 0xffff_ffff) as u32);
                best = Some((
                    sv,
                    format!(
                        "{k} {} operations on {} in one hour vs {:.1} expected (p = {:.1e})",
                        name(fam),
                        name(vault),
                        lambda,
                        pval.max(1e-300)
                    ),
                ));
            }
        }
    }
    if let Some((sv, reason)) = best {
        let extra = 5.0 * (sv - surprise(cfg.p_threshold)).max(0.0);
        out.push(Signal {
            kind: "volume",
            points: (w.volume + extra).min(w.max_volume),
            reason,
        });
    }

    let hod = hour.rem_euclid(24);
    if p.active_days >= cfg.min_active_days && p.hours_of_day & (1 << hod) == 0 {
        out.push(Signal {
            kind: "off_hours",
            points: w.off_hours,
            reason: format!(
                "active at {hod:02}:00 UTC, an hour it was never active in {} days",
                p.active_days
            ),
        });
    }
    let limit = p.max_vaults_per_hour.max(3);
    if vaults.len() as u32 > limit {
        out.push(Signal {
            kind: "breadth",
            points: w.breadth,
            reason: format!(
                "touched {} vaults in an hour (its most before: {})",
                vaults.len(),
                p.max_vaults_per_hour
            ),
        });
    }
    out
}

/// Scores every principal active in `hour`.
pub fn score_hour(
    b: &Baselines,
    cfg: &ModelConfig,
    hour: i32,
    evs: &[Ev],
    infos: &HashMap<u32, PrincipalInfo>,
) -> Vec<Occurrence> {
    let mut by: BTreeMap<&str, (u32, Activity<'_>)> = BTreeMap::new();
    for e in evs {
        by.entry(b.strings.name(e.principal))
            .or_insert_with(|| (e.principal, Activity::default()))
            .1
            .events
            .push(e);
    }
    let mut out = Vec::new();
    for (pname, (pid, act)) in by {
        let sig = signals(b, cfg, hour, pid, &act);
        let score: f64 = sig.iter().map(|s| s.points).sum();
        let Some(severity) = cfg.severity(score) else {
            continue;
        };
        let info = infos.get(&pid).cloned().unwrap_or_default();
        let label = info
            .upn
            .clone()
            .or(info.oid.clone())
            .unwrap_or_else(|| pname.to_owned());
        let names = |f: &dyn Fn(&Ev) -> Option<u32>| -> Vec<String> {
            distinct(act.events.iter().filter_map(|e| f(e)))
                .into_iter()
                .map(|i| b.strings.name(i).to_owned())
                .collect()
        };
        let window_start = hour as i64 * HOUR_NS;
        let mut h = blake3::Hasher::new();
        h.update(super::RULE_ID.as_bytes());
        h.update(b"\0");
        h.update(pname.as_bytes());
        h.update(b"\0");
        h.update(&window_start.to_le_bytes());
        let reasons: Vec<String> = sig.iter().map(|s| s.reason.clone()).collect();
        let mut fields = BTreeMap::new();
        fields.insert("score".to_owned(), json!(score.round()));
        fields.insert("signals".to_owned(), json!(sig));
        out.push(Occurrence {
            id: h.finalize().to_hex()[..32].to_owned(),
            rule_id: super::RULE_ID.to_owned(),
            dedup_key: pname.to_owned(),
            window_start,
            first_seen: act
                .events
                .iter()
                .map(|e| e.time)
                .min()
                .unwrap_or(window_start),
            last_seen: act
                .events
                .iter()
                .map(|e| e.time)
                .max()
                .unwrap_or(window_start),
            event_count: act.events.len() as i64,
            severity,
            summary: format!("{label}: risk {:.0}: {}", score, reasons.join("; ")),
            principals: vec![AlertPrincipal {
                oid: info.oid,
                upn: info.upn,
                appid: info.appid,
                kind: info.kind,
            }],
            vaults: names(&|e| Some(e.vault)),
            ips: names(&|e| e.ip),
            objects: names(&|e| e.object).into_iter().take(50).collect(),
            evidence: act
                .events
                .iter()
                .take(cfg.max_evidence)
                .map(|e| e.event_id.clone())
                .collect(),
            fields,
        });
    }
    out
}

/// Azure Resource Graph's appid: its VaultGet sweeps are not caller reads (Sentinel drops them).
const RESOURCE_GRAPH_APPID: &str = "509e4652-da8d-478d-a730-e9d4a1996ca4";

/// Adds `hour`'s events to the baselines.
pub fn learn_hour(b: &mut Baselines, hour: i32, evs: &[Ev]) {
    if evs.is_empty() {
        return;
    }
    b.data_first.get_or_insert(hour);
    let day = hour.div_euclid(24);
    let graph = b.strings.lookup(RESOURCE_GRAPH_APPID);
    let reads: Vec<u32> = ["material_read", "vault_read"]
        .iter()
        .filter_map(|f| b.strings.lookup(f))
        .collect();
    for e in evs {
        if let Some(ip) = e.ip
            && reads.contains(&e.family)
            && (e.app.is_none() || e.app != graph)
        {
            *b.ip_days.entry(ip).or_default().entry(day).or_default() += 1;
        }
    }
    let mut per: HashMap<u32, Vec<&Ev>> = HashMap::new();
    for e in evs {
        b.vault_first.entry(e.vault).or_insert(hour);
        per.entry(e.principal).or_default().push(e);
    }
    for (pid, es) in per {
        let p = b.principals.entry(pid).or_insert_with(|| Principal {
            first_hour: hour,
            last_active_day: i32::MIN,
            ..Default::default()
        });
        p.last_hour = hour;
        let mut vaults = BTreeSet::new();
        let mut counts: HashMap<u64, f64> = HashMap::new();
        for e in &es {
            touch(&mut p.vaults, e.vault, hour);
            vaults.insert(e.vault);
            touch(&mut p.families, e.family, hour);
            for (map, v) in [
                (&mut p.ips, e.ip),
                (&mut p.networks, e.network),
                (&mut p.agents, e.agent),
                (&mut p.apps, e.app),
                (&mut p.objects, e.object),
            ] {
                if let Some(v) = v {
                    touch(map, v, hour);
                }
            }
            *counts
                .entry(((e.vault as u64) << 32) | e.family as u64)
                .or_default() += 1.0;
        }
        for (k, c) in counts {
            p.series
                .entry(k)
                .or_insert_with(|| Series::new(hour))
                .add(hour, c);
        }
        p.hours_of_day |= 1 << hour.rem_euclid(24);
        let how = hour_of_week(hour);
        p.hours_of_week[how / 64] |= 1u64 << (how % 64);
        let day = hour.div_euclid(24);
        if day != p.last_active_day {
            p.active_days += 1;
            p.last_active_day = day;
        }
        // Every learned principal sits in exactly one bucket of the peers' histogram: its most
        // vaults in one hour (0 means not learned yet).
        let before = p.max_vaults_per_hour;
        let now = before.max(vaults.len() as u32);
        if now != before {
            if before > 0
                && let Some(c) = b.peer_breadth.get_mut(&before)
            {
                *c -= 1;
                if *c == 0 {
                    b.peer_breadth.remove(&before);
                }
            }
            *b.peer_breadth.entry(now).or_default() += 1;
        }
        p.max_vaults_per_hour = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct World {
        b: Baselines,
    }

    impl World {
        /// `dev` reading three payments secrets from an outside address in `hour`.
        fn night_reads(&mut self, hour: i32) -> Vec<Ev> {
            (0..3)
                .map(|i| {
                    let object = format!("pay-kv/secret/s{i}");
                    self.ev(
                        hour,
                        "dev",
                        "pay-kv",
                        "material_read",
                        Some(&object),
                        "185.220.101.7",
                        "azurecli",
                    )
                })
                .collect()
        }

        /// `n` unwraps by the CMK identity in `hour`.
        fn cmk(&mut self, hour: i32, n: usize) -> Vec<Ev> {
            (0..n)
                .map(|_| {
                    self.ev(
                        hour,
                        "cmk",
                        "cmk-kv",
                        "crypto",
                        Some("cmk-kv/key/k1"),
                        "20.50.1.1",
                        "azsdk",
                    )
                })
                .collect()
        }

        #[allow(clippy::too_many_arguments)]
        fn ev(
            &mut self,
            hour: i32,
            p: &str,
            vault: &str,
            fam: &str,
            obj: Option<&str>,
            ip: &str,
            ua: &str,
        ) -> Ev {
            let s = &mut self.b.strings;
            let network = ip.rsplit_once('.').map(|(n, _)| format!("{n}.0/24"));
            Ev {
                time: hour as i64 * HOUR_NS + 60_000_000_000,
                principal: s.id(p),
                vault: s.id(vault),
                family: s.id(fam),
                object: obj.map(|o| s.id(o)),
                ip: Some(s.id(ip)),
                network: network.map(|n| s.id(&n)),
                agent: Some(s.id(ua)),
                app: Some(s.id("cli")),
                event_id: format!("e{hour}"),
            }
        }
    }

    /// `dev` reads two secrets of `dev-kv` from the office every working hour for `days` days;
    /// `cmk` unwraps about 90 times an hour and `payapp` reads one secret of `pay-kv`, every hour.
    fn history(days: i32) -> World {
        let mut w = World {
            b: Baselines::default(),
        };
        for h in 0..days * 24 {
            let mut evs = Vec::new();
            if (9..17).contains(&h.rem_euclid(24)) {
                for o in ["dev-kv/secret/a", "dev-kv/secret/b"] {
                    evs.push(w.ev(
                        h,
                        "dev",
                        "dev-kv",
                        "material_read",
                        Some(o),
                        "203.0.113.10",
                        "azurecli",
                    ));
                }
            }
            // The payments app keeps pay-kv busy, so that vault is past its learning period.
            evs.push(w.ev(
                h,
                "payapp",
                "pay-kv",
                "material_read",
                Some("pay-kv/secret/app"),
                "20.50.2.2",
                "azsdk",
            ));
            for i in 0..(85 + (h * 7).rem_euclid(11)) {
                let _ = i;
                evs.push(w.ev(
                    h,
                    "cmk",
                    "cmk-kv",
                    "crypto",
                    Some("cmk-kv/key/k1"),
                    "20.50.1.1",
                    "azsdk",
                ));
            }
            learn_hour(&mut w.b, h, &evs);
        }
        w
    }

    fn score_of(w: &mut World, hour: i32, evs: &[Ev]) -> (f64, Vec<Signal>) {
        let pid = evs[0].principal;
        let act = Activity {
            events: evs.iter().collect(),
        };
        let sig = signals(&w.b, &ModelConfig::default(), hour, pid, &act);
        (sig.iter().map(|s| s.points).sum(), sig)
    }

    #[test]
    fn known_behaviour_scores_nothing() {
        let mut w = history(7);
        let h = 7 * 24 + 10;
        let evs = vec![w.ev(
            h,
            "dev",
            "dev-kv",
            "material_read",
            Some("dev-kv/secret/a"),
            "203.0.113.10",
            "azurecli",
        )];
        assert_eq!(score_of(&mut w, h, &evs).0, 0.0);
        let cmk: Vec<Ev> = w.cmk(h, 95);
        assert_eq!(score_of(&mut w, h, &cmk).0, 0.0);
    }

    #[test]
    fn night_reads_of_a_new_vault_from_a_new_network_add_up() {
        let mut w = history(7);
        let h = 7 * 24 + 2; // 02:00, never active at night
        let evs: Vec<Ev> = w.night_reads(h);
        let (score, sig) = score_of(&mut w, h, &evs);
        let kinds: Vec<&str> = sig.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                "new_vault",
                "new_ip",
                "new_network",
                "new_objects",
                "off_hours"
            ],
            "{sig:#?}"
        );
        // 15 + 10 + 10 + 3 × 4 + 15
        assert_eq!(score, 62.0);
        assert_eq!(
            ModelConfig::default().severity(score),
            Some(Severity::Medium)
        );
        assert!(sig[0].reason.contains("pay-kv"));
    }

    #[test]
    fn a_volume_spike_is_scored_by_its_tail_probability() {
        let mut w = history(7);
        let h = 7 * 24 + 3;
        let evs: Vec<Ev> = w.cmk(h, 1800);
        let (score, sig) = score_of(&mut w, h, &evs);
        assert_eq!(sig.len(), 1, "{sig:#?}");
        assert_eq!(sig[0].kind, "volume");
        assert!(
            sig[0].reason.contains("1800 crypto operations on cmk-kv"),
            "{}",
            sig[0].reason
        );
        assert_eq!(score, ModelConfig::default().weights.max_volume);
        // Twice the usual rate is unusual but not beyond p = 1e-6 for this series.
        let evs: Vec<Ev> = w.cmk(h, 130);
        assert!(score_of(&mut w, h, &evs).1.is_empty());
    }

    #[test]
    fn a_new_principal_alone_stays_below_the_alert_threshold_and_learning_silences_everything() {
        let mut w = history(7);
        let h = 7 * 24 + 10;
        let evs = vec![w.ev(
            h,
            "new-app",
            "dev-kv",
            "material_read",
            Some("dev-kv/secret/a"),
            "20.50.9.9",
            "azsdk",
        )];
        let (score, sig) = score_of(&mut w, h, &evs);
        assert_eq!(sig[0].kind, "new_principal");
        assert_eq!(ModelConfig::default().severity(score), None);
        // Within the first day nothing is judged.
        let mut young = history(1);
        let evs = vec![young.ev(
            20,
            "dev",
            "pay-kv",
            "material_read",
            None,
            "185.220.101.7",
            "curl",
        )];
        assert!(score_of(&mut young, 20, &evs).1.is_empty());
    }

    #[test]
    fn breadth_is_judged_against_the_principal_and_its_peers() {
        let mut w = history(7);
        // Peers (dev, cmk, payapp) each touched one vault an hour.
        assert_eq!(w.b.peer_breadth_quantile(0.99), 1);
        assert_eq!(w.b.peer_breadth.values().sum::<u32>(), 3);
        let h = 7 * 24 + 11;
        let evs: Vec<Ev> = ["dev-kv", "pay-kv", "cmk-kv", "certs-kv"]
            .iter()
            .map(|v| {
                w.ev(
                    h,
                    "dev",
                    v,
                    "material_read",
                    None,
                    "203.0.113.10",
                    "azurecli",
                )
            })
            .collect();
        // certs-kv has no history, so it is not judged as a new vault; pay-kv and cmk-kv are.
        let (_, sig) = score_of(&mut w, h, &evs);
        let kinds: Vec<&str> = sig.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["new_vault", "breadth"], "{sig:#?}");
        assert!(
            sig[1].reason.contains("touched 4 vaults"),
            "{}",
            sig[1].reason
        );
        // Learning it moves dev to the 4-vault bucket.
        learn_hour(&mut w.b, h, &evs);
        assert_eq!(w.b.peer_breadth.get(&4), Some(&1));
        assert_eq!(w.b.peer_breadth.values().sum::<u32>(), 3);
    }

    #[test]
    fn hour_of_week_replaces_hour_of_day_after_two_weeks() {
        // dev works 09-17 every day for three weeks; after two weeks the hour of the week counts.
        let w = history(21);
        let p = &w.b.principals[&w.b.strings.lookup("dev").unwrap()];
        assert!(p.active_at_hour_of_week(super::super::baseline::hour_of_week(24 * 20 + 10)));
        assert!(!p.active_at_hour_of_week(super::super::baseline::hour_of_week(24 * 20 + 3)));
        // 1970-01-05 (day 4) was a Monday.
        assert_eq!(super::super::baseline::hour_of_week(4 * 24), 0);
    }

    #[test]
    fn old_sightings_decay_into_new_ones() {
        let mut w = history(2);
        let later = 2 * 24 + 31 * 24 + 10;
        let evs = vec![w.ev(
            later,
            "dev",
            "dev-kv",
            "material_read",
            Some("dev-kv/secret/a"),
            "203.0.113.10",
            "azurecli",
        )];
        // Gone for 31 days (decay 30): it is a new principal again.
        assert_eq!(score_of(&mut w, later, &evs).1[0].kind, "new_principal");
    }

    #[test]
    fn score_hour_makes_one_occurrence_per_principal_with_reasons() {
        let mut w = history(7);
        let h = 7 * 24 + 2;
        let mut evs: Vec<Ev> = w.night_reads(h);
        evs.push(w.ev(
            h,
            "cmk",
            "cmk-kv",
            "crypto",
            Some("cmk-kv/key/k1"),
            "20.50.1.1",
            "azsdk",
        ));
        let mut infos = HashMap::new();
        infos.insert(
            evs[0].principal,
            PrincipalInfo {
                upn: Some("dev@contoso.com".into()),
                ..Default::default()
            },
        );
        let occ = score_hour(&w.b, &ModelConfig::default(), h, &evs, &infos);
        assert_eq!(occ.len(), 1);
        let o = &occ[0];
        assert_eq!(o.rule_id, "anomaly-principal");
        assert_eq!(o.event_count, 3);
        assert_eq!(o.severity, Severity::Medium);
        assert!(
            o.summary
                .starts_with("dev@contoso.com: risk 62: vault pay-kv"),
            "{}",
            o.summary
        );
        assert_eq!(o.fields["score"], json!(62.0));
        // Deterministic identity.
        assert_eq!(
            o.id,
            score_hour(&w.b, &ModelConfig::default(), h, &evs, &infos)[0].id
        );
    }
}

#[cfg(test)]
mod state_size {
    use super::*;

    /// Memory grows with principals × the things they use, not with events: 100 k principals,
    /// each with two vaults, two IPs, three objects and two clients, seen over a week.
    #[test]
    fn state_for_100k_principals() {
        let mut b = Baselines::default();
        let n = 100_000u32;
        let ids: Vec<[u32; 9]> = (0..n)
            .map(|i| {
                let s = &mut b.strings;
                [
                    s.id(&format!("principal-{i}")),
                    s.id(&format!("vault-{}", i % 5_000)),
                    s.id(&format!("vault-{}", (i + 1) % 5_000)),
                    s.id(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)),
                    s.id(&format!("10.{}.{}.0/24", i >> 16, (i >> 8) & 255)),
                    s.id(&format!("vault-{}/secret/s{}", i % 5_000, i % 7)),
                    s.id("material_read"),
                    s.id("azsdk"),
                    s.id("app"),
                ]
            })
            .collect();
        for day in 0..7 {
            let hour = day * 24 + 10;
            let evs: Vec<Ev> = ids
                .iter()
                .flat_map(|x| {
                    [x[1], x[2]].map(|vault| Ev {
                        time: hour as i64 * HOUR_NS,
                        principal: x[0],
                        vault,
                        family: x[6],
                        object: Some(x[5]),
                        ip: Some(x[3]),
                        network: Some(x[4]),
                        agent: Some(x[7]),
                        app: Some(x[8]),
                        event_id: String::new(),
                    })
                })
                .collect();
            learn_hour(&mut b, hour, &evs);
        }
        let bytes = b.approx_bytes();
        println!(
            "baseline state for {} principals: ~{:.0} MiB ({} bytes per principal)",
            b.principals.len(),
            bytes as f64 / 1048576.0,
            bytes / b.principals.len()
        );
        assert_eq!(b.principals.len(), n as usize);
        assert!(bytes < 400 << 20, "{bytes}");
    }
}
