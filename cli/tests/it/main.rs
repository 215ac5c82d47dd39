//! End-to-end tests of the `kvwatch` binary on real files. One test binary (modules below) so
//! DataFusion is linked once.

mod api;
mod azurite;
mod backfill;
mod cluster;
mod common;
mod console;
mod continuous;
mod detect;
mod fixture;
mod generate;
mod hardening;
mod ingest;
mod kafka;
mod objstore;
#[path = "../../../detect/src/store/testpg.rs"]
mod pg_server;
mod query;
mod report;
mod sinks;
mod structure;
