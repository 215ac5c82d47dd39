//! Generator tests: determinism, every attack kind well-formed and parseable, every format.

mod generate;
