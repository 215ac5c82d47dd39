//! kvwatch-datasets: realistic synthetic Key Vault traffic with labelled attacks, and the
//! scorer that measures detections against those labels.
//!
//! Generation runs hour by hour: every benign persona ([`benign`]) and every planned attack
//! ([`attacks`]) contributes that hour's events, which are rendered in Azure's real record
//! format ([`render`]) and written in the chosen delivery shape. Nothing but the current hour
//! is held in memory, so `--scale` can reach tens of millions of events with flat memory.

pub mod attacks;
pub mod benign;
pub mod eval;
pub mod render;
pub mod world;

use attacks::{Attack, Label};
use benign::{Cast, HOUR_NS, Hour};
use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use world::{World, rng_for};

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("unknown attack kind {0:?} (known: all, loud, careful, none, {known}, {careful})", known = attacks::KINDS.join(", "), careful = attacks::CAREFUL.join(", "))]
    UnknownAttack(String),
    #[error("invalid option: {0}")]
    Invalid(String),
}

/// How the generated logs are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The storage-account layout: one JSON Lines `PT1H.json` per vault and hour.
    Archive,
    /// Event Hubs message bodies: `{"records":[…]}` envelopes, one per line.
    Eventhubs,
    /// Flat JSON Lines, one file per day.
    Jsonl,
    /// Every envelope in turn (pretty envelope, JSON Lines, bare array, compact envelopes), one
    /// file per hour, plus each hour's first record as a single-object file: exercises every
    /// parser path.
    Mixed,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub days: u32,
    pub start: NaiveDate,
    pub seed: u64,
    pub scale: u32,
    pub format: OutputFormat,
    /// Attack kinds (slugs of [`attacks::KINDS`]).
    pub attacks: Vec<String>,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            days: 7,
            start: NaiveDate::from_ymd_opt(2024, 5, 6).expect("valid date"),
            seed: 1,
            scale: 1,
            format: OutputFormat::Archive,
            attacks: attacks::KINDS
                .iter()
                .chain(attacks::CAREFUL)
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// Parses `all`, `loud` (the catalog's kinds), `careful` (the careful classes), `none`, or a
/// comma-separated list of those and attack slugs.
pub fn parse_attacks(spec: &str) -> Result<Vec<String>, GenError> {
    let mut out: Vec<String> = Vec::new();
    for s in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kinds: Vec<&str> = match s {
            "all" => attacks::KINDS
                .iter()
                .chain(attacks::CAREFUL)
                .copied()
                .collect(),
            "loud" => attacks::KINDS.to_vec(),
            "careful" => attacks::CAREFUL.to_vec(),
            "none" => Vec::new(),
            k if attacks::KINDS.contains(&k) || attacks::CAREFUL.contains(&k) => vec![k],
            k => return Err(GenError::UnknownAttack(k.to_owned())),
        };
        out.extend(kinds.into_iter().map(str::to_owned));
    }
    Ok(out)
}

/// The ground truth written next to the logs as `labels.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    pub seed: u64,
    pub start: String,
    pub days: u32,
    pub scale: u32,
    pub events: u64,
    pub activity: u64,
    pub attacks: Vec<Label>,
}

/// What a generation run wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenSummary {
    pub events: u64,
    pub activity: u64,
    pub attack_events: u64,
    pub files: u64,
    pub bytes: u64,
    pub vaults: usize,
    pub attacks: usize,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GenError + '_ {
    move |source| GenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Output files, opened lazily and closed when their hour or day is done.
struct Out {
    root: PathBuf,
    format: OutputFormat,
    files: u64,
    bytes: u64,
    day_file: Option<(String, BufWriter<File>)>,
}

impl Out {
    fn write_file(&mut self, rel: &str, content: &[u8]) -> Result<(), GenError> {
        let path = self.root.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        fs::write(&path, content).map_err(io_err(&path))?;
        self.files += 1;
        self.bytes += content.len() as u64;
        Ok(())
    }

    fn append_day(&mut self, date: &str, lines: &[String]) -> Result<(), GenError> {
        if self.day_file.as_ref().map(|(d, _)| d.as_str()) != Some(date) {
            self.close_day()?;
            let path = self.root.join(format!("jsonl/{date}.jsonl"));
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io_err(dir))?;
            }
            let f = File::create(&path).map_err(io_err(&path))?;
            self.files += 1;
            self.day_file = Some((date.to_owned(), BufWriter::with_capacity(1 << 20, f)));
        }
        let (_, w) = self.day_file.as_mut().expect("opened above");
        for l in lines {
            w.write_all(l.as_bytes())
                .and_then(|_| w.write_all(b"\n"))
                .map_err(io_err(&self.root))?;
            self.bytes += l.len() as u64 + 1;
        }
        Ok(())
    }

    fn close_day(&mut self) -> Result<(), GenError> {
        if let Some((_, mut w)) = self.day_file.take() {
            w.flush().map_err(io_err(&self.root))?;
        }
        Ok(())
    }
}

fn envelope(records: &[String]) -> String {
    let mut s = String::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 16);
    s.push_str("{\"records\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(r);
    }
    s.push_str("]}");
    s
}

fn pretty(records: &[String], wrap: bool) -> String {
    let values: Vec<serde_json::Value> = records
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    let v = if wrap {
        serde_json::json!({ "records": values })
    } else {
        serde_json::Value::Array(values)
    };
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// Generates logs into `out` and writes `labels.json`. `progress` is called after each hour
/// with (hours done, hours total).
pub fn generate(
    cfg: &GenConfig,
    out: &Path,
    mut progress: impl FnMut(u32, u32),
) -> Result<GenSummary, GenError> {
    if cfg.days == 0 {
        return Err(GenError::Invalid("--days must be at least 1".into()));
    }
    if cfg.scale == 0 {
        return Err(GenError::Invalid("--scale must be at least 1".into()));
    }
    fs::create_dir_all(out).map_err(io_err(out))?;
    let world = World::build(cfg.seed, cfg.scale);
    let casts: Vec<Cast> = (0..world.scale)
        .map(|u| Cast::build(cfg.seed, &world, u))
        .collect();
    let start_ns = Utc
        .from_utc_datetime(&cfg.start.and_hms_opt(0, 0, 0).expect("midnight"))
        .timestamp_nanos_opt()
        .ok_or_else(|| GenError::Invalid("start date out of range".into()))?;
    let planned: Vec<Attack> = cfg
        .attacks
        .iter()
        .enumerate()
        .map(|(i, k)| attacks::plan(k, i, cfg.seed, &world, &casts, start_ns, cfg.days))
        .collect();
    let mut attack_events: Vec<render::Ev> = planned
        .iter()
        .flat_map(|a| a.events.iter().cloned())
        .collect();
    attack_events.sort_by_key(|e| e.time_ns);
    let mut activity: Vec<(i64, String)> = planned
        .iter()
        .flat_map(|a| a.activity.iter().cloned())
        .collect();
    activity.sort_by_key(|a| a.0);
    let silences: Vec<(usize, i64, i64)> = planned.iter().filter_map(|a| a.silence).collect();

    let mut sink = Out {
        root: out.to_owned(),
        format: cfg.format,
        files: 0,
        bytes: 0,
        day_file: None,
    };
    let mut summary = GenSummary {
        vaults: world.vaults.len(),
        attacks: planned.len(),
        attack_events: attack_events.len() as u64,
        ..Default::default()
    };
    let total_hours = cfg.days * 24;
    let mut next_attack = 0usize;
    let mut next_activity = 0usize;
    // Records appended to the next hour's blob: Azure appends in arrival order, so a blob can
    // hold records whose time belongs to the previous hour.
    let mut late: Vec<render::Ev> = Vec::new();
    let mut buf: Vec<render::Ev> = Vec::new();
    for hi in 0..total_hours {
        let h_start = start_ns + hi as i64 * HOUR_NS;
        let date = cfg.start + chrono::Duration::days((hi / 24) as i64);
        let hour = Hour {
            start_ns: h_start,
            day: hi / 24,
            hour: hi % 24,
            weekday: date.weekday().num_days_from_monday(),
        };
        buf.clear();
        buf.append(&mut late);
        for cast in &casts {
            benign::hour(&mut buf, cfg.seed, &world, cast, &hour, cfg.days);
        }
        while next_attack < attack_events.len()
            && attack_events[next_attack].time_ns < h_start + HOUR_NS
        {
            buf.push(attack_events[next_attack].clone());
            next_attack += 1;
        }
        buf.retain(|e| {
            !silences
                .iter()
                .any(|(v, from, to)| e.vault == *v && e.time_ns >= *from && e.time_ns < *to)
        });
        // Stable order: by time, then vault, then operation.
        buf.sort_by(|a, b| (a.time_ns, a.vault, a.op).cmp(&(b.time_ns, b.vault, b.op)));
        let mut rng = rng_for(cfg.seed, "arrival", hi as u64);
        if hi + 1 < total_hours && cfg.format == OutputFormat::Archive {
            let cut = h_start + HOUR_NS - 90 * 1_000_000_000;
            let mut keep = Vec::with_capacity(buf.len());
            for e in buf.drain(..) {
                if e.time_ns >= cut && e.time_ns < h_start + HOUR_NS && rng.random_bool(0.3) {
                    late.push(e);
                } else {
                    keep.push(e);
                }
            }
            buf = keep;
        }
        let mut acts: Vec<String> = Vec::new();
        while next_activity < activity.len() && activity[next_activity].0 < h_start + HOUR_NS {
            acts.push(activity[next_activity].1.clone());
            next_activity += 1;
        }
        summary.events += buf.len() as u64;
        summary.activity += acts.len() as u64;
        write_hour(
            &mut sink, &world, &buf, &acts, date, hour.hour, hi, &mut rng,
        )?;
        progress(hi + 1, total_hours);
    }
    sink.close_day()?;
    summary.files = sink.files;
    summary.bytes = sink.bytes;
    let labels = Labels {
        seed: cfg.seed,
        start: cfg.start.to_string(),
        days: cfg.days,
        scale: cfg.scale,
        events: summary.events,
        activity: summary.activity,
        attacks: planned.into_iter().map(|a| a.label).collect(),
    };
    let path = out.join("labels.json");
    let text = serde_json::to_string_pretty(&labels).unwrap_or_default();
    fs::write(&path, text).map_err(io_err(&path))?;
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn write_hour(
    sink: &mut Out,
    world: &World,
    evs: &[render::Ev],
    acts: &[String],
    date: NaiveDate,
    hour: u32,
    hi: u32,
    rng: &mut impl Rng,
) -> Result<(), GenError> {
    let (y, m, d) = (date.year(), date.month(), date.day());
    match sink.format {
        OutputFormat::Archive => {
            let mut by_vault: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
            for e in evs {
                let b = by_vault.entry(e.vault).or_default();
                b.extend_from_slice(render::render(e, &world.vaults[e.vault]).as_bytes());
                b.push(b'\n');
            }
            for (v, content) in by_vault {
                let vault = &world.vaults[v];
                let rel = format!(
                    "insights-logs-auditevent/resourceId=/SUBSCRIPTIONS/{}/RESOURCEGROUPS/{}/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{}/y={y}/m={m:02}/d={d:02}/h={hour:02}/m=00/PT1H.json",
                    vault.subscription.to_uppercase(),
                    vault.resource_group.to_uppercase(),
                    vault.name.to_uppercase()
                );
                sink.write_file(&rel, &content)?;
            }
            if !acts.is_empty() {
                let mut content = acts.join("\n");
                content.push('\n');
                let rel = format!(
                    "insights-activity-logs/resourceId=/SUBSCRIPTIONS/{}/y={y}/m={m:02}/d={d:02}/h={hour:02}/m=00/PT1H.json",
                    world.subscriptions[0].to_uppercase()
                );
                sink.write_file(&rel, content.as_bytes())?;
            }
        }
        OutputFormat::Eventhubs => {
            let rendered: Vec<String> = evs
                .iter()
                .map(|e| render::render(e, &world.vaults[e.vault]))
                .collect();
            let mut content = String::new();
            let mut i = 0;
            while i < rendered.len() {
                let n = rng.random_range(20..200).min(rendered.len() - i);
                content.push_str(&envelope(&rendered[i..i + n]));
                content.push('\n');
                i += n;
            }
            if !acts.is_empty() {
                content.push_str(&envelope(acts));
                content.push('\n');
            }
            if !content.is_empty() {
                sink.write_file(
                    &format!("eventhubs/{date}T{hour:02}.json"),
                    content.as_bytes(),
                )?;
            }
        }
        OutputFormat::Jsonl => {
            let mut lines: Vec<String> = evs
                .iter()
                .map(|e| render::render(e, &world.vaults[e.vault]))
                .collect();
            lines.extend(acts.iter().cloned());
            sink.append_day(&date.to_string(), &lines)?;
        }
        OutputFormat::Mixed => {
            let mut rendered: Vec<String> = evs
                .iter()
                .map(|e| render::render(e, &world.vaults[e.vault]))
                .collect();
            rendered.extend(acts.iter().cloned());
            if rendered.is_empty() {
                return Ok(());
            }
            // The hour's first record stands alone as a single-object file (the fourth shape).
            let single = rendered.remove(0);
            let one: serde_json::Value = serde_json::from_str(&single).unwrap_or_default();
            let one = serde_json::to_string_pretty(&one).unwrap_or(single) + "\n";
            sink.write_file(
                &format!("mixed/{date}T{hour:02}-single.json"),
                one.as_bytes(),
            )?;
            if rendered.is_empty() {
                return Ok(());
            }
            let content = match hi % 4 {
                0 => pretty(&rendered, true),
                1 => rendered.join("\n") + "\n",
                2 => pretty(&rendered, false),
                _ => rendered.chunks(100).map(|c| envelope(c) + "\n").collect(),
            };
            sink.write_file(&format!("mixed/{date}T{hour:02}.json"), content.as_bytes())?;
        }
    }
    Ok(())
}

/// Reads `labels.json`.
pub fn read_labels(path: &Path) -> Result<Labels, GenError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| GenError::Invalid(format!("{}: {e}", path.display())))
}
