//! Parquet files of the store as DataFusion tables: the one place that registers them, for the
//! store's own merge (compaction), query sessions and the detection engine.

use crate::schema::Table;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionContext, col};
use std::path::PathBuf;
use std::sync::Arc;

/// Registers `paths` (paths or object-store URLs of Parquet files of `table`'s schema) as `name` for queries.
///
/// The store's files record that they are sorted by time (Parquet `sorting_columns`), and
/// DataFusion takes a table's order from its files when the table declares none: plans that
/// need time order (windows over time, `ORDER BY time`) use it either way. The store's own
/// merge, which must stream its inputs in order, declares it with [`register_sorted_files`].
pub fn register_files(
    ctx: &SessionContext,
    name: &str,
    table: Table,
    paths: &[String],
) -> datafusion::error::Result<()> {
    register(ctx, name, table, paths, false)
}

/// Registers `paths` as `name`, declaring that every file is sorted by time.
pub fn register_sorted_files(
    ctx: &SessionContext,
    name: &str,
    table: Table,
    paths: &[String],
) -> datafusion::error::Result<()> {
    register(ctx, name, table, paths, true)
}

fn register(
    ctx: &SessionContext,
    name: &str,
    table: Table,
    paths: &[String],
    sorted: bool,
) -> datafusion::error::Result<()> {
    let schema = table.scan_schema();
    if paths.is_empty() {
        let empty = MemTable::try_new(schema.clone(), vec![vec![]])?;
        ctx.register_table(name, Arc::new(empty))?;
        return Ok(());
    }
    let urls = paths
        .iter()
        .map(|p| {
            if crate::location::is_url(p) {
                return ListingTableUrl::parse(p);
            }
            let p = PathBuf::from(p);
            let abs = std::path::absolute(&p).unwrap_or(p);
            ListingTableUrl::parse(abs.to_string_lossy())
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let mut opts =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    if sorted {
        opts = opts.with_file_sort_order(vec![vec![col(table.time_column()).sort(true, false)]]);
    }
    let cfg = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(opts)
        .with_schema(schema);
    // The runtime's statistics cache (shared by a process's sessions: `query::shared_caches`),
    // so a file's statistics are computed once, not at each query's planning.
    let stats = ctx.runtime_env().cache_manager.get_file_statistic_cache();
    ctx.register_table(
        name,
        Arc::new(ListingTable::try_new(cfg)?.with_cache(stats)),
    )?;
    Ok(())
}

/// Casts a batch's columns to `schema` (Parquet reads strings back as views).
pub fn cast_to_schema(
    b: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let cols = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), cols)
}
