//! Read-only SQL over the event store with DataFusion.
//!
//! A query session sees exactly the files of one manifest snapshot, registered as `events`,
//! `activity` and `quarantine`, plus the `azure_diagnostics` compatibility view. Statements are
//! planned with DDL, DML and other statements disabled, so a query can read the store and
//! nothing else: no `COPY`, no `CREATE EXTERNAL TABLE`, no `SET`.

use crate::schema::Table;
use crate::store::Result;
pub use crate::tables::{cast_to_schema, register_files, register_sorted_files};
use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

/// Record batches as one JSON array of objects keyed by column name, nulls explicit (`[]`
/// for no rows): the one JSON shape of query results in the CLI, the API and reports.
pub fn batches_json(
    batches: &[RecordBatch],
) -> std::result::Result<Vec<u8>, datafusion::arrow::error::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buf);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    if buf.is_empty() {
        buf.extend_from_slice(b"[]");
    }
    Ok(buf)
}

/// The column names of a result (empty when there are no batches).
pub fn column_names(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Session settings shared by every store query.
pub fn session_config() -> SessionConfig {
    // Filters are evaluated while decoding Parquet only where that pays: scans whose filter
    // keeps few rows get it back from `pushdown::SelectivePushdown`.
    SessionConfig::new()
        .with_information_schema(true)
        .with_batch_size(8192)
        .set_bool("datafusion.execution.parquet.pushdown_filters", false)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
}

/// Bytes of per-file statistics a process keeps (a few KiB a file).
const STATISTICS_CACHE_BYTES: usize = 32 << 20;
/// Bytes of decoded Parquet footers a process keeps (tens of KiB a file: a year of a busy
/// tenant's store fits).
const FOOTER_CACHE_BYTES: usize = 128 << 20;

/// The process's caches of Parquet footers (with page indexes) and of per-file statistics,
/// shared by every session this process opens: each query would otherwise read and decode
/// every file's footer again while planning (about 15 ms over a 14-file week, most of a short
/// query's time). Store files are immutable and named once, and both caches check an entry
/// against the file's size and modification time before using it, so an entry is never
/// stale; the least recently used entries go when a cache is full.
pub fn shared_caches() -> datafusion::execution::cache::cache_manager::CacheManagerConfig {
    use datafusion::execution::cache::cache_manager::{
        CacheManagerConfig, FileMetadataCache, FileStatisticsCache,
    };
    use datafusion::execution::cache::default_cache::DefaultCache;
    use std::sync::{Arc, OnceLock};
    type Caches = (Arc<FileStatisticsCache>, Arc<FileMetadataCache>);
    static CACHES: OnceLock<Caches> = OnceLock::new();
    let (stats, meta) = CACHES.get_or_init(|| {
        (
            Arc::new(
                DefaultCache::new(STATISTICS_CACHE_BYTES).with_name("kvwatch file statistics"),
            ),
            Arc::new(DefaultCache::new(FOOTER_CACHE_BYTES).with_name("kvwatch Parquet footers")),
        )
    });
    CacheManagerConfig::default()
        .with_file_statistics_cache(Some(stats.clone()))
        .with_file_metadata_cache(Some(meta.clone()))
}

/// A fresh context with no tables, for callers that register their own.
pub fn empty_context() -> SessionContext {
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(shared_caches())
        .build_arc()
        .expect("a runtime without a pool or disk manager");
    context_with(runtime)
}

/// A session over `runtime` with the store's settings ([`session_config`]), the physical
/// optimizer rules after [`crate::scanorder::UnorderedScans`] and
/// [`crate::pushdown::SelectivePushdown`] (and [`crate::groupkeys::InternedGroupKeys`] last),
/// the fast `date_trunc`,
/// grouped `count`/`array_agg(DISTINCT …)` over strings and suffix `LIKE` ([`crate::strmatch`]):
/// how every store session is built.
pub fn context_with(runtime: std::sync::Arc<RuntimeEnv>) -> SessionContext {
    context_of(runtime, session_config())
}

/// [`context_with`] with `config` in place of [`session_config`].
fn context_of(runtime: std::sync::Arc<RuntimeEnv>, config: SessionConfig) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rules(crate::scanorder::physical_optimizer_rules())
        .with_optimizer_rule(crate::strmatch::rule())
        .build();
    let ctx = SessionContext::new_with_state(state);
    crate::buckets::register(&ctx);
    crate::distinct::register(&ctx);
    crate::strmatch::register(&ctx);
    ctx
}

/// A fresh context whose operators share a memory pool of `bytes` and spill to the system's
/// temporary directory when it is full (sorts, aggregations): for detection, which must finish
/// over any amount of data rather than fail. Analyst SQL has its own no-spill limit.
///
/// Each batch a repartition spills goes to a file of its own. DataFusion 55 appends spilled
/// batches to open files shared by the repartition's input tasks, and its reader waits on the
/// oldest file only: when two tasks spilled at once, the batch it waited for could be in the
/// newer file while every writer waited for it, and the query stopped for ever with every
/// thread idle (apache/datafusion#24883, fixed upstream after 55.2). A file that is finished
/// with its one batch is never waited on.
pub fn spilling_context(bytes: usize) -> std::result::Result<SessionContext, DataFusionError> {
    use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(bytes),
        std::num::NonZeroUsize::new(5).expect("non-zero"),
    );
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(std::sync::Arc::new(pool))
        .with_cache_manager(shared_caches())
        .build_arc()?;
    let config = session_config().set_usize("datafusion.execution.max_spill_file_size_bytes", 1);
    Ok(context_of(runtime, config))
}

/// Registers the tables of `manifest` (files relative to `location`) and the compatibility views on
/// an existing context; an empty manifest gives empty tables with the same views. The one way
/// every session (analyst SQL, reports, `kvwatch query`, detection fixtures) sees the store:
/// callers reach it through the data handle (`DataDir`).
pub(crate) async fn register_manifest(
    ctx: &SessionContext,
    location: &crate::location::Location,
    manifest: &crate::store::Manifest,
) -> Result<()> {
    location.register(ctx);
    for t in Table::ALL {
        let paths: Vec<String> = manifest
            .files(t)
            .iter()
            .map(|f| location.file(&f.path))
            .collect();
        register_files(ctx, t.name(), t, &paths)?;
    }
    ctx.sql(AZURE_DIAGNOSTICS_VIEW).await?;
    Ok(())
}

/// The tables [`register_manifest`] made for one store snapshot, kept for the next session of
/// this process (see `DataDir::register`): `(key, [(name, provider)])`.
type KeptTables = (
    String,
    Vec<(
        String,
        std::sync::Arc<dyn datafusion::catalog::TableProvider>,
    )>,
);
static KEPT_TABLES: std::sync::Mutex<Option<KeptTables>> = std::sync::Mutex::new(None);

/// The names `register_manifest` registers.
fn registered_names() -> impl Iterator<Item = &'static str> {
    Table::ALL
        .iter()
        .map(|t| t.name())
        .chain(std::iter::once("azure_diagnostics"))
}

/// Registers the kept tables of snapshot `key` on `ctx` (and the location's object store), if
/// the kept ones are of that snapshot; `false` when they are not.
pub(crate) fn reuse_tables(
    ctx: &SessionContext,
    location: &crate::location::Location,
    key: &str,
) -> Result<bool> {
    let kept = match KEPT_TABLES.lock() {
        Ok(k) => k.as_ref().filter(|(k, _)| k == key).map(|(_, t)| t.clone()),
        Err(_) => None,
    };
    let Some(tables) = kept else {
        return Ok(false);
    };
    location.register(ctx);
    for (name, provider) in tables {
        ctx.register_table(name.as_str(), provider)?;
    }
    Ok(true)
}

/// Keeps the tables just registered on `ctx` as those of snapshot `key`.
pub(crate) async fn keep_tables(ctx: &SessionContext, key: String) -> Result<()> {
    let mut tables = Vec::new();
    for name in registered_names() {
        tables.push((name.to_owned(), ctx.table_provider(name).await?));
    }
    if let Ok(mut k) = KEPT_TABLES.lock() {
        *k = Some((key, tables));
    }
    Ok(())
}

/// `s` as a quoted SQL string literal (quotes doubled), for values spliced into SQL text.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Options that make planning refuse anything but queries.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans `sql` read-only.
pub async fn read_only_sql(
    ctx: &SessionContext,
    sql: &str,
) -> datafusion::error::Result<DataFrame> {
    ctx.sql_with_options(sql, read_only()).await
}

/// `events` with the Log Analytics `AzureDiagnostics` column names, so Sentinel queries port
/// with little more than a syntax change.
pub const AZURE_DIAGNOSTICS_VIEW: &str = r#"CREATE VIEW azure_diagnostics AS SELECT
  time AS "TimeGenerated",
  upper(resource_id) AS "ResourceId",
  resource_id AS "_ResourceId",
  category AS "Category",
  upper(resource_group) AS "ResourceGroup",
  subscription_id AS "SubscriptionId",
  'MICROSOFT.KEYVAULT' AS "ResourceProvider",
  upper(vault) AS "Resource",
  upper(resource_type) AS "ResourceType",
  operation AS "OperationName",
  operation_version AS "OperationVersion",
  result_type AS "ResultType",
  result_signature AS "ResultSignature",
  result_description AS "ResultDescription",
  correlation_id AS "CorrelationId",
  duration_ms AS "DurationMs",
  coalesce(caller_ip_raw, caller_ip) AS "CallerIPAddress",
  request_uri AS "requestUri_s",
  object_uri AS "id_s",
  client_info AS "clientInfo_s",
  CAST(http_status AS DOUBLE) AS "httpStatusCode_d",
  principal_oid AS "identity_claim_oid_g",
  principal_oid AS "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g",
  principal_upn AS "identity_claim_upn_s",
  principal_upn AS "identity_claim_http_schemas_xmlsoap_org_ws_2005_05_identity_claims_upn_s",
  principal_name AS "identity_claim_unique_name_s",
  principal_name AS "identity_claim_http_schemas_xmlsoap_org_ws_2005_05_identity_claims_name_s",
  principal_appid AS "identity_claim_appid_g",
  principal_mirid AS "identity_claim_xms_mirid_s",
  is_access_policy_match AS "isAccessPolicyMatch_b",
  is_rbac_authorized AS "isRbacAuthorized_b",
  tls_version AS "tlsVersion_s",
  subnet_id AS "subnetId_s",
  policy_added_oid AS "addedAccessPolicy_ObjectId_g",
  array_to_string(policy_added_permissions, ',') AS "addedAccessPolicy_Permissions_s",
  policy_removed_oid AS "removedAccessPolicy_ObjectId_g",
  array_to_string(policy_removed_permissions, ',') AS "removedAccessPolicy_Permissions_s",
  ip_rule_added AS "addedIpRule_Value_s",
  network_default_action AS "properties_networkAcls_defaultAction_s",
  network_bypass AS "properties_networkAcls_bypass_s",
  rbac_enabled AS "properties_enableRbacAuthorization_b",
  soft_delete_enabled AS "properties_enableSoftDelete_b",
  purge_protection_enabled AS "properties_enablePurgeProtection_b",
  properties AS "AdditionalFields",
  'AzureDiagnostics' AS "Type"
FROM events"#;

/// The result of `sql` on `ctx` as an Arrow pretty-printed table (tests of this crate).
#[cfg(test)]
pub(crate) async fn text(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A grouped aggregation whose repartition spills under detection's memory pool finishes.
    /// DataFusion 55's repartition spill pool could stall for ever with every thread idle when
    /// two input tasks spilled to one output at once (apache/datafusion#24883); this query, on
    /// the unchanged session, stalls within a few attempts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spilling_repartition_never_stalls() {
        for attempt in 0..12 {
            let ctx = super::spilling_context(2 << 20).unwrap();
            for set in [
                "SET datafusion.execution.target_partitions = 2",
                "SET datafusion.execution.batch_size = 64",
            ] {
                ctx.sql(set).await.unwrap();
            }
            ctx.sql(
                "CREATE TABLE t AS SELECT v % 13 AS g, md5(CAST(v % 337 AS VARCHAR)) AS trace_id \
                 FROM generate_series(1, 40000) AS s(v)",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
            let sql = "SELECT g, count(*) AS n FROM (SELECT g, trace_id FROM t GROUP BY g, trace_id) \
                       GROUP BY g";
            let run = async { super::text(&ctx, sql).await };
            let Ok(table) = tokio::time::timeout(Duration::from_secs(30), run).await else {
                panic!("attempt {attempt} stalled");
            };
            // 13 and 337 are coprime: every g meets every one of the 337 ids.
            assert_eq!(table.matches("| 337 |").count(), 13, "{table}");
        }
    }
}
