//! kvwatch-ingest: from Azure Key Vault audit logs, in any envelope Azure writes, to a
//! de-duplicated, time-partitioned Parquet event store that DataFusion can query.
//!
//! Reading order: [`framing`] (bytes → JSON texts) → [`scan`] (texts → validated, split
//! values) → [`parse`] (values → records, routed) →
//! [`audit`] / [`activity`] (records → canonical rows) → [`batch`] (rows → Arrow) →
//! [`store`] (Arrow → Parquet + manifest) → [`query`] (SQL over the store). [`files`] wires
//! file and stdin sources through that chain; [`kafka`] does the same for Kafka / Event Hubs
//! messages, with offsets checkpointed in the store's manifest.

pub mod activity;
pub mod archive;
pub mod audit;
pub mod batch;
pub mod buckets;
pub mod csvrows;
pub mod data;
pub mod derive;
pub mod distinct;
pub mod fault;
pub mod filecache;
pub mod files;
pub mod framing;
pub mod groupkeys;
pub mod gzip;
pub mod ids;
pub mod json;
pub mod kafka;
pub mod location;
pub mod loganalytics;
pub mod memo;
pub mod parse;
pub mod pushdown;
pub mod query;
pub mod record;
pub mod scan;
pub mod scanorder;
pub mod schema;
pub mod secret;
pub mod sqlshape;
pub mod store;
pub mod strmatch;
pub mod tables;
pub mod time;
pub mod watermark;

pub use data::DataDir;
pub use files::{IngestOptions, IngestReport, Input, ingest};
pub use schema::Table;
pub use store::{Manifest, StoreError, StoreWriter, WriteOptions};
