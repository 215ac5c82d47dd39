//! Helpers to run the real binary.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvwatch"));
    c.env_remove("KVWATCH_DATA")
        .env_remove("KVWATCH_CONFIG")
        .env_remove("KVWATCH_FORMAT");
    c
}

pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/samples")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn run(data: &Path, args: &[&str]) -> Run {
    bin()
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("run kvwatch")
        .into()
}

pub fn run_stdin(data: &Path, args: &[&str], input: &[u8]) -> Run {
    let mut child = bin()
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvwatch");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().into()
}

/// `kvwatch ingest --format json`, asserting success; returns the report.
pub fn ingest(data: &Path, paths: &[&Path]) -> Value {
    let mut args = vec!["ingest".to_owned(), "--format".into(), "json".into()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(data, &args);
    assert_eq!(r.code, 0, "ingest failed: {}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// `kvwatch query --format json`, asserting success; returns the rows.
pub fn query(data: &Path, sql: &str) -> Vec<Value> {
    let r = run(data, &["query", "--format", "json", sql]);
    assert_eq!(r.code, 0, "query failed: {sql}\n{}\n{}", r.stdout, r.stderr);
    match serde_json::from_str(&r.stdout) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("not a JSON array: {other:?}\n{}", r.stdout),
    }
}

pub fn count(data: &Path, sql: &str) -> i64 {
    let rows = query(data, sql);
    rows[0]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_i64()
        .unwrap()
}

pub fn gzip(src: &Path, dst: &Path) {
    let data = std::fs::read(src).unwrap();
    let f = std::fs::File::create(dst).unwrap();
    let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
}

/// `kvwatch generate --out DIR ARGS...`, asserting success; returns DIR.
pub fn generate(out: &Path, args: &[&str]) -> PathBuf {
    let r = bin()
        .args(["generate", "--out"])
        .arg(out)
        .args(args)
        .output()
        .expect("run kvwatch generate");
    assert!(
        r.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    out.to_owned()
}
