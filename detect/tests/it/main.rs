//! Integration tests of kvwatch-detect: the rule pack's fixtures through the real ingest path,
//! and rule loading errors.

mod pack;
