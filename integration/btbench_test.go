package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/api"
)

// benchPair is two daemons of one domain, n1 serving benches at its
// endpoint path and, for n0's publications, at n0's topic path.
type benchPair struct {
	c             *cluster
	target, topic string
	serve         *bgProc // the serve at target
}

func newBenchPair(t testing.TB) *benchPair {
	t.Helper()
	c := newCluster(t, 2)
	p := &benchPair{c: c, target: c.path(1) + "/bench", topic: c.path(0) + "/bench-topic"}
	p.serve = c.nodes[1].background("serving benches at "+p.target, "bench", "serve", p.target)
	c.nodes[1].background("serving benches at "+p.topic, "bench", "serve", p.topic)
	eventually(t, 20*time.Second, "n0 reaches n1", func() error {
		if r := c.nodes[0].run("ping", c.path(1)); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	return p
}

// TestBtBench runs `bt bench serve` on one daemon and `bt bench call`,
// `send` and `pub` with --json on another, and checks what a user would:
// every message counted, ordered percentiles, a rate, no errors, nothing
// on stderr; and that a bench without an endpoint says what to run.
func TestBtBench(t *testing.T) {
	p := newBenchPair(t)
	const msgs = 2000
	for _, kind := range []string{"call", "send", "pub"} {
		t.Run(kind, func(t *testing.T) {
			path := p.target
			if kind == "pub" {
				path = p.topic
			}
			r := p.c.nodes[0].ok("bench", kind, path, "--size", "64", "--msgs", fmt.Sprint(msgs), "--clients", "4", "--json")
			var res api.BenchResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
				t.Fatalf("--json printed no result: %v\n%s", err, r)
			}
			l := res.Latency
			switch {
			case res.Kind != kind || res.Count != msgs || res.Msgs != msgs || l.Count != msgs:
				t.Errorf("count %d (latencies %d) of %d %s, want all %d", res.Count, l.Count, res.Msgs, res.Kind, msgs)
			case res.Errors != 0 || res.FirstError != "":
				t.Errorf("%d errors: %s", res.Errors, res.FirstError)
			case res.Rate <= 0 || res.BytesPerSec <= 0 || res.Seconds <= 0:
				t.Errorf("rate %v msg/s, %v B/s over %vs", res.Rate, res.BytesPerSec, res.Seconds)
			case !(0 < l.Min && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max):
				t.Errorf("latencies out of order: %+v", l)
			case r.stderr != "":
				t.Errorf("stderr with --json: %q", r.stderr)
			}
			if kind == "pub" {
				if len(res.Subscribers) != 1 || res.Subscribers[0].Node.String() != p.c.path(1) {
					t.Fatalf("subscribers %+v, want %s", res.Subscribers, p.c.path(1))
				}
				// Pub-sub is best effort (gossipsub drops what overflows a
				// peer's queue): some arrive, none twice.
				s := res.Subscribers[0]
				if s.Count < 1 || s.Count > msgs || s.Bytes != 64*s.Count || s.Latency.Count != s.Count {
					t.Errorf("delivery %+v", s)
				}
				t.Logf("pub: %d of %d delivered", s.Count, msgs)
			}
			t.Logf("%s: %.0f msg/s, p50 %.0fµs p99 %.0fµs", kind, res.Rate, l.P50, l.P99)
		})
	}
	t.Run("text", func(t *testing.T) {
		r := p.c.nodes[0].ok("bench", "call", p.target, "--msgs", "300")
		for _, want := range []string{"call " + p.target + ": 300 msgs of 128 B from 1 client in ", "  rate     ", " msg/s  ", "  latency  min ", " p99.9 "} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("text output lacks %q:\n%s", want, r)
			}
		}
	})
	t.Run("no endpoint", func(t *testing.T) {
		nowhere := p.c.path(1) + "/nothing"
		p.c.nodes[0].fails(7, "run `bt bench serve "+nowhere+"` on the node that owns "+nowhere, "bench", "call", nowhere, "--msgs", "10")
		p.c.nodes[0].fails(2, "msgs 0", "bench", "send", p.target, "--msgs", "0")
		// n0 holds no writecap for a topic under n1.
		p.c.nodes[0].fails(5, "publish", "bench", "pub", p.c.path(1)+"/topic", "--msgs", "10")
	})
	// The serve printed what arrived: every call and send, and the one
	// each bench sends first to check the endpoint.
	eventually(t, 10*time.Second, "the serve's counts", func() error {
		out := p.serve.output()
		if len(out) == 0 {
			return fmt.Errorf("no output")
		}
		var calls, sends int
		last := strings.ReplaceAll(out[len(out)-1], ",", "")
		if _, err := fmt.Sscanf(last, "received %d calls %d sends", &calls, &sends); err != nil {
			return fmt.Errorf("%q: %v", last, err)
		}
		if calls < msgs+301+1 || sends < msgs+1 {
			return fmt.Errorf("%q", last)
		}
		return nil
	})
}

// BenchmarkBtBench prints what `bt bench` prints between two daemons on
// loopback for 64 B calls from 1 and from 16 clients and sends from 1
// (no anchor: these are the figures a user sees; msg's and pubsub's own
// benchmarks compare with raw streams). Run with -benchtime=1x.
func BenchmarkBtBench(b *testing.B) {
	p := newBenchPair(b)
	for _, args := range [][]string{
		{"call", p.target, "--clients", "1"},
		{"call", p.target, "--clients", "16"},
		{"send", p.target, "--clients", "1"},
		{"send", p.target, "--clients", "16"},
		{"pub", p.topic, "--clients", "1"},
	} {
		full := append([]string{"bench"}, args[0], args[1], "--size", "64", "--msgs", "20000", args[2], args[3])
		r := p.c.nodes[0].ok(full...)
		fmt.Printf("$ bt %s\n%s", strings.Join(full, " "), r.stdout)
	}
}

// BenchmarkBtBenchCallVsPing: the p50 of `bt bench call` (64 B, one
// client) against the median round trip of `bt ping` between the same two
// daemons (a 32-byte echo on a new stream of the existing connection, timed
// in the daemon too): 5 interleaved rounds, medians of the rounds' figures.
// Run with -benchtime=1x.
func BenchmarkBtBenchCallVsPing(b *testing.B) {
	p := newBenchPair(b)
	var ours, anchor []float64
	for range 5 {
		r := p.c.nodes[0].ok("bench", "call", p.target, "--size", "64", "--msgs", "2000", "--json")
		var res api.BenchResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			b.Fatalf("%v\n%s", err, r)
		}
		ours = append(ours, res.Latency.P50)
		r = p.c.nodes[0].ok("ping", p.c.path(1), "-n", "200", "--json")
		var pings []api.PingResult
		if err := json.Unmarshal([]byte(r.stdout), &pings); err != nil {
			b.Fatalf("%v\n%s", err, r)
		}
		var rtts []float64
		for _, pr := range pings {
			rtts = append(rtts, pr.RTTms*1000)
		}
		anchor = append(anchor, median(rtts))
	}
	o, a := median(ours), median(anchor)
	fmt.Printf("bench bt-bench-call-p50-vs-ping: ours %.0fµs anchor %.0fµs ratio(anchor/ours) %.3f (5 rounds, interleaved, medians; ours %v, anchor %v)\n",
		o, a, a/o, ours, anchor)
	b.ReportMetric(o, "call-p50-µs")
	b.ReportMetric(a, "ping-p50-µs")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
