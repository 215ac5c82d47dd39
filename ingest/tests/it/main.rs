//! Library-level tests of the ingest crate (one binary; modules below).

mod crash;
mod props;
mod salvage;
