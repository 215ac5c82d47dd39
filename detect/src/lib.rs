//! kvwatch-detect: detection rules over the event store.
//!
//! Reading order: [`rule`] (the YAML rule format, parameters) and [`pack`] (loading) → [`engine`] (one
//! DataFusion plan per rule over a time range, rows → [`alert::Occurrence`]) → [`store`]
//! (SQLite alert store: upsert, fold within suppression, status) → [`run`] (backfill and
//! incremental passes that tie them together) and [`fixture`] (rule tests through the real
//! ingest path). [`sigma`] compiles Sigma rules into the same [`Rule`]s. [`udf`] holds the SQL functions rules use beyond DataFusion's own.

pub mod alert;
pub mod anomaly;
pub mod engine;
pub mod fixture;
pub mod follow;
pub mod pack;
pub mod rule;
pub mod run;
pub mod sigma;
pub mod store;
pub mod table;
pub mod udf;

pub use alert::Severity;
pub use alert::{Alert, Occurrence, Principal, Status};
pub use engine::{Engine, EngineError};
pub use rule::{Param, Rule, RuleError};
pub use store::{
    AlertCounts, AlertFilter, AlertSort, AlertStore, AlertStoreError, AlertUpdate, ApplyStats,
    DeadLetter, HistoryEntry,
};
