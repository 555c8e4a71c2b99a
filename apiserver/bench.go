package apiserver

// Bench: POST /v1/bench generates load inside the daemon, the way
// `nats bench` does, so that the CLI's API socket is not in the
// measurement; POST /v1/bench/serve answers it (docs/api.md, "Bench").
//
// A call or send bench drives msg.Router from Clients goroutines that share
// out Msgs messages and time every one. A pub bench publishes messages
// that carry a small header (benchHeader); every `bt bench serve` whose
// subscription hears them counts them and reports its counts, by msg, to
// an endpoint the publishing daemon holds for the run under its own path.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/api/serve"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
)

// Limits of a bench, so that a bad request cannot exhaust the daemon.
const (
	benchMaxMsgs    = 10_000_000
	benchMaxClients = 256
	// benchMaxInFlight bounds Clients × Size: the payloads and replies in
	// flight at once.
	benchMaxInFlight = 256 << 20
	// benchMaxRunning bounds the benches running at once on a daemon.
	benchMaxRunning = 2
	// benchMaxErrors ends a run early: a target that went away fails every
	// message.
	benchMaxErrors = 100
)

// Timings of a bench.
const (
	benchProgress    = 200 * time.Millisecond // between progress lines
	benchStats       = time.Second            // between a serve's stats lines
	benchReportEvery = 100 * time.Millisecond // between a subscriber's reports
	benchPubProbe    = 100 * time.Millisecond // between probes before a pub run
	benchPubWarmup   = 15 * time.Second       // for a first subscriber to report
	benchPubJoin     = 300 * time.Millisecond // for others, after the first
	benchDrainIdle   = time.Second            // without news ends the drain
	benchDrainMax    = 30 * time.Second
	benchSinkIdle    = 2 * time.Minute // a subscriber forgets a run
)

// benchAPI serves the bench routes over s's router and pub-sub.
type benchAPI struct {
	s     *server
	slots chan struct{} // a token per bench running
}

func newBenchAPI(s *server) *benchAPI {
	return &benchAPI{s: s, slots: make(chan struct{}, benchMaxRunning)}
}

func (b *benchAPI) register(mux *serve.Mux) {
	serve.Stream(mux, api.RouteBench, b.bench, func(e *api.Error) api.BenchEvent { return api.BenchEvent{Event: "error", Error: e} })
	serve.Stream(mux, api.RouteBenchServe, b.serve, nil)
}

// benchSpec is a checked BenchRequest.
type benchSpec struct {
	api.BenchRequest
	timeout time.Duration
}

// check validates req against the limits.
func (b *benchAPI) check(req api.BenchRequest) (benchSpec, error) {
	sp := benchSpec{BenchRequest: req, timeout: 10 * time.Second}
	if err := need(req.Path); err != nil {
		return sp, err
	}
	maxSize, minSize := int(b.s.maxMsg), 0
	switch req.Kind {
	case api.BenchCall, api.BenchSend:
	case api.BenchPub:
		maxSize, minSize = pubsub.DefaultMaxMessage, api.BenchHeaderSize
	default:
		return sp, api.Errorf(api.KindInvalid, "kind %q: want %q, %q or %q", req.Kind, api.BenchCall, api.BenchSend, api.BenchPub)
	}
	switch {
	case req.Size < minSize || req.Size > maxSize:
		why := ""
		if req.Kind == api.BenchPub {
			why = fmt.Sprintf(" (each pub message carries a %d-byte header; pub-sub messages are at most %d bytes)", api.BenchHeaderSize, maxSize)
		}
		return sp, api.Errorf(api.KindInvalid, "size %d: want %d to %d bytes for %s%s", req.Size, minSize, maxSize, req.Kind, why)
	case req.Msgs < 1 || req.Msgs > benchMaxMsgs:
		return sp, api.Errorf(api.KindInvalid, "msgs %d: want 1 to %d", req.Msgs, benchMaxMsgs)
	case req.Clients < 1 || req.Clients > benchMaxClients:
		return sp, api.Errorf(api.KindInvalid, "clients %d: want 1 to %d", req.Clients, benchMaxClients)
	case req.Clients > req.Msgs:
		return sp, api.Errorf(api.KindInvalid, "clients %d: more than the %d messages to share out", req.Clients, req.Msgs)
	case int64(req.Clients)*int64(max(req.Size, 1)) > benchMaxInFlight:
		return sp, api.Errorf(api.KindInvalid, "clients × size is %d bytes in flight, more than %d: use fewer clients or smaller messages",
			int64(req.Clients)*int64(req.Size), benchMaxInFlight)
	}
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 {
			return sp, api.Errorf(api.KindInvalid, "timeout %q: want a positive duration such as 5s", req.Timeout)
		}
		sp.timeout = d
	}
	return sp, nil
}

// bench runs one bench: a checked request, a turn among the benches
// running, a first message that checks the target answers (its error is
// the answer's), then the run with progress lines, then the result.
func (b *benchAPI) bench(ctx context.Context, req api.BenchRequest, out *serve.Events[api.BenchEvent]) error {
	sp, err := b.check(req)
	if err != nil {
		return err
	}
	select {
	case b.slots <- struct{}{}:
		defer func() { <-b.slots }()
	default:
		return api.Errorf(api.KindUnavailable, "%d benches are running on this daemon already: try again when one ends", benchMaxRunning)
	}
	if sp.Kind == api.BenchPub {
		return b.pubBench(ctx, sp, out)
	}
	return b.msgBench(ctx, sp, out)
}

// noEndpoint adds to err, when the target has no endpoint, what to run.
func noEndpoint(err error, p paths.Path) error {
	if errors.Is(err, msg.ErrNoEndpoint) {
		return api.Errorf(api.KindNotFound, "%v: run `bt bench serve %s` on the node that owns %s", err, p, p)
	}
	return err
}

// msgBench is a call or send bench.
func (b *benchAPI) msgBench(ctx context.Context, sp benchSpec, out *serve.Events[api.BenchEvent]) error {
	payload := make([]byte, sp.Size)
	call := sp.Kind == api.BenchCall
	newClient := func(confirm bool) func(context.Context) error {
		var r bytes.Reader
		return func(ctx context.Context) error {
			r.Reset(payload)
			ctx, cancel := context.WithTimeout(ctx, sp.timeout)
			defer cancel()
			switch {
			case call:
				_, err := b.s.msgs.Call(ctx, sp.Path, &r, int64(len(payload)))
				return err
			case confirm:
				return b.s.msgs.SendConfirmed(ctx, sp.Path, &r, int64(len(payload)))
			}
			return b.s.msgs.Send(ctx, sp.Path, &r, int64(len(payload)))
		}
	}
	// The first message is confirmed, so that a missing endpoint is
	// reported before the run.
	if err := newClient(true)(ctx); err != nil {
		return noEndpoint(err, sp.Path)
	}
	res, err := runLoad(ctx, sp, out, func() func(context.Context) error { return newClient(sp.Confirm) }, func(ev *api.BenchEvent) {})
	if err != nil {
		return err
	}
	return out.Send(api.BenchEvent{Event: "result", Result: res})
}

// runLoad sends sp.Msgs messages from sp.Clients clients, each a function
// newClient made that sends one message, sending progress lines (which
// note may add to) meanwhile, and returns the result of the run. It stops
// early after benchMaxErrors failures, and returns an error when ctx ends
// or the client went away.
func runLoad(parent context.Context, sp benchSpec, out *serve.Events[api.BenchEvent], newClient func() func(context.Context) error, note func(*api.BenchEvent)) (*api.BenchResult, error) {
	ctx, stop := context.WithCancel(parent)
	defer stop()
	var (
		next, done, failed atomic.Int64
		errOnce            sync.Once
		firstErr           error
		wg                 sync.WaitGroup
	)
	hists := make([]*histogram, sp.Clients)
	start := time.Now()
	for c := range sp.Clients {
		h := new(histogram)
		hists[c] = h
		send := newClient()
		wg.Go(func() {
			for next.Add(1) <= int64(sp.Msgs) && ctx.Err() == nil {
				t0 := time.Now()
				err := send(ctx)
				d := time.Since(t0)
				if err == nil {
					h.record(uint64(d))
					done.Add(1)
					continue
				}
				if ctx.Err() != nil {
					return
				}
				errOnce.Do(func() { firstErr = err })
				if failed.Add(1) >= benchMaxErrors {
					stop()
				}
			}
		})
	}
	finished := make(chan struct{})
	var end time.Time
	go func() { wg.Wait(); end = time.Now(); close(finished) }()
	tick := time.NewTicker(benchProgress)
	defer tick.Stop()
	if err := out.Send(api.BenchEvent{Event: "progress", Phase: "run", Total: int64(sp.Msgs)}); err != nil {
		stop()
		<-finished
		return nil, fmt.Errorf("bench: the client went away: %w", err)
	}
	for running := true; running; {
		select {
		case <-finished:
			running = false
		case <-tick.C:
			ev := api.BenchEvent{Event: "progress", Phase: "run", Done: done.Load(), Errors: failed.Load(), Total: int64(sp.Msgs),
				Seconds: time.Since(start).Seconds()}
			note(&ev)
			if err := out.Send(ev); err != nil {
				stop()
				<-finished
				return nil, fmt.Errorf("bench: the client went away: %w", err)
			}
		}
	}
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("bench stopped: %w", err)
	}
	var all histogram
	for _, h := range hists {
		all.merge(h)
	}
	secs := end.Sub(start).Seconds()
	res := &api.BenchResult{Kind: sp.Kind, Path: sp.Path, Size: sp.Size, Msgs: sp.Msgs, Clients: sp.Clients,
		Count: done.Load(), Errors: failed.Load(), Seconds: secs, Latency: all.summary()}
	if firstErr != nil {
		res.FirstError = apiError(firstErr).Message
	}
	if secs > 0 {
		res.Rate = float64(res.Count) / secs
		res.BytesPerSec = res.Rate * float64(sp.Size)
	}
	return res, nil
}

// The header of a pub bench's messages: magic, run, number (0 for a
// probe), publication time in Unix nanoseconds; the rest of the payload is
// zeros.
var benchMagic = [4]byte{'b', 't', 'b', '1'}

type benchHeader struct {
	run  [8]byte
	seq  uint64
	sent int64
}

func (h benchHeader) put(b []byte) {
	copy(b, benchMagic[:])
	copy(b[4:], h.run[:])
	binary.BigEndian.PutUint64(b[12:], h.seq)
	binary.BigEndian.PutUint64(b[20:], uint64(h.sent))
}

// parseBenchHeader reads the header at the start of b.
func parseBenchHeader(b []byte) (benchHeader, bool) {
	var h benchHeader
	if len(b) < api.BenchHeaderSize || !bytes.Equal(b[:4], benchMagic[:]) {
		return h, false
	}
	copy(h.run[:], b[4:12])
	h.seq = binary.BigEndian.Uint64(b[12:])
	h.sent = int64(binary.BigEndian.Uint64(b[20:]))
	return h, true
}

// benchReportComponent is the last component of the endpoint a publishing
// daemon holds for a run's reports: under its own path.
func benchReportComponent(run [8]byte) string { return "bench-report-" + hex.EncodeToString(run[:]) }

// benchReportVersion is the version of benchReport.
const benchReportVersion = 1

// maxBenchReport bounds an encoded report.
const maxBenchReport = 1 << 20

// benchReport is what a subscriber has received of one run so far,
// cumulative: it sends one whenever it has news, to the publisher's report
// endpoint (msg, JSON).
type benchReport struct {
	V      int    `json:"v"`
	Run    string `json:"run"`
	Probes int64  `json:"probes"`
	Count  int64  `json:"count"`
	Bytes  int64  `json:"bytes"`
	First  int64  `json:"first"` // Unix nanoseconds of the first and last arrival
	Last   int64  `json:"last"`
	// The one-way latencies, in nanoseconds: min, max, sum, and the
	// histogram's non-empty buckets as [index, count].
	Min  uint64      `json:"min"`
	Max  uint64      `json:"max"`
	Sum  float64     `json:"sum"`
	Hist [][2]uint64 `json:"hist"`
}

// decodeBenchReport decodes and checks a report.
func decodeBenchReport(b []byte) (benchReport, *histogram, error) {
	var r benchReport
	if err := json.Unmarshal(b, &r); err != nil {
		return r, nil, fmt.Errorf("bench report: %w", err)
	}
	if r.V != benchReportVersion {
		return r, nil, fmt.Errorf("bench report: unknown version %d", r.V)
	}
	h := &histogram{min: r.Min, max: r.Max, sum: r.Sum}
	for _, bc := range r.Hist {
		if bc[0] >= histBuckets {
			return r, nil, fmt.Errorf("bench report: bucket %d out of range", bc[0])
		}
		h.counts[bc[0]] += bc[1]
		h.n += bc[1]
	}
	if r.Count < 0 || h.n != uint64(r.Count) || (h.n > 0 && r.Min > r.Max) {
		return r, nil, fmt.Errorf("bench report: %d messages, but %d in the histogram", r.Count, h.n)
	}
	return r, h, nil
}

// benchReports collects the reports of one pub run, by subscriber.
type benchReports struct {
	run     string
	changed chan struct{} // has a token when a report came since the last look

	// mu guards by.
	mu sync.Mutex
	by map[paths.Path]benchDelivery
}

type benchDelivery struct {
	r benchReport
	h *histogram
}

func (rs *benchReports) handle(_ context.Context, m *msg.Message) ([]byte, error) {
	if m.Size > maxBenchReport {
		return nil, fmt.Errorf("bench report of %d bytes: too large", m.Size)
	}
	b, err := io.ReadAll(m.Body)
	if err != nil {
		return nil, err
	}
	r, h, err := decodeBenchReport(b)
	if err != nil {
		return nil, err
	}
	if r.Run != rs.run {
		return nil, fmt.Errorf("bench report for run %s, not %s", r.Run, rs.run)
	}
	rs.mu.Lock()
	if old, ok := rs.by[m.From]; !ok || r.Count >= old.r.Count {
		rs.by[m.From] = benchDelivery{r, h}
	}
	rs.mu.Unlock()
	select {
	case rs.changed <- struct{}{}:
	default:
	}
	return nil, nil
}

// delivered returns the messages reported so far over all subscribers,
// and whether each has every one of n.
func (rs *benchReports) delivered(n int64) (total int64, all bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	all = len(rs.by) > 0
	for _, d := range rs.by {
		total += d.r.Count
		all = all && d.r.Count >= n
	}
	return total, all
}

func (rs *benchReports) list() []api.BenchDelivery {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []api.BenchDelivery
	for node, d := range rs.by {
		bd := api.BenchDelivery{Node: node, Count: d.r.Count, Bytes: d.r.Bytes, Latency: d.h.summary()}
		if span := time.Duration(d.r.Last - d.r.First).Seconds(); span > 0 {
			bd.Rate = float64(d.r.Count) / span
		}
		out = append(out, bd)
	}
	slices.SortFunc(out, func(a, b api.BenchDelivery) int {
		return bytes.Compare([]byte(a.Node.String()), []byte(b.Node.String()))
	})
	return out
}

// pubBench is a pub bench: an endpoint for the subscribers' reports,
// probes until one reports, the run, then a drain until every subscriber
// has reported every message or no news came for benchDrainIdle.
func (b *benchAPI) pubBench(ctx context.Context, sp benchSpec, out *serve.Events[api.BenchEvent]) error {
	var run [8]byte
	rand.Read(run[:])
	self := b.s.repo.Config.Node
	rpath, err := self.Join(benchReportComponent(run))
	if err != nil {
		return err
	}
	rs := &benchReports{run: hex.EncodeToString(run[:]), changed: make(chan struct{}, 1), by: map[paths.Path]benchDelivery{}}
	remove, err := b.s.msgs.Handle(rpath, rs.handle)
	if err != nil {
		return err
	}
	defer remove()

	probe := make([]byte, sp.Size)
	wctx, cancel := context.WithTimeout(ctx, benchPubWarmup)
	defer cancel()
	joined := false
	for !joined {
		benchHeader{run: run, sent: time.Now().UnixNano()}.put(probe)
		if err := b.s.pubsub.Publish(ctx, sp.Path, probe); err != nil {
			return err
		}
		select {
		case <-rs.changed:
			joined = true
		case <-time.After(benchPubProbe):
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return api.Errorf(api.KindNotFound, "no subscriber of %s reported within %v: run `bt bench serve %s` on the nodes that should receive it (their daemons must reach %s)",
				sp.Path, benchPubWarmup, sp.Path, self)
		}
	}
	// Others that subscribed hear the probes within a moment too.
	for t := time.Now(); time.Since(t) < benchPubJoin; time.Sleep(benchPubProbe) {
		benchHeader{run: run, sent: time.Now().UnixNano()}.put(probe)
		if err := b.s.pubsub.Publish(ctx, sp.Path, probe); err != nil {
			return err
		}
	}

	var seq atomic.Uint64
	newClient := func() func(context.Context) error {
		buf := make([]byte, sp.Size)
		return func(ctx context.Context) error {
			benchHeader{run: run, seq: seq.Add(1), sent: time.Now().UnixNano()}.put(buf)
			ctx, cancel := context.WithTimeout(ctx, sp.timeout)
			defer cancel()
			return b.s.pubsub.Publish(ctx, sp.Path, buf)
		}
	}
	res, err := runLoad(ctx, sp, out, newClient, func(ev *api.BenchEvent) { ev.Delivered, _ = rs.delivered(int64(sp.Msgs)) })
	if err != nil {
		return err
	}

	// The drain: the subscribers' last reports.
	start, news := time.Now(), time.Now()
	tick := time.NewTicker(benchProgress)
	defer tick.Stop()
	for {
		total, all := rs.delivered(res.Count)
		if all || time.Since(news) > benchDrainIdle || time.Since(start) > benchDrainMax {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench stopped: %w", ctx.Err())
		case <-rs.changed:
			news = time.Now()
		case <-tick.C:
			ev := api.BenchEvent{Event: "progress", Phase: "drain", Done: res.Count, Errors: res.Errors, Total: int64(sp.Msgs),
				Delivered: total, Seconds: res.Seconds + time.Since(start).Seconds()}
			if err := out.Send(ev); err != nil {
				return fmt.Errorf("bench: the client went away: %w", err)
			}
		}
	}
	res.Subscribers = rs.list()
	return out.Send(api.BenchEvent{Event: "result", Result: res})
}

// serve answers benches at the request's path until the client goes away:
// an endpoint there when it is this node's, and a subscription that counts
// pub benches and reports to their publishers. One "serving" line, then
// "stats" lines.
func (b *benchAPI) serve(ctx context.Context, req api.BenchServeRequest, out *serve.Events[api.BenchServeEvent]) error {
	if err := need(req.Path); err != nil {
		return err
	}
	var reply []byte
	if req.ReplySize != nil {
		if n := *req.ReplySize; n < 0 || int64(n) > b.s.maxMsg {
			return api.Errorf(api.KindInvalid, "reply size %d: want 0 to %d bytes", n, b.s.maxMsg)
		}
		reply = make([]byte, *req.ReplySize)
	}
	var calls, sends, published, nbytes atomic.Int64
	ev := api.BenchServeEvent{Event: "serving", Path: req.Path}
	remove, err := b.s.msgs.Handle(req.Path, func(_ context.Context, m *msg.Message) ([]byte, error) {
		nbytes.Add(m.Size)
		if !m.Call {
			sends.Add(1)
			_, err := io.Copy(io.Discard, m.Body)
			return nil, err
		}
		calls.Add(1)
		if reply != nil {
			_, err := io.Copy(io.Discard, m.Body)
			return reply, err
		}
		echo := make([]byte, m.Size)
		_, err := io.ReadFull(m.Body, echo)
		return echo, err
	})
	switch {
	case err == nil:
		defer remove()
		ev.Endpoint = true
	case !errors.Is(err, msg.ErrNotOwnPath):
		return err
	}
	pattern, err := paths.ParsePattern(req.Path.String())
	if err != nil {
		return api.Errorf(api.KindInvalid, "%v", err)
	}
	sub, err := b.s.pubsub.Subscribe(ctx, pattern)
	if err != nil {
		return err
	}
	defer sub.Cancel()
	ev.Subscribed = true
	sink := &benchSink{msgs: b.s.msgs, runs: map[sinkKey]*sinkRun{}, log: b.s.log}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() { sink.report(ctx) })
	wg.Go(func() {
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				return
			}
			published.Add(1)
			nbytes.Add(int64(len(m.Payload)))
			sink.add(m, time.Now())
		}
	})

	if out.Send(ev) != nil {
		return nil
	}
	tick := time.NewTicker(benchStats)
	defer tick.Stop()
	var last api.BenchServeEvent
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		st := api.BenchServeEvent{Event: "stats", Path: req.Path, Calls: calls.Load(), Sends: sends.Load(), Published: published.Load(), Bytes: nbytes.Load(),
			Dropped: int64(sub.Dropped())}
		if st == last {
			continue
		}
		last = st
		if out.Send(st) != nil {
			return nil
		}
	}
}

// benchSink counts the messages of pub benches a subscription hears, by
// publisher and run, and reports them to each publisher.
type benchSink struct {
	msgs *msg.Router
	log  *slog.Logger

	// mu guards runs.
	mu   sync.Mutex
	runs map[sinkKey]*sinkRun
}

type sinkKey struct {
	from paths.Path
	run  [8]byte
}

type sinkRun struct {
	probes, count, bytes int64
	first, last          time.Time
	hist                 histogram
	dirty                bool // news since the last report
}

// add counts m if it is a bench message.
func (s *benchSink) add(m *pubsub.Message, now time.Time) {
	h, ok := parseBenchHeader(m.Payload)
	if !ok || m.From.IsZero() {
		return
	}
	k := sinkKey{m.From, h.run}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.runs[k]
	if r == nil {
		r = &sinkRun{}
		s.runs[k] = r
	}
	r.dirty, r.last = true, now
	if h.seq == 0 {
		r.probes++
		return
	}
	if r.count == 0 {
		r.first = now
	}
	r.count++
	r.bytes += int64(len(m.Payload))
	r.hist.record(uint64(max(now.UnixNano()-h.sent, 0)))
}

// report sends the runs with news to their publishers every benchReportEvery
// until ctx ends, and forgets runs idle for benchSinkIdle.
func (s *benchSink) report(ctx context.Context) {
	tick := time.NewTicker(benchReportEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		type pending struct {
			to   paths.Path
			body []byte
		}
		var out []pending
		now := time.Now()
		s.mu.Lock()
		for k, r := range s.runs {
			if now.Sub(r.last) > benchSinkIdle {
				delete(s.runs, k)
				continue
			}
			if !r.dirty {
				continue
			}
			r.dirty = false
			to, err := k.from.Join(benchReportComponent(k.run))
			if err != nil {
				continue
			}
			rep := benchReport{V: benchReportVersion, Run: hex.EncodeToString(k.run[:]), Probes: r.probes, Count: r.count, Bytes: r.bytes,
				First: r.first.UnixNano(), Last: r.last.UnixNano(), Min: r.hist.min, Max: r.hist.max, Sum: r.hist.sum, Hist: r.hist.sparse()}
			body, err := json.Marshal(rep)
			if err != nil {
				continue
			}
			out = append(out, pending{to, body})
		}
		s.mu.Unlock()
		for _, p := range out {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := s.msgs.Send(sctx, p.to, bytes.NewReader(p.body), int64(len(p.body))); err != nil {
				s.log.Debug("bench report not delivered", "to", p.to.String(), "err", err)
			}
			cancel()
		}
	}
}

// histogram counts values (nanoseconds) in buckets at most 1/64 of their
// value wide, HDR style: values below histSub each have their own bucket;
// above, every power of two is cut into histHalf buckets. Not safe for
// concurrent use.
type histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	min, max uint64
	sum      float64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histHalf    = histSub / 2
	histBuckets = histSub + (64-histSubBits)*histHalf
)

// histIndex is the bucket of v.
func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits
	return histSub + (e-1)*histHalf + int(v>>e) - histHalf
}

// histRange is the bucket i's values: [lo, lo+width).
func histRange(i int) (lo, width uint64) {
	if i < histSub {
		return uint64(i), 1
	}
	k := i - histSub
	e := k/histHalf + 1
	return uint64(k%histHalf+histHalf) << e, 1 << e
}

func (h *histogram) record(v uint64) {
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.counts[histIndex(v)]++
	h.n++
	h.sum += float64(v)
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the value at quantile q (0 < q ≤ 1): the middle of the
// bucket holding the ceil(q·n)-th smallest value, within [min, max]. It
// grows with q.
func (h *histogram) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := max(uint64(math.Ceil(q*float64(h.n))), 1)
	var cum uint64
	for i, c := range h.counts {
		if cum += c; cum >= rank {
			lo, w := histRange(i)
			return min(max(lo+w/2, h.min), h.max)
		}
	}
	return h.max
}

// sparse returns the non-empty buckets as [index, count].
func (h *histogram) sparse() [][2]uint64 {
	out := [][2]uint64{}
	for i, c := range h.counts {
		if c > 0 {
			out = append(out, [2]uint64{uint64(i), c})
		}
	}
	return out
}

// summary is h in microseconds.
func (h *histogram) summary() api.BenchLatency {
	if h.n == 0 {
		return api.BenchLatency{}
	}
	us := func(ns uint64) float64 { return math.Round(float64(ns)/10) / 100 }
	return api.BenchLatency{Count: int64(h.n), Min: us(h.min), Max: us(h.max), Mean: us(uint64(h.sum / float64(h.n))),
		P50: us(h.quantile(0.5)), P90: us(h.quantile(0.9)), P99: us(h.quantile(0.99)), P999: us(h.quantile(0.999))}
}
