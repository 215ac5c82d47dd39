//! Signals and their combination: one principal's hour against its baseline → a risk score,
//! a severity and the reasons, with their numbers.

use super::baseline::{
    Baselines, HOUR_NS, Principal, Series, group_of, hour_of_week, known, touch,
};
pub use super::incident::Signal;
use super::incident::{HourEvidence, Incident};
use super::stats::{Moments, surprise, upper_tail};
use crate::alert::Severity;
use crate::alert::{Occurrence, Principal as AlertPrincipal};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
    /// The caller has a user principal name (a person, not a workload).
    pub person: bool,
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
    /// A vault new for the principal that others of its kind read, but none of its peers.
    pub new_vault: f64,
    /// A vault new for the principal that its peers read: "you never did, but they do".
    pub new_vault_peers_read: f64,
    /// A vault new for the principal that no one like it ever read.
    pub new_vault_unlike_peers: f64,
    pub new_ip: f64,
    /// An address outside a workload's established egress set.
    pub new_ip_workload: f64,
    /// A new address (and network) of a person: people travel and work from home.
    pub new_ip_person: f64,
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
    /// Per step of a sweep: 8 objects of one vault new to the principal within a day, then
    /// every 4 more.
    pub sweep: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            new_principal: 10.0,
            new_vault: 12.0,
            new_vault_peers_read: 4.0,
            new_vault_unlike_peers: 25.0,
            new_ip: 10.0,
            new_ip_workload: 30.0,
            new_ip_person: 5.0,
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
            sweep: 10.0,
        }
    }
}

/// An analyst's label on vaults or objects: reads of what `pattern` matches weigh `weight`
/// times as much (`*` matches any run of characters; a vault is matched by its name, an
/// object by `vault/type/name`, e.g. `payments-*/secret/*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensitivity {
    pub pattern: String,
    pub weight: f64,
}

/// Does `text` match `pattern`, where `*` matches any run of characters (case-insensitive)?
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !t.starts_with(first) || !t[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &t[first.len()..t.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Model parameters (all configurable under `[models]` in `kvwatch.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Incidents: evidence halves in weight every this many hours...
    pub half_life_hours: f64,
    /// ...and an incident closes after this many hours without new evidence.
    pub horizon_hours: i32,
    /// Labels that weigh reads of some vaults or objects more (or less).
    pub sensitivity: Vec<Sensitivity>,
    /// A local CSV file of `cidr,label` lines (known egress ranges: offices, VPNs, cloud
    /// regions, ASNs). An address in a listed range belongs to that named network instead of
    /// its /24; nothing is looked up over the network.
    pub networks_file: Option<std::path::PathBuf>,
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
            half_life_hours: 6.0,
            horizon_hours: 12,
            sensitivity: Vec::new(),
            networks_file: None,
        }
    }
}

impl ModelConfig {
    /// How incidents grow and fade.
    pub fn incident(&self) -> super::incident::Params {
        super::incident::Params {
            half_life_hours: self.half_life_hours,
            horizon_hours: self.horizon_hours,
            sweep: self.weights.sweep,
        }
    }

    /// The analyst's weight for reads of `what` (a vault name or `vault/type/name`).
    pub fn label_weight(&self, what: &str) -> f64 {
        self.sensitivity
            .iter()
            .filter(|l| glob(&l.pattern, what))
            .map(|l| l.weight)
            .reduce(f64::max)
            .unwrap_or(1.0)
    }

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

/// A workload whose objects have not changed for a day (and that has a day of history): its
/// objects are its configuration, and a new one is news.
fn settled_at(p: &Principal, hour: i32) -> bool {
    !p.person && hour - p.first_hour >= 24 && hour - p.last_new_object >= 24
}

/// A secret named like a certificate of its vault backs that certificate: it holds the
/// private key.
fn key_material(b: &Baselines, object: &str) -> bool {
    let mut it = object.splitn(3, '/');
    match (it.next(), it.next(), it.next()) {
        (Some(v), Some("secret"), Some(n)) => {
            b.strings.lookup(&format!("{v}/certificate/{n}")).is_some()
        }
        _ => false,
    }
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
    let is_new = |map: &HashMap<u32, super::baseline::Seen>, i: u32| !known(map.get(&i), hour, d);
    // Its egress or object set is established when it has a few days of history and nothing
    // was new for a day.
    let established = |last_new: i32| hour - p.first_hour >= 24 && hour - last_new >= 24;
    let others = b
        .group_sizes
        .get(&p.group)
        .copied()
        .unwrap_or(1)
        .saturating_sub(1);

    // A grant to it on the vault by someone else in the last week explains its first reads.
    let pname = name(pid);
    let granted = |v: u32| b.grant_for(&pname, b.strings.name(v), hour);
    for v in vaults
        .iter()
        .copied()
        .filter(|&v| mature(v) && is_new(&p.vaults, v))
    {
        if let Some(g) = granted(v) {
            out.push(Signal {
                kind: "new_vault_granted",
                points: w.new_vault_peers_read,
                reason: format!(
                    "vault {} new for it; access granted by {} {} hours before",
                    name(v),
                    g.by,
                    hour - g.hour
                ),
            });
            continue;
        }
        let r = b.vault_readers.get(&v).cloned().unwrap_or_default();
        let label = cfg.label_weight(&name(v));
        let peers_read = r.of_group(p.group);
        let kind_read = if p.person {
            r.persons
        } else {
            r.total - r.persons
        };
        let who = if p.person { "person" } else { "workload" };
        // "Your peers do": most of them read it. One colleague who did is not a norm.
        let (kind, points, reason) = if others >= 2 && peers_read * 2 > others {
            (
                "new_vault",
                w.new_vault_peers_read,
                format!(
                    "vault {} new for it; {peers_read} of its {others} peers read it",
                    name(v)
                ),
            )
        } else if others >= 2 && peers_read == 0 || kind_read == 0 {
            (
                "new_vault_unlike_peers",
                w.new_vault_unlike_peers,
                if others >= 2 {
                    format!(
                        "vault {} new for it and none of its {others} peers ever read it ({} principals do)",
                        name(v),
                        r.total
                    )
                } else {
                    format!(
                        "vault {} new for it and no {who} ever read it ({} principals do)",
                        name(v),
                        r.total
                    )
                },
            )
        } else if peers_read > 0 {
            (
                "new_vault",
                w.new_vault,
                format!(
                    "vault {} new for it; {peers_read} of its {others} peers read it",
                    name(v)
                ),
            )
        } else {
            (
                "new_vault",
                w.new_vault,
                format!(
                    "vault {} new for it; {kind_read} other {who}s read it",
                    name(v)
                ),
            )
        };
        out.push(Signal {
            kind,
            points: points * label,
            reason,
        });
    }

    let new_ips: Vec<u32> = distinct(act.events.iter().filter_map(|e| e.ip))
        .into_iter()
        .filter(|&i| is_new(&p.ips, i))
        .collect();
    if !new_ips.is_empty() {
        let list = new_ips
            .iter()
            .map(|&i| name(i))
            .collect::<Vec<_>>()
            .join(", ");
        let new_nets: Vec<String> = distinct(act.events.iter().filter_map(|e| e.network))
            .into_iter()
            .filter(|&n| is_new(&p.networks, n))
            .map(name)
            .collect();
        let sig = if p.person {
            Signal {
                kind: "new_ip",
                points: w.new_ip_person * (1.0 + !new_nets.is_empty() as u8 as f64),
                reason: if new_nets.is_empty() {
                    format!("address {list} new for it, in a network it uses")
                } else {
                    format!(
                        "address {list} new for it, in network {} new for it",
                        new_nets.join(", ")
                    )
                },
            }
        } else if established(p.last_new_ip) {
            Signal {
                kind: "new_ip_workload",
                points: w.new_ip_workload,
                reason: format!(
                    "workload called from {list}, outside the {} addresses it has used for {} days",
                    p.ips.len(),
                    p.active_days
                ),
            }
        } else {
            Signal {
                kind: "new_ip",
                points: w.new_ip,
                reason: format!("address {list} new for it (its egress set is still changing)"),
            }
        };
        out.push(sig);
    }
    // People change clients and sign-in apps (portal, CLI, an SDK) far more than workloads.
    let person_context = if p.person { 0.5 } else { 1.0 };
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
        "new_agent",
        w.new_agent * person_context,
        "client",
        &p.agents,
        distinct(act.events.iter().filter_map(|e| e.agent)),
    );
    novel(
        "new_app",
        w.new_app * person_context,
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

    // Objects: each new one weighs by who else reads it and what it is. What it wrote itself
    // this hour (a pipeline adding a secret, then reading it) is not new to it.
    let write = b.strings.lookup("object_write");
    let export = b.strings.lookup("export");
    let written: BTreeSet<u32> = act
        .events
        .iter()
        .filter(|e| Some(e.family) == write)
        .filter_map(|e| e.object)
        .collect();
    let read: Vec<(u32, bool)> = {
        let mut m: BTreeMap<u32, bool> = BTreeMap::new();
        for e in &act.events {
            if let Some(o) = e.object
                && Some(e.family) != write
            {
                *m.entry(o).or_default() |= Some(e.family) == export;
            }
        }
        m.into_iter().collect()
    };
    let settled = settled_at(p, hour)
        || b.incidents
            .get(&pid)
            .is_some_and(|i| i.settled && i.open_at(hour, &cfg.incident()));
    // People explore: one who reads new objects every hour it works gets less for each.
    let novelty = p.objects.len() as f64 / p.active_hours.max(1) as f64;
    let explorer = if p.person { 1.0 / (1.0 + novelty) } else { 1.0 };
    let new_vaults: BTreeSet<String> = vaults
        .iter()
        .filter(|&&v| is_new(&p.vaults, v))
        .map(|&v| name(v))
        .collect();
    let (mut pts, mut n, mut nobody, mut material, mut peers, mut fresh) = (0.0, 0, 0, 0, 0, 0);
    let mut granted_objects = 0;
    let mut names = Vec::new();
    for (o, exported) in read {
        if !is_new(&p.objects, o) || written.contains(&o) {
            continue;
        }
        let oname = name(o);
        let explained = b
            .strings
            .lookup(oname.split('/').next().unwrap_or(""))
            .is_some_and(|v| granted(v).is_some());
        let mut m = if explained { 0.25 } else { 1.0 };
        if explained {
            granted_objects += 1;
        }
        m *= cfg
            .label_weight(&oname)
            .max(cfg.label_weight(oname.split('/').next().unwrap_or("")));
        match b.object_readers.get(&o) {
            None => {
                m *= 1.5;
                nobody += 1;
            }
            // Created within the day: new to everyone, a release rolling out.
            Some(r) if r.created && hour - r.first < 24 => {
                m *= 0.25;
                fresh += 1;
            }
            // A workload's objects are its configuration: its peers' are not its own.
            Some(r) if !settled && others >= 2 && r.of_group(p.group) > 0 => {
                m *= 0.25;
                peers += 1;
            }
            Some(_) => {}
        }
        if exported || key_material(b, &oname) {
            m *= 2.0;
            material += 1;
        }
        if settled {
            m *= 3.0;
        }
        // Exploring applies to the vaults it already uses, not to one new to it.
        if !new_vaults.contains(oname.split('/').next().unwrap_or("")) {
            m *= explorer;
        }
        pts += w.per_new_object * m;
        n += 1;
        if names.len() < 5 {
            names.push(oname);
        }
    }
    if n > 0 {
        let mut notes = Vec::new();
        if nobody > 0 {
            notes.push(format!("{nobody} never read by anyone"));
        }
        if material > 0 {
            notes.push(format!("{material} private-key material or backups"));
        }
        if peers > 0 {
            notes.push(format!("{peers} read by its peers"));
        }
        if granted_objects > 0 {
            notes.push(format!("{granted_objects} on a vault it was granted"));
        }
        if fresh > 0 {
            notes.push(format!("{fresh} created within the day"));
        }
        if settled {
            notes.push("a workload whose objects had not changed for a day".to_owned());
        }
        if p.person && novelty >= 0.1 {
            notes.push(format!("it reads {novelty:.1} new objects an active hour"));
        }
        out.push(Signal {
            kind: "new_objects",
            points: pts.min(w.max_new_objects),
            reason: format!(
                "read {n} object(s) it never used before ({} known{}{}): {}",
                p.objects.len(),
                if notes.is_empty() { "" } else { "; " },
                notes.join(", "),
                names.join(", ")
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

/// Scores every principal active in `hour` and adds its signals to its incident; returns an
/// occurrence for every incident that this hour grew to an alert's score. With `persist`
/// false (an hour still filling) the incidents are updated on copies, so the hour is judged
/// again, whole, once it closes.
pub fn score_hour(
    b: &mut Baselines,
    cfg: &ModelConfig,
    hour: i32,
    evs: &[Ev],
    infos: &HashMap<u32, PrincipalInfo>,
    persist: bool,
) -> Vec<Occurrence> {
    let mut by: BTreeMap<&str, (u32, Activity<'_>)> = BTreeMap::new();
    for e in evs {
        by.entry(b.strings.name(e.principal))
            .or_insert_with(|| (e.principal, Activity::default()))
            .1
            .events
            .push(e);
    }
    let scored: Vec<(String, u32, Activity<'_>, Vec<Signal>)> = by
        .into_iter()
        .map(|(pname, (pid, act))| {
            let sig = signals(b, cfg, hour, pid, &act);
            (pname.to_owned(), pid, act, sig)
        })
        .filter(|x| !x.3.is_empty())
        .collect();
    if persist {
        b.incidents
            .retain(|_, i| hour - i.last_hour <= cfg.horizon_hours);
    }
    let mut out = Vec::new();
    for (pname, pid, act, sig) in scored {
        let ids = |f: &dyn Fn(&Ev) -> Option<u32>| -> Vec<u32> {
            distinct(act.events.iter().filter_map(|e| f(e)))
        };
        let new_per_vault = new_per_vault(b, cfg, hour, pid, &act);
        let b_settled = b.principals.get(&pid).is_some_and(|p| settled_at(p, hour));
        let evidence = HourEvidence {
            new_per_vault,
            hour,
            signals: &sig,
            first_seen: act.events.iter().map(|e| e.time).min().unwrap_or(0),
            last_seen: act.events.iter().map(|e| e.time).max().unwrap_or(0),
            events: act.events.len() as u64,
            vaults: ids(&|e| Some(e.vault)),
            ips: ids(&|e| e.ip),
            objects: ids(&|e| e.object),
            event_ids: act
                .events
                .iter()
                .take(cfg.max_evidence)
                .map(|e| e.event_id.clone())
                .collect(),
        };
        let mut scratch;
        let inc: &mut Incident = if persist {
            b.incidents.entry(pid).or_default()
        } else {
            scratch = b.incidents.get(&pid).cloned().unwrap_or_default();
            &mut scratch
        };
        if inc.hours > 0 && !inc.open_at(hour, &cfg.incident()) {
            *inc = Incident::default();
        }
        if inc.hours == 0 {
            inc.settled = b_settled;
        }
        inc.add(evidence, &cfg.incident(), cfg.max_evidence);
        let Some(severity) = cfg.severity(inc.peak) else {
            continue;
        };
        let inc = inc.clone();
        let info = infos.get(&pid).cloned().unwrap_or_default();
        out.push(occurrence(b, &pname, &inc, severity, info));
    }
    out
}

/// Objects new to a known principal this hour (reads, not its own writes), per vault.
fn new_per_vault(
    b: &Baselines,
    cfg: &ModelConfig,
    hour: i32,
    pid: u32,
    act: &Activity<'_>,
) -> Vec<(u32, String, u32)> {
    let Some(p) = b.principals.get(&pid) else {
        return Vec::new();
    };
    let write = b.strings.lookup("object_write");
    let mut per: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for e in &act.events {
        if let Some(o) = e.object
            && Some(e.family) != write
            && !known(p.objects.get(&o), hour, cfg.decay_hours)
        {
            per.entry(e.vault).or_default().insert(o);
        }
    }
    per.into_iter()
        .map(|(v, os)| (v, b.strings.name(v).to_owned(), os.len() as u32))
        .collect()
}

/// An incident's evidence in words: each item with its hour (UTC) when it spans several
/// hours, then how many were left out.
fn explain(inc: &Incident) -> String {
    let mut parts: Vec<String> = inc
        .evidence
        .iter()
        .map(|e| {
            let at = kvwatch_ingest::time::format_ns(e.hour as i64 * HOUR_NS);
            let when = if inc.hours > 1 {
                format!("[{} {}:00] ", &at[5..10], &at[11..13])
            } else {
                String::new()
            };
            format!("{when}{} (+{:.0})", e.reason, e.points)
        })
        .collect();
    if inc.omitted > 0 {
        parts.push(format!("and {} more", inc.omitted));
    }
    parts.join("; ")
}

/// The alert occurrence of an incident: one ID for its whole life (principal and first hour).
fn occurrence(
    b: &Baselines,
    pname: &str,
    inc: &Incident,
    severity: Severity,
    info: PrincipalInfo,
) -> Occurrence {
    let label = info
        .upn
        .clone()
        .or(info.oid.clone())
        .unwrap_or_else(|| pname.to_owned());
    let names = |ids: &[u32]| -> Vec<String> {
        let mut v: Vec<String> = ids.iter().map(|&i| b.strings.name(i).to_owned()).collect();
        v.sort();
        v
    };
    let window_start = inc.start_hour as i64 * HOUR_NS;
    let mut h = blake3::Hasher::new();
    h.update(super::RULE_ID.as_bytes());
    h.update(b"\0");
    h.update(pname.as_bytes());
    h.update(b"\0");
    h.update(&window_start.to_le_bytes());
    let mut fields = BTreeMap::new();
    fields.insert("score".to_owned(), json!(inc.peak.round()));
    fields.insert("hours".to_owned(), json!(inc.hours));
    fields.insert("signals".to_owned(), json!(inc.evidence));
    let span = if inc.hours > 1 {
        format!(" over {} hours with evidence", inc.hours)
    } else {
        String::new()
    };
    Occurrence {
        id: h.finalize().to_hex()[..32].to_owned(),
        rule_id: super::RULE_ID.to_owned(),
        dedup_key: pname.to_owned(),
        window_start,
        first_seen: inc.first_seen,
        last_seen: inc.last_seen,
        event_count: inc.events as i64,
        severity,
        summary: format!("{label}: risk {:.0}{span}: {}", inc.peak, explain(inc)),
        principals: vec![AlertPrincipal {
            oid: info.oid,
            upn: info.upn,
            appid: info.appid,
            kind: info.kind,
        }],
        vaults: names(&inc.vaults),
        ips: names(&inc.ips),
        objects: names(&inc.objects),
        evidence: inc.event_ids.clone(),
        fields,
    }
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
    let write = b.strings.lookup("object_write");
    // In principal order: peer groups and reader lists must not depend on hashing.
    let mut per: BTreeMap<u32, Vec<&Ev>> = BTreeMap::new();
    for e in evs {
        b.vault_first.entry(e.vault).or_insert(hour);
        per.entry(e.principal).or_default().push(e);
    }
    for (pid, es) in per {
        let p = b.principals.entry(pid).or_insert_with(|| Principal {
            first_hour: hour,
            last_active_day: i32::MIN,
            group: NO_GROUP,
            ..Default::default()
        });
        p.last_hour = hour;
        p.active_hours += 1;
        let mut vaults = BTreeSet::new();
        let mut new_vaults = Vec::new();
        let mut new_objects = Vec::new();
        let mut counts: HashMap<u64, f64> = HashMap::new();
        for e in &es {
            p.person |= e.person;
            if touch(&mut p.vaults, e.vault, hour) {
                new_vaults.push(e.vault);
            }
            vaults.insert(e.vault);
            touch(&mut p.families, e.family, hour);
            if let Some(ip) = e.ip
                && touch(&mut p.ips, ip, hour)
            {
                p.last_new_ip = hour;
            }
            for (map, v) in [
                (&mut p.networks, e.network),
                (&mut p.agents, e.agent),
                (&mut p.apps, e.app),
            ] {
                if let Some(v) = v {
                    touch(map, v, hour);
                }
            }
            if let Some(o) = e.object
                && touch(&mut p.objects, o, hour)
            {
                p.last_new_object = hour;
                new_objects.push((o, Some(e.family) == write, e.vault));
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
        // Its peer group follows the vault it uses most; what it read first is recorded under
        // the group it is in now.
        let group = group_of(p.person, p.primary_vault(&b.strings));
        let (old, person) = (std::mem::replace(&mut p.group, group), p.person);
        if old != group {
            if old != NO_GROUP
                && let Some(c) = b.group_sizes.get_mut(&old)
            {
                *c -= 1;
                if *c == 0 {
                    b.group_sizes.remove(&old);
                }
            }
            *b.group_sizes.entry(group).or_default() += 1;
        }
        // What it reads on a vault granted to it personally is not a norm of its group.
        // (Only when something is new and grants name it: most principal-hours pay nothing.)
        let mut granted: HashSet<u32> = HashSet::new();
        if (!new_vaults.is_empty() || !new_objects.is_empty()) && !b.grants.is_empty() {
            let pname = b.strings.name(pid);
            if b.grants.contains_key(&pname.to_ascii_lowercase()) {
                granted.extend(
                    vaults
                        .iter()
                        .copied()
                        .filter(|&v| b.grant_for(pname, b.strings.name(v), hour).is_some()),
                );
            }
        }
        let peer = |v: u32| (!granted.contains(&v)).then_some(group);
        for v in new_vaults {
            b.vault_readers
                .entry(v)
                .or_default()
                .add(person, peer(v), hour, false);
        }
        for (o, written, v) in new_objects {
            b.object_readers
                .entry(o)
                .or_default()
                .add(person, peer(v), hour, written);
        }
    }
}

/// The group of a principal not learned yet.
const NO_GROUP: super::baseline::Group = u64::MAX;

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
                person: p == "dev",
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
                "new_vault_unlike_peers",
                "new_ip",
                "new_objects",
                "off_hours"
            ],
            "{sig:#?}"
        );
        // No other person reads pay-kv (25); a person's new address in a new network (5 + 5);
        // three objects nobody read (3 × 4 × 1.5); never active at that hour (15).
        assert_eq!(score, 68.0);
        assert_eq!(ModelConfig::default().severity(score), Some(Severity::High));
        assert!(sig[0].reason.contains("pay-kv"));
        assert!(
            sig[0].reason.contains("no person ever read it"),
            "{}",
            sig[0].reason
        );
        assert!(
            sig[2].reason.contains("3 never read by anyone"),
            "{}",
            sig[2].reason
        );
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
        assert_eq!(
            kinds,
            [
                "new_vault_unlike_peers",
                "new_vault_unlike_peers",
                "breadth"
            ],
            "{sig:#?}"
        );
        assert!(
            sig[2].reason.contains("touched 4 vaults"),
            "{}",
            sig[2].reason
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
        let occ = score_hour(
            &mut w.b.clone(),
            &ModelConfig::default(),
            h,
            &evs,
            &infos,
            true,
        );
        assert_eq!(occ.len(), 1);
        let o = &occ[0];
        assert_eq!(o.rule_id, "anomaly-principal");
        assert_eq!(o.event_count, 3);
        assert_eq!(o.severity, Severity::High);
        assert!(
            o.summary
                .starts_with("dev@contoso.com: risk 68: vault pay-kv new for it"),
            "{}",
            o.summary
        );
        assert_eq!(o.fields["score"], json!(68.0));
        // Deterministic identity.
        assert_eq!(
            o.id,
            score_hour(
                &mut w.b.clone(),
                &ModelConfig::default(),
                h,
                &evs,
                &infos,
                true
            )[0]
            .id
        );
    }

    #[test]
    fn a_workload_outside_its_egress_set_or_its_objects_stands_out_a_person_less_so() {
        let mut w = history(7);
        let h = 7 * 24 + 3;
        // payapp's token from another address of the same cloud, reading what it always reads.
        let evs = vec![w.ev(
            h,
            "payapp",
            "pay-kv",
            "material_read",
            Some("pay-kv/secret/app"),
            "20.50.9.9",
            "azsdk",
        )];
        let (score, sig) = score_of(&mut w, h, &evs);
        assert_eq!(sig[0].kind, "new_ip_workload", "{sig:#?}");
        assert_eq!(score, 30.0);
        assert!(
            sig[0]
                .reason
                .contains("outside the 1 addresses it has used for 7 days"),
            "{}",
            sig[0].reason
        );
        // The same for a person is a small thing.
        let evs = vec![w.ev(
            11 + 7 * 24,
            "dev",
            "dev-kv",
            "material_read",
            Some("dev-kv/secret/a"),
            "198.51.100.4",
            "azurecli",
        )];
        let (score, sig) = score_of(&mut w, 11 + 7 * 24, &evs);
        assert_eq!((sig[0].kind, score), ("new_ip", 10.0), "{sig:#?}");
        // payapp reading three pay-kv secrets beyond its own, nobody's before: 3 × 4 × 1.5 × 3.
        let evs: Vec<Ev> = (0..3)
            .map(|i| {
                let o = format!("pay-kv/secret/other-{i}");
                w.ev(
                    h,
                    "payapp",
                    "pay-kv",
                    "material_read",
                    Some(&o),
                    "20.50.2.2",
                    "azsdk",
                )
            })
            .collect();
        let (score, sig) = score_of(&mut w, h, &evs);
        assert_eq!(sig[0].kind, "new_objects");
        assert_eq!(score, 30.0, "capped: {sig:#?}");
        assert!(
            sig[0].reason.contains("whose objects had not changed"),
            "{}",
            sig[0].reason
        );
    }

    #[test]
    fn a_grant_by_someone_else_explains_first_reads_of_a_vault() {
        let mut w = history(7);
        let h = 7 * 24 + 11;
        let evs = w.night_reads(h);
        let (alone, _) = score_of(&mut w, h, &evs);
        w.b.grants.insert(
            "dev".into(),
            vec![super::super::baseline::Grant {
                vault: "PAY-KV".into(),
                hour: h - 2,
                by: "admin@contoso.com".into(),
            }],
        );
        let (explained, sig) = score_of(&mut w, h, &evs);
        assert_eq!(sig[0].kind, "new_vault_granted", "{sig:#?}");
        assert!(
            sig[0]
                .reason
                .contains("granted by admin@contoso.com 2 hours before")
        );
        assert!(explained < alone / 2.0, "{explained} vs {alone}");
        // A grant to itself explains nothing.
        w.b.grants.get_mut("dev").unwrap()[0].by = "dev".into();
        assert_eq!(score_of(&mut w, h, &evs).0, alone);
    }

    #[test]
    fn hours_below_the_threshold_grow_one_incident_and_keep_its_alert() {
        let mut w = history(7);
        let cfg = ModelConfig::default();
        let infos = HashMap::new();
        let mut ids = Vec::new();
        let mut first_alert_hour = None;
        // dev, in office hours from the office, reads two dev-kv secrets it never read, each
        // hour for six hours: nothing on its own.
        for k in 0..6 {
            let h = 7 * 24 + 10 + k;
            let evs: Vec<Ev> = (0..2)
                .map(|i| {
                    let o = format!("dev-kv/secret/new-{k}-{i}");
                    w.ev(
                        h,
                        "dev",
                        "dev-kv",
                        "material_read",
                        Some(&o),
                        "203.0.113.10",
                        "azurecli",
                    )
                })
                .collect();
            let (alone, _) = score_of(&mut w, h, &evs);
            assert!(alone < cfg.low, "hour {k} alone scores {alone}");
            let occ = score_hour(&mut w.b, &cfg, h, &evs, &infos, true);
            learn_hour(&mut w.b, h, &evs);
            if let Some(o) = occ.first() {
                first_alert_hour.get_or_insert(k);
                ids.push(o.id.clone());
                assert!(o.summary.contains("hours with evidence"), "{}", o.summary);
            }
        }
        assert!(
            first_alert_hour.is_some_and(|k| k >= 2),
            "{first_alert_hour:?}"
        );
        ids.dedup();
        assert_eq!(ids.len(), 1, "one incident, one occurrence ID: {ids:?}");
        let inc = &w.b.incidents[&w.b.strings.lookup("dev").unwrap()];
        assert_eq!((inc.hours, inc.objects.len()), (6, 12));
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
                        person: false,
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
