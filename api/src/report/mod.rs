//! Compliance and blast-radius reports.
//!
//! A report is a list of sections; a section is a list of tables; every table and every summary
//! number is the result of one SQL statement over `events`, `activity`, `alerts` and
//! `alert_history`, and the statement travels with its result in the JSON output, so an auditor
//! can rerun any number with `kvwatch query`. HTML ([`html`]) and CSV are renderings of the same
//! [`Report`] value; nothing is computed twice.

mod archive;
mod csv;
pub mod defs;
pub mod html;
pub mod schedule;

pub use archive::{StoredReport, dir, list, load, save, valid_id};
pub use csv::to_csv;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use kvwatch_ingest::DataDir;
use kvwatch_ingest::time::format_ns;
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report: {0}")]
    Invalid(String),
    #[error("report query {table}: {source}")]
    Query {
        table: String,
        source: datafusion::error::DataFusionError,
    },
    #[error(transparent)]
    Store(#[from] kvwatch_ingest::StoreError),
    #[error(transparent)]
    Alerts(#[from] kvwatch_detect::AlertStoreError),
    #[error("report: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("report: {0}")]
    Io(#[from] std::io::Error),
}

/// What a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Compliance,
    Access,
    Permissions,
    SensitiveOps,
    FailedAccess,
    BlastRadius,
    Hygiene,
    Alerts,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Compliance,
        Kind::Access,
        Kind::Permissions,
        Kind::SensitiveOps,
        Kind::FailedAccess,
        Kind::BlastRadius,
        Kind::Hygiene,
        Kind::Alerts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Compliance => "compliance",
            Kind::Access => "access",
            Kind::Permissions => "permissions",
            Kind::SensitiveOps => "sensitive-ops",
            Kind::FailedAccess => "failed-access",
            Kind::BlastRadius => "blast-radius",
            Kind::Hygiene => "hygiene",
            Kind::Alerts => "alerts",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s.trim())
    }

    /// The sections this kind is made of.
    fn sections(self) -> Vec<Kind> {
        match self {
            Kind::Compliance => Kind::ALL[1..].to_vec(),
            k => vec![k],
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Html,
    Csv,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim() {
            "html" => Some(Format::Html),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// Everything a report run needs to know.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub kind: Kind,
    /// Period start (ns, inclusive).
    pub from: i64,
    /// Period end (ns, exclusive).
    pub to: i64,
    /// Only these vaults (lower-case names); all when empty.
    pub vaults: Vec<String>,
    /// Regular expression on vault names that marks production.
    pub prod_pattern: String,
    /// Regular expression on vault names that marks non-production.
    pub nonprod_pattern: String,
    /// Objects still read but not written for this many days are stale.
    pub stale_days: u32,
    /// The top principals whose combined reach the blast-radius section reports.
    pub top_n: usize,
    /// Reads of one object by one caller within one hour above this are "no caching".
    pub cache_threshold: u32,
    /// A vault averaging at least this many events per active hour is "normally busy".
    pub busy_events_per_hour: u32,
    /// Silent stretches of a busy vault at least this long are logging gaps.
    pub gap_hours: u32,
    /// Rows kept per table (the JSON says when a table was cut).
    pub max_rows: usize,
}

impl ReportOptions {
    pub fn new(kind: Kind, from: i64, to: i64) -> Self {
        Self {
            kind,
            from,
            to,
            vaults: Vec::new(),
            prod_pattern: "prod".into(),
            nonprod_pattern: "dev|test|stag|qa|uat|sandbox|nonprod".into(),
            stale_days: 90,
            top_n: 10,
            cache_threshold: 60,
            busy_events_per_hour: 10,
            gap_hours: 3,
            max_rows: 5000,
        }
    }
}

/// One result table.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub name: String,
    pub title: String,
    /// The statement that produced the rows; run it with `kvwatch query` to reproduce them.
    pub sql: String,
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
    /// Rows before the `max_rows` cut.
    pub total_rows: usize,
    pub elapsed_ms: u64,
    /// How the HTML rendering draws the table (from its definition).
    #[serde(skip)]
    pub chart: Option<defs::Chart>,
}

/// A headline number.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub label: String,
    pub value: Value,
    pub sql: String,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub description: String,
    pub summary: Vec<Metric>,
    pub tables: Vec<Table>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kind: Kind,
    pub title: String,
    pub from: String,
    pub to: String,
    pub generated_at: String,
    pub vaults: Vec<String>,
    pub environments: Value,
    pub summary: Vec<Metric>,
    /// Tables the charts are drawn from (events per day per vault, alerts per day).
    pub overview: Vec<Table>,
    pub sections: Vec<Section>,
    pub elapsed_ms: u64,
}

/// A pre-aggregation several sections share, computed once per report.
///
/// Most sections ask different questions of the same rows (material reads, events per vault
/// and hour, every object ever seen). Scanning the store once for each of those questions
/// cost ~35 scans of a month of events; instead each of these is computed once, kept in
/// memory under its name, and the statements refer to it by that name. The statement shown
/// next to a number carries the definition as a `WITH` clause, so it stays self-contained:
/// `kvwatch query` reproduces the number from the store alone.
struct Shared {
    name: String,
    sql: String,
}

/// The report's query session and the shared tables built so far.
struct Runner {
    ctx: SessionContext,
    shared: Vec<Shared>,
    built: Vec<String>,
}

impl Runner {
    /// Builds the shared tables `sql` uses (once each) and returns the statement to show:
    /// `sql` with their definitions prepended as a `WITH` clause.
    async fn prepare(&mut self, sql: &str) -> Result<String, ReportError> {
        let used: Vec<usize> = (0..self.shared.len())
            .filter(|&i| sql.contains(self.shared[i].name.as_str()))
            .collect();
        if used.is_empty() {
            return Ok(sql.to_owned());
        }
        self.build(&used).await?;
        let defs: Vec<String> = used
            .iter()
            .map(|&i| format!("{} AS ({})", self.shared[i].name, self.shared[i].sql))
            .collect();
        let defs = defs.join(", ");
        Ok(match sql.strip_prefix("WITH ") {
            Some(rest) => format!("WITH {defs}, {rest}"),
            None => format!("WITH {defs} {sql}"),
        })
    }

    /// Builds the shared tables `which` that are not built yet, two at a time: the first
    /// (the largest, in `report.yaml` order) beside the others in turn. One aggregation
    /// alone keeps about 1.4 of the two cores busy; two side by side fill them.
    async fn build(&mut self, which: &[usize]) -> Result<(), ReportError> {
        let todo: Vec<usize> = which
            .iter()
            .copied()
            .filter(|&i| !self.built.contains(&self.shared[i].name))
            .collect();
        let Some((&first, rest)) = todo.split_first() else {
            return Ok(());
        };
        let ctx = &self.ctx;
        let shared = &self.shared;
        let rest_lane = async {
            let mut out = Vec::new();
            for &i in rest {
                out.push((i, materialise(ctx, &shared[i]).await?));
            }
            Ok::<_, ReportError>(out)
        };
        let (a, b) = tokio::try_join!(materialise(ctx, &shared[first]), rest_lane)?;
        for (i, table) in std::iter::once((first, a)).chain(b) {
            let name = self.shared[i].name.clone();
            self.ctx
                .register_table(name.as_str(), std::sync::Arc::new(table))
                .map_err(|source| ReportError::Query {
                    table: name.clone(),
                    source,
                })?;
            self.built.push(name);
        }
        Ok(())
    }
}

/// Runs a shared table's statement into memory, spread over the session's partitions so the
/// queries on top use every core.
async fn materialise(
    ctx: &SessionContext,
    s: &Shared,
) -> Result<datafusion::datasource::MemTable, ReportError> {
    let started = Instant::now();
    let err = |source| ReportError::Query {
        table: s.name.clone(),
        source,
    };
    let df = kvwatch_ingest::query::read_only_sql(ctx, &s.sql)
        .await
        .map_err(err)?;
    let schema = df.schema().inner().clone();
    let batches = df.collect().await.map_err(err)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let n = ctx.state().config().target_partitions().max(1);
    let mut parts = vec![Vec::new(); n];
    for (j, b) in batches.into_iter().enumerate() {
        parts[j % n].push(b);
    }
    let schema = parts
        .iter()
        .flatten()
        .next()
        .map(|b| b.schema())
        .unwrap_or(schema);
    let table = datafusion::datasource::MemTable::try_new(schema, parts).map_err(err)?;
    tracing::debug!(
        table = %s.name,
        rows,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "report pre-aggregation"
    );
    Ok(table)
}

/// Runs the report over the store in `data`.
pub async fn run(data: &DataDir, o: &ReportOptions) -> Result<Report, ReportError> {
    let started = Instant::now();
    if o.from >= o.to {
        return Err(ReportError::Invalid(
            "the period is empty (from ≥ to)".into(),
        ));
    }
    for p in [&o.prod_pattern, &o.nonprod_pattern] {
        if p.is_empty() {
            return Err(ReportError::Invalid("empty environment pattern".into()));
        }
    }
    let d = defs::defs()?;
    let params = defs::Params::new(o);
    let top = defs::Scope {
        vars: None,
        section: None,
        report: &d.report,
        params: &params,
    };
    let shared = d
        .report
        .shared
        .iter()
        .map(|s| {
            Ok(Shared {
                name: s.name.clone(),
                sql: top.render(&s.sql)?,
            })
        })
        .collect::<Result<Vec<_>, ReportError>>()?;
    let mut ctx = Runner {
        shared,
        built: Vec::new(),
        ctx: session(data).await?,
    };
    if o.kind == Kind::Compliance {
        // Every shared table is used: build them all now, side by side.
        let all: Vec<usize> = (0..ctx.shared.len()).collect();
        ctx.build(&all).await?;
    }
    let sections: Vec<&defs::SectionDef> = o
        .kind
        .sections()
        .into_iter()
        .map(|k| {
            d.section(k)
                .ok_or_else(|| ReportError::Invalid(format!("no definition of {}", k.as_str())))
        })
        .collect::<Result<_, _>>()?;
    let mut r = Report {
        kind: o.kind,
        title: d.title(o.kind).into(),
        from: format_ns(o.from),
        to: format_ns(o.to),
        generated_at: format_ns(kvwatch_ingest::store::now_nanos()),
        vaults: o.vaults.clone(),
        environments: serde_json::json!({"production": o.prod_pattern, "non-production": o.nonprod_pattern}),
        summary: Vec::new(),
        overview: Vec::new(),
        sections: Vec::new(),
        elapsed_ms: 0,
    };
    for m in &d.report.metrics {
        let mut sql = top.render(&m.sql)?;
        if let Some(fallback) = &m.fallback_sql {
            // The pre-aggregations the statement reads pay for themselves only when a section
            // reads them too.
            let needed = ctx
                .shared
                .iter()
                .filter(|s| sql.contains(s.name.as_str()))
                .all(|s| sections.iter().any(|sec| section_reads(top, sec, &s.name)));
            if !needed {
                sql = top.render(fallback)?;
            }
        }
        r.summary
            .push(metric(&mut ctx, &m.name, &m.label, sql).await?);
    }
    for t in &d.report.tables {
        let sql = top.render(&t.sql)?;
        r.overview
            .push(table(&mut ctx, o, &t.name, &t.title, sql, t.chart.clone()).await?);
    }
    for sec in sections {
        r.sections.push(section(&mut ctx, o, top, sec).await?);
    }
    r.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(r)
}

/// Whether any statement of `sec` reads the table `name`.
fn section_reads(top: defs::Scope<'_>, sec: &defs::SectionDef, name: &str) -> bool {
    let scope = defs::Scope {
        section: Some(sec),
        ..top
    };
    let metrics = sec.metrics.iter().map(|m| scope.render(&m.sql));
    let tables = sec.tables.iter().map(|t| {
        defs::Scope {
            vars: Some(&t.vars),
            ..scope
        }
        .render(&t.sql)
    });
    metrics
        .chain(tables)
        .any(|sql| sql.is_ok_and(|s| s.contains(name)))
}

/// A session over the store snapshot with the alert tables.
async fn session(data: &DataDir) -> Result<SessionContext, ReportError> {
    let ctx = kvwatch_ingest::query::empty_context();
    data.register(&ctx).await?;
    kvwatch_detect::table::register_alerts(&ctx, data)?;
    kvwatch_detect::table::register_alert_history(&ctx, data)?;
    Ok(ctx)
}

async fn collect(
    ctx: &SessionContext,
    name: &str,
    sql: &str,
) -> Result<Vec<RecordBatch>, ReportError> {
    let err = |source| ReportError::Query {
        table: name.to_owned(),
        source,
    };
    let df = kvwatch_ingest::query::read_only_sql(ctx, sql)
        .await
        .map_err(err)?;
    df.collect().await.map_err(err)
}

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, ReportError> {
    let buf = kvwatch_ingest::query::batches_json(batches)?;
    Ok(serde_json::from_slice(&buf).map_err(|e| std::io::Error::other(e.to_string()))?)
}

async fn metric(
    ctx: &mut Runner,
    name: &str,
    label: &str,
    sql: String,
) -> Result<Metric, ReportError> {
    let started = Instant::now();
    let shown = ctx.prepare(&sql).await?;
    let rows = rows_of(&collect(&ctx.ctx, name, &sql).await?)?;
    let value = rows
        .first()
        .and_then(|r| r.get("value").cloned())
        .unwrap_or(Value::Null);
    Ok(Metric {
        name: name.into(),
        label: label.into(),
        value,
        sql: shown,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

async fn table(
    ctx: &mut Runner,
    o: &ReportOptions,
    name: &str,
    title: &str,
    sql: String,
    chart: Option<defs::Chart>,
) -> Result<Table, ReportError> {
    let started = Instant::now();
    let shown = ctx.prepare(&sql).await?;
    let batches = collect(&ctx.ctx, name, &sql).await?;
    let columns = kvwatch_ingest::query::column_names(&batches);
    let mut rows = rows_of(&batches)?;
    let total_rows = rows.len();
    rows.truncate(o.max_rows);
    Ok(Table {
        name: name.into(),
        title: title.into(),
        sql: shown,
        columns,
        rows,
        total_rows,
        elapsed_ms: started.elapsed().as_millis() as u64,
        chart,
    })
}

async fn section(
    ctx: &mut Runner,
    o: &ReportOptions,
    top: defs::Scope<'_>,
    def: &defs::SectionDef,
) -> Result<Section, ReportError> {
    let scope = defs::Scope {
        section: Some(def),
        ..top
    };
    let mut s = Section {
        id: def.id.clone(),
        title: def.title.clone(),
        description: def.description.clone(),
        summary: Vec::new(),
        tables: Vec::new(),
    };
    for m in &def.metrics {
        let sql = scope.render(&m.sql)?;
        s.summary.push(metric(ctx, &m.name, &m.label, sql).await?);
    }
    for t in &def.tables {
        let sql = defs::Scope {
            vars: Some(&t.vars),
            ..scope
        }
        .render(&t.sql)?;
        s.tables
            .push(table(ctx, o, &t.name, &t.title, sql, t.chart.clone()).await?);
    }
    Ok(s)
}

/// Renders the report in `format`.
pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(r).unwrap_or_default(),
        Format::Csv => to_csv(r),
        Format::Html => html::render(r),
    }
}
