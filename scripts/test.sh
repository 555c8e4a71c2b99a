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
