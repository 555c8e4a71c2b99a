package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gossip "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/protocol"

	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

// The benchmarks compare against named anchors in the same run, on the
// same hosts, and print the ratio; run with -benchtime=1x:
//
//	go test ./pubsub -run '^$' -bench . -benchtime=1x
//
// The anchor "raw" is plain gossipsub as go-libp2p-pubsub configures it by
// default (StrictSign: its own signature on every message, checked by
// every receiver; its default message IDs), run as a second router on the
// same libp2p hosts under a protocol ID of its own, with the same queue
// sizes and peer scoring as ours, a bare 1 KiB payload and no envelope,
// certificate or writecap.

const benchPayload = 1024

// rawProtocol is the anchor router's protocol: gossipsub v1.3 under
// another name, so that it runs beside ours on the same hosts.
const rawProtocol = protocol.ID("/blocktree/bench-raw/meshsub/1.3.0")

// benchNet is n nodes of one domain, all connected, with queues large
// enough for the rate ramp, and the anchor's raw gossipsub router on each.
func benchNet(b *testing.B, d *nettest.Domain, n int) ([]*testNode, []*gossip.PubSub) {
	b.Helper()
	start := time.Now()
	nodes := newTestNet(b, d, Config{Buffer: 1 << 14}, names(n)...)
	var raws []*gossip.PubSub
	for _, n := range nodes {
		raws = append(raws, rawRouter(b, n))
	}
	b.Logf("%d-node network built in %v", n, time.Since(start).Round(time.Millisecond))
	return nodes, raws
}

// rawRouter starts the anchor's gossipsub router on n's host; it stops at
// cleanup, before the host closes.
func rawRouter(b *testing.B, n *testNode) *gossip.PubSub {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := n.node.Host()
	gs, err := gossip.NewGossipSub(ctx, h,
		gossip.WithGossipSubProtocols([]protocol.ID{rawProtocol}, func(f gossip.GossipSubFeature, _ protocol.ID) bool {
			return gossip.GossipSubDefaultFeatures(f, gossip.GossipSubID_v13)
		}),
		gossip.WithPeerScore(peerScoreParams(), peerScoreThresholds()),
		gossip.WithMaxMessageSize(DefaultMaxMessage+rpcSlack),
		gossip.WithValidateQueueSize(queueSize),
		gossip.WithPeerOutboundQueueSize(queueSize),
	)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cancel()
		h.RemoveStreamHandler(rawProtocol)
	})
	return gs
}

// payload is a 1 KiB message whose first 16 bytes are (step, index).
func payload(step, i uint64) []byte {
	p := make([]byte, benchPayload)
	rand.Read(p[16:])
	binary.BigEndian.PutUint64(p, step)
	binary.BigEndian.PutUint64(p[8:], i)
	return p
}

// side is one way of sending 1 KiB messages from nodes[0] to nodes[1:]:
// ours (PubSub) or raw gossipsub. gossipsub's meshes are random, and one
// mesh can be a hop longer than another, so each side spreads its
// messages round robin over benchTopics topics (so, meshes). Each
// subscriber counts what it receives per step, and signals when a message
// has reached every subscriber.
type side struct {
	name    string
	publish func(ctx context.Context, i uint64, data []byte) error // on topic i mod benchTopics
	subs    int
	// counts[step] counts (subscriber, message) receptions in that step.
	counts [160]atomic.Int64
	// latency probes (step 0): the index awaited and its receptions.
	want    atomic.Int64
	got     atomic.Int64
	allIn   chan struct{}
	stopped sync.WaitGroup
}

// benchTopics is how many topics (meshes) each side uses.
const benchTopics = 4

// received records one reception by one subscriber.
func (s *side) received(data []byte) {
	if len(data) < 16 {
		return
	}
	step, i := binary.BigEndian.Uint64(data), binary.BigEndian.Uint64(data[8:])
	if step >= uint64(len(s.counts)) {
		return
	}
	s.counts[step].Add(1)
	if step == 0 && int64(i) == s.want.Load() && s.got.Add(1) == int64(s.subs) {
		s.allIn <- struct{}{}
	}
}

// oursSide subscribes nodes[1:] to benchTopics topics under base with
// literal patterns and publishes from nodes[0] with Publish.
func oursSide(b *testing.B, nodes []*testNode, base paths.Path) *side {
	b.Helper()
	s := &side{name: "ours", subs: len(nodes) - 1, allIn: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); s.stopped.Wait() })
	var topics []paths.Path
	for k := range benchTopics {
		topic, err := base.Join(fmt.Sprint(k))
		if err != nil {
			b.Fatal(err)
		}
		topics = append(topics, topic)
		var subs []*Subscription
		for _, n := range nodes[1:] {
			subs = append(subs, subscribe(b, n, paths.MustParsePattern(topic.String())))
		}
		ready(b, nodes[0], topic, subs...)
		for _, sub := range subs {
			s.stopped.Go(func() {
				for {
					m, err := sub.Next(ctx)
					if err != nil {
						return
					}
					s.received(m.Payload)
				}
			})
		}
	}
	pub := nodes[0].ps
	s.publish = func(ctx context.Context, i uint64, data []byte) error {
		return pub.Publish(ctx, topics[i%benchTopics], data)
	}
	return s
}

// rawSide joins every node's anchor router to benchTopics plain gossipsub
// topics, subscribes nodes[1:] and publishes from nodes[0], which only
// joins, as ours does.
func rawSide(b *testing.B, raws []*gossip.PubSub, base string) *side {
	b.Helper()
	s := &side{name: "raw", subs: len(raws) - 1, allIn: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); s.stopped.Wait() })
	var pubTopics []*gossip.Topic
	for k := range benchTopics {
		name := fmt.Sprintf("%s-%d", base, k)
		pubTopic, err := raws[0].Join(name)
		if err != nil {
			b.Fatal(err)
		}
		pubTopics = append(pubTopics, pubTopic)
		var probes atomic.Int64
		for _, n := range raws[1:] {
			t, err := n.Join(name)
			if err != nil {
				b.Fatal(err)
			}
			gsub, err := t.Subscribe(gossip.WithBufferSize(1 << 14))
			if err != nil {
				b.Fatal(err)
			}
			s.stopped.Go(func() {
				seen := false
				for {
					m, err := gsub.Next(ctx)
					if err != nil {
						return
					}
					if len(m.Data) == 1 { // a readiness probe
						if !seen {
							seen = true
							probes.Add(1)
						}
						continue
					}
					s.received(m.Data)
				}
			})
		}
		// Probe until every subscriber has had one: the mesh has formed.
		deadline := time.Now().Add(30 * time.Second)
		for probes.Load() < int64(s.subs) {
			if time.Now().After(deadline) {
				b.Fatalf("raw topic %s: %d of %d subscribers reached", name, probes.Load(), s.subs)
			}
			if err := pubTopic.Publish(ctx, []byte{0}); err != nil {
				b.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	s.publish = func(ctx context.Context, i uint64, data []byte) error {
		return pubTopics[i%benchTopics].Publish(ctx, data)
	}
	return s
}

// latencyOp publishes one message and waits until every subscriber has it.
func (s *side) latencyOp(samples *[]time.Duration) func() error {
	var i int64
	return func() error {
		i++
		s.want.Store(i)
		s.got.Store(0)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if err := s.publish(ctx, uint64(i), payload(0, uint64(i))); err != nil {
			return err
		}
		select {
		case <-s.allIn:
			*samples = append(*samples, time.Since(start))
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%s: message %d reached %d of %d subscribers in 5s", s.name, i, s.got.Load(), s.subs)
		}
	}
}

// settle waits two gossipsub heartbeats, so the meshes the probes formed
// have been through their first maintenance (grafts, prunes) and the
// sides start equal.
func settle() {
	time.Sleep(2 * time.Second)
}

func percentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// BenchmarkLatency10Nodes: on 10 nodes, the time from Publish on one to
// delivery at all nine subscribers of a 1 KiB message, ours against raw
// gossipsub on the same mesh. Target: ratio(anchor/ours) ≥ 1/1.2 ≈ 0.83.
func BenchmarkLatency10Nodes(b *testing.B) {
	d := nettest.NewDomain(b)
	nodes, raws := benchNet(b, d, 10)
	ours := oursSide(b, nodes, d.Path(b, "n00", "bench"))
	raw := rawSide(b, raws, "bench-raw")
	settle()
	var os, as []time.Duration
	benchcmp.Compare(b, "latency-10-nodes-1KiB", benchcmp.Options{Rounds: 7, Ops: 40},
		ours.latencyOp(&os), raw.latencyOp(&as))
	po, pa := percentile(os, 0.5), percentile(as, 0.5)
	fmt.Printf("bench latency-10-nodes-1KiB p50: ours %v anchor %v ratio(anchor/ours) %.3f; p99: ours %v anchor %v (%d samples each)\n",
		po, pa, float64(pa)/float64(po), percentile(os, 0.99), percentile(as, 0.99), len(os))
	b.ReportMetric(float64(pa)/float64(po), "p50-ratio")
}

// rateStep sends rate messages a second for dur from the publisher and
// reports the share delivered to all subscribers and the rate achieved.
func (s *side) rateStep(step int, rate float64, dur time.Duration) (delivered, achieved float64, err error) {
	n := int(rate * dur.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	ctx, cancel := context.WithTimeout(context.Background(), 3*dur)
	defer cancel()
	start := time.Now()
	sent := 0
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		if err := s.publish(ctx, uint64(i), payload(uint64(step), uint64(i))); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				break // saturated: Publish blocked for the whole budget
			}
			return 0, 0, err
		}
		sent++
	}
	elapsed := time.Since(start)
	// Drain: wait until everything arrived or nothing moved for 500ms
	// (at most 5s).
	want := int64(n * s.subs)
	last, lastChange := s.counts[step].Load(), time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		c := s.counts[step].Load()
		if c >= want {
			break
		}
		if c != last {
			last, lastChange = c, time.Now()
		} else if time.Since(lastChange) > 500*time.Millisecond {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return float64(s.counts[step].Load()) / float64(want), float64(sent) / elapsed.Seconds(), nil
}

// ramp finds the highest rate that s sustains: ≥ 99% of (message,
// subscriber) pairs delivered, and the publisher keeping ≥ 95% of the
// pace (Publish blocks when gossipsub is saturated). Rates grow ×1.25
// from 200/s; a failed rate is tried once more before the pass stops.
// The machine is shared, so the ramp runs twice and keeps each side's
// best, then two bisection steps refine between that and the next rate up.
type ramp struct {
	s       *side
	ok      float64   // highest sustained nominal rate
	failed  float64   // lowest failed rate above ok
	passes  []float64 // each pass's highest sustained rate
	log     []string
	stopped bool // this pass
}

const (
	rampStart  = 200
	rampFactor = 1.25
	rampMax    = 20000
	rampDur    = time.Second
	rampNeed   = 0.99
	rampPasses = 2
)

// try runs one step and reports whether it passed.
func (r *ramp) try(step *int, rate float64) (bool, error) {
	if *step >= len(r.s.counts) {
		return false, errors.New("ramp: out of step counters")
	}
	delivered, achieved, err := r.s.rateStep(*step, rate, rampDur)
	*step++
	if err != nil {
		return false, err
	}
	pass := delivered >= rampNeed && achieved >= 0.95*rate
	r.log = append(r.log, fmt.Sprintf("%.0f/s→%.1f%%@%.0f/s", rate, 100*delivered, achieved))
	return pass, nil
}

// climb tries rate (twice if need be); it stops the pass on failure.
func (r *ramp) climb(step *int, rate float64) error {
	for range 2 {
		pass, err := r.try(step, rate)
		if err != nil {
			return err
		}
		if pass {
			r.passes[len(r.passes)-1] = rate
			if rate > r.ok {
				r.ok, r.failed = rate, 0
			}
			return nil
		}
	}
	r.stopped = true
	if rate > r.ok && (r.failed == 0 || rate < r.failed) {
		r.failed = rate
	}
	return nil
}

// BenchmarkRate10Nodes: on 10 nodes, the highest publication rate of
// 1 KiB messages from one node that reaches ≥ 99% of (message,
// subscriber) pairs at all nine subscribers, ours against raw gossipsub
// on the same hosts, by a bounded ramp (200/s up, ×1.25, 1 s a step,
// ours and raw alternating at each rate, two passes). Target:
// ratio(ours/anchor) ≥ 1.0.
func BenchmarkRate10Nodes(b *testing.B) {
	d := nettest.NewDomain(b)
	nodes, raws := benchNet(b, d, 10)
	ours := &ramp{s: oursSide(b, nodes, d.Path(b, "n00", "rate"))}
	raw := &ramp{s: rawSide(b, raws, "rate-raw")}
	settle()
	step := 1
	start := time.Now()
	for range rampPasses {
		for _, r := range []*ramp{ours, raw} {
			r.stopped = false
			r.passes = append(r.passes, 0)
		}
		for rate := float64(rampStart); rate <= rampMax && !(ours.stopped && raw.stopped); rate *= rampFactor {
			order := []*ramp{ours, raw}
			if step%2 == 0 {
				order = []*ramp{raw, ours}
			}
			for _, r := range order {
				if !r.stopped {
					if err := r.climb(&step, rate); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	}
	for range 2 {
		for _, r := range []*ramp{ours, raw} {
			if r.failed > 0 && r.ok > 0 {
				mid := math.Sqrt(r.ok * r.failed)
				pass, err := r.try(&step, mid)
				if err != nil {
					b.Fatal(err)
				}
				if pass {
					r.ok = mid
				} else {
					r.failed = mid
				}
			}
		}
	}
	ratio := 0.0
	if raw.ok > 0 {
		ratio = ours.ok / raw.ok
	}
	b.Logf("ours: %v", ours.log)
	b.Logf("raw:  %v", raw.log)
	fmt.Printf("bench rate-10-nodes-1KiB: ours %.0f msg/s anchor %.0f msg/s ratio(ours/anchor) %.3f (≥%.0f%% delivered to 9 subscribers, publisher at ≥95%% of pace; passes ours %.0f anchor %.0f; ramp took %v)\n",
		ours.ok, raw.ok, ratio, 100*rampNeed, ours.passes, raw.passes, time.Since(start).Round(time.Second))
	b.ReportMetric(ours.ok, "ours-msg/s")
	b.ReportMetric(raw.ok, "anchor-msg/s")
	b.ReportMetric(ratio, "ratio")
}

// BenchmarkFanout: the cost of patterns. A publication to the depth-4
// topic /<r>/n00/a/b/c heard by six Subscriptions on the subscriber node,
// one per kind of pattern that matches it (the literal path, "c/...", and
// a "*" in each position below the root: every subtree the path has),
// against one to a depth-4 topic heard by one literal Subscription, in
// another domain on the same four hosts. An operation is a Publish and the
// delivery of the message to every Subscription. Target: ours costs at
// most 1.5× the anchor, ratio(anchor/ours) ≥ 0.667.
func BenchmarkFanout(b *testing.B) {
	dA, dB := nettest.NewDomain(b), nettest.NewDomain(b)
	cfg := Config{Buffer: 1 << 12}
	a := newTestNet(b, dA, cfg, "n00", "n01")
	z := newTestNet(b, dB, cfg, "n00", "n01")
	connectAll(b, append(slices.Clone(a), z...))

	setup := func(d *nettest.Domain, nodes []*testNode, patterns []string) func() error {
		topic := d.Path(b, "n00", "a", "b", "c")
		var subs []*Subscription
		for _, p := range patterns {
			subs = append(subs, subscribe(b, nodes[1], d.Pattern(b, p)))
		}
		ready(b, nodes[0], topic, subs...)
		// Let the subscriber's topic memberships settle (a topic another
		// covers is left after a grace of a few seconds), then wait until
		// the publisher knows them.
		time.Sleep(4 * time.Second)
		for _, p := range patterns {
			name, _ := subscribeTopic(d.Pattern(b, p))
			sub := nodes[1].ps
			sub.mu.Lock()
			tp := sub.topics[name]
			in := tp != nil && tp.relay != nil
			sub.mu.Unlock()
			nettest.WaitFor(b, 10*time.Second, "membership of "+name, func() bool {
				return slices.Contains(nodes[0].ps.gs.ListPeers(name), nodes[1].node.ID()) == in
			})
		}
		nodes[0].ps.forgetPeerChecks()
		for _, s := range subs {
			quiet(s, 200*time.Millisecond) // probes in flight
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		b.Cleanup(func() { cancel(); wg.Wait() })
		var want atomic.Uint64 // the message index awaited
		var got atomic.Int64   // its deliveries
		arrived := make(chan struct{}, 1)
		for _, s := range subs {
			wg.Go(func() {
				for {
					m, err := s.Next(ctx)
					if err != nil {
						return
					}
					if len(m.Payload) < 16 || binary.BigEndian.Uint64(m.Payload[8:]) != want.Load() {
						continue // a probe, or a late copy
					}
					if got.Add(1) == int64(len(subs)) {
						arrived <- struct{}{}
					}
				}
			})
		}
		var i uint64
		return func() error {
			i++
			got.Store(0)
			want.Store(i)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := nodes[0].ps.Publish(ctx, topic, payload(0, i)); err != nil {
				return err
			}
			select {
			case <-arrived:
				return nil
			case <-ctx.Done():
				return fmt.Errorf("message %d: %d of %d deliveries", i, got.Load(), len(subs))
			}
		}
	}
	ours := setup(dA, a, []string{"/n00/a/b/c", "/n00/a/b/c/...", "/n00/a/b/*", "/n00/a/*/c", "/n00/*/b/c", "/*/a/b/c"})
	anchor := setup(dB, z, []string{"/n00/a/b/c"})
	sentA, sentZ := a[0].ps.Stats().Sent, z[0].ps.Stats().Sent
	pubA, pubZ := a[0].ps.Stats().Published, z[0].ps.Stats().Published
	r := benchcmp.Compare(b, "fanout-depth4-6patterns-vs-1topic", benchcmp.Options{Rounds: 7, Ops: 100}, ours, anchor)
	perA := float64(a[0].ps.Stats().Sent-sentA) / float64(a[0].ps.Stats().Published-pubA)
	perZ := float64(z[0].ps.Stats().Sent-sentZ) / float64(z[0].ps.Stats().Published-pubZ)
	fmt.Printf("bench fanout-depth4 cost: ours %v anchor %v ratio(ours/anchor) %.3f (target ≤ 1.5); gossipsub messages per publication: ours %.1f anchor %.1f\n",
		r.Ours, r.Anchor, 1/r.Ratio(), perA, perZ)
}
