//! alert store tests
