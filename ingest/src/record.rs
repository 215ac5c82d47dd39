//! Why one record could not become a row: the error the audit and activity normalisers share.

use crate::json::FieldError;

/// Why a record could not become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Field(#[from] FieldError),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("invalid time {0:?}")]
    BadTime(String),
    #[error("`{field}` is not valid JSON: {msg}")]
    Nested { field: &'static str, msg: String },
}
