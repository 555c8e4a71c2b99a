package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

var (
	benchPath  = paths.MustParse("/" + testRoot + "/laptop/bench")
	benchOther = paths.MustParse("/" + testRoot + "/desktop")
)

func benchResult(kind string) *api.BenchResult {
	r := &api.BenchResult{Kind: kind, Path: benchPath, Size: 64, Msgs: 20000, Clients: 16, Count: 20000, Seconds: 1.25,
		Rate: 16000, BytesPerSec: 16000 * 64,
		Latency: api.BenchLatency{Count: 20000, Min: 61.5, Mean: 97.25, P50: 90, P90: 120, P99: 450, P999: 1250, Max: 3_200_000}}
	if kind == api.BenchPub {
		r.Subscribers = []api.BenchDelivery{{Node: benchOther, Count: 19990, Bytes: 19990 * 64, Rate: 15800,
			Latency: api.BenchLatency{Count: 19990, Min: 150, Mean: 400, P50: 380, P90: 600, P99: 900, P999: 2100, Max: 5000}}}
	}
	return r
}

// goldenCheck compares got with testdata/bench/NAME.golden (rewritten with
// -update).
func goldenCheck(t *testing.T, name, got string) {
	t.Helper()
	golden := filepath.Join("testdata", "bench", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output:\n%s\nwant (%s):\n%s", got, golden, want)
	}
}

// TestBenchCommands runs the bench commands against canned streams and
// checks the request and the text and --json output against
// testdata/bench/NAME.golden.
func TestBenchCommands(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		req  string
	}{
		{"call", []string{"bench", "call", benchPath.String(), "--size", "64", "--msgs", "20000", "--clients", "16"},
			`POST /v1/bench {"kind":"call","path":"` + benchPath.String() + `","size":64,"msgs":20000,"clients":16,"timeout":"10s"}`},
		{"send defaults", []string{"bench", "send", benchPath.String()},
			`POST /v1/bench {"kind":"send","path":"` + benchPath.String() + `","size":128,"msgs":100000,"clients":1,"timeout":"10s"}`},
		{"pub", []string{"bench", "pub", benchPath.String(), "--size", "1K", "--timeout", "2s"},
			`POST /v1/bench {"kind":"pub","path":"` + benchPath.String() + `","size":1024,"msgs":100000,"clients":1,"timeout":"2s"}`},
		{"serve", []string{"bench", "serve", benchPath.String(), "--reply-size", "0"},
			`POST /v1/bench/serve {"path":"` + benchPath.String() + `","reply_size":0}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDaemon(t)
			kind := tc.args[1]
			lines(d, api.RouteBench,
				api.BenchEvent{Event: "progress", Phase: "run", Total: 20000},
				api.BenchEvent{Event: "progress", Phase: "run", Done: 10000, Total: 20000, Seconds: 0.5},
				api.BenchEvent{Event: "result", Result: benchResult(kind)})
			lines(d, api.RouteBenchServe,
				api.BenchServeEvent{Event: "serving", Path: benchPath, Endpoint: true, Subscribed: true},
				api.BenchServeEvent{Event: "stats", Path: benchPath, Calls: 20000, Sends: 5, Bytes: 1 << 20, Dropped: 2})
			r := bt(t, d.dir, tc.args...)
			if reqs := d.requests(); len(reqs) != 1 || reqs[0] != tc.req {
				t.Fatalf("%+v: requests %q, want %q", r, reqs, tc.req)
			}
			j := bt(t, d.dir, append(tc.args, "--json")...)
			got := fmt.Sprintf("exit %d\n%s-- stderr --\n%s-- json: exit %d --\n%s-- json stderr --\n%s", r.code, r.stdout, r.stderr, j.code, j.stdout, j.stderr)
			goldenCheck(t, strings.ReplaceAll(tc.name, " ", "_"), got)
		})
	}
}

// TestBenchErrors checks the exit code and message of bad command lines and
// failed benches against testdata/bench/errors.golden.
func TestBenchErrors(t *testing.T) {
	P := benchPath.String()
	var got strings.Builder
	for _, tc := range []struct {
		args  []string
		setup func(d *fakeDaemon)
	}{
		{args: []string{"bench", "call", "rel"}},
		{args: []string{"bench", "call", P, "--size", "lots"}},
		{args: []string{"bench", "call", P, "--msgs", "many"}},
		{args: []string{"bench", "call", P, "--timeout", "0s"}},
		{args: []string{"bench", "send"}},
		{args: []string{"bench", "serve", P, "--reply-size", "-1"}},
		{args: []string{"bench", "call", P, "--msgs", "0"}, setup: func(d *fakeDaemon) {
			d.fail(api.RouteBench.Pattern(), api.KindInvalid, "msgs 0: want 1 to 10000000")
		}},
		{args: []string{"bench", "call", P}, setup: func(d *fakeDaemon) {
			d.fail(api.RouteBench.Pattern(), api.KindNotFound, "msg: call "+P+": no endpoint at the path: run `bt bench serve "+P+"` on the node that owns "+P)
		}},
		{args: []string{"bench", "send", P}, setup: func(d *fakeDaemon) {
			lines(d, api.RouteBench, api.BenchEvent{Event: "progress", Total: 10},
				api.BenchEvent{Event: "error", Error: api.Errorf(api.KindUnavailable, "msg: router closed (the daemon is stopping)")})
		}},
		{args: []string{"bench", "call", P, "--msgs", "200"}, setup: func(d *fakeDaemon) {
			r := benchResult(api.BenchCall)
			r.Msgs, r.Count, r.Errors, r.FirstError = 200, 50, 100, "msg: call "+P+": receiver busy"
			lines(d, api.RouteBench, api.BenchEvent{Event: "result", Result: r})
		}},
		{args: []string{"bench", "pub", P}, setup: func(d *fakeDaemon) {
			r := benchResult(api.BenchPub)
			r.Subscribers = nil
			lines(d, api.RouteBench, api.BenchEvent{Event: "result", Result: r})
		}},
		{args: []string{"bench", "serve", P}, setup: func(d *fakeDaemon) {
			lines(d, api.RouteBenchServe, api.BenchServeEvent{Event: "serving", Path: benchOther})
		}},
	} {
		d := newFakeDaemon(t)
		if tc.setup != nil {
			tc.setup(d)
		}
		r := bt(t, d.dir, tc.args...)
		fmt.Fprintf(&got, "$ bt %s\nexit %d\n%s%s", strings.Join(tc.args, " "), r.code, r.stdout, r.stderr)
	}
	goldenCheck(t, "errors", got.String())
}

func TestCommas(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -20000: "-20,000"} {
		if got := commas(n); got != want {
			t.Errorf("commas(%d) = %q, want %q", n, got, want)
		}
	}
}
