//! The alert store as the SQL table `alerts`, so analysts can join alerts with events in
//! `kvwatch query` (e.g. `… JOIN events ON array_has(alerts.evidence, events.event_id)`).

use crate::alert::Alert;
use crate::store::{AlertFilter, AlertStore, AlertStoreError};
use datafusion::arrow::array::{
    ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use kvwatch_ingest::DataDir;
use kvwatch_ingest::schema::ts_type;
use std::sync::Arc;

fn list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// Schema of the `alerts` table.
pub fn alerts_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let t = |n: &str| Field::new(n, ts_type(), false);
    let l = |n: &str| Field::new(n, list(), false);
    Arc::new(Schema::new(vec![
        s("id"),
        s("rule_id"),
        s("title"),
        s("severity"),
        s("status"),
        Field::new("assignee", DataType::Utf8, true),
        t("first_seen"),
        t("last_seen"),
        t("created_at"),
        t("updated_at"),
        Field::new("event_count", DataType::Int64, false),
        Field::new("occurrences", DataType::Int64, false),
        s("dedup_key"),
        l("vaults"),
        l("principal_oids"),
        l("principal_upns"),
        l("principal_appids"),
        s("principals"),
        l("ips"),
        l("objects"),
        l("tactics"),
        l("techniques"),
        s("summary"),
        l("evidence"),
    ]))
}

fn strings<'a>(v: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn lists(rows: impl Iterator<Item = Vec<String>>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for s in r {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn times(v: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(v).with_timezone("UTC"))
}

/// Alerts as one Arrow batch.
pub fn alerts_batch(a: &[Alert]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        strings(a.iter().map(|x| x.id.as_str())),
        strings(a.iter().map(|x| x.rule_id.as_str())),
        strings(a.iter().map(|x| x.title.as_str())),
        strings(a.iter().map(|x| x.severity.as_str())),
        strings(a.iter().map(|x| x.status.as_str())),
        Arc::new(StringArray::from_iter(
            a.iter().map(|x| x.assignee.as_deref()),
        )),
        times(a.iter().map(|x| x.first_seen)),
        times(a.iter().map(|x| x.last_seen)),
        times(a.iter().map(|x| x.created_at)),
        times(a.iter().map(|x| x.updated_at)),
        Arc::new(Int64Array::from_iter_values(
            a.iter().map(|x| x.event_count),
        )),
        Arc::new(Int64Array::from_iter_values(
            a.iter().map(|x| x.occurrences),
        )),
        strings(a.iter().map(|x| x.dedup_key.as_str())),
        lists(a.iter().map(|x| x.vaults.clone())),
        lists(
            a.iter()
                .map(|x| x.principals.iter().filter_map(|p| p.oid.clone()).collect()),
        ),
        lists(
            a.iter()
                .map(|x| x.principals.iter().filter_map(|p| p.upn.clone()).collect()),
        ),
        lists(a.iter().map(|x| {
            x.principals
                .iter()
                .filter_map(|p| p.appid.clone())
                .collect()
        })),
        Arc::new(StringArray::from_iter_values(a.iter().map(|x| {
            serde_json::to_string(&x.principals).unwrap_or_default()
        }))),
        lists(a.iter().map(|x| x.ips.clone())),
        lists(a.iter().map(|x| x.objects.clone())),
        lists(a.iter().map(|x| x.tactics.clone())),
        lists(a.iter().map(|x| x.techniques.clone())),
        strings(a.iter().map(|x| x.summary.as_str())),
        lists(a.iter().map(|x| x.evidence.clone())),
    ];
    RecordBatch::try_new(alerts_schema(), cols).expect("columns match the schema")
}

/// Registers `alerts` (empty when the data directory has no alert store yet).
pub fn register_alerts(ctx: &SessionContext, data_dir: &DataDir) -> Result<(), AlertStoreError> {
    let alerts = match AlertStore::open_read_only(data_dir)? {
        Some(s) => s.list(&AlertFilter::default())?,
        None => Vec::new(),
    };
    let table = MemTable::try_new(alerts_schema(), vec![vec![alerts_batch(&alerts)]])
        .expect("batch has the table schema");
    // A re-registration replaces the previous snapshot.
    let _ = ctx.deregister_table("alerts");
    ctx.register_table("alerts", Arc::new(table))
        .expect("registering a memory table cannot fail");
    Ok(())
}

/// Registers `alert_history` (the triage audit trail: `alert_id`, `at`, `actor`, `action`,
/// `old`, `new`), empty when there is no alert store yet.
pub fn register_alert_history(
    ctx: &SessionContext,
    data_dir: &DataDir,
) -> Result<(), AlertStoreError> {
    let rows = match AlertStore::open_read_only(data_dir)? {
        Some(s) => s.all_history()?,
        None => Vec::new(),
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("alert_id", DataType::Utf8, false),
        Field::new("at", ts_type(), false),
        Field::new("actor", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("old", DataType::Utf8, true),
        Field::new("new", DataType::Utf8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|(id, _)| id.as_str())),
        times(rows.iter().map(|(_, h)| h.at)),
        strings(rows.iter().map(|(_, h)| h.actor.as_str())),
        strings(rows.iter().map(|(_, h)| h.action.as_str())),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(_, h)| h.old.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(_, h)| h.new.as_deref()),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).expect("columns match the schema");
    let table = MemTable::try_new(schema, vec![vec![batch]]).expect("batch has the table schema");
    let _ = ctx.deregister_table("alert_history");
    ctx.register_table("alert_history", Arc::new(table))
        .expect("registering a memory table cannot fail");
    Ok(())
}
