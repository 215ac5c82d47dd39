//! Scheduled reports: `[[reports]]` in the config file, run by `kvwatch serve`.
//!
//! Each schedule has a cron expression evaluated in its time zone and a period (the last full
//! day, week or month before the run, in that zone). The scheduler remembers, per schedule,
//! the last slot it produced (`DATA/reports/schedule-state.json`); on every tick it runs the
//! newest slot that is due and not yet produced. So a run missed while the service was down
//! is produced on start (once, for the newest missed slot), and a restart never produces a
//! slot twice. The clock is a parameter ([`Scheduler::tick`]), so tests drive time.

use super::{Format, Kind, ReportError, ReportOptions, StoredReport};
use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use kvwatch_ingest::DataDir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The period a scheduled report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

/// One `[[reports]]` entry.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub kind: Kind,
    pub cron: croner::Cron,
    pub cron_text: String,
    pub period: Period,
    pub tz: Tz,
    pub format: Format,
    pub vaults: Vec<String>,
    /// Keep this many reports of the schedule; older ones are deleted.
    pub keep: usize,
    /// Also POST a copy here (signed like the webhook sink when `webhook_secret` is set).
    pub webhook: Option<String>,
    pub webhook_secret: Option<crate::forward::Secret>,
}

/// One `[[reports]]` table as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub name: String,
    /// compliance (default), access, permissions, sensitive-ops, failed-access, blast-radius,
    /// hygiene or alerts.
    pub kind: Option<String>,
    /// Cron expression (5 or 6 fields) in `timezone`.
    pub cron: String,
    /// day (default), week or month: the full period before each run.
    pub period: Option<String>,
    /// IANA time zone [default: UTC].
    pub timezone: Option<String>,
    /// html (default), csv or json.
    pub format: Option<String>,
    #[serde(default)]
    pub vaults: Vec<String>,
    /// Reports of this schedule kept [default: 30].
    pub keep: Option<usize>,
    /// Also POST a copy here.
    pub webhook: Option<String>,
    /// `${env:…}` / `${file:…}` or the key itself.
    pub webhook_secret: Option<String>,
}

/// Parses one `[[reports]]` table given as JSON (tests, tools).
pub fn parse_schedule(v: &serde_json::Value) -> Result<Schedule, ReportError> {
    let raw: ScheduleSpec = serde_json::from_value(v.clone())
        .map_err(|e| ReportError::Invalid(format!("[[reports]]: {e}")))?;
    Schedule::from_spec(&raw)
}

impl Schedule {
    /// Checks a `[[reports]]` table and fills in its defaults; the webhook secret is resolved.
    pub fn from_spec(raw: &ScheduleSpec) -> Result<Schedule, ReportError> {
        let err = |m: String| ReportError::Invalid(format!("[[reports]] {}: {m}", raw.name));
        if raw.name.is_empty() || !super::valid_id(&raw.name) {
            return Err(err("name must be letters, digits and '-'".into()));
        }
        let kind = Kind::parse(raw.kind.as_deref().unwrap_or("compliance"))
            .ok_or_else(|| err("unknown kind".into()))?;
        let cron = <croner::Cron as std::str::FromStr>::from_str(&raw.cron)
            .map_err(|e| err(format!("cron {:?}: {e}", raw.cron)))?;
        let period = match raw.period.as_deref().unwrap_or("day") {
            "day" => Period::Day,
            "week" => Period::Week,
            "month" => Period::Month,
            p => return Err(err(format!("period {p:?} (day, week or month)"))),
        };
        let tz: Tz = raw
            .timezone
            .as_deref()
            .unwrap_or("UTC")
            .parse()
            .map_err(|e| err(format!("timezone: {e}")))?;
        let format = Format::parse(raw.format.as_deref().unwrap_or("html"))
            .ok_or_else(|| err("format (html, csv or json)".into()))?;
        let webhook_secret = raw
            .webhook_secret
            .as_deref()
            .map(|s| {
                crate::forward::Secret::resolve(s).map_err(|e| err(format!("webhook_secret: {e}")))
            })
            .transpose()?;
        if let Some(w) = &raw.webhook
            && !(w.starts_with("https://") || w.starts_with("http://"))
        {
            return Err(err("webhook must be an http(s) URL".into()));
        }
        Ok(Schedule {
            kind,
            cron,
            cron_text: raw.cron.clone(),
            period,
            tz,
            format,
            vaults: raw.vaults.iter().map(|v| v.to_lowercase()).collect(),
            keep: raw.keep.unwrap_or(30).max(1),
            webhook: raw.webhook.clone(),
            webhook_secret,
            name: raw.name.clone(),
        })
    }
}

/// The newest cron slot at or before `now` and after `after` (both UTC), if any.
pub fn due_slot(s: &Schedule, after: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut t = after.with_timezone(&s.tz);
    let mut due = None;
    // Walk forward from the last produced slot; bounded so a bad state file cannot spin.
    for _ in 0..10_000 {
        let next = s.cron.find_next_occurrence(&t, false).ok()?;
        if next.with_timezone(&Utc) > now {
            break;
        }
        due = Some(next.with_timezone(&Utc));
        t = next;
    }
    due
}

fn midnight(tz: &Tz, d: NaiveDate) -> DateTime<Utc> {
    let naive = d.and_hms_opt(0, 0, 0).expect("midnight");
    // A zone whose midnight does not exist (DST at 00:00) starts the day at the earliest
    // valid instant after it.
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + ChronoDuration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
}

/// The last full period before `slot`, in the schedule's zone, as UTC `[from, to)`.
pub fn period_before(s: &Schedule, slot: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = slot.with_timezone(&s.tz).date_naive();
    let (from, to) = match s.period {
        Period::Day => (local - ChronoDuration::days(1), local),
        Period::Week => {
            let monday =
                local - ChronoDuration::days(local.weekday().num_days_from_monday() as i64);
            (monday - ChronoDuration::days(7), monday)
        }
        Period::Month => {
            let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).expect("day 1");
            let prev = if first.month() == 1 {
                NaiveDate::from_ymd_opt(first.year() - 1, 12, 1)
            } else {
                NaiveDate::from_ymd_opt(first.year(), first.month() - 1, 1)
            }
            .expect("day 1");
            (prev, first)
        }
    };
    (midnight(&s.tz, from), midnight(&s.tz, to))
}

/// What the scheduler remembers per schedule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// Schedule name → the newest slot produced (or, for a new schedule, when it was first
    /// seen: slots before that are not backfilled).
    last: BTreeMap<String, DateTime<Utc>>,
}

/// Runs the schedules of one data directory.
pub struct Scheduler {
    data: DataDir,
    schedules: Vec<Schedule>,
    tuning: ReportOptions,
}

/// One produced report.
#[derive(Debug, Clone)]
pub struct Produced {
    pub schedule: String,
    pub slot: DateTime<Utc>,
    pub report: StoredReport,
    /// The webhook copy's outcome, when one is configured.
    pub delivered: Option<Result<(), String>>,
}

impl Scheduler {
    /// `tuning` carries the thresholds (patterns, stale days…); kind, period and vaults come
    /// from each schedule.
    pub fn new(data: &DataDir, schedules: Vec<Schedule>, tuning: ReportOptions) -> Self {
        Self {
            data: data.clone(),
            schedules,
            tuning,
        }
    }

    fn state_path(&self) -> PathBuf {
        super::dir(&self.data).join("schedule-state.json")
    }

    /// The state: in the shared alert store when nodes share one (whichever node leads
    /// carries on from it), else in this node's reports directory.
    fn load_state(&self) -> Result<State, ReportError> {
        if self.data.alerts_url().is_some() {
            let slots = kvwatch_detect::AlertStore::open(&self.data)?.report_slots()?;
            return Ok(State {
                last: slots
                    .into_iter()
                    .map(|(k, ns)| (k, DateTime::from_timestamp_nanos(ns)))
                    .collect(),
            });
        }
        Ok(std::fs::read(self.state_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    fn save_state(&self, st: &State) -> Result<(), ReportError> {
        if self.data.alerts_url().is_some() {
            let slots = st
                .last
                .iter()
                .map(|(k, t)| (k.clone(), t.timestamp_nanos_opt().unwrap_or(i64::MAX)))
                .collect();
            kvwatch_detect::AlertStore::open(&self.data)?.set_report_slots(&slots)?;
            return Ok(());
        }
        let p = self.state_path();
        std::fs::create_dir_all(p.parent().expect("reports dir"))?;
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(st).unwrap_or_default())?;
        std::fs::rename(tmp, p)?;
        Ok(())
    }

    /// Produces every report that is due at `now`. The state is saved after each report, so
    /// a crash mid-tick re-produces at most the report being written.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Vec<Produced>, ReportError> {
        let mut st = self.load_state()?;
        let mut out = Vec::new();
        for s in &self.schedules {
            let Some(&after) = st.last.get(&s.name) else {
                st.last.insert(s.name.clone(), now);
                self.save_state(&st)?;
                tracing::info!(schedule = %s.name, cron = %s.cron_text, "report.schedule_registered");
                continue;
            };
            let Some(slot) = due_slot(s, after, now) else {
                continue;
            };
            let (from, to) = period_before(s, slot);
            let mut o = self.tuning.clone();
            o.kind = s.kind;
            o.from = from.timestamp_nanos_opt().unwrap_or(0);
            o.to = to.timestamp_nanos_opt().unwrap_or(0);
            o.vaults = s.vaults.clone();
            let r = super::run(&self.data, &o).await?;
            let body = super::render(&r, s.format);
            let meta = super::save(
                &self.data,
                &r,
                s.format,
                &body,
                &format!("schedule:{}", s.name),
            )?;
            self.retain(s)?;
            let delivered = s.webhook.as_ref().map(|url| deliver(url, s, &meta, &body));
            if let Some(Err(e)) = &delivered {
                tracing::error!(schedule = %s.name, report = %meta.id, error = %e, "report.webhook_failed");
            }
            tracing::info!(schedule = %s.name, report = %meta.id, slot = %slot, "report.scheduled_run");
            st.last.insert(s.name.clone(), slot);
            self.save_state(&st)?;
            out.push(Produced {
                schedule: s.name.clone(),
                slot,
                report: meta,
                delivered,
            });
        }
        Ok(out)
    }

    /// Ticks every `every` until `shutdown` is cancelled; a failed tick is logged and the next
    /// one tries again (the state was not advanced).
    pub async fn run(
        self,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Err(e) = self.tick(Utc::now()).await {
                tracing::error!(error = %e, "report.schedule_failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Deletes the schedule's reports beyond its `keep` newest.
    fn retain(&self, s: &Schedule) -> Result<(), ReportError> {
        let by = format!("schedule:{}", s.name);
        let mine: Vec<StoredReport> = super::list(&self.data)?
            .into_iter()
            .filter(|r| r.requested_by == by)
            .collect();
        for old in mine.iter().skip(s.keep) {
            let d = super::dir(&self.data);
            let _ = std::fs::remove_file(d.join(format!("{}.{}", old.id, old.format)));
            std::fs::remove_file(d.join(format!("{}.meta.json", old.id)))?;
            tracing::info!(schedule = %s.name, report = %old.id, "report.expired");
        }
        Ok(())
    }
}

/// POSTs a copy of a report, three attempts with backoff.
fn deliver(url: &str, s: &Schedule, meta: &StoredReport, body: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::NativeTls)
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into();
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(1 << attempt));
        }
        let ts = Utc::now().timestamp().to_string();
        let mut req = agent
            .post(url)
            .header("Content-Type", s.format.content_type())
            .header("X-Kvwatch-Report", &meta.id)
            .header("X-Kvwatch-Timestamp", &ts);
        if let Some(secret) = &s.webhook_secret {
            let sig = crate::forward::hmac_sha256_hex(
                secret.expose().as_bytes(),
                &[ts.as_bytes(), b".", body.as_bytes()],
            );
            req = req.header("X-Kvwatch-Signature", &format!("sha256={sig}"));
        }
        match req.send(body.as_bytes()) {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn slots_and_periods_follow_the_time_zone() {
        let s = parse_schedule(
            &json!({"name": "daily", "cron": "0 6 * * *", "timezone": "Europe/Berlin"}),
        )
        .unwrap();
        // 06:00 Berlin in summer is 04:00 UTC.
        assert_eq!(
            due_slot(&s, at("2026-07-01T00:00:00Z"), at("2026-07-01T05:00:00Z")),
            Some(at("2026-07-01T04:00:00Z"))
        );
        assert_eq!(
            due_slot(&s, at("2026-07-01T04:00:00Z"), at("2026-07-01T05:00:00Z")),
            None
        );
        // Three days down: only the newest missed slot is due.
        assert_eq!(
            due_slot(&s, at("2026-07-01T04:00:00Z"), at("2026-07-04T12:00:00Z")),
            Some(at("2026-07-04T04:00:00Z"))
        );
        let (f, t) = period_before(&s, at("2026-07-04T04:00:00Z"));
        assert_eq!(
            (f, t),
            (at("2026-07-02T22:00:00Z"), at("2026-07-03T22:00:00Z"))
        );
        let w = parse_schedule(&json!({"name": "weekly", "cron": "0 7 * * MON", "period": "week"}))
            .unwrap();
        // Wednesday 2026-07-08: the last full week is Mon 06-29 .. Mon 07-06.
        assert_eq!(
            period_before(&w, at("2026-07-08T07:00:00Z")),
            (at("2026-06-29T00:00:00Z"), at("2026-07-06T00:00:00Z"))
        );
        let m = parse_schedule(&json!({"name": "monthly", "cron": "0 1 1 * *", "period": "month", "timezone": "America/New_York"})).unwrap();
        assert_eq!(
            period_before(&m, at("2026-01-01T06:00:00Z")),
            (at("2025-12-01T05:00:00Z"), at("2026-01-01T05:00:00Z"))
        );
        for bad in [
            json!({"name": "x", "cron": "61 * * * *"}),
            json!({"name": "x", "cron": "0 6 * * *", "timezone": "Mars/Olympus"}),
            json!({"name": "x", "cron": "0 6 * * *", "period": "fortnight"}),
            json!({"name": "../x", "cron": "0 6 * * *"}),
            json!({"name": "x", "cron": "0 6 * * *", "colour": "red"}),
        ] {
            assert!(parse_schedule(&bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_missed_run_is_produced_once_on_start_and_old_reports_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = parse_schedule(&json!({"name": "daily", "kind": "alerts", "cron": "0 6 * * *", "format": "json", "keep": 2})).unwrap();
        let sch = Scheduler::new(
            &DataDir::new(dir.path()),
            vec![s],
            ReportOptions::new(Kind::Alerts, 0, 1),
        );
        // First sight registers the schedule; nothing is backfilled.
        assert!(
            sch.tick(at("2026-03-01T12:00:00Z"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            sch.tick(at("2026-03-02T05:59:59Z"))
                .await
                .unwrap()
                .is_empty()
        );
        let p = sch.tick(at("2026-03-02T06:00:00Z")).await.unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].slot, at("2026-03-02T06:00:00Z"));
        let body = std::fs::read_to_string(
            dir.path()
                .join("reports")
                .join(format!("{}.json", p[0].report.id)),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["from"], "2026-03-01T00:00:00.0000000Z");
        assert_eq!(v["to"], "2026-03-02T00:00:00.0000000Z");
        // Same slot again (a restart): nothing.
        let again = Scheduler::new(
            &DataDir::new(dir.path()),
            sch.schedules.clone(),
            sch.tuning.clone(),
        );
        assert!(
            again
                .tick(at("2026-03-02T09:00:00Z"))
                .await
                .unwrap()
                .is_empty()
        );
        // Down for three days: the newest missed slot runs on start, once.
        let p = again.tick(at("2026-03-05T10:00:00Z")).await.unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].slot, at("2026-03-05T06:00:00Z"));
        assert!(
            again
                .tick(at("2026-03-05T10:00:01Z"))
                .await
                .unwrap()
                .is_empty()
        );
        again.tick(at("2026-03-06T06:00:00Z")).await.unwrap();
        let kept = super::super::list(&DataDir::new(dir.path())).unwrap();
        assert_eq!(kept.len(), 2, "keep = 2");
        assert!(kept.iter().all(|r| r.requested_by == "schedule:daily"));
    }
}
