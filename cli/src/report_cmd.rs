//! `kvwatch report`: compliance and blast-radius reports as HTML, CSV or JSON.

use crate::config::Config;
use crate::detect_cmd::parse_time;
use anyhow::{Context, Result, bail};
use clap::Args;
use kvwatch_api::report::{self, Format, Kind, ReportOptions};
use kvwatch_ingest::DataDir;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ReportArgs {
    /// compliance (every section), access, permissions, sensitive-ops, failed-access,
    /// blast-radius, hygiene or alerts.
    #[arg(long, default_value = "compliance", env = "KVWATCH_REPORT_KIND")]
    kind: String,
    /// Period start: RFC 3339, YYYY-MM-DD or an age (30d) [default: the store's first event].
    #[arg(long, env = "KVWATCH_REPORT_FROM")]
    from: Option<String>,
    /// Period end, exclusive [default: just after the store's last event].
    #[arg(long, env = "KVWATCH_REPORT_TO")]
    to: Option<String>,
    /// Only these vaults (repeat the flag).
    #[arg(long = "vault", env = "KVWATCH_REPORT_VAULTS", value_delimiter = ',')]
    vaults: Vec<String>,
    /// html, csv or json.
    #[arg(long, default_value = "html", env = "KVWATCH_REPORT_FORMAT")]
    format: String,
    /// Write here instead of standard output.
    #[arg(long, env = "KVWATCH_REPORT_OUT")]
    out: Option<PathBuf>,
    #[command(flatten)]
    tuning: ReportTuning,
}

/// Report thresholds (shared with scheduled reports).
#[derive(Args, Clone, Default)]
pub struct ReportTuning {
    /// Regular expression on vault names marking production [default: prod].
    #[arg(long, env = "KVWATCH_REPORT_PROD_PATTERN")]
    prod_pattern: Option<String>,
    /// Regular expression on vault names marking non-production
    /// [default: dev|test|stag|qa|uat|sandbox|nonprod].
    #[arg(long, env = "KVWATCH_REPORT_NONPROD_PATTERN")]
    nonprod_pattern: Option<String>,
    /// Objects read but not written for this many days are stale [default: 90].
    #[arg(long, env = "KVWATCH_REPORT_STALE_DAYS")]
    stale_days: Option<u32>,
    /// The blast-radius share covers this many top principals [default: 10].
    #[arg(long, env = "KVWATCH_REPORT_TOP_N")]
    top_n: Option<usize>,
    /// Reads of one object by one caller per hour above this count as no caching [default: 60].
    #[arg(long, env = "KVWATCH_REPORT_CACHE_THRESHOLD")]
    cache_threshold: Option<u32>,
    /// Silent stretches of busy vaults at least this long are logging gaps [default: 3].
    #[arg(long, env = "KVWATCH_REPORT_GAP_HOURS")]
    gap_hours: Option<u32>,
    /// Rows kept per table [default: 5000].
    #[arg(long, env = "KVWATCH_REPORT_MAX_ROWS")]
    max_rows: Option<usize>,
}

impl ReportTuning {
    pub fn apply(&self, cfg: &Config, o: &mut ReportOptions) {
        let c = &cfg.report;
        if let Some(v) = self.prod_pattern.clone().or(c.prod_pattern.clone()) {
            o.prod_pattern = v;
        }
        if let Some(v) = self.nonprod_pattern.clone().or(c.nonprod_pattern.clone()) {
            o.nonprod_pattern = v;
        }
        if let Some(v) = self.stale_days.or(c.stale_days) {
            o.stale_days = v;
        }
        if let Some(v) = self.top_n.or(c.top_n) {
            o.top_n = v.max(1);
        }
        if let Some(v) = self.cache_threshold.or(c.cache_threshold) {
            o.cache_threshold = v;
        }
        if let Some(v) = self.gap_hours.or(c.gap_hours) {
            o.gap_hours = v.max(1);
        }
        if let Some(v) = self.max_rows.or(c.max_rows) {
            o.max_rows = v.max(1);
        }
    }
}

/// The store's first event and just after its last (for the default period).
/// The span of stored event time, `[first, last + 1)`.
fn store_span(data: &DataDir) -> Result<(i64, i64)> {
    if !data.has_events() {
        bail!(
            "no event store at {} (run `kvwatch ingest` or `kvwatch demo` first, or pass --data)",
            data.root().display()
        );
    }
    let (lo, hi) = data
        .time_range()?
        .context("the event store is empty; pass --from and --to")?;
    Ok((lo, hi + 1))
}

pub async fn cmd_report(data: &DataDir, cfg: &Config, a: ReportArgs) -> Result<ExitCode> {
    let kind = Kind::parse(&a.kind).with_context(|| {
        format!(
            "unknown report kind {:?} ({})",
            a.kind,
            Kind::ALL.map(|k| k.as_str()).join(", ")
        )
    })?;
    let format = Format::parse(&a.format)
        .with_context(|| format!("unknown format {:?} (html, csv or json)", a.format))?;
    let now = kvwatch_ingest::store::now_nanos();
    let (from, to) = match (&a.from, &a.to) {
        (Some(f), Some(t)) => (parse_time(f, now)?, parse_time(t, now)?),
        _ => {
            let (lo, hi) = store_span(data)?;
            (
                a.from
                    .as_deref()
                    .map(|f| parse_time(f, now))
                    .transpose()?
                    .unwrap_or(lo),
                a.to.as_deref()
                    .map(|t| parse_time(t, now))
                    .transpose()?
                    .unwrap_or(hi),
            )
        }
    };
    let mut o = ReportOptions::new(kind, from, to);
    o.vaults = a.vaults.iter().map(|v| v.trim().to_lowercase()).collect();
    a.tuning.apply(cfg, &mut o);
    let r = report::run(data, &o).await?;
    let text = report::render(&r, format);
    match &a.out {
        Some(p) => {
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, p).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "report: {} ({} to {}) written to {} in {} ms",
                kind.as_str(),
                r.from,
                r.to,
                p.display(),
                r.elapsed_ms
            );
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}
