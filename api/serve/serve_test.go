package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

var testPath = paths.MustParse("/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/laptop")

// newTestClient serves mux on the API socket of a temporary repo and
// returns a client for it.
func newTestClient(t *testing.T, mux *Mux) *api.Client {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, api.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return api.NewClient(dir)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnary(t *testing.T) {
	mux := New(nil, nil)
	Unary(mux, api.RoutePing, MaxBody, func(_ context.Context, req api.PingRequest) (api.PingResult, error) {
		switch req.Timeout {
		case "deny":
			return api.PingResult{}, api.Errorf(api.KindDenied, "no")
		case "plain":
			return api.PingResult{}, errors.New("boom")
		}
		return api.PingResult{Path: req.Path, RTTms: 2}, nil
	})
	c := newTestClient(t, mux)
	if res, err := c.Ping(testCtx(t), api.PingRequest{Path: testPath}); err != nil || res.Path != testPath {
		t.Fatalf("Ping: %+v, %v", res, err)
	}
	if _, err := c.Ping(testCtx(t), api.PingRequest{Timeout: "deny"}); api.KindOf(err) != api.KindDenied {
		t.Fatalf("denied: %v", err)
	}
	if _, err := c.Ping(testCtx(t), api.PingRequest{Timeout: "plain"}); api.KindOf(err) != api.KindInternal || err.Error() != "boom" {
		t.Fatalf("plain error: %v", err)
	}
}

func TestStreamErrorAfterStart(t *testing.T) {
	mux := New(nil, nil)
	Stream(mux, api.RouteRepoGC, func(_ context.Context, req api.GCRequest, out *Events[api.RepoEvent]) error {
		if req.Grace == "bad" {
			return api.Errorf(api.KindInvalid, "bad grace")
		}
		out.Send(api.RepoEvent{Event: "progress", Scanned: 1})
		return api.Errorf(api.KindUnavailable, "store closed")
	}, func(e *api.Error) api.RepoEvent { return api.RepoEvent{Event: "error", Error: e} })
	c := newTestClient(t, mux)
	var got []string
	errStop := errors.New("stop")
	err := c.RepoGC(testCtx(t), api.GCRequest{}, func(ev api.RepoEvent) error {
		got = append(got, ev.Event)
		if ev.Error != nil {
			if ev.Error.Kind != api.KindUnavailable {
				t.Errorf("error line of kind %s", ev.Error.Kind)
			}
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || strings.Join(got, ",") != "progress,error" {
		t.Fatalf("lines %q, %v", got, err)
	}
	// Before the first line, an error is the answer's status.
	err = c.RepoGC(testCtx(t), api.GCRequest{Grace: "bad"}, func(api.RepoEvent) error { return nil })
	if api.KindOf(err) != api.KindInvalid {
		t.Fatalf("error before the stream: %v", err)
	}
}

func TestDownloadTrailer(t *testing.T) {
	mux := New(nil, nil)
	Download(mux, api.RouteFSRead, func(_ context.Context, req api.FSReadRequest, out *RawWriter) error {
		if req.Path.IsZero() {
			return api.Errorf(api.KindInvalid, "no path")
		}
		io.WriteString(out, "part")
		return api.Errorf(api.KindUnreachable, "host went away")
	})
	c := newTestClient(t, mux)
	var sb strings.Builder
	if err := c.FSRead(testCtx(t), api.FSReadRequest{Path: testPath}, &sb); api.KindOf(err) != api.KindUnreachable || sb.String() != "part" {
		t.Fatalf("FSRead: %q, %v", sb.String(), err)
	}
	sb.Reset()
	if err := c.FSRead(testCtx(t), api.FSReadRequest{}, &sb); api.KindOf(err) != api.KindInvalid || sb.Len() != 0 {
		t.Fatalf("FSRead without a path: %q, %v", sb.String(), err)
	}
}

func TestUploadQuery(t *testing.T) {
	mux := New(nil, nil)
	Upload(mux, api.RouteFSWrite, func(_ context.Context, req api.FSWriteRequest, body io.Reader) (api.FSEntry, error) {
		b, _ := io.ReadAll(body)
		return api.FSEntry{Path: req.Path, Mode: req.Mode, Size: uint64(len(b))}, nil
	})
	c := newTestClient(t, mux)
	e, err := c.FSWrite(testCtx(t), api.FSWriteRequest{Path: testPath, Mode: 0o600}, strings.NewReader("hello"))
	if err != nil || e.Path != testPath || e.Mode != 0o600 || e.Size != 5 {
		t.Fatalf("FSWrite: %+v, %v", e, err)
	}
}
