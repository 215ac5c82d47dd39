//! Stores shared by the scenarios of one test run: generated, ingested and detected once per
//! (days, seed), then copied into each scenario's own directory, so that scenarios are
//! independent of each other (each has its own keys, alerts and service) and cheap to set up.

use super::common::{generate, ingest, run};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A store built once: its data directory and the logs it was generated from.
pub struct Template {
    pub data: PathBuf,
    pub logs: PathBuf,
}

/// The template of `days` days generated with `seed`, built on first use.
pub fn template(days: u32, seed: u64) -> &'static Template {
    static BUILT: OnceLock<Mutex<HashMap<(u32, u64), &'static Template>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(t) = built.get(&(days, seed)) {
        return t;
    }
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fixtures-{}", std::process::id()))
        .join(format!("{days}d-{seed}"));
    let _ = std::fs::remove_dir_all(&root);
    sweep_old();
    let gen_dir = generate(
        &root.join("gen"),
        &[
            "--format",
            "jsonl",
            "--days",
            &days.to_string(),
            "--seed",
            &seed.to_string(),
        ],
    );
    let data = root.join("store");
    ingest(&data, &[&gen_dir.join("jsonl")]);
    let r = run(&data, &["detect", "--no-models"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let t: &'static Template = Box::leak(Box::new(Template {
        data,
        logs: gen_dir.join("jsonl"),
    }));
    built.insert((days, seed), t);
    t
}

/// A copy of the template's store under `dir`, for one scenario.
pub fn store(dir: &Path, days: u32, seed: u64) -> PathBuf {
    let t = template(days, seed);
    let to = dir.join("store");
    copy_dir(&t.data, &to);
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let q = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &q);
        } else {
            std::fs::copy(&p, &q).unwrap();
        }
    }
}

/// Removes the fixtures of earlier runs (a day old or more).
fn sweep_old() {
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 86_400);
        if old && e.file_name().to_string_lossy().starts_with("fixtures-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
