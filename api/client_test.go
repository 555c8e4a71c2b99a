package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/paths"
)

// serve runs handler on the API socket of a temporary repo and returns the
// repo directory.
func serve(t *testing.T, handler http.Handler) string {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return dir
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

const testRoot = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"

var testPath = paths.MustParse("/" + testRoot + "/laptop")

func TestNoDaemon(t *testing.T) {
	_, err := NewClient(t.TempDir()).Status(ctx(t))
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Status without a daemon: %v, want ErrNoDaemon", err)
	}
	err = NewClient(t.TempDir()).Listen(ctx(t), ListenRequest{}, func(Received) error { return nil })
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Listen without a daemon: %v, want ErrNoDaemon", err)
	}
}

func TestErrorsKeepTheirKind(t *testing.T) {
	dir := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(KindNotFound.Status())
		json.NewEncoder(w).Encode(ErrorBody{Errorf(KindNotFound, "no record for /x")})
	}))
	_, err := NewClient(dir).Resolve(ctx(t), testPath)
	if KindOf(err) != KindNotFound || err.Error() != "no record for /x" {
		t.Fatalf("Resolve: %v (kind %q)", err, KindOf(err))
	}
	if KindOf(errors.New("plain")) != KindInternal {
		t.Fatal("a non-API error is not internal")
	}
}

func TestCallDecodes(t *testing.T) {
	dir := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != PathPing {
			t.Errorf("request %s %s", r.Method, r.URL.Path)
		}
		var req PingRequest
		json.NewDecoder(r.Body).Decode(&req)
		json.NewEncoder(w).Encode(PingResult{Path: req.Path, RTTms: 1.5})
	}))
	res, err := NewClient(dir).Ping(ctx(t), PingRequest{Path: testPath})
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != testPath || res.RTTms != 1.5 {
		t.Fatalf("decoded %+v", res)
	}
}

// TestQuery checks that GET requests and uploads travel in the query and
// decode back to the same request.
func TestQuery(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  QueryRequest
		want string
		back QuerySetter
	}{
		{"resolve", ResolveRequest{Path: testPath}, "path=%2F" + testRoot + "%2Flaptop", &ResolveRequest{}},
		{"ls", FSListRequest{Path: testPath, At: 7}, "at=7&path=%2F" + testRoot + "%2Flaptop", &FSListRequest{}},
		{"log", FSLogRequest{Path: testPath, Limit: 3}, "limit=3&path=%2F" + testRoot + "%2Flaptop", &FSLogRequest{}},
		{"write", FSWriteRequest{Path: testPath, Mode: 0o600, Parents: true}, "mode=600&parents=1&path=%2F" + testRoot + "%2Flaptop", &FSWriteRequest{}},
		{"block put", BlockPutRequest{Replicas: 2}, "replicas=2", &BlockPutRequest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.req.Query()
			if got := q.Encode(); got != tc.want {
				t.Fatalf("query %s, want %s", got, tc.want)
			}
			if err := tc.back.SetQuery(q); err != nil {
				t.Fatal(err)
			}
			if got := reflect.ValueOf(tc.back).Elem().Interface(); got != tc.req {
				t.Fatalf("round trip: %+v, want %+v", got, tc.req)
			}
		})
	}
	var r FSListRequest
	if err := r.SetQuery(map[string][]string{"path": {testPath.String()}, "at": {"0"}}); KindOf(err) != KindInvalid {
		t.Fatalf("at=0: %v", err)
	}
	if err := r.SetQuery(map[string][]string{}); KindOf(err) != KindInvalid {
		t.Fatalf("no path: %v", err)
	}
}

func TestStream(t *testing.T) {
	dir := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			json.NewEncoder(w).Encode(Received{Event: "message", To: testPath, Payload: fmt.Append(nil, i)})
			w.(http.Flusher).Flush()
		}
	}))
	var got []string
	err := NewClient(dir).Listen(ctx(t), ListenRequest{Path: testPath}, func(ev Received) error {
		got = append(got, string(ev.Payload))
		return nil
	})
	if fmt.Sprint(got) != "[0 1 2]" {
		t.Fatalf("got lines %q", got)
	}
	// A stream the daemon ends is an error: listeners run until stopped.
	if err == nil {
		t.Fatal("a stream that ended reported no error")
	}
}

func TestDownloadTrailer(t *testing.T) {
	dir := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", TrailerError)
		w.Write([]byte("part"))
		b, _ := json.Marshal(Errorf(KindUnreachable, "host went away"))
		w.Header().Set(TrailerError, string(b))
	}))
	var sb strings.Builder
	err := NewClient(dir).FSRead(ctx(t), FSReadRequest{Path: testPath}, &sb)
	if KindOf(err) != KindUnreachable || sb.String() != "part" {
		t.Fatalf("FSRead: %q, %v", sb.String(), err)
	}
}

// TestErrorTable checks the error table: every kind once, and the exit
// codes it uses are listed.
func TestErrorTable(t *testing.T) {
	seen := map[Kind]bool{}
	codes := map[ExitCode]bool{}
	for _, c := range ExitCodes {
		codes[c.Code] = true
	}
	for _, k := range Kinds {
		if seen[k.Kind] {
			t.Errorf("kind %s twice", k.Kind)
		}
		seen[k.Kind] = true
		if !codes[k.Exit] || !codes[k.FileExit] {
			t.Errorf("kind %s: exit codes %d/%d not in ExitCodes", k.Kind, k.Exit, k.FileExit)
		}
		if k.Kind.Status() != k.Status || k.Kind.Exit() != k.Exit {
			t.Errorf("kind %s: lookups disagree with the table", k.Kind)
		}
	}
	if Kind("bogus").Status() != http.StatusInternalServerError || Kind("bogus").Exit() != ExitError {
		t.Error("an unknown kind is not internal")
	}
	if KindExists.Exit() != ExitCapable {
		t.Error("a name in use does not exit 5 (docs/cli.md)")
	}
}

// TestRoutes checks the route table: unique method and path, GET requests
// travel in the query.
func TestRoutes(t *testing.T) {
	seen := map[string]bool{}
	qr := reflect.TypeFor[QueryRequest]()
	for _, r := range Routes {
		if seen[r.Path] {
			t.Errorf("path %s twice", r.Path)
		}
		seen[r.Path] = true
		if (r.Method == http.MethodGet || r.Shape == Upload) && r.Request != reflect.TypeFor[None]() && !r.Request.Implements(qr) {
			t.Errorf("%s %s: request %s does not travel in the query", r.Method, r.Path, r.Request)
		}
	}
}
