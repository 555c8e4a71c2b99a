package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/api"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/blocks/leveldb"
	"blocktree.dev/bt/blocks/replica"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/invite"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
	"blocktree.dev/bt/repo"
)

// testServer is an API server over real components, which closeAll
// closes (as at shutdown) while the server keeps answering.
type testServer struct {
	url      string
	closeAll func()
	stopAPI  func() // ends the streams, as the daemon does first when it stops
	root     paths.ID
	node     paths.Path
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	ctx := context.Background()
	d := nettest.NewDomain(t)
	key, p, w := d.Member(t, "n0")
	id, err := p2p.NewIdentity(ctx, key, w, p, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	node, err := p2p.New(ctx, id, p2p.Config{Listen: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Loopback: true, RecordTTL: time.Minute, Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	verifier := caps.NewVerifier()
	router, err := msg.New(node, msg.Config{Verifier: verifier, Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := pubsub.New(ctx, node, id, pubsub.Config{Verifier: verifier, Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := actors.New(p, router)
	if err != nil {
		t.Fatal(err)
	}
	store, err := leveldb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	xch, err := exchange.New(node, store, exchange.Config{Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	nodeID := nettest.PrincipalID(t, key.PublicKey())
	// The file system's and the Wasm runtime's handlers are there too, as
	// far as they answer before reaching their (absent) components.
	h := New(Config{
		Repo: &repo.Repo{Dir: t.TempDir(), Config: repo.Config{Name: "n0", Root: p.Root(), Node: p, NodeID: nodeID}},
		Node: node, Router: router, PubSub: ps, MaxMessage: msg.DefaultMaxMessage, Invites: invite.NewRegistry(p.Root(), nil),
		Started: time.Now(), Actors: rt, Store: store, StoreDir: t.TempDir(),
		Replica: replica.New(store, xch, func() []replica.Member { return nil }, replica.Config{Policy: replica.Policy{Default: 1}}),
		GCGrace: time.Hour, Verifier: verifier,
	})
	// Streams end when apiCtx does, as in Run.
	apiCtx, stopAPI := context.WithCancel(context.Background())
	hs := httptest.NewUnstartedServer(h)
	hs.Config.BaseContext = func(net.Listener) context.Context { return apiCtx }
	// A handler that reaches an absent component panics, which net/http
	// logs and the client sees as a dropped connection.
	hs.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	hs.Start()
	t.Cleanup(hs.Close)
	t.Cleanup(stopAPI)
	ts := &testServer{url: hs.URL, root: p.Root(), node: p, stopAPI: stopAPI}
	ts.closeAll = func() {
		rt.Close()
		ps.Close()
		router.Close()
		xch.Close()
		store.Close()
		node.Close()
	}
	t.Cleanup(ts.closeAll)
	return ts
}

// call sends one request and returns the API error the client sees: the
// error body of a failed request, or the error line of a stream that
// started; nil for a success.
func (ts *testServer) call(t *testing.T, method, path, body string) *api.Error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// A handler that panics makes net/http drop the connection.
		t.Fatalf("%s %s: %v (did the handler panic?)", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb api.ErrorBody
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || eb.Error == nil {
			t.Fatalf("%s %s: status %s without an error object (%v)", method, path, resp.Status, err)
		}
		if resp.StatusCode != eb.Error.Kind.Status() {
			t.Errorf("%s %s: status %d for kind %s, want %d", method, path, resp.StatusCode, eb.Error.Kind, eb.Error.Kind.Status())
		}
		return eb.Error
	}
	if resp.Header.Get("Content-Type") == "application/x-ndjson" {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var ev api.RepoEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Error != nil {
				return ev.Error
			}
		}
		return nil
	}
	io.Copy(io.Discard, resp.Body)
	if t := resp.Trailer.Get(api.TrailerError); t != "" {
		var e api.Error
		json.Unmarshal([]byte(t), &e)
		return &e
	}
	return nil
}

type apiCase struct {
	method, path, body string
	want               api.Kind // "" for success
}

func (ts *testServer) run(t *testing.T, cases []apiCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path+" "+tc.body, func(t *testing.T) {
			e := ts.call(t, tc.method, tc.path, tc.body)
			switch {
			case tc.want == "" && e != nil:
				t.Fatalf("error %s: %s, want success", e.Kind, e.Message)
			case tc.want != "" && e == nil:
				t.Fatalf("success, want %s", tc.want)
			case tc.want != "" && e.Kind != tc.want:
				t.Fatalf("error %s: %s, want %s", e.Kind, e.Message, tc.want)
			case e != nil && e.Message == "":
				t.Fatalf("error %s without a message", e.Kind)
			}
		})
	}
}

// TestBadRequests drives the error paths of every handler that checks its
// request: each answers invalid (or the kind named), never a panic.
func TestBadRequests(t *testing.T) {
	ts := newTestServer(t)
	P := ts.node.String()
	q := url.QueryEscape(P)
	const inv = api.KindInvalid
	ts.run(t, []apiCase{
		{"GET", "/v1/nope", "", inv},
		{"GET", "/v1/resolve", "", inv},
		{"GET", "/v1/resolve?path=relative", "", inv},
		{"POST", "/v1/ping", `{}`, inv},
		{"POST", "/v1/ping", `{"path":"relative"}`, inv},
		{"POST", "/v1/ping", `{"path":"` + P + `","timeout":"-1s"}`, inv},
		{"POST", "/v1/ping", `{"path":"` + P + `","bogus":1}`, inv},
		{"POST", "/v1/ping", `{"path":"` + P + `"} {}`, inv},
		{"POST", "/v1/ping", `not json`, inv},
		{"POST", "/v1/invites", `{"name":"a/b"}`, inv},
		{"POST", "/v1/invites", `{"name":"n0"}`, api.KindExists},
		{"POST", "/v1/invites", `{"name":"n1","delegate":"AAAA"}`, inv},
		{"POST", "/v1/send", `{}`, inv},
		{"POST", "/v1/send", `{"path":"` + P + `/x","timeout":"soon"}`, inv},
		{"POST", "/v1/listen", `{}`, inv},
		{"POST", "/v1/listen", `{"path":"` + P + `","echo":"yes"}`, inv},
		{"POST", "/v1/publish", `{}`, inv},
		{"POST", "/v1/publish", `{"topic":"` + P + `","readers":[""]}`, inv},
		{"POST", "/v1/subscribe", `{}`, inv},
		{"POST", "/v1/subscribe", `{"pattern":"nope"}`, inv},
		{"POST", "/v1/blocks?replicas=0", "data", inv},
		{"POST", "/v1/blocks?replicas=x", "data", inv},
		{"POST", "/v1/blocks?replicas=1000", "data", inv},
		{"POST", "/v1/blocks?path=relative", "data", inv},
		{"POST", "/v1/blocks/get", `{"root":"x"}`, inv},
		{"POST", "/v1/blocks/get", `{"root":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","key":"short"}`, inv},
		{"POST", "/v1/repo/gc", `{"grace":"soon"}`, inv},
		{"POST", "/v1/repo/verify", `{"repair":true} []`, inv},
		{"GET", "/v1/fs/ls", "", inv},
		{"GET", "/v1/fs/ls?path=" + q + "&at=0", "", inv},
		{"GET", "/v1/fs/log?path=" + q + "&limit=0", "", inv},
		{"GET", "/v1/fs/log?path=" + q + "&limit=10000000", "", inv},
		{"POST", "/v1/fs/mkdir", `{}`, inv},
		{"POST", "/v1/fs/rm", `{"recursive":true}`, inv},
		{"POST", "/v1/fs/mv", `{"src":"` + P + `"}`, inv},
		{"POST", "/v1/fs/write", "data", inv},
		{"POST", "/v1/fs/write?path=" + q + "&mode=9z", "data", inv},
		{"POST", "/v1/fs/read", `{}`, inv},
		{"POST", "/v1/fs/grant", `{"path":"` + P + `","principal":"` + string(ts.root) + `","right":"admin"}`, inv},
		{"POST", "/v1/fs/revoke", `{"path":"` + P + `","principal":"x","right":"read"}`, inv},
		{"POST", "/v1/fs/host", `{}`, inv},
		{"POST", "/v1/fs/host", `{"path":"` + P + `","writecap":"!!"}`, inv},
		{"POST", "/v1/fs/mount", `{"dir":"relative"}`, inv},
		{"POST", "/v1/fs/mount", `{"dir":"/nonexistent/bt-test"}`, inv},
		{"POST", "/v1/fs/unmount", `{"dir":1}`, inv},
		{"POST", "/v1/wasm/run", `{}`, inv},
		{"POST", "/v1/wasm/run", `{"module":"` + P + `/m.wasm","name":".hidden"}`, inv},
		{"POST", "/v1/wasm/run", `{"module":"` + P + `/m.wasm","restart":"sometimes"}`, inv},
		{"POST", "/v1/wasm/stop", `{}`, inv},
		{"POST", "/v1/wasm/logs", `{"bogus":1}`, inv},
	})
}

// TestEveryRoute checks that New registers every route of api.Routes:
// a request for it reaches its handler, not the "no endpoint" answer.
func TestEveryRoute(t *testing.T) {
	ts := newTestServer(t)
	for _, r := range api.Routes {
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			body := "not json"
			if r.Method == http.MethodGet || r.Shape == api.Upload {
				body = ""
			}
			req, err := http.NewRequest(r.Method, ts.url+r.Path+"?path=relative", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return // the handler ran, and panicked on an absent component
			}
			defer resp.Body.Close()
			var eb api.ErrorBody
			if json.NewDecoder(resp.Body).Decode(&eb) == nil && eb.Error != nil && strings.HasPrefix(eb.Error.Message, "no endpoint") {
				t.Errorf("not registered: %s", eb.Error.Message)
			}
		})
	}
}

// TestShutdown closes every component, as the daemon does when it stops,
// and drives the handlers that use them: each answers with an API error
// (unavailable where the component says it is closed), never a panic.
func TestShutdown(t *testing.T) {
	ts := newTestServer(t)
	ts.closeAll()
	P := ts.node.String()
	other := "/" + string(ts.root) + "/elsewhere"
	const gone = api.KindUnavailable
	ts.run(t, []apiCase{
		{"GET", "/v1/status", "", ""},
		{"GET", "/v1/peers", "", ""},
		{"GET", "/v1/actors", "", ""},
		{"POST", "/v1/subscribe", `{"pattern":"` + P + `/..."}`, gone},
		{"POST", "/v1/publish", `{"topic":"` + P + `/news","payload":"aGk="}`, gone},
		{"POST", "/v1/send", `{"path":"` + P + `/inbox","payload":"aGk=","timeout":"1s"}`, gone},
		{"POST", "/v1/send", `{"path":"` + P + `/inbox","payload":"aGk=","call":true,"timeout":"1s"}`, gone},
		{"GET", "/v1/repo/stat", "", gone},
		{"POST", "/v1/repo/gc", `{}`, gone},
		{"POST", "/v1/repo/verify", `{}`, gone},
		{"POST", "/v1/blocks", "some data", gone},
	})
	// These reach the closed p2p node; whatever it answers, the client
	// gets an API error, not a broken connection.
	for _, tc := range []apiCase{
		{"GET", "/v1/resolve?path=" + url.QueryEscape(other), "", ""},
		{"POST", "/v1/ping", `{"path":"` + other + `","timeout":"1s"}`, ""},
		{"POST", "/v1/blocks/get", `{"root":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","timeout":"1s"}`, ""},
	} {
		if e := ts.call(t, tc.method, tc.path, tc.body); e == nil || !slices.ContainsFunc(api.Kinds, func(k api.KindInfo) bool { return k.Kind == e.Kind }) {
			t.Errorf("%s %s after shutdown: %v", tc.method, tc.path, e)
		}
	}
}

// TestStreamsEndAtShutdown opens the long-lived streams and stops the
// API as the daemon does first when it stops: every stream ends.
func TestStreamsEndAtShutdown(t *testing.T) {
	ts := newTestServer(t)
	P := ts.node.String()
	type opened struct {
		name string
		body io.ReadCloser
	}
	var streams []opened
	for _, c := range []struct{ path, body string }{
		{"/v1/listen", `{"path":"` + P + `/inbox"}`},
		{"/v1/subscribe", `{"pattern":"` + P + `/..."}`},
	} {
		resp, err := http.Post(ts.url+c.path, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", c.path, resp.Status)
		}
		// The first line says the stream is open.
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatalf("%s: first line: %v", c.path, err)
		}
		streams = append(streams, opened{c.path, resp.Body})
	}
	ts.stopAPI()
	for _, s := range streams {
		done := make(chan error, 1)
		go func() { _, err := io.Copy(io.Discard, s.body); done <- err }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not end at shutdown", s.name)
		}
		s.body.Close()
	}
	// Then the components close under requests that are still coming.
	ts.closeAll()
	if e := ts.call(t, "POST", "/v1/subscribe", `{"pattern":"`+P+`/..."}`); e == nil || e.Kind != api.KindUnavailable {
		t.Errorf("subscribe after shutdown: %v", e)
	}
}

// TestAPIErrorTable checks apiError: API errors pass through, wrapped
// sentinels get their kind, and nothing is nil.
func TestAPIErrorTable(t *testing.T) {
	for _, k := range apiKinds {
		if k.err == errRemote {
			continue
		}
		if got := apiError(k.err); got.Kind != k.kind || got.Message == "" {
			t.Errorf("apiError(%v) = %s %q, want kind %s", k.err, got.Kind, got.Message, k.kind)
		}
	}
	if got := apiError(&msg.RemoteError{Msg: "boom"}); got.Kind != api.KindRemote {
		t.Errorf("remote error: %s", got.Kind)
	}
	if got := apiError(nil); got == nil || got.Kind != api.KindInternal {
		t.Errorf("apiError(nil) = %v", got)
	}
	e := api.Errorf(api.KindExists, "taken")
	if apiError(e) != e {
		t.Error("an API error is not passed through")
	}
}
