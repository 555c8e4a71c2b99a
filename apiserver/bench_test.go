package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/api"
)

// TestBenchBadRequests: every out-of-range or malformed bench request is
// refused before any message is sent, with a message that says what is
// wanted.
func TestBenchBadRequests(t *testing.T) {
	ts := newTestServer(t)
	P := ts.node.String() + "/bench"
	const inv = api.KindInvalid
	req := func(kind string, size, msgs, clients int, extra string) string {
		return fmt.Sprintf(`{"kind":%q,"path":%q,"size":%d,"msgs":%d,"clients":%d%s}`, kind, P, size, msgs, clients, extra)
	}
	ts.run(t, []apiCase{
		{"POST", "/v1/bench", `{}`, inv},
		{"POST", "/v1/bench", `{"kind":"call","size":1,"msgs":1,"clients":1}`, inv},
		{"POST", "/v1/bench", req("ask", 1, 1, 1, ""), inv},
		{"POST", "/v1/bench", req("call", -1, 1, 1, ""), inv},
		{"POST", "/v1/bench", req("call", 1<<30, 1, 1, ""), inv},
		{"POST", "/v1/bench", req("call", 1, 0, 1, ""), inv},
		{"POST", "/v1/bench", req("call", 1, benchMaxMsgs+1, 1, ""), inv},
		{"POST", "/v1/bench", req("send", 1, 10, 0, ""), inv},
		{"POST", "/v1/bench", req("send", 1, 10, 11, ""), inv},
		{"POST", "/v1/bench", req("send", 1, 1000, benchMaxClients+1, ""), inv},
		{"POST", "/v1/bench", req("call", 16<<20, 1000, 32, ""), inv}, // 512 MiB in flight
		{"POST", "/v1/bench", req("pub", api.BenchHeaderSize-1, 1, 1, ""), inv},
		{"POST", "/v1/bench", req("pub", 2<<20, 1, 1, ""), inv},
		{"POST", "/v1/bench", req("call", 1, 1, 1, `,"timeout":"0s"`), inv},
		{"POST", "/v1/bench", req("call", 1, 1, 1, `,"timeout":"soon"`), inv},
		{"POST", "/v1/bench", req("call", 1, 1, 1, `,"bogus":1`), inv},
		{"POST", "/v1/bench/serve", `{}`, inv},
		{"POST", "/v1/bench/serve", `{"path":"relative"}`, inv},
		{"POST", "/v1/bench/serve", `{"path":"` + P + `","reply_size":-1}`, inv},
		{"POST", "/v1/bench/serve", `{"path":"` + P + `","reply_size":1073741824}`, inv},
	})
	// Nothing at the path: the error says what to run.
	e := ts.call(t, "POST", "/v1/bench", req("call", 8, 10, 1, ""))
	if e == nil || e.Kind != api.KindNotFound || !strings.Contains(e.Message, "run `bt bench serve "+P+"` on the node that owns "+P) {
		t.Fatalf("bench without an endpoint: %v", e)
	}
}

// events posts body to path and returns a channel of the stream's lines,
// decoded as T; it is closed when the stream ends.
func events[T any](t *testing.T, ctx context.Context, ts *testServer, path, body string) <-chan T {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb api.ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		t.Fatalf("%s %s: %s: %v", path, body, resp.Status, eb.Error)
	}
	ch := make(chan T, 64)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var v T
			if json.Unmarshal(sc.Bytes(), &v) != nil {
				return
			}
			ch <- v
		}
	}()
	return ch
}

// TestBenchOneNode runs each kind of bench against a serve on the same
// node (in process for call and send, the node's own publications for
// pub): every message is counted, the percentiles are ordered.
func TestBenchOneNode(t *testing.T) {
	ts := newTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	P := ts.node.String() + "/bench"
	served := events[api.BenchServeEvent](t, ctx, ts, "/v1/bench/serve", `{"path":"`+P+`","reply_size":3}`)
	if ev := <-served; ev.Event != "serving" || !ev.Endpoint || !ev.Subscribed {
		t.Fatalf("first serve line %+v", ev)
	}
	for _, kind := range []string{api.BenchCall, api.BenchSend, api.BenchPub} {
		t.Run(kind, func(t *testing.T) {
			const n = 500
			body := fmt.Sprintf(`{"kind":%q,"path":%q,"size":64,"msgs":%d,"clients":4}`, kind, P, n)
			var res *api.BenchResult
			for ev := range events[api.BenchEvent](t, ctx, ts, "/v1/bench", body) {
				switch ev.Event {
				case "progress":
					if ev.Total != n || ev.Done > n {
						t.Errorf("progress %+v", ev)
					}
				case "result":
					res = ev.Result
				case "error":
					t.Fatalf("error line: %v", ev.Error)
				}
				if res != nil {
					break
				}
			}
			if res == nil {
				t.Fatal("no result line")
			}
			l := res.Latency
			if res.Count != n || res.Errors != 0 || res.Rate <= 0 || l.Count != n || res.BytesPerSec != res.Rate*64 {
				t.Fatalf("result %+v", res)
			}
			if !(l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
				t.Fatalf("latencies out of order: %+v", l)
			}
			if kind == api.BenchPub {
				if len(res.Subscribers) != 1 || res.Subscribers[0].Node != ts.node || res.Subscribers[0].Count != n || res.Subscribers[0].Bytes != 64*n {
					t.Fatalf("subscribers %+v", res.Subscribers)
				}
			}
		})
	}
	// The serve counted them.
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-served:
			if ev.Calls >= 501 && ev.Sends >= 501 && ev.Published >= 500 {
				return
			}
		case <-deadline:
			t.Fatal("the serve's stats never counted every message")
		}
	}
}

// TestHistogram checks the percentiles against the exact order statistics
// of random latencies: within a bucket's width (1/64), ordered, and within
// the exact min and max.
func TestHistogram(t *testing.T) {
	for _, tc := range []struct {
		name string
		gen  func(r *rand.Rand) uint64
	}{
		{"tiny", func(r *rand.Rand) uint64 { return r.Uint64N(200) }},
		{"micros", func(r *rand.Rand) uint64 { return 20_000 + r.Uint64N(200_000) }},
		{"long tail", func(r *rand.Rand) uint64 { return uint64(50_000 * r.ExpFloat64() * r.ExpFloat64()) }},
		{"huge", func(r *rand.Rand) uint64 { return r.Uint64() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			var a, b histogram
			var vs []uint64
			for i := range 20000 {
				v := tc.gen(r)
				vs = append(vs, v)
				if i%2 == 0 {
					a.record(v)
				} else {
					b.record(v)
				}
			}
			a.merge(&b)
			slices.Sort(vs)
			prev := uint64(0)
			for _, q := range []float64{0.001, 0.5, 0.9, 0.99, 0.999, 1} {
				got := a.quantile(q)
				exact := vs[max(int(float64(len(vs))*q+0.999999)-1, 0)]
				if d := float64(got) - float64(exact); d < 0 && -d > float64(exact)/64+1 || d > 0 && d > float64(exact)/64+1 {
					t.Errorf("q %v: %d, exact %d", q, got, exact)
				}
				if got < prev || got < vs[0] || got > vs[len(vs)-1] {
					t.Errorf("q %v: %d after %d, range [%d, %d]", q, got, prev, vs[0], vs[len(vs)-1])
				}
				prev = got
			}
			if a.n != uint64(len(vs)) || a.min != vs[0] || a.max != vs[len(vs)-1] {
				t.Errorf("n %d min %d max %d", a.n, a.min, a.max)
			}
		})
	}
	// Every value falls in the range of its bucket, and buckets tile.
	next := uint64(0)
	for i := range histBuckets {
		lo, w := histRange(i)
		if lo != next || histIndex(lo) != i || histIndex(lo+w-1) != i {
			t.Fatalf("bucket %d: [%d, +%d), want from %d", i, lo, w, next)
		}
		next = lo + w
	}
	if next != 0 { // the last bucket ends at 2^64
		t.Fatalf("buckets end at %d", next)
	}
}

// TestBenchReportRoundTrip: a report decodes to what was encoded; bad ones
// are refused.
func TestBenchReportRoundTrip(t *testing.T) {
	var h histogram
	for _, v := range []uint64{5, 900, 70_000, 70_001, 1 << 40} {
		h.record(v)
	}
	r := benchReport{V: benchReportVersion, Run: "00ff", Count: 5, Bytes: 320, Min: h.min, Max: h.max, Sum: h.sum, Hist: h.sparse()}
	b, _ := json.Marshal(r)
	got, gh, err := decodeBenchReport(b)
	if err != nil || got.Count != 5 || gh.summary() != h.summary() {
		t.Fatalf("decoded %+v %+v, %v", got, gh.summary(), err)
	}
	for _, bad := range []string{
		`{"v":2,"count":0,"hist":[]}`,
		`{"v":1,"count":1,"hist":[]}`,
		`{"v":1,"count":1,"hist":[[99999,1]]}`,
		`{"v":1,"count":1,"min":5,"max":4,"hist":[[5,1]]}`,
		`[]`,
	} {
		if _, _, err := decodeBenchReport([]byte(bad)); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

func FuzzDecodeBenchReport(f *testing.F) {
	f.Add([]byte(`{"v":1,"run":"00","count":2,"min":3,"max":9,"sum":12,"hist":[[3,1],[9,1]]}`))
	f.Add([]byte(`{"v":1,"count":0,"hist":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, h, err := decodeBenchReport(b)
		if err != nil {
			return
		}
		if h.n != uint64(r.Count) {
			t.Fatalf("histogram of %d for a count of %d", h.n, r.Count)
		}
		l := h.summary()
		if h.n > 0 && !(l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999) {
			t.Fatalf("percentiles out of order: %+v", l)
		}
	})
}

func FuzzParseBenchHeader(f *testing.F) {
	b := make([]byte, api.BenchHeaderSize)
	benchHeader{run: [8]byte{1, 2, 3}, seq: 7, sent: 1e18}.put(b)
	f.Add(b)
	f.Add([]byte("btb1short"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := parseBenchHeader(b)
		if !ok {
			return
		}
		out := make([]byte, len(b))
		copy(out, b)
		h.put(out)
		if string(out) != string(b) {
			t.Fatalf("header %+v does not re-encode to its input", h)
		}
	})
}

// TestBenchShutdown: a serve's stream ends when the API stops, and a bench
// on closed components answers unavailable, never a panic.
func TestBenchShutdown(t *testing.T) {
	ts := newTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	P := ts.node.String() + "/bench"
	served := events[api.BenchServeEvent](t, ctx, ts, "/v1/bench/serve", `{"path":"`+P+`"}`)
	if ev := <-served; ev.Event != "serving" {
		t.Fatalf("first serve line %+v", ev)
	}
	ts.stopAPI()
	for range served {
	}
	ts.closeAll()
	ts.run(t, []apiCase{
		{"POST", "/v1/bench", `{"kind":"call","path":"` + P + `","size":8,"msgs":10,"clients":1}`, api.KindUnavailable},
		{"POST", "/v1/bench", `{"kind":"pub","path":"` + P + `","size":64,"msgs":10,"clients":1}`, api.KindUnavailable},
		{"POST", "/v1/bench/serve", `{"path":"` + P + `"}`, api.KindUnavailable},
	})
}
