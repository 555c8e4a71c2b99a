#!/usr/bin/env bash
# Runs the whole test suite: vet, unit tests, swtpm-backed tests, fuzz seed
# corpora. Installs what is missing first. Extra arguments go to `go test`.
# With BT_REQUIRE_REAL=1 (as .ci/run sets), a test that cannot find a real
# component (swtpm, FUSE) fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
go vet ./...
go test -count=1 -timeout 25m "$@" ./...
