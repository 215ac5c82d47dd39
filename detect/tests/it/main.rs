//! Integration tests of kvwatch-detect: the rule pack's fixtures through the real ingest path,
//! rule loading errors, and the alert store's upsert/fold semantics on a real store.

mod alerts;
mod pack;
