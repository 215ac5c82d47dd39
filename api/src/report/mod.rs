//! Compliance and blast-radius reports.
//!
//! A report is a list of sections; a section is a list of tables; every table and every summary
//! number is the result of one SQL statement over `events`, `activity`, `alerts` and
//! `alert_history`, and the statement travels with its result in the JSON output, so an auditor
//! can rerun any number with `kvwatch query`. HTML ([`html`]) and CSV are renderings of the same
//! [`Report`] value; nothing is computed twice.

pub mod html;
pub mod schedule;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use kvwatch_ingest::time::format_ns;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;
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

    fn title(self) -> &'static str {
        match self {
            Kind::Compliance => "Key Vault compliance report",
            Kind::Access => "Secret access register",
            Kind::Permissions => "Permission and configuration changes",
            Kind::SensitiveOps => "Sensitive operations",
            Kind::FailedAccess => "Failed access",
            Kind::BlastRadius => "Blast radius",
            Kind::Hygiene => "Hygiene",
            Kind::Alerts => "Alerts",
        }
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

/// SQL text helpers: a quoted literal, the period and vault filters.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

struct Sql<'a> {
    o: &'a ReportOptions,
}

impl Sql<'_> {
    /// `time` inside the period, and the vault filter (on `col`).
    fn within(&self, col: &str) -> String {
        let mut s = format!(
            "time >= to_timestamp_nanos({}) AND time < to_timestamp_nanos({})",
            self.o.from, self.o.to
        );
        if !self.o.vaults.is_empty() {
            let list: Vec<String> = self.o.vaults.iter().map(|v| lit(v)).collect();
            s += &format!(" AND {col} IN ({})", list.join(", "));
        }
        s
    }
    /// Up to the period's end (for "last known" state and later removals).
    fn until_end(&self, col: &str) -> String {
        let mut s = format!("time < to_timestamp_nanos({})", self.o.to);
        if !self.o.vaults.is_empty() {
            let list: Vec<String> = self.o.vaults.iter().map(|v| lit(v)).collect();
            s += &format!(" AND {col} IN ({})", list.join(", "));
        }
        s
    }
    /// The environment of `col` (a vault name) from the configured patterns.
    fn env(&self, col: &str) -> String {
        format!(
            "CASE WHEN regexp_like({col}, {}, 'i') THEN 'production' WHEN regexp_like({col}, {}, 'i') THEN 'non-production' ELSE 'unclassified' END",
            lit(&self.o.prod_pattern),
            lit(&self.o.nonprod_pattern)
        )
    }
}

/// Success, denial and caller display, shared by the sections.
const SUCCESS: &str = "http_status < 300";
const DENIED: &str = "(http_status = 403 OR (http_status = 401 AND operation <> 'Authentication'))";
const CALLER: &str =
    "coalesce(principal_upn, principal_appid, principal_oid, caller_ip, 'unknown')";
const CALLER_KEY: &str =
    "coalesce(principal_oid, principal_appid, principal_upn, caller_ip, 'unknown')";
const WRITE_OPS: &str = "('SecretSet', 'SecretRestore', 'SecretRecover', 'KeyCreate', 'KeyImport', 'KeyRotate', 'KeyRestore', 'KeyRecover', 'CertificateCreate', 'CertificateImport', 'CertificateUpdate', 'CertificateRestore', 'CertificateRecover')";
const SENSITIVE_OPS: &str = "('SecretDelete', 'KeyDelete', 'CertificateDelete', 'SecretPurge', 'KeyPurge', 'CertificatePurge', 'SecretBackup', 'KeyBackup', 'CertificateBackup', 'SecretRestore', 'KeyRestore', 'CertificateRestore', 'SecretRecover', 'KeyRecover', 'CertificateRecover', 'KeyImport', 'CertificateImport', 'VaultDelete', 'VaultPurge', 'VaultRecover')";

/// Why a request was denied.
const REASON: &str = "CASE WHEN http_status = 401 THEN 'unauthenticated' WHEN is_address_authorized = false THEN 'firewall' \
     WHEN is_rbac_authorized = false THEN 'rbac' WHEN is_access_policy_match = false THEN 'access policy' ELSE 'other' END";

/// Successful material reads in the period, from the shared pre-aggregation.
const MATERIAL_READS: &str = "SELECT coalesce(sum(reads), 0) AS value FROM period_reads WHERE ok";

/// A pre-aggregation several sections share, computed once per report.
///
/// Most sections ask different questions of the same rows (material reads, events per vault
/// and hour, every object ever seen). Scanning the store once for each of those questions
/// cost ~35 scans of a month of events; instead each of these is computed once, kept in
/// memory under its name, and the statements refer to it by that name. The statement shown
/// next to a number carries the definition as a `WITH` clause, so it stays self-contained:
/// `kvwatch query` reproduces the number from the store alone.
struct Shared {
    name: &'static str,
    sql: String,
}

fn shared_tables(q: &Sql<'_>) -> Vec<Shared> {
    let w = q.within("vault");
    let upto = q.until_end("vault");
    vec![
        Shared {
            name: "period_reads",
            sql: format!(
                "SELECT vault, {CALLER_KEY} AS principal_id, max({CALLER}) AS principal, principal_type, \
                 object_type, object_name, hour_start(time) AS hour, {SUCCESS} AS ok, caller_ip, client_info, \
                 count(*) AS reads, min(time) AS first_read, max(time) AS last_read \
                 FROM events WHERE {w} AND operation_family = 'material_read' \
                 GROUP BY vault, {CALLER_KEY}, principal_type, object_type, object_name, hour_start(time), {SUCCESS}, caller_ip, client_info"
            ),
        },
        Shared {
            name: "period_hours",
            sql: format!(
                "SELECT vault, hour_start(time) AS hour, operation, http_status, \
                 (is_access_policy_match IS NOT NULL AND is_rbac_authorized IS NULL) AS policy_authorized, \
                 is_rbac_authorized IS NOT NULL AS rbac_authorized, count(*) AS events \
                 FROM events WHERE {w} \
                 GROUP BY vault, hour_start(time), operation, http_status, is_access_policy_match IS NOT NULL AND is_rbac_authorized IS NULL, is_rbac_authorized IS NOT NULL"
            ),
        },
        Shared {
            name: "period_sensitive",
            sql: format!(
                "SELECT time, vault, operation, object_type, object_name, {CALLER} AS actor, {CALLER_KEY} AS actor_id, \
                 principal_type, caller_ip, http_status FROM events WHERE {w} AND operation IN {SENSITIVE_OPS}"
            ),
        },
        Shared {
            name: "period_denied",
            sql: format!(
                "SELECT vault, {CALLER_KEY} AS principal_id, max({CALLER}) AS principal, operation, {REASON} AS reason, caller_ip, \
                 count(*) AS requests, min(time) AS first_seen, max(time) AS last_seen \
                 FROM events WHERE {w} AND {DENIED} GROUP BY vault, {CALLER_KEY}, operation, {REASON}, caller_ip"
            ),
        },
        Shared {
            name: "known_objects",
            sql: format!(
                "SELECT vault, object_type, object_name, \
                 max(time) FILTER (WHERE operation IN {WRITE_OPS} AND {SUCCESS}) AS last_written \
                 FROM events WHERE {upto} AND object_name IS NOT NULL GROUP BY vault, object_type, object_name"
            ),
        },
    ]
}

/// The report's query session and the shared tables built so far.
struct Runner {
    ctx: SessionContext,
    shared: Vec<Shared>,
    built: Vec<&'static str>,
}

impl Runner {
    /// Builds the shared tables `sql` uses (once each) and returns the statement to show:
    /// `sql` with their definitions prepended as a `WITH` clause.
    async fn prepare(&mut self, sql: &str) -> Result<String, ReportError> {
        let used: Vec<usize> = (0..self.shared.len())
            .filter(|&i| sql.contains(self.shared[i].name))
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
    /// (the largest, in [`shared_tables`] order) beside the others in turn. One aggregation
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
            let name = self.shared[i].name;
            self.ctx
                .register_table(name, std::sync::Arc::new(table))
                .map_err(|source| ReportError::Query {
                    table: name.into(),
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
        table: s.name.into(),
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
        table = s.name,
        rows,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "report pre-aggregation"
    );
    Ok(table)
}

/// Runs the report over the store in `data`.
pub async fn run(data: &Path, o: &ReportOptions) -> Result<Report, ReportError> {
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
    let ctx = session(data).await?;
    let q = Sql { o };
    let mut ctx = Runner {
        shared: shared_tables(&q),
        built: Vec::new(),
        ctx,
    };
    if o.kind == Kind::Compliance {
        // Every shared table is used: build them all now, side by side.
        let all: Vec<usize> = (0..ctx.shared.len()).collect();
        ctx.build(&all).await?;
    }
    // The material-read pre-aggregation pays for itself only when a section reads it too.
    let reads_shared = o
        .kind
        .sections()
        .iter()
        .any(|k| matches!(k, Kind::Access | Kind::BlastRadius | Kind::Hygiene));
    let mut r = Report {
        kind: o.kind,
        title: o.kind.title().into(),
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
    let w = q.within("vault");
    for (name, label, sql) in [
        (
            "events",
            "Audit events",
            "SELECT coalesce(sum(events), 0) AS value FROM period_hours".to_owned(),
        ),
        (
            "vaults",
            "Vaults with activity",
            "SELECT count(DISTINCT vault) AS value FROM period_hours".to_owned(),
        ),
        (
            "principals",
            "Distinct callers",
            format!(
                "SELECT count(DISTINCT {CALLER_KEY}) AS value FROM events WHERE {w} AND operation <> 'Authentication'"
            ),
        ),
        (
            "material_reads",
            "Secret, key and certificate reads",
            if reads_shared {
                MATERIAL_READS.to_owned()
            } else {
                format!(
                    "SELECT count(*) AS value FROM events WHERE {w} AND operation_family = 'material_read' AND {SUCCESS}"
                )
            },
        ),
        (
            "denied",
            "Denied requests",
            format!("SELECT coalesce(sum(events), 0) AS value FROM period_hours WHERE {DENIED}"),
        ),
    ] {
        r.summary.push(metric(&mut ctx, name, label, sql).await?);
    }
    r.overview.push(
        table(
            &mut ctx,
            o,
            "events_per_day",
            "Events per day and vault",
            "SELECT day_start(hour) AS day, vault, sum(events) AS events FROM period_hours GROUP BY 1, 2 ORDER BY 1, 2".to_owned(),
        )
        .await?,
    );
    for k in o.kind.sections() {
        r.sections.push(section(&mut ctx, o, &q, k).await?);
    }
    r.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(r)
}

/// A session over the store snapshot with the alert tables.
async fn session(data: &Path) -> Result<SessionContext, ReportError> {
    let ctx = kvwatch_ingest::query::empty_context();
    kvwatch_ingest::query::register_store(&ctx, data).await?;
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
    })
}

async fn section(
    ctx: &mut Runner,
    o: &ReportOptions,
    q: &Sql<'_>,
    kind: Kind,
) -> Result<Section, ReportError> {
    let w = q.within("vault");
    let upto = q.until_end("vault");
    let env = q.env("vault");
    let mut s = Section {
        id: kind.as_str().into(),
        title: kind.title().into(),
        description: String::new(),
        summary: Vec::new(),
        tables: Vec::new(),
    };
    let mut tables: Vec<(&str, &str, String)> = Vec::new();
    let mut metrics: Vec<(&str, &str, String)> = Vec::new();
    match kind {
        Kind::Compliance => unreachable!("compliance is made of the other kinds"),
        Kind::Access => {
            s.description = "Who read which secrets, keys and certificates (successful material reads), per vault and principal, with counts, first and last time, IP addresses and user agents. Human principals reading production vaults are flagged.".into();
            metrics.push((
                "reads",
                "Successful material reads",
                MATERIAL_READS.to_owned(),
            ));
            metrics.push(("human_production_readers", "Human principals reading production vaults", format!("SELECT count(DISTINCT principal_id) AS value FROM (SELECT principal_id, vault FROM period_reads WHERE ok AND principal_type = 'user' GROUP BY 1, 2) WHERE ({env}) = 'production'")));
            tables.push(("readers", "Readers per vault and principal", format!(
                "SELECT vault, ({env}) AS environment, max(principal) AS principal, principal_id, max(principal_type) AS principal_type, \
                 sum(reads) AS reads, count(DISTINCT object_type || '/' || object_name) AS objects, \
                 min(first_read) AS first_read, max(last_read) AS last_read, \
                 array_to_string(array_sort(array_agg(DISTINCT caller_ip)), ' ') AS ips, \
                 array_to_string(array_sort(array_agg(DISTINCT client_info)), ' | ') AS user_agents, \
                 (max(principal_type) = 'user' AND ({env}) = 'production') AS human_on_production \
                 FROM period_reads WHERE ok \
                 GROUP BY vault, principal_id ORDER BY vault, reads DESC, principal_id")));
            tables.push(("objects", "Objects read", "SELECT vault, object_type, object_name, sum(reads) AS reads, count(DISTINCT principal_id) AS readers, \
                 min(first_read) AS first_read, max(last_read) AS last_read \
                 FROM period_reads WHERE ok \
                 GROUP BY vault, object_type, object_name ORDER BY vault, reads DESC, object_type, object_name".to_owned()));
        }
        Kind::Permissions => {
            s.description = "Every access-policy grant and removal (audit log) and RBAC role assignment (Activity Log) at or above a vault, who made it for whom, and whether a grant was later removed; changes of permission model, firewall and recovery settings.".into();
            let act = q.within("vault");
            metrics.push(("policy_grants", "Access-policy grants", format!("SELECT count(*) AS value FROM events WHERE {w} AND policy_added_oid IS NOT NULL")));
            metrics.push(("policy_removals", "Access-policy removals", format!("SELECT count(*) AS value FROM events WHERE {w} AND policy_removed_oid IS NOT NULL")));
            metrics.push(("role_assignments", "Role assignments written", format!("SELECT count(*) AS value FROM activity WHERE {act} AND operation = 'microsoft.authorization/roleassignments/write' AND status IN ('Success', 'Succeeded')")));
            tables.push(("access_policy_changes", "Access-policy changes", format!(
                "WITH g AS (SELECT time, vault, {CALLER} AS actor, caller_ip, operation, \
                   CASE WHEN policy_added_oid IS NOT NULL THEN 'grant' ELSE 'removal' END AS change, \
                   coalesce(policy_added_oid, policy_removed_oid) AS principal_id, \
                   array_to_string(coalesce(policy_added_permissions, policy_removed_permissions), ',') AS permissions \
                   FROM events WHERE {w} AND (policy_added_oid IS NOT NULL OR policy_removed_oid IS NOT NULL)), \
                 r AS (SELECT time, vault, policy_removed_oid AS principal_id FROM events WHERE {upto} AND policy_removed_oid IS NOT NULL) \
                 SELECT g.time, g.vault, g.change, g.principal_id, g.permissions, g.actor, g.caller_ip, g.operation, \
                   CASE WHEN g.change = 'grant' THEN min(r.time) END AS removed_at \
                 FROM g LEFT JOIN r ON r.vault = g.vault AND r.principal_id = g.principal_id AND r.time > g.time \
                 GROUP BY g.time, g.vault, g.change, g.principal_id, g.permissions, g.actor, g.caller_ip, g.operation \
                 ORDER BY g.time, g.vault, g.principal_id")));
            let aupto = q.until_end("vault");
            tables.push(("role_assignments", "Role assignments at or above a vault (Activity Log)", format!(
                "WITH a AS (SELECT time, operation, status, coalesce(caller_upn, caller_appid, caller_oid) AS actor, caller_ip, scope, vault, \
                   coalesce(role_name, role_definition_id) AS role, role_definition_id, target_principal_id, target_principal_type \
                   FROM activity WHERE {act} AND operation IN ('microsoft.authorization/roleassignments/write', 'microsoft.authorization/roleassignments/delete') \
                   AND coalesce(status, '') NOT IN ('Started', 'Accepted') \
                   AND (vault IS NOT NULL OR scope NOT LIKE '%/providers/%' OR scope LIKE '/providers/microsoft.management/managementgroups/%')), \
                 d AS (SELECT time, scope, target_principal_id, role_definition_id FROM activity WHERE {aupto} \
                   AND operation = 'microsoft.authorization/roleassignments/delete' AND status IN ('Success', 'Succeeded')) \
                 SELECT a.time, a.operation, a.status, a.actor, a.caller_ip, a.scope, a.vault, a.role, a.target_principal_id, a.target_principal_type, \
                   CASE WHEN a.operation LIKE '%/write' THEN min(d.time) END AS removed_at \
                 FROM a LEFT JOIN d ON d.scope = a.scope AND d.target_principal_id = a.target_principal_id \
                   AND (d.role_definition_id IS NOT DISTINCT FROM a.role_definition_id) AND d.time > a.time \
                 GROUP BY a.time, a.operation, a.status, a.actor, a.caller_ip, a.scope, a.vault, a.role, a.target_principal_id, a.target_principal_type \
                 ORDER BY a.time, a.scope")));
            for (name, title, col) in [
                (
                    "permission_model_changes",
                    "Permission model switches (RBAC ↔ access policies)",
                    "rbac_enabled",
                ),
                (
                    "firewall_changes",
                    "Firewall default-action changes",
                    "network_default_action",
                ),
                (
                    "soft_delete_changes",
                    "Soft-delete setting changes",
                    "soft_delete_enabled",
                ),
                (
                    "purge_protection_changes",
                    "Purge-protection setting changes",
                    "purge_protection_enabled",
                ),
            ] {
                tables.push((name, title, format!(
                    "WITH s AS (SELECT time, vault, {CALLER} AS actor, caller_ip, operation, CAST({col} AS VARCHAR) AS value, \
                       lag(CAST({col} AS VARCHAR)) OVER (PARTITION BY vault ORDER BY time) AS previous \
                       FROM events WHERE {upto} AND {col} IS NOT NULL AND {SUCCESS}) \
                     SELECT time, vault, previous, value, actor, caller_ip, operation FROM s \
                     WHERE previous IS NOT NULL AND previous <> value \
                     AND time >= to_timestamp_nanos({}) AND time < to_timestamp_nanos({}) ORDER BY time, vault",
                    o.from, o.to)));
            }
            tables.push(("firewall_rules_added", "IP rules added to vault firewalls", format!(
                "SELECT time, vault, ip_rule_added, {CALLER} AS actor, caller_ip FROM events WHERE {w} AND ip_rule_added IS NOT NULL ORDER BY time, vault")));
        }
        Kind::SensitiveOps => {
            s.description = "Deletes, purges, backups, restores, recoveries and imports of secrets, keys and certificates, and vault deletes, purges and recoveries, with their actors.".into();
            metrics.push((
                "operations",
                "Sensitive operations (successful)",
                format!("SELECT count(*) AS value FROM period_sensitive WHERE {SUCCESS}"),
            ));
            tables.push(("by_operation", "By operation", format!(
                "SELECT operation, count(*) FILTER (WHERE {SUCCESS}) AS succeeded, count(*) FILTER (WHERE NOT {SUCCESS}) AS failed, \
                 count(DISTINCT vault) AS vaults, count(DISTINCT actor_id) AS actors \
                 FROM period_sensitive GROUP BY operation ORDER BY succeeded DESC, operation")));
            tables.push(("operations", "Every sensitive operation", "SELECT time, vault, operation, object_type, object_name, actor, principal_type, caller_ip, http_status \
                 FROM period_sensitive ORDER BY time, vault, operation, object_type, object_name".to_owned()));
        }
        Kind::FailedAccess => {
            s.description = "Denied requests (403, and 401 on anything but the Authentication token challenge) by principal, vault, operation and reason.".into();
            metrics.push((
                "denied",
                "Denied requests",
                format!(
                    "SELECT coalesce(sum(events), 0) AS value FROM period_hours WHERE {DENIED}"
                ),
            ));
            tables.push(("denied", "Denied requests by principal, vault, operation and reason", "SELECT vault, max(principal) AS principal, principal_id, operation, reason, sum(requests) AS requests, \
                 count(DISTINCT caller_ip) AS ips, min(first_seen) AS first_seen, max(last_seen) AS last_seen \
                 FROM period_denied GROUP BY vault, principal_id, operation, reason \
                 ORDER BY requests DESC, vault, principal_id, operation, reason".to_owned()));
            tables.push(("denied_by_ip", "Denied requests by caller IP", "SELECT caller_ip, sum(requests) AS requests, count(DISTINCT vault) AS vaults, count(DISTINCT principal_id) AS principals \
                 FROM period_denied GROUP BY caller_ip ORDER BY requests DESC, caller_ip".to_owned()));
        }
        Kind::BlastRadius => {
            s.description = "Per principal, the distinct secrets, keys and certificates it actually read in the period and the vaults they sit in, ranked: what an attacker holding that identity would get. Principals reading across production and non-production are listed, and the share of all secrets reachable through the top principals.".into();
            // One row per (principal, object) first: every count below works on that small
            // set, and the environment is computed per vault, not per read.
            let reads = format!(
                "SELECT principal_id, principal, principal_type, vault, ({env}) AS environment, object_type, object_name FROM \
                 (SELECT principal_id, max(principal) AS principal, max(principal_type) AS principal_type, vault, object_type, object_name \
                 FROM period_reads WHERE ok AND object_name IS NOT NULL \
                 GROUP BY principal_id, vault, object_type, object_name)"
            );
            tables.push(("principals", "Principals ranked by objects read", format!(
                "WITH r AS ({reads}) SELECT principal_id, max(principal) AS principal, max(principal_type) AS principal_type, \
                 count(DISTINCT vault || '/' || object_name) FILTER (WHERE object_type = 'secret') AS secrets, \
                 count(DISTINCT vault || '/' || object_name) FILTER (WHERE object_type = 'key') AS keys, \
                 count(DISTINCT vault || '/' || object_name) FILTER (WHERE object_type = 'certificate') AS certificates, \
                 count(DISTINCT vault || '/' || object_type || '/' || object_name) AS objects, count(DISTINCT vault) AS vaults, \
                 count(DISTINCT environment) FILTER (WHERE environment <> 'unclassified') AS environments \
                 FROM r GROUP BY principal_id ORDER BY objects DESC, principal_id")));
            tables.push(("cross_environment", "Principals reading production and non-production", format!(
                "WITH r AS ({reads}) SELECT principal_id, max(principal) AS principal, max(principal_type) AS principal_type, \
                 array_to_string(array_sort(array_agg(DISTINCT vault) FILTER (WHERE environment = 'production')), ' ') AS production_vaults, \
                 array_to_string(array_sort(array_agg(DISTINCT vault) FILTER (WHERE environment = 'non-production')), ' ') AS non_production_vaults \
                 FROM r GROUP BY principal_id \
                 HAVING count(*) FILTER (WHERE environment = 'production') > 0 AND count(*) FILTER (WHERE environment = 'non-production') > 0 \
                 ORDER BY principal_id")));
            let n = o.top_n;
            metrics.push(("cross_environment_principals", "Principals reading across environments", format!(
                "WITH r AS ({reads}) SELECT count(*) AS value FROM (SELECT principal_id FROM r GROUP BY principal_id \
                 HAVING count(*) FILTER (WHERE environment = 'production') > 0 AND count(*) FILTER (WHERE environment = 'non-production') > 0)")));
            metrics.push(("secrets_known", "Secrets seen in the store", "SELECT count(DISTINCT vault || '/' || object_name) AS value FROM known_objects WHERE object_type = 'secret'".to_owned()));
            metrics.push(("top_n_secret_share", "Share of known secrets read by the top principals", format!(
                "WITH r AS ({reads}), \
                 top AS (SELECT principal_id FROM r WHERE object_type = 'secret' GROUP BY principal_id \
                   ORDER BY count(DISTINCT vault || '/' || object_name) DESC, principal_id LIMIT {n}), \
                 reached AS (SELECT count(DISTINCT vault || '/' || object_name) AS n FROM r WHERE object_type = 'secret' AND principal_id IN (SELECT principal_id FROM top)), \
                 known AS (SELECT count(DISTINCT vault || '/' || object_name) AS n FROM known_objects WHERE object_type = 'secret') \
                 SELECT round(CAST(reached.n AS DOUBLE) / CAST(greatest(known.n, 1) AS DOUBLE), 4) AS value FROM reached, known")));
        }
        Kind::Hygiene => {
            s.description = "Objects still read but not rotated, expiry notifications, TLS below 1.2, callers that do not cache, throttling, vaults still on access policies, and gaps in the audit log of normally busy vaults.".into();
            let days = o.stale_days;
            let stale_cut = o.to - i64::from(days) * 86_400_000_000_000;
            tables.push(("stale_objects", "Objects read in the period but not written for the stale threshold", format!(
                "WITH r AS (SELECT vault, object_type, object_name, sum(reads) AS reads FROM period_reads WHERE ok AND object_name IS NOT NULL GROUP BY 1, 2, 3), \
                 wr AS (SELECT vault, object_type, object_name, last_written FROM known_objects WHERE last_written IS NOT NULL) \
                 SELECT r.vault, r.object_type, r.object_name, r.reads, wr.last_written, \
                   CASE WHEN wr.last_written IS NULL THEN NULL ELSE CAST(({to} - CAST(to_unixtime(wr.last_written) * 1000000000 AS BIGINT)) / 86400000000000 AS BIGINT) END AS days_since_write \
                 FROM r LEFT JOIN wr ON wr.vault = r.vault AND wr.object_type = r.object_type AND wr.object_name = r.object_name \
                 WHERE wr.last_written IS NULL OR wr.last_written < to_timestamp_nanos({stale_cut}) \
                 ORDER BY r.vault, r.object_type, r.object_name", to = o.to)));
            metrics.push((
                "stale_objects",
                "Objects read but not rotated",
                format!(
                    "SELECT count(*) AS value FROM ({})",
                    tables.last().map(|t| t.2.clone()).unwrap_or_default()
                ),
            ));
            tables.push(("expiry", "Near-expiry and expired notifications", format!(
                "WITH n AS (SELECT vault, object_type, object_name, operation, max(time) AS last_notified FROM events WHERE {w} AND operation LIKE '%Expir%EventGridNotification' GROUP BY 1, 2, 3, 4), \
                 wr AS (SELECT vault, object_type, object_name, last_written FROM known_objects WHERE last_written IS NOT NULL) \
                 SELECT n.vault, n.object_type, n.object_name, n.operation, n.last_notified, (wr.last_written > n.last_notified) AS replaced_since \
                 FROM n LEFT JOIN wr ON wr.vault = n.vault AND wr.object_type = n.object_type AND wr.object_name = n.object_name \
                 ORDER BY n.last_notified, n.vault, n.object_type, n.object_name, n.operation")));
            tables.push(("weak_tls", "Requests below TLS 1.2", format!(
                "SELECT vault, max({CALLER}) AS principal, tls_version, client_info AS user_agent, count(*) AS requests \
                 FROM events WHERE {w} AND tls_version IS NOT NULL AND tls_version LIKE 'TLS1%' AND tls_version < 'TLS1_2' \
                 GROUP BY vault, {CALLER_KEY}, tls_version, client_info ORDER BY requests DESC, vault, principal, tls_version, user_agent")));
            tables.push(("no_caching", "Callers fetching the same object more than the threshold per hour", format!(
                "WITH h AS (SELECT vault, principal_id, max(principal) AS principal, object_type, object_name, hour, sum(reads) AS fetches \
                   FROM period_reads WHERE object_name IS NOT NULL GROUP BY vault, principal_id, object_type, object_name, hour) \
                 SELECT vault, principal_id, max(principal) AS principal, object_type, object_name, count(*) AS hours_over, max(fetches) AS max_per_hour, sum(fetches) AS fetches \
                 FROM h WHERE fetches > {} GROUP BY vault, principal_id, object_type, object_name ORDER BY fetches DESC, vault, principal_id, object_type, object_name", o.cache_threshold)));
            tables.push(("throttled", "Throttled requests (429)", format!(
                "SELECT vault, max({CALLER}) AS principal, count(*) AS requests, min(time) AS first_seen, max(time) AS last_seen \
                 FROM events WHERE {w} AND http_status = 429 GROUP BY vault, {CALLER_KEY} ORDER BY requests DESC, vault, principal")));
            tables.push(("access_policy_vaults", "Vaults still using access policies", format!(
                "WITH cfg AS (SELECT vault, last_value(rbac_enabled) OVER (PARTITION BY vault ORDER BY time ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS rbac \
                   FROM events WHERE {upto} AND rbac_enabled IS NOT NULL), \
                 k AS (SELECT vault, max(rbac) AS last_known_rbac FROM cfg GROUP BY vault), \
                 u AS (SELECT vault, coalesce(sum(events) FILTER (WHERE policy_authorized), 0) AS policy_authorized, \
                   coalesce(sum(events) FILTER (WHERE rbac_authorized), 0) AS rbac_authorized FROM period_hours GROUP BY vault) \
                 SELECT u.vault, k.last_known_rbac, u.policy_authorized, u.rbac_authorized FROM u LEFT JOIN k ON k.vault = u.vault \
                 WHERE k.last_known_rbac = false OR (k.last_known_rbac IS NULL AND u.policy_authorized > 0) ORDER BY u.vault")));
            tables.push(("log_gaps", "Silent stretches of normally busy vaults", format!(
                "WITH h AS (SELECT vault, hour, sum(events) AS events FROM period_hours GROUP BY vault, hour), \
                 busy AS (SELECT vault FROM h GROUP BY vault HAVING avg(events) >= {busy}), \
                 s AS (SELECT h.vault, h.hour, lead(h.hour) OVER (PARTITION BY h.vault ORDER BY h.hour) AS next_hour FROM h JOIN busy ON busy.vault = h.vault) \
                 SELECT vault, hour + INTERVAL '1 hour' AS silent_from, next_hour AS silent_until, \
                   CAST((to_unixtime(next_hour) - to_unixtime(hour)) / 3600 AS BIGINT) - 1 AS silent_hours \
                 FROM s WHERE next_hour IS NOT NULL AND (to_unixtime(next_hour) - to_unixtime(hour)) / 3600 - 1 >= {gap} \
                 ORDER BY vault, silent_from", busy = o.busy_events_per_hour, gap = o.gap_hours)));
        }
        Kind::Alerts => {
            s.description = "Alerts in the period by severity, rule and status, and how long they took to be acknowledged and resolved.".into();
            let a = format!(
                "last_seen >= to_timestamp_nanos({}) AND last_seen < to_timestamp_nanos({})",
                o.from, o.to
            );
            let av = if o.vaults.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = o.vaults.iter().map(|v| lit(v)).collect();
                format!(
                    " AND array_has_any(vaults, make_array({}))",
                    list.join(", ")
                )
            };
            metrics.push((
                "alerts",
                "Alerts",
                format!("SELECT count(*) AS value FROM alerts WHERE {a}{av}"),
            ));
            tables.push(("by_severity", "By severity", format!("SELECT severity, count(*) AS alerts FROM alerts WHERE {a}{av} GROUP BY severity ORDER BY alerts DESC, severity")));
            tables.push(("by_rule", "By rule", format!("SELECT rule_id, max(title) AS title, count(*) AS alerts, count(*) FILTER (WHERE status = 'new') AS open FROM alerts WHERE {a}{av} GROUP BY rule_id ORDER BY alerts DESC, rule_id")));
            tables.push(("by_status", "By status", format!("SELECT status, count(*) AS alerts FROM alerts WHERE {a}{av} GROUP BY status ORDER BY alerts DESC, status")));
            tables.push(("per_day", "Alerts per day and severity", format!("SELECT date_trunc('day', last_seen) AS day, severity, count(*) AS alerts FROM alerts WHERE {a}{av} GROUP BY 1, 2 ORDER BY 1, 2")));
            tables.push(("response_times", "Time to acknowledge and resolve (hours)", format!(
                "WITH t AS (SELECT a.id, a.severity, a.created_at, \
                   min(h.at) FILTER (WHERE h.action = 'status' AND h.new IN ('acknowledged', 'resolved')) AS acknowledged, \
                   min(h.at) FILTER (WHERE h.action = 'status' AND h.new = 'resolved') AS resolved \
                   FROM alerts a LEFT JOIN alert_history h ON h.alert_id = a.id WHERE {a}{av} GROUP BY a.id, a.severity, a.created_at) \
                 SELECT severity, count(*) AS alerts, count(acknowledged) AS acknowledged, count(resolved) AS resolved, \
                   round(avg((to_unixtime(acknowledged) - to_unixtime(created_at)) / 3600.0), 2) AS mean_hours_to_acknowledge, \
                   round(avg((to_unixtime(resolved) - to_unixtime(created_at)) / 3600.0), 2) AS mean_hours_to_resolve \
                 FROM t GROUP BY severity ORDER BY severity")));
        }
    }
    for (name, label, sql) in metrics {
        s.summary.push(metric(ctx, name, label, sql).await?);
    }
    for (name, title, sql) in tables {
        s.tables.push(table(ctx, o, name, title, sql).await?);
    }
    Ok(s)
}

/// The report as CSV: one block per table, each headed by a `# section.table` line, summary
/// numbers first. Machines get the same numbers as the HTML.
pub fn to_csv(r: &Report) -> String {
    let cell = |v: &Value| -> String {
        let s = match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let mut out = format!(
        "# {} from {} to {}\n# summary\nsection,metric,label,value\n",
        r.kind.as_str(),
        r.from,
        r.to
    );
    let metrics = r.summary.iter().map(|m| ("report", m)).chain(
        r.sections
            .iter()
            .flat_map(|s| s.summary.iter().map(move |m| (s.id.as_str(), m))),
    );
    for (sec, m) in metrics {
        out += &format!(
            "{},{},{},{}\n",
            sec,
            m.name,
            cell(&Value::String(m.label.clone())),
            cell(&m.value)
        );
    }
    let tables = r.overview.iter().map(|t| ("overview", t)).chain(
        r.sections
            .iter()
            .flat_map(|s| s.tables.iter().map(move |t| (s.id.as_str(), t))),
    );
    for (sec, t) in tables {
        out += &format!("\n# {sec}.{}\n{}\n", t.name, t.columns.join(","));
        for row in &t.rows {
            let cells: Vec<String> = t
                .columns
                .iter()
                .map(|c| cell(row.get(c).unwrap_or(&Value::Null)))
                .collect();
            out += &cells.join(",");
            out.push('\n');
        }
    }
    out
}

/// Renders the report in `format`.
pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(r).unwrap_or_default(),
        Format::Csv => to_csv(r),
        Format::Html => html::render(r),
    }
}

/// A report kept under `DATA/reports`: `<id>.<ext>` with its metadata in `<id>.meta.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StoredReport {
    /// `YYYYMMDDTHHMMSSZ-<kind>[-<n>]`: letters, digits and '-' only, so an ID never names
    /// a path outside the directory.
    pub id: String,
    pub kind: String,
    pub format: String,
    pub from: String,
    pub to: String,
    pub generated_at: String,
    pub bytes: u64,
    /// `api:<key name>`, `cli` or `schedule:<name>`.
    pub requested_by: String,
}

/// Whether `id` is a well-formed report ID.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 80 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The report directory of a data directory.
pub fn dir(data: &Path) -> std::path::PathBuf {
    data.join("reports")
}

/// Writes a rendered report and its metadata (temp file + rename, so a listed report is
/// always complete).
pub fn save(
    data: &Path,
    r: &Report,
    format: Format,
    body: &str,
    requested_by: &str,
) -> Result<StoredReport, ReportError> {
    let d = dir(data);
    std::fs::create_dir_all(&d)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut id = format!("{stamp}-{}", r.kind.as_str());
    let mut n = 1;
    while d.join(format!("{id}.meta.json")).exists() {
        n += 1;
        id = format!("{stamp}-{}-{n}", r.kind.as_str());
    }
    let meta = StoredReport {
        id: id.clone(),
        kind: r.kind.as_str().into(),
        format: format.extension().into(),
        from: r.from.clone(),
        to: r.to.clone(),
        generated_at: r.generated_at.clone(),
        bytes: body.len() as u64,
        requested_by: requested_by.into(),
    };
    let put = |name: String, bytes: &[u8]| -> std::io::Result<()> {
        let tmp = d.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, d.join(name))
    };
    put(format!("{id}.{}", format.extension()), body.as_bytes())?;
    put(
        format!("{id}.meta.json"),
        &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    )?;
    Ok(meta)
}

/// Stored reports, newest first.
pub fn list(data: &Path) -> Result<Vec<StoredReport>, ReportError> {
    let d = dir(data);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        let p = e?.path();
        if p.to_string_lossy().ends_with(".meta.json")
            && let Ok(m) = serde_json::from_slice::<StoredReport>(&std::fs::read(&p)?)
        {
            out.push(m);
        }
    }
    out.sort_by(|a, b| b.generated_at.cmp(&a.generated_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// One stored report's metadata and body; `None` for an unknown or malformed ID.
pub fn load(data: &Path, id: &str) -> Result<Option<(StoredReport, Vec<u8>)>, ReportError> {
    if !valid_id(id) {
        return Ok(None);
    }
    let d = dir(data);
    let meta: StoredReport = match std::fs::read(d.join(format!("{id}.meta.json"))) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| std::io::Error::other(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let body = std::fs::read(d.join(format!("{id}.{}", meta.format)))?;
    Ok(Some((meta, body)))
}
