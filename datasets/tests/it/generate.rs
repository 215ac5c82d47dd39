use kvwatch_datasets::attacks::KINDS;
use kvwatch_datasets::{GenConfig, OutputFormat, generate, read_labels};
use kvwatch_ingest::activity::ActivityRow;
use kvwatch_ingest::audit::EventRow;
use kvwatch_ingest::files::{Input, open, parse_stream};
use kvwatch_ingest::parse::RowSink;
use std::collections::BTreeMap;
use std::path::Path;

/// (time, principal oid, caller ip, vault, operation, http status) of a parsed event.
type Seen1 = (
    i64,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<i32>,
);

/// What the real parser makes of generated files.
#[derive(Default)]
struct Seen {
    events: Vec<Seen1>,
    activity: Vec<ActivityRow>,
    quarantine: Vec<String>,
}

impl RowSink for Seen {
    fn event(&mut self, r: &EventRow<'_>, _s: &str) {
        self.events.push((
            r.time_ns,
            r.principal_oid.clone(),
            r.caller_ip.as_deref().map(str::to_owned),
            r.vault.clone().unwrap_or_default(),
            r.operation.to_string(),
            r.http_status,
        ));
    }
    fn activity(&mut self, r: &ActivityRow, _s: &str) {
        self.activity.push(r.clone());
    }
    fn quarantine(&mut self, source: &str, reason: &str, _raw: &str) {
        self.quarantine.push(format!("{source}: {reason}"));
    }
}

fn parse_dir(dir: &Path) -> Seen {
    let mut seen = Seen::default();
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| !p.ends_with("labels.json"))
        .collect();
    files.sort();
    for f in files {
        let input = Input::file(f.clone());
        let (r, _) = open(&input, false).unwrap().into_parts();
        parse_stream(r, &f.display().to_string(), &mut seen, 1 << 28).unwrap();
    }
    seen
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out
}

fn hashes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walk(dir)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn cfg(days: u32, seed: u64, attacks: &[&str], format: OutputFormat) -> GenConfig {
    GenConfig {
        days,
        seed,
        format,
        attacks: attacks.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn same_seed_same_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let all: Vec<&str> = KINDS.to_vec();
    generate(&cfg(2, 7, &all, OutputFormat::Archive), a.path(), |_, _| {}).unwrap();
    generate(&cfg(2, 7, &all, OutputFormat::Archive), b.path(), |_, _| {}).unwrap();
    generate(&cfg(2, 8, &all, OutputFormat::Archive), c.path(), |_, _| {}).unwrap();
    let (ha, hb, hc) = (hashes(a.path()), hashes(b.path()), hashes(c.path()));
    assert!(ha.len() > 50);
    assert_eq!(ha, hb, "same seed must give the same bytes");
    assert_ne!(ha, hc, "another seed must give other traffic");
}

#[test]
fn every_attack_kind_is_labelled_and_parseable() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate(
            &cfg(2, 3, &[kind], OutputFormat::Jsonl),
            dir.path(),
            |_, _| {},
        )
        .unwrap();
        let labels = read_labels(&dir.path().join("labels.json")).unwrap();
        assert_eq!(labels.attacks.len(), 1);
        let l = &labels.attacks[0];
        assert_eq!(l.kind, *kind);
        assert!(l.actor.oid.is_some(), "{kind}: actor");
        assert!(!l.ips.is_empty() && !l.vaults.is_empty(), "{kind}: {l:?}");
        assert!(l.start <= l.end, "{kind}: {l:?}");
        assert!(
            l.start.as_str() >= "2024-05-06" && l.end.as_str() < "2024-05-08T",
            "{kind}: {l:?}"
        );

        let seen = parse_dir(dir.path());
        assert!(
            seen.quarantine.is_empty(),
            "{kind}: generated records must parse: {:?}",
            &seen.quarantine[..seen.quarantine.len().min(3)]
        );
        assert_eq!(seen.events.len() as u64, summary.events, "{kind}");
        assert_eq!(seen.activity.len() as u64, summary.activity, "{kind}");

        // The attack's own events are in the logs: by its actor or from its addresses, inside
        // its window, on its vaults.
        let t = |s: &str| kvwatch_ingest::time::parse_timestamp_ns(s).unwrap();
        let (start, end) = (t(&l.start), t(&l.end));
        let oid = l.actor.oid.clone().unwrap();
        let in_window = seen
            .events
            .iter()
            .filter(|e| e.0 >= start && e.0 <= end)
            .filter(|e| {
                e.1.as_deref() == Some(oid.as_str())
                    || e.2.as_ref().is_some_and(|ip| l.ips.contains(ip))
            })
            .filter(|e| l.vaults.contains(&e.3))
            .count();
        let in_activity = seen
            .activity
            .iter()
            .filter(|a| a.caller_oid.as_deref() == Some(oid.as_str()))
            .count();
        assert!(
            in_window + in_activity > 0,
            "{kind}: no attack events found"
        );
        match *kind {
            "mass-retrieval" => assert!(in_window > 50, "{kind}: {in_window}"),
            "deny-probe" => {
                let denied: std::collections::BTreeSet<_> = seen
                    .events
                    .iter()
                    .filter(|e| e.1.as_deref() == Some(oid.as_str()) && e.5 == Some(403))
                    .map(|e| e.3.clone())
                    .collect();
                assert_eq!(denied.len(), 5, "{kind}: denied on every vault");
            }
            "role-assignment" => {
                let ra = seen
                    .activity
                    .iter()
                    .find(|a| a.operation == "microsoft.authorization/roleassignments/write")
                    .unwrap();
                assert!(
                    ra.role_name.is_some() && ra.target_principal_id.is_some(),
                    "{ra:?}"
                );
            }
            "diag-deleted-silence" => {
                let del = seen
                    .activity
                    .iter()
                    .find(|a| a.operation == "microsoft.insights/diagnosticsettings/delete")
                    .unwrap();
                let vault = del.vault.clone().unwrap();
                let after = seen
                    .events
                    .iter()
                    .filter(|e| e.3 == vault && e.0 > del.time_ns + 60_000_000_000)
                    .count();
                assert_eq!(after, 0, "{kind}: the vault must go quiet");
            }
            _ => {}
        }
    }
}

#[test]
fn every_format_parses_to_the_same_events() {
    let mut counts = Vec::new();
    for format in [
        OutputFormat::Archive,
        OutputFormat::Eventhubs,
        OutputFormat::Jsonl,
        OutputFormat::Mixed,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = generate(
            &cfg(1, 5, &["firewall-opened", "role-assignment"], format),
            dir.path(),
            |_, _| {},
        )
        .unwrap();
        let seen = parse_dir(dir.path());
        assert!(
            seen.quarantine.is_empty(),
            "{format:?}: {:?}",
            seen.quarantine.first()
        );
        assert_eq!(seen.events.len() as u64, s.events, "{format:?}");
        let mut ids: Vec<_> = seen.events.iter().map(|e| (e.0, e.4.clone())).collect();
        ids.sort();
        counts.push((format, ids, seen.activity.len()));
    }
    for w in counts.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{:?} vs {:?}", w[0].0, w[1].0);
        assert_eq!(w[0].2, w[1].2);
    }
}

#[test]
fn volume_per_day_at_scale_one_and_two() {
    let dir = tempfile::tempdir().unwrap();
    let one = generate(&cfg(2, 1, &[], OutputFormat::Jsonl), dir.path(), |_, _| {}).unwrap();
    let per_day = one.events / 2;
    assert!(
        (10_000..=30_000).contains(&per_day),
        "{per_day} events/day at scale 1"
    );
    let dir2 = tempfile::tempdir().unwrap();
    let mut c = cfg(2, 1, &[], OutputFormat::Jsonl);
    c.scale = 2;
    let two = generate(&c, dir2.path(), |_, _| {}).unwrap();
    let ratio = two.events as f64 / one.events as f64;
    assert!(
        (1.8..2.2).contains(&ratio),
        "scale 2 doubles the traffic: {ratio}"
    );
}
