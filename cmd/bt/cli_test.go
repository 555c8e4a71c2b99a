package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

const testRoot = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"

var (
	testNode = paths.MustParse("/" + testRoot + "/laptop")
	testFile = paths.MustParse("/" + testRoot + "/laptop/notes.txt")
)

// fakeDaemon answers the API on the socket of a temporary repo with
// canned answers, and records the requests it got.
type fakeDaemon struct {
	dir string
	mux *http.ServeMux

	mu sync.Mutex
	// got are the requests, "METHOD PATH?QUERY BODY".
	got []string
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{dir: t.TempDir(), mux: http.NewServeMux()}
	ln, err := net.Listen("unix", filepath.Join(d.dir, api.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		body.ReadFrom(r.Body)
		line := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			line += "?" + r.URL.RawQuery
		}
		d.mu.Lock()
		d.got = append(d.got, strings.TrimSpace(line+" "+body.String()))
		d.mu.Unlock()
		d.mux.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return d
}

// answer makes route r answer v as JSON.
func answer[Req, Resp any](d *fakeDaemon, r api.Route[Req, Resp], v Resp) {
	d.mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(v)
	})
}

// lines makes the stream route r answer the lines vs and end.
func lines[Req, Ev any](d *fakeDaemon, r api.Route[Req, Ev], vs ...Ev) {
	d.mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, _ *http.Request) {
		for _, v := range vs {
			json.NewEncoder(w).Encode(v)
		}
	})
}

// fail makes route pattern answer an API error of kind k.
func (d *fakeDaemon) fail(pattern string, k api.Kind, msg string) {
	d.mux.HandleFunc(pattern, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(k.Status())
		json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Errorf(k, "%s", msg)})
	})
}

func (d *fakeDaemon) requests() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.got...)
}

// result is what one run of the CLI did.
type result struct {
	code           int
	stdout, stderr string
}

// bt runs the CLI in process against the repo dir.
func bt(t *testing.T, dir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"--repo", dir}, args...), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func TestStatusText(t *testing.T) {
	d := newFakeDaemon(t)
	answer(d, api.RouteStatus, api.Status{Path: testNode, PeerID: testRoot, NodeID: testRoot, Uptime: "1m0s",
		Custody: api.Custody{Kind: "software", Algorithm: "ed25519"}, Peers: 2, Addrs: []string{"/ip4/127.0.0.1/tcp/4737"}})
	r := bt(t, d.dir, "status")
	if r.code != 0 {
		t.Fatalf("status: %+v", r)
	}
	for _, want := range []string{"path:          " + testNode.String(), "custody:       software (ed25519)",
		"connected:     2 peers", "address:       /ip4/127.0.0.1/tcp/4737"} {
		if !strings.Contains(r.stdout, want+"\n") {
			t.Errorf("status printed\n%s\nwant a line %q", r.stdout, want)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	d := newFakeDaemon(t)
	st := api.Status{Path: testNode, PeerID: testRoot, NodeID: testRoot, Addrs: []string{}, Started: time.Unix(1e9, 0).UTC()}
	answer(d, api.RouteStatus, st)
	r := bt(t, d.dir, "status", "--json")
	var got api.Status
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
		t.Fatalf("status --json: %+v: %v", r, err)
	}
	if got.Path != st.Path || got.NodeID != st.NodeID || !got.Started.Equal(st.Started) {
		t.Fatalf("status --json decoded %+v, want %+v", got, st)
	}
	if reqs := d.requests(); len(reqs) != 1 || reqs[0] != "GET /v1/status" {
		t.Fatalf("requests %q", reqs)
	}
}

func TestPeers(t *testing.T) {
	d := newFakeDaemon(t)
	answer(d, api.RoutePeers, []api.Peer{
		{PeerID: testRoot, Path: testNode, Verified: true, Addrs: []string{"/a", "/b"}},
		{PeerID: testRoot, Unverified: "no proof"},
	})
	r := bt(t, d.dir, "peers")
	want := testRoot + "  " + testNode.String() + "  /a,/b\n" + testRoot + "  (unverified)  \n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("peers: %+v\nwant %q", r, want)
	}
}

// TestArguments checks the parsing of arguments: bad ones exit 2 without
// a request, good ones become the typed request.
func TestArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // the request made; "" for none
	}{
		{"resolve bad path", []string{"resolve", "not-a-path"}, exitUsage, ""},
		{"resolve", []string{"resolve", testNode.String()}, exitOK, "GET /v1/resolve?path=%2F" + testRoot + "%2Flaptop"},
		{"ping -n 0", []string{"ping", "-n", "0", testNode.String()}, exitUsage, ""},
		{"ls relative", []string{"ls", "relative/path"}, exitUsage, ""},
		{"ls --at", []string{"ls", "--at", "3", testNode.String()}, exitOK, "GET /v1/fs/ls?at=3&path=%2F" + testRoot + "%2Flaptop"},
		{"log -n", []string{"log", "-n", "5", testFile.String()}, exitOK, "GET /v1/fs/log?limit=5&path=%2F" + testRoot + "%2Flaptop%2Fnotes.txt"},
		{"mkdir -p", []string{"mkdir", "-p", testFile.String()}, exitOK, `POST /v1/fs/mkdir {"path":"` + testFile.String() + `","parents":true}`},
		{"grant bad right", []string{"grant", "admin", testRoot, testNode.String()}, exitUsage, ""},
		{"send", []string{"send", testNode.String() + "/inbox", "hi"}, exitOK,
			`POST /v1/send {"path":"` + testNode.String() + `/inbox","payload":"aGk=","timeout":"10s"}`},
		{"pub --reader bad", []string{"pub", testNode.String(), "x", "--reader", "nope"}, exitUsage, ""},
		{"run --memory bad", []string{"run", testFile.String(), "--memory", "lots"}, exitUsage, ""},
		{"run --read bad", []string{"run", testFile.String(), "--read", "nope"}, exitUsage, ""},
		{"unknown flag", []string{"status", "--frobnicate"}, exitUsage, ""},
		{"unknown command", []string{"frobnicate"}, exitUsage, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDaemon(t)
			answer(d, api.RouteResolve, api.Resolution{Path: testNode, PeerID: testRoot})
			answer(d, api.RouteFSList, api.FSListing{Entry: api.FSEntry{Path: testNode, Kind: "dir"}})
			answer(d, api.RouteFSLog, []api.FSLogEntry{})
			answer(d, api.RouteFSMkdir, api.FSEntry{Path: testFile, Kind: "dir"})
			answer(d, api.RouteSend, api.CallResult{})
			r := bt(t, d.dir, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d: %+v", r.code, tc.code, r)
			}
			reqs := d.requests()
			switch {
			case tc.want == "" && len(reqs) > 0:
				t.Fatalf("requests %q, want none", reqs)
			case tc.want != "" && (len(reqs) != 1 || reqs[0] != tc.want):
				t.Fatalf("requests %q, want %q", reqs, tc.want)
			}
		})
	}
}

// TestExitCodes checks that the daemon's error kinds give the exit codes of
// api.Kinds, and file commands their FileExit.
func TestExitCodes(t *testing.T) {
	for _, k := range api.Kinds {
		t.Run(string(k.Kind), func(t *testing.T) {
			d := newFakeDaemon(t)
			d.fail(api.RouteResolve.Pattern(), k.Kind, "resolve failed")
			d.fail(api.RouteFSMkdir.Pattern(), k.Kind, "mkdir failed")
			r := bt(t, d.dir, "resolve", testNode.String())
			if r.code != int(k.Exit) || !strings.Contains(r.stderr, "bt: resolve failed") {
				t.Errorf("resolve: %+v, want exit %d", r, k.Exit)
			}
			r = bt(t, d.dir, "mkdir", testFile.String())
			if r.code != int(k.FileExit) || !strings.Contains(r.stderr, "bt: mkdir failed") {
				t.Errorf("mkdir: %+v, want exit %d", r, k.FileExit)
			}
		})
	}
	if r := bt(t, t.TempDir(), "status"); r.code != exitDaemon || !strings.Contains(r.stderr, "no bt daemon") {
		t.Errorf("no daemon: %+v", r)
	}
}

func TestLsLong(t *testing.T) {
	d := newFakeDaemon(t)
	mtime := time.Date(2026, 1, 2, 3, 4, 0, 0, time.Local)
	answer(d, api.RouteFSList, api.FSListing{Entry: api.FSEntry{Path: testNode, Kind: "dir"}, Entries: []api.FSEntry{
		{Path: testFile, Name: "notes.txt", Kind: "file", Mode: 0o644, Size: 12, Mtime: mtime, Version: 3},
		{Name: "docs", Kind: "dir", Mode: 0o755, Mtime: mtime, Version: 2},
	}})
	r := bt(t, d.dir, "ls", "-l", testNode.String())
	want := "-rw-r--r--         12  2026-01-02 03:04  v3      notes.txt\n" +
		"drwxr-xr-x          0  2026-01-02 03:04  v2      docs/\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("ls -l: %+v\nwant\n%s", r, want)
	}
	if r := bt(t, d.dir, "ls", testNode.String()); r.stdout != "notes.txt\ndocs/\n" {
		t.Fatalf("ls: %+v", r)
	}
	r = bt(t, d.dir, "ls", "--json", testNode.String())
	var l api.FSListing
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || len(l.Entries) != 2 || l.Entries[0].Path != testFile {
		t.Fatalf("ls --json: %+v: %v", r, err)
	}
}

func TestRepoGCStream(t *testing.T) {
	d := newFakeDaemon(t)
	lines(d, api.RouteRepoGC,
		api.RepoEvent{Event: "progress", Scanned: 5},
		api.RepoEvent{Event: "done", Scanned: 10, Deleted: 2, Freed: 2048, Kept: 1})
	r := bt(t, d.dir, "repo", "gc")
	if want := "scanned 10 blocks, deleted 2, freed 2.0 KiB, kept 1 unpinned blocks younger than the grace period\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("repo gc: %+v", r)
	}
	r = bt(t, d.dir, "repo", "gc", "--json")
	want := `{"event":"progress","scanned":5}` + "\n" + `{"event":"done","scanned":10,"deleted":2,"freed":2048,"kept":1}` + "\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("repo gc --json: %+v\nwant %s", r, want)
	}
	if r := bt(t, d.dir, "repo", "gc", "--grace", "soon"); r.code != exitUsage {
		t.Fatalf("repo gc --grace soon: %+v", r)
	}
}

func TestRepoVerifyError(t *testing.T) {
	d := newFakeDaemon(t)
	lines(d, api.RouteRepoVerify, api.RepoEvent{Event: "error", Error: api.Errorf(api.KindUnavailable, "store closed")})
	if r := bt(t, d.dir, "repo", "verify"); r.code != exitError || !strings.Contains(r.stderr, "store closed") {
		t.Fatalf("repo verify: %+v", r)
	}
}

func TestSub(t *testing.T) {
	d := newFakeDaemon(t)
	pt := paths.MustParsePattern("/" + testRoot + "/news/...")
	topic := paths.MustParsePattern("/" + testRoot + "/news/today")
	lines(d, api.RouteSubscribe,
		api.Published{Event: "subscribed", Topic: pt},
		api.Published{Event: "message", Topic: topic, From: testNode, Seq: 1, Payload: []byte("hello"), Readable: true},
		api.Published{Event: "message", Topic: topic, From: testNode, Seq: 2, Confidential: true})
	r := bt(t, d.dir, "sub", pt.String())
	want := topic.String() + " " + testNode.String() + " hello\n" + topic.String() + " " + testNode.String() + " (confidential: no readcap on this node)\n"
	if r.stdout != want || !strings.Contains(r.stderr, "subscribed to "+pt.String()) {
		t.Fatalf("sub: %+v", r)
	}
	// The daemon ended the stream: an error.
	if r.code != exitError {
		t.Fatalf("sub exit %d", r.code)
	}
}

func TestCatAndCall(t *testing.T) {
	d := newFakeDaemon(t)
	d.mux.HandleFunc(api.RouteFSRead.Pattern(), func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("file content\n")) })
	answer(d, api.RouteSend, api.CallResult{Payload: []byte("pong")})
	if r := bt(t, d.dir, "cat", testFile.String()); r.code != 0 || r.stdout != "file content\n" {
		t.Fatalf("cat: %+v", r)
	}
	if r := bt(t, d.dir, "call", testNode.String()+"/echo", "ping"); r.code != 0 || r.stdout != "pong" {
		t.Fatalf("call: %+v", r)
	}
	if r := bt(t, d.dir, "call", testNode.String()+"/echo", "ping", "--json"); r.code != 0 || r.stdout != "{\n  \"payload\": \"cG9uZw==\"\n}\n" {
		t.Fatalf("call --json: %+v", r)
	}
}

func TestPs(t *testing.T) {
	d := newFakeDaemon(t)
	answer(d, api.RouteWasmPs, []api.WasmInstance{{Name: "echo", State: "running", Module: testFile, Path: paths.MustParse(testNode.String() + "/echo")}})
	r := bt(t, d.dir, "ps")
	if r.code != 0 || !strings.Contains(r.stdout, "NAME") || !strings.Contains(r.stdout, "echo") || !strings.Contains(r.stdout, testFile.String()) {
		t.Fatalf("ps: %+v", r)
	}
	answer(d, api.RouteActors, []api.Actor{})
	if r := bt(t, d.dir, "actors", "--json"); r.code != 0 || r.stdout != "[]\n" {
		t.Fatalf("actors --json: %+v", r)
	}
}
