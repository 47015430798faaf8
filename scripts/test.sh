#!/usr/bin/env bash
# Runs every test: unit and scenario tests (swift test), the interop suite against real peers
# (coturn's clients, aioice) and the fuzz smoke run. README's second set-up command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
echo "== swift build" >&2
swift build --product fz-relay
swift build --product fz-portal
swift build --product fz-client
export FZ_RELAY_BIN="$(swift build --show-bin-path)/fz-relay"
export FZ_PORTAL_BIN="$(swift build --show-bin-path)/fz-portal"
export FZ_CLIENT_BIN="$(swift build --show-bin-path)/fz-client"
echo "== swift test" >&2
swift test
echo "== fuzz smoke (libFuzzer)" >&2
scripts/fuzz.sh "${FZ_FUZZ_RUNS:-100000}"
echo "== interop (coturn clients, aioice, storm, daemon contract, netcheck)" >&2
python3 -m pytest -q Tests/interop
