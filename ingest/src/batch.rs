//! Column builders that turn normalised rows into Arrow record batches of the canonical schemas.
//!
//! [`Columns`] holds one builder per schema field; rows are appended field by field in schema
//! order through a [`RowWriter`] cursor, so adding a column means adding one line to the
//! schema and one to the row's `write` — and `RecordBatch::try_new` rejects any mismatch.

use crate::activity::ActivityRow;
use crate::audit::EventRow;
use crate::schema::{activity_schema, events_schema, quarantine_schema};
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

enum Col {
    Str(StringBuilder),
    Ts(TimestampNanosecondBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    Bool(BooleanBuilder),
    List(ListBuilder<StringBuilder>),
}

impl Col {
    fn for_type(t: &DataType) -> Col {
        match t {
            DataType::Utf8 => Col::Str(StringBuilder::new()),
            DataType::Timestamp(_, tz) => {
                Col::Ts(TimestampNanosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            DataType::Int32 => Col::I32(Int32Builder::new()),
            DataType::Int64 => Col::I64(Int64Builder::new()),
            DataType::Boolean => Col::Bool(BooleanBuilder::new()),
            DataType::List(_) => Col::List(ListBuilder::new(StringBuilder::new())),
            other => unreachable!("schema uses only supported types, found {other}"),
        }
    }

    /// Finishes the column; the builder restarts with the capacity this batch needed, so the
    /// next batch of a stream does not regrow (and copy) its buffers from zero.
    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Str(b) => {
                let rows = b.len();
                let bytes = b.values_slice().len();
                let a = ArrayBuilder::finish(b);
                *b = StringBuilder::with_capacity(rows, bytes + bytes / 8);
                a
            }
            Col::Ts(b) => {
                let rows = b.len();
                let a: ArrayRef = ArrayBuilder::finish(b);
                *b = TimestampNanosecondBuilder::with_capacity(rows)
                    .with_data_type(a.data_type().clone());
                a
            }
            Col::I32(b) => {
                let rows = b.len();
                let a = ArrayBuilder::finish(b);
                *b = Int32Builder::with_capacity(rows);
                a
            }
            Col::I64(b) => {
                let rows = b.len();
                let a = ArrayBuilder::finish(b);
                *b = Int64Builder::with_capacity(rows);
                a
            }
            Col::Bool(b) => {
                let rows = b.len();
                let a = ArrayBuilder::finish(b);
                *b = BooleanBuilder::with_capacity(rows);
                a
            }
            Col::List(b) => ArrayBuilder::finish(b),
        }
    }
}

/// One builder per field of a schema.
pub struct Columns {
    schema: SchemaRef,
    cols: Vec<Col>,
    rows: usize,
}

/// Appends one row, one field at a time, in schema order.
pub struct RowWriter<'c> {
    cols: &'c mut [Col],
    i: usize,
}

impl RowWriter<'_> {
    fn next(&mut self) -> &mut Col {
        let c = &mut self.cols[self.i];
        self.i += 1;
        c
    }
    pub fn s(&mut self, v: Option<&str>) -> &mut Self {
        match self.next() {
            Col::Str(b) => b.append_option(v),
            _ => panic!("column {} is not a string", self.i - 1),
        }
        self
    }
    pub fn ts(&mut self, v: i64) -> &mut Self {
        match self.next() {
            Col::Ts(b) => b.append_value(v),
            _ => panic!("column {} is not a timestamp", self.i - 1),
        }
        self
    }
    pub fn i32(&mut self, v: Option<i32>) -> &mut Self {
        match self.next() {
            Col::I32(b) => b.append_option(v),
            _ => panic!("column {} is not an int32", self.i - 1),
        }
        self
    }
    pub fn i64(&mut self, v: Option<i64>) -> &mut Self {
        match self.next() {
            Col::I64(b) => b.append_option(v),
            _ => panic!("column {} is not an int64", self.i - 1),
        }
        self
    }
    pub fn bool(&mut self, v: Option<bool>) -> &mut Self {
        match self.next() {
            Col::Bool(b) => b.append_option(v),
            _ => panic!("column {} is not a boolean", self.i - 1),
        }
        self
    }
    pub fn list(&mut self, v: Option<&[String]>) -> &mut Self {
        match self.next() {
            Col::List(b) => match v {
                Some(items) => {
                    for it in items {
                        b.values().append_value(it);
                    }
                    b.append(true);
                }
                None => b.append(false),
            },
            _ => panic!("column {} is not a list", self.i - 1),
        }
        self
    }
}

impl Columns {
    pub fn new(schema: SchemaRef) -> Self {
        let cols = schema
            .fields()
            .iter()
            .map(|f| Col::for_type(f.data_type()))
            .collect();
        Self {
            schema,
            cols,
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row; `f` must write every field in order.
    pub fn row(&mut self, f: impl FnOnce(&mut RowWriter<'_>)) {
        let mut w = RowWriter {
            cols: &mut self.cols,
            i: 0,
        };
        f(&mut w);
        let (written, total) = (w.i, w.cols.len());
        debug_assert_eq!(written, total, "row wrote {written} of {total} fields");
        self.rows += 1;
    }

    /// Finishes the batch and resets the builders.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let arrays = self.cols.iter_mut().map(Col::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
    }
}

pub fn events_columns() -> Columns {
    Columns::new(events_schema())
}

pub fn activity_columns() -> Columns {
    Columns::new(activity_schema())
}

pub fn quarantine_columns() -> Columns {
    Columns::new(quarantine_schema())
}

/// Appends an audit event in `events` schema order.
pub fn push_event(c: &mut Columns, r: &EventRow<'_>, source: &str, ingested_at: i64) {
    c.row(|w| {
        w.s(Some(&r.event_id))
            .ts(r.time_ns)
            .s(r.vault.as_deref())
            .s(r.resource_id.as_deref())
            .s(r.subscription_id.as_deref())
            .s(r.resource_group.as_deref())
            .s(r.resource_type.as_deref())
            .s(Some(&r.operation))
            .s(Some(r.operation_family))
            .s(r.operation_version.as_deref())
            .s(r.category.as_deref())
            .s(r.result_type.as_deref())
            .s(r.result_signature.as_deref())
            .s(r.result_description.as_deref())
            .i32(r.http_status)
            .i64(r.duration_ms)
            .s(r.caller_ip.as_deref())
            .s(r.caller_ip_raw.as_deref())
            .s(r.correlation_id.as_deref())
            .s(r.principal_oid.as_deref())
            .s(r.principal_upn.as_deref())
            .s(r.principal_name.as_deref())
            .s(r.principal_appid.as_deref())
            .s(Some(r.principal_type))
            .s(r.principal_mirid.as_deref())
            .s(r.client_info.as_deref())
            .s(r.request_uri.as_deref())
            .s(r.object_uri.as_deref())
            .s(r.object_type)
            .s(r.object_name.as_deref())
            .s(r.object_version.as_deref())
            .bool(r.is_access_policy_match)
            .bool(r.is_rbac_authorized)
            .bool(r.is_address_authorized)
            .s(r.applied_assignment_id.as_deref())
            .s(r.tls_version.as_deref())
            .s(r.subnet_id.as_deref())
            .s(r.trusted_service.as_deref())
            .s(r.policy_added_oid.as_deref())
            .list(r.policy_added_permissions.as_deref())
            .s(r.policy_removed_oid.as_deref())
            .list(r.policy_removed_permissions.as_deref())
            .s(r.ip_rule_added.as_deref())
            .s(r.network_default_action.as_deref())
            .s(r.network_bypass.as_deref())
            .bool(r.rbac_enabled)
            .bool(r.soft_delete_enabled)
            .i32(r.soft_delete_retention_days)
            .bool(r.purge_protection_enabled)
            .s(r.claims.as_deref())
            .s(r.properties.as_deref())
            .s(Some(source))
            .ts(ingested_at);
    });
}

/// Appends an Activity Log record in `activity` schema order.
pub fn push_activity(c: &mut Columns, r: &ActivityRow, source: &str, ingested_at: i64) {
    c.row(|w| {
        w.s(Some(&r.event_id))
            .ts(r.time_ns)
            .s(Some(&r.operation))
            .s(r.category.as_deref())
            .s(r.status.as_deref())
            .s(r.caller_oid.as_deref())
            .s(r.caller_upn.as_deref())
            .s(r.caller_appid.as_deref())
            .s(r.caller_ip.as_deref())
            .s(r.caller_ip_raw.as_deref())
            .s(r.resource_id.as_deref())
            .s(r.subscription_id.as_deref())
            .s(r.scope.as_deref())
            .s(r.vault.as_deref())
            .s(r.role_definition_id.as_deref())
            .s(r.role_name)
            .s(r.target_principal_id.as_deref())
            .s(r.target_principal_type.as_deref())
            .s(r.correlation_id.as_deref())
            .s(r.properties.as_deref())
            .s(Some(source))
            .ts(ingested_at);
    });
}

/// Appends a quarantined input in `quarantine` schema order. Its ID hashes where it came from,
/// why and what, so re-ingesting the same bad input adds nothing.
pub fn push_quarantine(c: &mut Columns, source: &str, reason: &str, raw: &str, received_at: i64) {
    let mut h = blake3::Hasher::new();
    for part in [source, reason, raw] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let id = crate::ids::hex16(h.finalize().as_bytes());
    c.row(|w| {
        w.s(Some(&id))
            .ts(received_at)
            .s(Some(source))
            .s(Some(reason))
            .s(Some(raw));
    });
}
