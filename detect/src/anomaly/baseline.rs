//! What each principal normally does, learned hour by hour.
//!
//! State grows with principals × (vaults, IPs, objects, …) they use, never with events: every
//! map holds one entry per distinct thing with its first and last sighting, and volume is kept
//! as running sums per series. Strings are interned once.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub const HOUR_NS: i64 = 3_600_000_000_000;

/// Interned strings (principals, vaults, IPs, objects, user-agent families, apps).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Interner {
    names: Vec<String>,
    #[serde(skip)]
    ids: HashMap<String, u32>,
}

impl Interner {
    pub fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_owned());
        self.ids.insert(s.to_owned(), i);
        i
    }
    /// The ID of `s` if it was ever interned.
    pub fn lookup(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }
    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
    /// Rebuilds the lookup after deserialising.
    pub fn reindex(&mut self) {
        self.ids = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// First and last hour (index since the epoch) something was seen, and in how many events.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Seen {
    pub first: i32,
    pub last: i32,
    #[serde(default)]
    pub n: u32,
}

/// A principal's peer group: people or workloads, by the vault they use most. Peers are who
/// an analyst would compare it with ("the other developers", "the payments workloads").
pub type Group = u64;

pub fn group_of(person: bool, primary_vault: u32) -> Group {
    ((person as u64) << 32) | primary_vault as u64
}

/// Groups whose members read something kept per vault or object.
pub const MAX_READER_GROUPS: usize = 16;

/// Who has read a vault or an object: how many principals, how many of them people, and
/// how many members of each peer group (at most [`MAX_READER_GROUPS`] groups).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Readers {
    pub total: u32,
    pub persons: u32,
    pub groups: Vec<(Group, u32)>,
    /// First hour anyone used it.
    pub first: i32,
    /// Its first sighting was a write: it was created then (a new secret, a new key).
    #[serde(default)]
    pub created: bool,
}

impl Readers {
    /// Counts a new reader; `group` is `None` for one whose access was granted to it
    /// personally (a grant does not make the thing a norm of its peers).
    pub fn add(&mut self, person: bool, group: Option<Group>, hour: i32, written: bool) {
        if self.total == 0 {
            self.first = hour;
            self.created = written;
        }
        self.total += 1;
        self.persons += person as u32;
        let Some(group) = group else { return };
        if let Some(g) = self.groups.iter_mut().find(|g| g.0 == group) {
            g.1 += 1;
        } else if self.groups.len() < MAX_READER_GROUPS {
            self.groups.push((group, 1));
        }
    }
    pub fn of_group(&self, group: Group) -> u32 {
        self.groups.iter().find(|g| g.0 == group).map_or(0, |g| g.1)
    }
}

/// Hourly counts of one (vault, operation family) series of a principal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Series {
    pub first_hour: i32,
    pub sum: f64,
    pub sumsq: f64,
    /// Counts summed per hour of day, for the seasonal expectation.
    pub hod: [f32; 24],
}

/// Everything known about one principal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Principal {
    pub first_hour: i32,
    pub last_hour: i32,
    pub vaults: HashMap<u32, Seen>,
    pub ips: HashMap<u32, Seen>,
    pub networks: HashMap<u32, Seen>,
    pub agents: HashMap<u32, Seen>,
    pub apps: HashMap<u32, Seen>,
    pub families: HashMap<u32, Seen>,
    pub objects: HashMap<u32, Seen>,
    /// Bit h set when the principal was active at hour of day h.
    pub hours_of_day: u32,
    /// Bit h (of 168) set when the principal was active at hour of week h (Monday 00:00 = 0).
    #[serde(default)]
    pub hours_of_week: [u64; 3],
    /// Distinct days with activity.
    pub active_days: u32,
    pub last_active_day: i32,
    pub max_vaults_per_hour: u32,
    /// Key: vault id << 32 | family id.
    pub series: HashMap<u64, Series>,
    /// Has a user principal name: a person, not a workload.
    #[serde(default)]
    pub person: bool,
    /// Its peer group as of its last learned hour.
    #[serde(default)]
    pub group: Group,
    /// Last hour an address, or an object, was new for it (its egress and object sets are
    /// established when these lie a day behind).
    #[serde(default)]
    pub last_new_ip: i32,
    #[serde(default)]
    pub last_new_object: i32,
    /// Hours it was active in.
    #[serde(default)]
    pub active_hours: u32,
}

impl Principal {
    /// The vault it used in most events (the first by name on a tie).
    pub fn primary_vault(&self, names: &Interner) -> u32 {
        self.vaults
            .iter()
            .max_by_key(|(v, s)| (s.n, std::cmp::Reverse(names.name(**v))))
            .map_or(u32::MAX, |(v, _)| *v)
    }
}

/// Access granted to a principal on a vault by someone (an access policy added, a role
/// assigned): the approval trail that explains its first reads there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub vault: String,
    pub hour: i32,
    pub by: String,
}

/// Version of the persisted state: a state of another version is rebuilt from the store.
pub const STATE_VERSION: u32 = 2;

/// All baselines, plus what they cover.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Baselines {
    #[serde(default)]
    pub version: u32,
    pub strings: Interner,
    pub principals: HashMap<u32, Principal>,
    /// First hour each vault appeared in the data (learning periods).
    pub vault_first: HashMap<u32, i32>,
    /// First hour of any data.
    pub data_first: Option<i32>,
    /// Hours before this one (exclusive, hour index) are learned.
    pub through: i32,
    /// Event-store files whose rows are learned.
    pub covered: std::collections::BTreeSet<String>,
    /// Peers: how many principals have each "most vaults in one hour" value.
    #[serde(default)]
    pub peer_breadth: std::collections::BTreeMap<u32, u32>,
    /// Successful reads per caller IP per day (day index), recent days only.
    #[serde(default)]
    pub ip_days: HashMap<u32, std::collections::BTreeMap<i32, u32>>,
    /// Who reads each vault and each object (objects: material reads, exports, crypto).
    #[serde(default)]
    pub vault_readers: HashMap<u32, Readers>,
    #[serde(default)]
    pub object_readers: HashMap<u32, Readers>,
    /// Members of each peer group.
    #[serde(default)]
    pub group_sizes: HashMap<Group, u32>,
    /// Open incidents per principal: evidence accumulating over hours.
    #[serde(default)]
    pub incidents: HashMap<u32, super::incident::Incident>,
    /// Grants per grantee (principal key), read from the store at every pass.
    #[serde(skip)]
    pub grants: HashMap<String, Vec<Grant>>,
}

/// How long a grant to a principal on a vault by someone else explains its first reads there.
pub const GRANT_EXPLAINS_HOURS: i32 = 7 * 24;

impl Baselines {
    /// The latest grant to `principal` on `vault` by someone else within
    /// [`GRANT_EXPLAINS_HOURS`] before `hour`.
    pub fn grant_for(&self, principal: &str, vault: &str, hour: i32) -> Option<&Grant> {
        self.grants
            .get(&principal.to_ascii_lowercase())?
            .iter()
            .rev()
            .find(|g| {
                g.vault.eq_ignore_ascii_case(vault)
                    && !g.by.eq_ignore_ascii_case(principal)
                    && g.hour <= hour
                    && hour - g.hour <= GRANT_EXPLAINS_HOURS
            })
    }
}

/// Is `seen` known at `hour`, given that sightings older than `decay_hours` are forgotten?
pub fn known(seen: Option<&Seen>, hour: i32, decay_hours: i32) -> bool {
    seen.is_some_and(|s| hour - s.last <= decay_hours)
}

/// Records a sighting of `k` at `hour`; true when `k` was not in the map before.
pub fn touch(map: &mut HashMap<u32, Seen>, k: u32, hour: i32) -> bool {
    let mut new = false;
    map.entry(k)
        .and_modify(|s| {
            s.last = s.last.max(hour);
            s.n = s.n.saturating_add(1);
        })
        .or_insert_with(|| {
            new = true;
            Seen {
                first: hour,
                last: hour,
                n: 1,
            }
        });
    new
}

impl Series {
    pub fn new(first_hour: i32) -> Series {
        Series {
            first_hour,
            sum: 0.0,
            sumsq: 0.0,
            hod: [0.0; 24],
        }
    }

    /// Hours of history before `hour` (empty hours included).
    pub fn hours(&self, hour: i32) -> i32 {
        (hour - self.first_hour).max(0)
    }

    /// Expected count at `hour`: the mean of the same hour of day when at least three days
    /// are known, else the overall hourly mean.
    pub fn expected(&self, hour: i32) -> f64 {
        let n = self.hours(hour) as f64;
        if n <= 0.0 {
            return 0.0;
        }
        let mean = self.sum / n;
        let days = (n / 24.0).floor();
        if days >= 3.0 {
            let h = hour.rem_euclid(24) as usize;
            // Blend with the mean so one quiet day does not make the next busy one look wild.
            0.7 * (self.hod[h] as f64 / days) + 0.3 * mean
        } else {
            mean
        }
    }

    pub fn add(&mut self, hour: i32, count: f64) {
        self.sum += count;
        self.sumsq += count * count;
        self.hod[hour.rem_euclid(24) as usize] += count as f32;
    }
}

/// Hour of week, Monday 00:00 UTC = 0 (1970-01-01 was a Thursday).
pub fn hour_of_week(hour: i32) -> usize {
    (hour + 3 * 24).rem_euclid(168) as usize
}

impl Principal {
    pub fn active_at_hour_of_week(&self, how: usize) -> bool {
        self.hours_of_week[how / 64] & (1u64 << (how % 64)) != 0
    }
}

impl Baselines {
    /// The `q` quantile of principals' most vaults in one hour.
    pub fn peer_breadth_quantile(&self, q: f64) -> u32 {
        let total: u32 = self.peer_breadth.values().sum();
        if total == 0 {
            return 0;
        }
        let want = (q * total as f64).ceil() as u32;
        let mut seen = 0;
        for (&v, &n) in &self.peer_breadth {
            seen += n;
            if seen >= want {
                return v;
            }
        }
        *self.peer_breadth.keys().last().unwrap_or(&0)
    }

    /// Rough size of the state in bytes, for the memory benchmark.
    pub fn approx_bytes(&self) -> usize {
        let seen = std::mem::size_of::<(u32, Seen)>() + 8;
        let mut n = self.strings.len() * 48;
        for p in self.principals.values() {
            n += std::mem::size_of::<Principal>();
            n += seen
                * (p.vaults.len()
                    + p.ips.len()
                    + p.networks.len()
                    + p.agents.len()
                    + p.apps.len()
                    + p.families.len()
                    + p.objects.len());
            n += p.series.len() * (std::mem::size_of::<Series>() + 16);
        }
        let readers =
            |r: &Readers| std::mem::size_of::<(u32, Readers)>() + 8 + r.groups.capacity() * 12;
        n += self.vault_readers.values().map(readers).sum::<usize>();
        n += self.object_readers.values().map(readers).sum::<usize>();
        n += self.group_sizes.len() * 24;
        n += self
            .incidents
            .values()
            .map(super::incident::Incident::approx_bytes)
            .sum::<usize>();
        n += self
            .ip_days
            .values()
            .map(|d| 32 + d.len() * 16)
            .sum::<usize>();
        n
    }
}
