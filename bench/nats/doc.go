// Package natsbench compares Blocktree's messages (blocktree.dev/bt/msg)
// with NATS on the same machine, in the same run: 64 B request/reply
// latency, and the rate of 1→1 fire-and-forget messages. NATS is an outside
// anchor (Debian's nats-server, driven by github.com/nats-io/nats.go); the
// benchmark skips when nats-server is not installed. It is a module of its
// own so that nats.go never enters the main module's dependencies; it has
// no non-test code. Run:
//
//	cd bench/nats && go test -run '^$' -bench . -benchtime=1x
//
// ./scripts/bench.sh installs nats-server and runs it after the main
// module's benchmarks.
package natsbench
