#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit, integration (the real `kvwatch` binary on real
# files) and property tests of every crate. Installs nothing beyond the Rust toolchain today;
# services that later tests need are installed and started here, not by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo test --workspace --locked "$@"
