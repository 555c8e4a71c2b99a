#!/usr/bin/env bash
# Runs the whole test suite: vet, staticcheck, unit tests (among them
# internal/layers, which keeps the import graph layered), swtpm-backed tests,
# fuzz seed corpora, then the library packages again under the race
# detector. Installs what is missing first. Extra arguments go to `go test`.
# With BT_REQUIRE_REAL=1 (as .ci/run sets), a test that cannot find a real
# component (swtpm, FUSE) fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

# staticcheck, pinned: 2026.2.2 (module v0.8.2) understands Go 1.26.
# Installed once into Go's bin directory; findings that are not bugs carry
# a //lint:ignore with the reason next to them.
staticcheck_version=v0.8.2
bin=$(go env GOBIN)
[ -n "$bin" ] || bin=$(go env GOPATH)/bin
staticcheck=$bin/staticcheck
if ! "$staticcheck" -version 2>/dev/null | grep -qF "(${staticcheck_version#v})"; then
	echo "test: installing staticcheck $staticcheck_version" >&2
	GOBIN=$bin go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
fi

go vet ./...
"$staticcheck" ./...
go test -count=1 -timeout 25m "$@" ./...

# The race detector over every package but integration/. Those tests spend
# their time in separate `bt` daemon processes, which are built without
# -race, so -race would check only the test harness, for about 3½ minutes
# more (measured with -p 1 on this 2-core machine; the rest take about 7
# minutes in all, wasm 2½ of them, fuse, leveldb and exchange under a
# minute each). The daemon's own code is checked here through its packages.
go test -race -count=1 -timeout 25m "$@" $(go list ./... | grep -v '/integration$')

# The daemon's own configuration (NAT traversal, mDNS multicast) is tested
# in a private network namespace that has nothing but loopback, so it sends
# no packet off this machine.
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1; then
	unshare -n sh -c 'ip link set lo up && ip link set lo multicast on &&
		BT_TEST_NETNS=1 go test -count=1 -run TestDaemonConfigInNetns ./p2p'
elif [ "${BT_REQUIRE_REAL:-}" = 1 ]; then
	echo "test: need root, unshare and ip (iproute2) to test mDNS and NAT in a network namespace" >&2
	exit 1
else
	echo "test: skipping the network-namespace test (needs root, unshare and ip)" >&2
fi
