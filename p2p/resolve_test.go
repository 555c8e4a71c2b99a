package p2p

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/nettest"
)

func TestResolveColdThenWarm(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newCluster(t, d, nil, "n0", "n1", "n2", "n3", "n4", "n5")
	ctx := nettest.Context(t, 30*time.Second)
	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			res, err := from.Resolve(ctx, to.Path())
			if err != nil {
				t.Fatalf("%s resolves %s: %v", from.Path().Base(), to.Path().Base(), err)
			}
			if res.FromCache || res.Peer != to.ID() || res.Path != to.Path() || res.Seq == 0 || !res.Expiry.After(time.Now()) || len(res.Addrs) == 0 {
				t.Fatalf("cold resolution %+v, want peer %s", res, to.ID())
			}
			if got := from.Host().Peerstore().Addrs(to.ID()); len(got) == 0 {
				t.Errorf("peerstore of %s has no addresses for %s", from.Path().Base(), to.Path().Base())
			}
			warm, err := from.Resolve(ctx, to.Path())
			if err != nil || !warm.FromCache || warm.Peer != res.Peer || warm.Seq != res.Seq {
				t.Fatalf("warm resolution %+v, %v", warm, err)
			}
		}
	}
	// A warm lookup is a map lookup: well under 0.1 ms.
	const n = 2000
	start := time.Now()
	for range n {
		if _, err := nodes[0].Resolve(ctx, nodes[5].Path()); err != nil {
			t.Fatal(err)
		}
	}
	if per := time.Since(start) / n; per > 100*time.Microsecond {
		t.Errorf("warm resolve takes %v", per)
	}
	for _, to := range nodes[1:3] {
		if _, err := nodes[0].Ping(ctx, to.Path()); err != nil {
			t.Errorf("ping %s: %v", to.Path().Base(), err)
		}
	}
}

func TestResolveNotFound(t *testing.T) {
	d, other := nettest.NewDomain(t), nettest.NewDomain(t)
	nodes := newCluster(t, d, nil, "n0", "n1", "n2")
	for _, p := range []struct{ name, path string }{
		{"unknown-name", d.Path(t, "nobody").String()},
		{"unknown-domain", other.Path(t, "n0").String()},
		{"below-a-node", d.Path(t, "n1", "svc").String()},
	} {
		t.Run(p.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			_, err := nodes[2].Resolve(ctx, mustParse(t, p.path))
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("Resolve = %v, want %v", err, ErrNotFound)
			}
			if ctx.Err() != nil {
				t.Fatalf("not found only at the deadline: %v", err)
			}
			if _, err := nodes[2].Connect(ctx, mustParse(t, p.path)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Connect = %v, want %v", err, ErrNotFound)
			}
		})
	}
}

// TestResolveExpiredAfterClose: a node's record outlives it by at most
// its TTL; then resolution says it expired.
func TestResolveExpiredAfterClose(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newCluster(t, d, nil, "n0", "n1", "n2")
	id, _ := member(t, d, "brief")
	cfg := testConfig(nodes[0].AddrInfo())
	cfg.RecordTTL = 2 * time.Second
	brief, err := New(context.Background(), id, cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveNode(t, brief)
	waitPublished(t, brief)
	ctx := nettest.Context(t, 30*time.Second)
	res, err := nodes[1].Resolve(ctx, id.Path)
	if err != nil || res.Peer != brief.ID() {
		t.Fatalf("Resolve = %+v, %v", res, err)
	}
	if err := brief.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	var last error
	nettest.WaitFor(t, 15*time.Second, "the record to expire", func() bool {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, last = nodes[1].Resolve(lctx, id.Path) // cache entry expires with the record
		return last != nil
	})
	if !errors.Is(last, ErrExpired) || !strings.Contains(last.Error(), "expired at") {
		t.Fatalf("after expiry Resolve = %v, want %v", last, ErrExpired)
	}
	if since := time.Since(closed); since > 2*cfg.RecordTTL+2*time.Second {
		t.Errorf("record outlived its node by %v", since)
	}
	nodes[2].Invalidate(id.Path)
	if _, err := nodes[2].Resolve(ctx, id.Path); !errors.Is(err, ErrExpired) {
		t.Errorf("fresh Resolve on another node = %v, want %v", err, ErrExpired)
	}
}

// TestRestartWithNewPeerID: a node restarted with a fresh host key (a new
// peer ID) for the same path supersedes its old record.
func TestRestartWithNewPeerID(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newCluster(t, d, nil, "n0", "n1", "n2")
	id1, nk := member(t, d, "phone")
	old := startNode(t, id1, testConfig(nodes[0].AddrInfo()))
	waitPublished(t, old)
	ctx := nettest.Context(t, 30*time.Second)
	if res, err := nodes[2].Resolve(ctx, id1.Path); err != nil || res.Peer != old.ID() {
		t.Fatalf("Resolve = %+v, %v", res, err)
	}
	oldSeq := old.Published().Seq
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	id2, err := NewIdentity(ctx, nk, id1.Writecap, id1.Path, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	restarted := startNode(t, id2, testConfig(nodes[1].AddrInfo()))
	waitPublished(t, restarted)
	if restarted.ID() == old.ID() {
		t.Fatal("restart kept the peer ID")
	}
	if restarted.Published().Seq <= oldSeq {
		t.Fatalf("new seq %d is not above old %d", restarted.Published().Seq, oldSeq)
	}
	for _, n := range nodes {
		n.Invalidate(id1.Path)
		res, err := n.Resolve(ctx, id1.Path)
		if err != nil || res.Peer != restarted.ID() {
			t.Fatalf("%s: Resolve = %+v, %v; want %s", n.Path().Base(), res, err, restarted.ID())
		}
	}
	if pid, err := nodes[2].Connect(ctx, id1.Path); err != nil || pid != restarted.ID() {
		t.Fatalf("Connect = %s, %v", pid, err)
	}
}

// TestTwoDomains: members of two domains share one DHT, resolve and
// authenticate each other, and neither can publish for the other's paths.
func TestTwoDomains(t *testing.T) {
	da, db := nettest.NewDomain(t), nettest.NewDomain(t)
	as := newCluster(t, da, nil, "a0", "a1", "a2")
	bs := newCluster(t, db, []peer.AddrInfo{as[0].AddrInfo()}, "b0", "b1")
	ctx := nettest.Context(t, 30*time.Second)
	for _, pair := range [][2]*Node{{as[2], bs[1]}, {bs[0], as[1]}, {bs[1], as[2]}} {
		from, to := pair[0], pair[1]
		pid, err := from.Connect(ctx, to.Path())
		if err != nil || pid != to.ID() {
			t.Fatalf("%s connects to %s: %s, %v", from.Path(), to.Path(), pid, err)
		}
		if p, ok := from.VerifiedPath(pid); !ok || p != to.Path() || p.Root() == from.Path().Root() {
			t.Fatalf("VerifiedPath = %s, %v", p, ok)
		}
		if _, err := from.Ping(ctx, to.Path()); err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
	// b1, a genuine member of domain B, claims a path of domain A.
	target := da.Path(t, "a1")
	stolen := &Identity{HostKey: bs[1].id.HostKey, Cert: bs[1].id.Cert, Writecap: bs[1].id.Writecap, Path: target}
	rec := mustSign(t, stolen, uint64(time.Now().UnixNano()), time.Now().Add(time.Hour))
	key := RecordKey(target)
	if err := as[0].validator.Validate(key, rec.Marshal()); !isAll(err, ErrBadRecord, caps.ErrRootMismatch) {
		t.Fatalf("Validate = %v, want %v", err, caps.ErrRootMismatch)
	}
	// The same through the DHT, from a permissive B node.
	pid, _ := member(t, db, "pusher")
	pusher := startMalicious(t, pid, bs[0].AddrInfo())
	waitPublished(t, pusher)
	if err := pusher.dht.PutValue(ctx, key, rec.Marshal()); err != nil {
		t.Fatal(err)
	}
	for _, n := range append(as, bs...) {
		if r, ok := storedRecord(t, n, key); ok && r.Peer == bs[1].ID() {
			t.Errorf("%s stored B's record for %s", n.Path(), target)
		}
	}
	as[2].Invalidate(target)
	if res, err := as[2].Resolve(ctx, target); err != nil || res.Peer != as[1].ID() {
		t.Fatalf("Resolve(%s) = %+v, %v; want %s", target, res, err, as[1].ID())
	}
}

// TestCacheRefresh: a recently used entry is refreshed in the background
// before it goes stale, so a republished record reaches warm lookups.
func TestCacheRefresh(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newCluster(t, d, nil, "n0", "n1")
	id, _ := member(t, d, "watcher")
	cfg := testConfig(nodes[0].AddrInfo())
	cfg.ResolveRefresh = 600 * time.Millisecond
	w := startNode(t, id, cfg)
	waitPublished(t, w)
	ctx := nettest.Context(t, 20*time.Second)
	target := nodes[1]
	first, err := w.Resolve(ctx, target.Path())
	if err != nil {
		t.Fatal(err)
	}
	if err := target.publish(ctx); err != nil {
		t.Fatal(err)
	}
	newSeq := target.Published().Seq
	nettest.WaitFor(t, 10*time.Second, "a background refresh", func() bool {
		e := w.cache.peek(target.Path())
		return e != nil && e.res.Seq >= newSeq
	})
	res, err := w.Resolve(ctx, target.Path())
	if err != nil || res.Seq < newSeq || res.Seq == first.Seq {
		t.Fatalf("Resolve = %+v, %v; want seq %d", res, err, newSeq)
	}
}

func TestCloseIdempotent(t *testing.T) {
	d := nettest.NewDomain(t)
	id, _ := member(t, d, "n0")
	n, err := New(context.Background(), id, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Serve(context.Background()) }()
	nettest.WaitFor(t, 5*time.Second, "Serve to start", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.serving
	})
	for range 3 {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after Close = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	if err := n.Serve(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve on a closed node = %v", err)
	}
	if _, err := n.Resolve(context.Background(), d.Path(t, "n1")); !errors.Is(err, ErrClosed) {
		t.Errorf("Resolve on a closed node = %v", err)
	}
}

func TestServeReturnsWhenContextEnds(t *testing.T) {
	d := nettest.NewDomain(t)
	id, _ := member(t, d, "n0")
	n, err := New(context.Background(), id, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := n.Serve(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Serve = %v", err)
	}
}

func TestNewRefusesInvalidIdentity(t *testing.T) {
	d, evil := nettest.NewDomain(t), nettest.NewDomain(t)
	good, _ := member(t, d, "laptop")
	for _, bad := range badIdentities {
		t.Run(bad.name, func(t *testing.T) {
			_, err := New(context.Background(), bad.make(t, d, evil, good), testConfig())
			if !errors.Is(err, bad.want) {
				t.Fatalf("New = %v, want %v", err, bad.want)
			}
		})
	}
	if _, err := New(context.Background(), &Identity{}, testConfig()); !errors.Is(err, caps.ErrMalformed) {
		t.Fatalf("New(empty identity) = %v", err)
	}
}

func TestNewIdentity(t *testing.T) {
	d := nettest.NewDomain(t)
	nk := nettest.NewKey(t)
	p := d.Path(t, "laptop")
	now := time.Now()
	w := d.Grant(t, nettest.PrincipalID(t, nk.PublicKey()), p, now.Add(-time.Minute), now.Add(time.Hour))
	id, err := NewIdentity(context.Background(), nk, w, p, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Expiry().Equal(w.Expiry()) {
		t.Errorf("Expiry = %v, want the writecap's %v", id.Expiry(), w.Expiry())
	}
	if _, err := NewIdentity(context.Background(), nettest.NewKey(t), w, p, time.Hour); !errors.Is(err, caps.ErrWrongHolder) {
		t.Errorf("identity with another node key: %v", err)
	}
	if _, err := NewIdentity(context.Background(), nk, w, d.Path(t, "other"), time.Hour); !errors.Is(err, caps.ErrPathNotCovered) {
		t.Errorf("identity for an uncovered path: %v", err)
	}
	if _, err := NewIdentity(context.Background(), nk, w, p, 0); err == nil {
		t.Errorf("identity with zero lifetime made")
	}
}

func TestConfigValidate(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Listen) != 4 || c.RecordTTL != DefaultRecordTTL || c.Limits.Conns != DefaultConns || c.Limits.HighWater != DefaultHighWater {
		t.Errorf("defaults: %+v", c)
	}
	for _, a := range c.Listen {
		if !strings.Contains(a.String(), "/4737") {
			t.Errorf("default listen address %s is not on port 4737", a)
		}
	}
	for name, c := range map[string]Config{
		"ttl-too-short":     {RecordTTL: time.Millisecond},
		"ttl-too-long":      {RecordTTL: 48 * time.Hour},
		"water-inverted":    {Limits: Limits{LowWater: 10, HighWater: 5}},
		"inbound-above-all": {Limits: Limits{Conns: 10, ConnsInbound: 20}},
		"negative-memory":   {Limits: Limits{Memory: -1}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	if dc := DaemonConfig(); !dc.NAT || !dc.MDNS || len(dc.Listen) != 4 || dc.Loopback {
		t.Errorf("DaemonConfig = %+v", dc)
	}
	if _, err := (Limits{Memory: DefaultMemory, FDs: DefaultFDs, Conns: 10, ConnsInbound: 5, Streams: 10}).resourceManager(); err != nil {
		t.Errorf("resource manager: %v", err)
	}
}
