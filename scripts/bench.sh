#!/usr/bin/env bash
# Runs every benchmark once; each compares against its anchor in interleaved
# rounds and prints "bench NAME: ours … anchor … ratio …". Pass packages to
# narrow it (default ./...).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
go test -run '^$' -bench . -benchtime=1x "${@:-./...}" | grep -E '^(bench |ok|FAIL|---)'
