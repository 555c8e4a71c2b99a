package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestMain runs the tests in UTC: commands such as log print local times,
// and the golden files hold them. time.Local is set here, before any
// goroutine of a test can read it.
func TestMain(m *testing.M) {
	time.Local = time.UTC
	os.Exit(m.Run())
}

// TestUnaryCommands runs each one-call command against canned answers and
// checks its request, and its text and --json output byte for byte against
// testdata/unary/NAME.golden (go test -run TestUnaryCommands -update
// rewrites them).
func TestUnaryCommands(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	other := paths.MustParse("/" + testRoot + "/laptop/other.txt")
	for _, tc := range []struct {
		name string
		args []string
		req  string // the request made
	}{
		{name: "log", args: []string{"log", testFile.String()},
			req: "GET /v1/fs/log?limit=100&path=%2F" + testRoot + "%2Flaptop%2Fnotes.txt",
		},
		{name: "mkdir", args: []string{"mkdir", testFile.String()},
			req: `POST /v1/fs/mkdir {"path":"` + testFile.String() + `"}`},
		{name: "rm -r", args: []string{"rm", "-r", testFile.String()},
			req: `POST /v1/fs/rm {"path":"` + testFile.String() + `","recursive":true}`},
		{name: "mv", args: []string{"mv", testFile.String(), other.String()},
			req: `POST /v1/fs/mv {"src":"` + testFile.String() + `","dst":"` + other.String() + `"}`},
		{name: "grant write", args: []string{"grant", "write", testRoot, testFile.String()},
			req: `POST /v1/fs/grant {"path":"` + testFile.String() + `","principal":"` + testRoot + `","right":"write"}`},
		{name: "revoke", args: []string{"revoke", "read", testRoot, testFile.String()},
			req: `POST /v1/fs/revoke {"path":"` + testFile.String() + `","principal":"` + testRoot + `","right":"read"}`},
		{name: "mount", args: []string{"mount", "/mnt/bt"}, req: `POST /v1/fs/mount {"dir":"/mnt/bt"}`},
		{name: "unmount", args: []string{"unmount", "/mnt/bt"}, req: `POST /v1/fs/unmount {"dir":"/mnt/bt"}`},
		{name: "resolve", args: []string{"resolve", testNode.String()},
			req: "GET /v1/resolve?path=%2F" + testRoot + "%2Flaptop"},
		{name: "pub", args: []string{"pub", testNode.String() + "/news", "hi"},
			req: `POST /v1/publish {"topic":"` + testNode.String() + `/news","payload":"aGk="}`},
		{name: "repo stat", args: []string{"repo", "stat"}, req: "GET /v1/repo/stat"},
		{name: "actors", args: []string{"actors"}, req: "GET /v1/actors"},
		{name: "stop", args: []string{"stop", "echo", "--on", testNode.String()},
			req: `POST /v1/wasm/stop {"name":"echo","node":"` + testNode.String() + `"}`},
		{name: "status", args: []string{"status"}, req: "GET /v1/status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDaemon(t)
			answer(d, api.RouteFSLog, []api.FSLogEntry{{Version: 7, Time: at, Writer: testNode, Op: "write"}})
			answer(d, api.RouteFSMkdir, api.FSEntry{Path: testFile, Name: "notes.txt", Kind: "dir", Mode: 0o755, Version: 4})
			answer(d, api.RouteFSRemove, api.FSRemoveResult{Removed: 3})
			answer(d, api.RouteFSMove, api.FSEntry{Path: other, Name: "other.txt", Kind: "file", Mode: 0o644, Size: 12, Version: 5})
			answer(d, api.RouteFSGrant, api.FSGrantResult{Path: testFile, Principal: testRoot, Right: "write", Writecap: "WC"})
			answer(d, api.RouteFSRevoke, api.FSGrantResult{Path: testFile, Principal: testRoot, Right: "read"})
			answer(d, api.RouteFSMount, api.FSMount{Dir: "/mnt/bt", Root: testRoot})
			answer(d, api.RouteFSUnmount, api.FSMount{Dir: "/mnt/bt", Root: testRoot})
			answer(d, api.RouteResolve, api.Resolution{Path: testNode, PeerID: testRoot, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Expiry: at, FromCache: true})
			answer(d, api.RoutePublish, api.None{})
			answer(d, api.RouteRepoStat, api.RepoStat{Dir: "/var/bt/blocks", Blocks: 10, Bytes: 3 << 20, Pins: 2, PinnedBlocks: 4, Quota: 8 << 20})
			answer(d, api.RouteActors, []api.Actor{{Path: testNode, Kind: "service", State: "running", Protocol: "kv", ProtocolState: "open", MailboxDepth: 1, MailboxCap: 64}})
			answer(d, api.RouteWasmStop, api.WasmStopResult{Name: "echo", Removed: testFile, Stopped: true})
			answer(d, api.RouteStatus, api.Status{Path: testNode, PeerID: testRoot, Custody: api.Custody{Kind: "software", Algorithm: "ed25519"}, Peers: 2, Uptime: "1m0s", RecordExpiry: at, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}})
			r := bt(t, d.dir, tc.args...)
			if reqs := d.requests(); r.code != 0 || len(reqs) != 1 || reqs[0] != tc.req {
				t.Fatalf("%+v: requests %q, want %q", r, reqs, tc.req)
			}
			got := r.stdout + "-- stderr --\n" + r.stderr
			if tc.name != "pub" {
				j := bt(t, d.dir, append(tc.args, "--json")...)
				if j.code != 0 {
					t.Fatalf("--json: %+v", j)
				}
				got += "-- json --\n" + j.stdout + "-- json stderr --\n" + j.stderr
			}
			golden := filepath.Join("testdata", "unary", strings.ReplaceAll(tc.name, " ", "_")+".golden")
			if *update {
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
		})
	}
}

// TestUnaryErrors checks the exit code and message of bad command lines
// and daemon errors of the one-call commands against
// testdata/unary/errors.golden.
func TestUnaryErrors(t *testing.T) {
	d := newFakeDaemon(t)
	d.fail(api.RouteFSRemove.Pattern(), api.KindNotFound, "no such file")
	d.fail(api.RouteWasmStop.Pattern(), api.KindNotFound, "no such module")
	d.fail(api.RoutePublish.Pattern(), api.KindDenied, "not covered")
	var got strings.Builder
	for _, args := range [][]string{
		{"log", "-n", "0", testFile.String()},
		{"log", "rel"},
		{"mkdir", "rel"},
		{"rm", "rel"},
		{"rm", testFile.String()},
		{"mv", testFile.String(), "rel"},
		{"mv", "rel", testFile.String()},
		{"grant", "read", testRoot, "rel"},
		{"grant", "read", testRoot, testFile.String(), "--expires", "-1s"},
		{"revoke", "admin", testRoot, testFile.String()},
		{"revoke", "read", testRoot, "rel"},
		{"resolve", "rel"},
		{"send", "rel", "hi"},
		{"call", testNode.String(), "hi", "--timeout", "0"},
		{"call", "rel", "hi"},
		{"pub", "rel", "hi"},
		{"pub", testNode.String(), "hi"},
		{"stop", "echo", "--on", "rel"},
		{"stop", "echo"},
		{"status", "extra"},
	} {
		r := bt(t, d.dir, args...)
		fmt.Fprintf(&got, "$ bt %s\nexit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	golden := filepath.Join("testdata", "unary", "errors.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Errorf("got:\n%s\nwant (%s):\n%s", got.String(), golden, want)
	}
}
