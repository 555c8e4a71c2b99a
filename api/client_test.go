package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"
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

func TestNoDaemon(t *testing.T) {
	err := NewClient(t.TempDir()).Do(ctx(t), http.MethodGet, "/v1/status", nil, nil, nil)
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Do without a daemon: %v, want ErrNoDaemon", err)
	}
	err = NewClient(t.TempDir()).Stream(ctx(t), "/v1/listen", struct{}{}, func([]byte) error { return nil })
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Stream without a daemon: %v, want ErrNoDaemon", err)
	}
}

func TestErrorsKeepTheirKind(t *testing.T) {
	dir := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]*Error{"error": Errorf(KindNotFound, "no record for /x")})
	}))
	err := NewClient(dir).Do(ctx(t), http.MethodGet, "/v1/resolve", nil, nil, nil)
	if KindOf(err) != KindNotFound || err.Error() != "no record for /x" {
		t.Fatalf("Do: %v (kind %q)", err, KindOf(err))
	}
	if KindOf(errors.New("plain")) != KindInternal {
		t.Fatal("a non-API error is not internal")
	}
}

func TestDoDecodes(t *testing.T) {
	dir := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req PingRequest
		json.NewDecoder(r.Body).Decode(&req)
		json.NewEncoder(w).Encode(PingResult{Path: req.Path, RTTms: 1.5})
	}))
	var res PingResult
	if err := NewClient(dir).Do(ctx(t), http.MethodPost, "/v1/ping", nil, PingRequest{Path: "/p"}, &res); err != nil {
		t.Fatal(err)
	}
	if res.Path != "/p" || res.RTTms != 1.5 {
		t.Fatalf("decoded %+v", res)
	}
}

func TestStream(t *testing.T) {
	dir := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			json.NewEncoder(w).Encode(Received{Event: "message", To: "/p", Payload: fmt.Append(nil, i)})
			w.(http.Flusher).Flush()
		}
	}))
	var got []string
	err := NewClient(dir).Stream(ctx(t), "/v1/listen", ListenRequest{Path: "/p"}, func(b []byte) error {
		var ev Received
		if err := json.Unmarshal(b, &ev); err != nil {
			return err
		}
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
