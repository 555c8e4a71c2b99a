#!/usr/bin/env bash
# Runs every benchmark once; each compares against its anchor in interleaved
# rounds and prints "bench NAME: ours … anchor … ratio …". Pass packages to
# narrow it (default ./...).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# NATS is the outside anchor of the messaging benchmarks (bench/nats).
if ! command -v nats-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
	sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get install -y -qq nats-server >/dev/null || echo "bench: no nats-server; the NATS anchor is skipped" >&2
fi
# gocryptfs (go-fuse plus AES-GCM) is the outside anchor of the FUSE benchmarks.
if ! command -v gocryptfs >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
	sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get install -y -qq gocryptfs >/dev/null || echo "bench: no gocryptfs; the FUSE benchmarks skip" >&2
fi
go test -run '^$' -bench . -benchtime=1x "${@:-./...}" | grep -E '^(bench |ok|FAIL|---)'
# The anchors that live in modules of their own (boxo bitswap, NATS,
# protoactor-go).
if [ $# -eq 0 ]; then
	for m in bench/bitswap bench/nats bench/protoactor; do
		(cd "$m" && go test -run '^$' -bench . -benchtime=1x ./... | grep -E '^(bench |ok|FAIL|---)')
	done
fi
