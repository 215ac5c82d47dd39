//! The canonical Arrow schemas: `events`, `activity` and `quarantine`.
//!
//! Column names are the contract every rule, report and analyst query is written against, so
//! they change only by adding columns. Parquet files written with an older schema are read with
//! the newer one (missing columns become null).

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, LazyLock};

/// Timestamp type of every time column: nanoseconds, UTC.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn list_utf8() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

/// `schema` with its top-level `Utf8` columns as `Utf8View`.
fn as_views(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn b(name: &str) -> Field {
    Field::new(name, DataType::Boolean, true)
}

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("time", ts_type(), false),
        s("vault"),
        s("resource_id"),
        s("subscription_id"),
        s("resource_group"),
        s("resource_type"),
        Field::new("operation", DataType::Utf8, false),
        Field::new("operation_family", DataType::Utf8, false),
        s("operation_version"),
        s("category"),
        s("result_type"),
        s("result_signature"),
        s("result_description"),
        Field::new("http_status", DataType::Int32, true),
        Field::new("duration_ms", DataType::Int64, true),
        s("caller_ip"),
        s("caller_ip_raw"),
        s("correlation_id"),
        s("principal_oid"),
        s("principal_upn"),
        s("principal_name"),
        s("principal_appid"),
        Field::new("principal_type", DataType::Utf8, false),
        s("principal_mirid"),
        s("client_info"),
        s("request_uri"),
        s("object_uri"),
        s("object_type"),
        s("object_name"),
        s("object_version"),
        b("is_access_policy_match"),
        b("is_rbac_authorized"),
        b("is_address_authorized"),
        s("applied_assignment_id"),
        s("tls_version"),
        s("subnet_id"),
        s("trusted_service"),
        s("policy_added_oid"),
        Field::new("policy_added_permissions", list_utf8(), true),
        s("policy_removed_oid"),
        Field::new("policy_removed_permissions", list_utf8(), true),
        s("ip_rule_added"),
        s("network_default_action"),
        s("network_bypass"),
        b("rbac_enabled"),
        b("soft_delete_enabled"),
        Field::new("soft_delete_retention_days", DataType::Int32, true),
        b("purge_protection_enabled"),
        s("claims"),
        s("properties"),
        Field::new("source", DataType::Utf8, false),
        Field::new("ingested_at", ts_type(), false),
    ]))
});

static ACTIVITY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("time", ts_type(), false),
        Field::new("operation", DataType::Utf8, false),
        s("category"),
        s("status"),
        s("caller_oid"),
        s("caller_upn"),
        s("caller_appid"),
        s("caller_ip"),
        s("caller_ip_raw"),
        s("resource_id"),
        s("subscription_id"),
        s("scope"),
        s("vault"),
        s("role_definition_id"),
        s("role_name"),
        s("target_principal_id"),
        s("target_principal_type"),
        s("correlation_id"),
        s("properties"),
        Field::new("source", DataType::Utf8, false),
        Field::new("ingested_at", ts_type(), false),
    ]))
});

static QUARANTINE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("quarantine_id", DataType::Utf8, false),
        Field::new("received_at", ts_type(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
    ]))
});

/// Schema of the `events` table (Key Vault `AuditEvent` records).
pub fn events_schema() -> SchemaRef {
    EVENTS.clone()
}

/// Schema of the `activity` table (Azure Activity Log records).
pub fn activity_schema() -> SchemaRef {
    ACTIVITY.clone()
}

/// Schema of the `quarantine` table (input that could not be stored as an event).
pub fn quarantine_schema() -> SchemaRef {
    QUARANTINE.clone()
}

/// The three tables of the event store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Events,
    Activity,
    Quarantine,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Events, Table::Activity, Table::Quarantine];

    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Activity => "activity",
            Table::Quarantine => "quarantine",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Events => events_schema(),
            Table::Activity => activity_schema(),
            Table::Quarantine => quarantine_schema(),
        }
    }

    /// The schema queries read the table with: [`Table::schema`] with every string column as
    /// a string view (`Utf8View`). The Parquet reader decodes a dictionary-encoded string page
    /// into views of the page's dictionary without copying a string; read as `Utf8`, every
    /// value is copied into a fresh buffer, which was most of the scan time of a string
    /// GROUP BY. Files are still written with `schema()`.
    pub fn scan_schema(self) -> SchemaRef {
        static SCAN: LazyLock<[SchemaRef; 3]> =
            LazyLock::new(|| Table::ALL.map(|t| as_views(&t.schema())));
        SCAN[self as usize].clone()
    }

    /// The column rows are de-duplicated on.
    pub fn id_column(self) -> &'static str {
        match self {
            Table::Quarantine => "quarantine_id",
            _ => "event_id",
        }
    }

    /// The column files are partitioned and sorted by.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Quarantine => "received_at",
            _ => "time",
        }
    }
}
