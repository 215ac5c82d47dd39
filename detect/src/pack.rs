//! The rule pack: the rules compiled into the binary, or every rule file of a directory
//! (kvwatch's YAML and Sigma, compiled by [`crate::sigma`]), with unique IDs.

use crate::rule::{Rule, RuleError};
use crate::sigma::{self, SigmaMap};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Rule files compiled into the binary, so `kvwatch detect` works without a checkout.
pub const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/embedded_rules.rs"));

/// Loads the embedded rule pack (Sigma files in it too, with the shipped mapping).
pub fn load_embedded() -> Result<Vec<Rule>, RuleError> {
    load_embedded_with(&SigmaMap::default())
}

/// [`load_embedded`] with a deployment's Sigma field mapping.
pub fn load_embedded_with(sigma: &SigmaMap) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    let mut sigma_docs = Vec::new();
    for (name, text) in EMBEDDED {
        let file = format!("rules/{name}");
        if sigma::is_sigma(text) {
            sigma_docs.extend(sigma::parse_file(&file, text, None)?);
        } else {
            rules.push(Rule::parse(&file, text, None)?);
        }
    }
    rules.extend(sigma::compile_all(&sigma_docs, sigma)?);
    check_unique(rules)
}

/// The rule pack: the files of `dir`, or the built-in pack.
pub fn load(dir: Option<&Path>) -> Result<Vec<Rule>, RuleError> {
    match dir {
        Some(d) => load_dir(d),
        None => load_embedded(),
    }
}

/// Loads every `*.yaml`/`*.yml` file of `dir` (not recursive), sorted by file name: rules in
/// kvwatch's format and Sigma rules (shipped field mapping).
pub fn load_dir(dir: &Path) -> Result<Vec<Rule>, RuleError> {
    load_dir_with(dir, &SigmaMap::default())
}

/// [`load`] with a deployment's Sigma field mapping.
pub fn load_with(dir: Option<&Path>, sigma: &SigmaMap) -> Result<Vec<Rule>, RuleError> {
    match dir {
        Some(d) => load_dir_with(d, sigma),
        None => load_embedded_with(sigma),
    }
}

/// [`load_dir`] with a deployment's Sigma field mapping.
pub fn load_dir_with(dir: &Path, sigma: &SigmaMap) -> Result<Vec<Rule>, RuleError> {
    let io = |e| RuleError::Io {
        path: dir.display().to_string(),
        source: e,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut rules = Vec::new();
    let mut sigma_docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| RuleError::Io {
            path: f.display().to_string(),
            source: e,
        })?;
        let name = f.display().to_string();
        let parent = f.parent().map(Path::to_path_buf);
        if sigma::is_sigma(&text) {
            sigma_docs.extend(sigma::parse_file(&name, &text, parent)?);
        } else {
            rules.push(Rule::parse(&name, &text, parent)?);
        }
    }
    // Sigma correlations may refer to rules of other files: compiled once all are read.
    rules.extend(sigma::compile_all(&sigma_docs, sigma)?);
    check_unique(rules)
}

pub fn check_unique(rules: Vec<Rule>) -> Result<Vec<Rule>, RuleError> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &rules {
        if let Some(first) = seen.insert(r.id(), &r.file) {
            return Err(RuleError::DuplicateId {
                id: r.id().to_owned(),
                first: first.to_owned(),
                second: r.file.clone(),
            });
        }
    }
    Ok(rules)
}
