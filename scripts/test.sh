#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit, integration (the real `kvwatch` binary on real
# files and against a real Kafka-compatible broker) and property tests of every crate.
#
# Azurite (the Azure Storage emulator, npm) is installed the same way for the object-store tests.
#
# The broker is tansu 0.6.0, a Kafka-compatible broker written in Rust, installed once per
# machine from crates.io into a cache outside the clone (about 8-20 minutes the first time,
# skipped afterwards). The Kafka tests start and stop their own broker processes on free
# ports; nothing is left running. The console's tests do the same with Chromium and its
# WebDriver, and the alert store's with PostgreSQL, installed once from Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

tansu_root="${KVWATCH_TANSU_ROOT:-$HOME/.cache/kvwatch/tansu}"
export KVWATCH_TANSU="${KVWATCH_TANSU:-$tansu_root/bin/tansu}"
if [ ! -x "$KVWATCH_TANSU" ]; then
    echo "test.sh: installing the tansu 0.6.0 broker into $tansu_root (once per machine)"
    # dynostore gives the in-memory engine, libsql the durable sqlite engine; the default
    # feature set has neither and fails at start.
    # A test broker needs no full optimisation: opt-level 1 builds in far less time.
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
        cargo install tansu --version 0.6.0 --features dynostore,libsql --root "$tansu_root"
fi
"$KVWATCH_TANSU" --version || true

# The console's browser tests drive Debian's Chromium through its WebDriver (chromium and
# chromium-driver, installed once per machine; KVWATCH_CHROMIUM / KVWATCH_CHROMEDRIVER may
# point at other builds).
export KVWATCH_CHROMEDRIVER="${KVWATCH_CHROMEDRIVER:-/usr/bin/chromedriver}"
if [ ! -x "$KVWATCH_CHROMEDRIVER" ]; then
    echo "test.sh: installing chromium and chromium-driver from Debian's packages (once per machine)"
    sudo_="" ; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium chromium-driver >/dev/null
fi
"$KVWATCH_CHROMEDRIVER" --version || true

# The shared event store's tests run against Azurite, the Azure Storage emulator, from the
# npm registry (installed once per machine into a cache outside the clone; KVWATCH_AZURITE
# may point at another azurite-blob).
azurite_root="${KVWATCH_AZURITE_ROOT:-$HOME/.cache/kvwatch/azurite}"
export KVWATCH_AZURITE="${KVWATCH_AZURITE:-$azurite_root/node_modules/.bin/azurite-blob}"
if [ ! -x "$KVWATCH_AZURITE" ]; then
    echo "test.sh: installing Azurite 3.35.0 from the npm registry into $azurite_root (once per machine)"
    mkdir -p "$azurite_root"
    npm install --prefix "$azurite_root" --silent --no-audit --no-fund azurite@3.35.0
fi
"$KVWATCH_AZURITE" --version

# The alert store's PostgreSQL back end is tested against private servers (initdb into a
# temporary directory, a loopback port) from Debian's postgresql package, installed once per
# machine; KVWATCH_PG_BIN may point at another server's bin directory.
if [ -z "${KVWATCH_PG_BIN:-}" ]; then
    KVWATCH_PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
    if [ -z "$KVWATCH_PG_BIN" ] || [ ! -x "$KVWATCH_PG_BIN/postgres" ]; then
        echo "test.sh: installing PostgreSQL from Debian's packages (once per machine)"
        sudo_="" ; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
        $sudo_ apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq postgresql >/dev/null
        KVWATCH_PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    fi
fi
export KVWATCH_PG_BIN
"$KVWATCH_PG_BIN/postgres" --version

cargo test --workspace --locked "$@"

# The OpenAPI document the server serves must validate against the OpenAPI 3.1 schema
# (openapi-spec-validator from PyPI, in a virtualenv cached outside the clone).
venv="${KVWATCH_PYENV:-$HOME/.cache/kvwatch/pyenv}"
if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet openapi-spec-validator
fi
spec="$(mktemp)"
"$CARGO_TARGET_DIR/debug/kvwatch" openapi >"$spec"
"$venv/bin/openapi-spec-validator" "$spec"
rm -f "$spec"
