package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

// The benchmarks compare against named anchors in the same run and print
// the ratio (anchor/ours); run with -benchtime=1x:
//
//	go test ./p2p -run '^$' -bench . -benchtime=1x

// benchNetwork builds an n-node loopback network and fails if that takes
// a minute or more.
func benchNetwork(b *testing.B, n int) []*Node {
	b.Helper()
	d := nettest.NewDomain(b)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("n%02d", i)
	}
	start := time.Now()
	nodes := newCluster(b, d, nil, names...)
	if took := time.Since(start); took >= time.Minute {
		b.Fatalf("building %d nodes took %v", n, took)
	} else {
		b.Logf("%d-node network built in %v", n, took.Round(time.Millisecond))
	}
	return nodes
}

// BenchmarkResolveColdVsFindPeer: on a 30-node network, a cold resolution
// (cache dropped before each operation: one DHT GetValue lookup plus
// validation) of other nodes' paths against kad-dht's GetClosestPeers for
// the same keys, the same lookup without values. Target: ratio ≥ 1/1.2.
// FindPeer for the same nodes is printed too; it is answered from the
// peerstore when already connected, which in a 30-node network it nearly
// always is, so it times a map lookup, not a lookup.
func BenchmarkResolveColdVsFindPeer(b *testing.B) {
	nodes := benchNetwork(b, 30)
	from := nodes[len(nodes)/2] // not the bootstrap hub
	var targets []paths.Path
	var ids []peer.ID
	for _, n := range nodes {
		if n != from {
			targets = append(targets, n.Path())
			ids = append(ids, n.ID())
		}
	}
	ctx := context.Background()
	settle(b, nodes, from, targets)
	i, j := 0, 0
	ours := func() error {
		p := targets[i%len(targets)]
		i++
		from.Invalidate(p)
		res, err := from.Resolve(ctx, p)
		if err == nil && res.FromCache {
			err = errors.New("cold resolve answered from cache")
		}
		return err
	}
	closest := func() error {
		p := targets[j%len(targets)]
		j++
		_, err := from.dht.GetClosestPeers(ctx, RecordKey(p))
		return err
	}
	opts := benchcmp.Options{Rounds: 9, Ops: len(targets)}
	benchcmp.Compare(b, "resolve-cold-vs-getclosestpeers", opts, ours, closest)
	k := 0
	findPeer := func() error {
		id := ids[k%len(ids)]
		k++
		_, err := from.dht.FindPeer(ctx, id)
		return err
	}
	benchcmp.Compare(b, "resolve-cold-vs-findpeer(connected, local answer)", opts, ours, findPeer)
}

// settle lets a fresh network quiet down before measuring: it waits
// (bounded) until no routing table has changed for a second, then resolves
// every target once, which also lets the DHT push the current records to
// closest peers that lack them.
func settle(b *testing.B, nodes []*Node, from *Node, targets []paths.Path) {
	b.Helper()
	sizes := func() []int {
		s := make([]int, len(nodes))
		for i, n := range nodes {
			s[i] = n.RoutingTableSize()
		}
		return s
	}
	deadline := time.Now().Add(20 * time.Second)
	last, since := sizes(), time.Now()
	for time.Since(since) < time.Second && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if now := sizes(); !slices.Equal(now, last) {
			last, since = now, time.Now()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, p := range targets {
		from.Invalidate(p)
		if _, err := from.Resolve(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the DHT's fix-up puts run in the background
}

// BenchmarkResolveWarm: a cached resolution against a plain map lookup of
// the same answer, and against a cold resolution; the warm p50 and p99
// over single operations are reported too. Goal: warm p50 ≤ 0.1 ms.
func BenchmarkResolveWarm(b *testing.B) {
	nodes := benchNetwork(b, 6)
	from, to := nodes[1], nodes[4]
	ctx := context.Background()
	res, err := from.Resolve(ctx, to.Path())
	if err != nil {
		b.Fatal(err)
	}
	m := map[paths.Path]Resolution{to.Path(): res}
	var sink Resolution
	warm := func() error {
		r, err := from.Resolve(ctx, to.Path())
		if err == nil && !r.FromCache {
			err = errors.New("warm resolve went to the network")
		}
		sink = r
		return err
	}
	plain := func() error {
		sink = m[to.Path()]
		return nil
	}
	benchcmp.Compare(b, "resolve-warm-vs-map-lookup", benchcmp.Options{Rounds: 7, Ops: 20000}, warm, plain)
	cold := func() error {
		from.Invalidate(to.Path())
		_, err := from.Resolve(ctx, to.Path())
		return err
	}
	benchcmp.Compare(b, "resolve-warm-vs-cold", benchcmp.Options{Rounds: 7, Ops: 50}, warm, cold)
	if _, err := from.Resolve(ctx, to.Path()); err != nil { // warm the cache again
		b.Fatal(err)
	}
	lat := make([]time.Duration, 20000)
	for i := range lat {
		t0 := time.Now()
		if err := warm(); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	b.ReportMetric(float64(p50.Nanoseconds()), "warm-p50-ns")
	b.ReportMetric(float64(p99.Nanoseconds()), "warm-p99-ns")
	fmt.Printf("bench resolve-warm: p50 %v p99 %v over %d single operations (goal p50 <= 100µs)\n", p50, p99, len(lat))
	_ = sink
}

// rawHost is a plain libp2p host with the same transport, security and
// muxer stack as a Node, for the raw anchor.
func rawHost(b *testing.B) host.Host {
	b.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()), // as a Node without NAT traversal
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(), libp2p.DisableMetrics(), libp2p.Ping(false),
	)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}

const echoProtocol = "/bench/echo/1.0.0"

// BenchmarkFirstCallVsRawLibp2p: the first call to a resolved peer over a
// fresh connection — connect, both proofs, and a 1-byte echo on the ping
// protocol — against raw libp2p: connect, a new stream and a 1-byte echo
// on a plain handler. Each operation ends by closing the connection on both
// sides. Target: ratio ≥ 1/1.5.
func BenchmarkFirstCallVsRawLibp2p(b *testing.B) {
	nodes := benchNetwork(b, 3)
	a, z := nodes[1], nodes[2]
	ctx := context.Background()
	if _, err := a.Resolve(ctx, z.Path()); err != nil {
		b.Fatal(err)
	}
	// disconnect closes every connection between x and y, from both sides,
	// and waits (bounded) until neither sees one, so the next operation
	// starts from nothing; it closes again if a background task (say, a
	// DHT routing-table check) dialled meanwhile.
	disconnect := func(x, y host.Host) error {
		deadline := time.Now().Add(5 * time.Second)
		for {
			if err := x.Network().ClosePeer(y.ID()); err != nil {
				return err
			}
			if err := y.Network().ClosePeer(x.ID()); err != nil {
				return err
			}
			for range 200 {
				if x.Network().Connectedness(y.ID()) != network.Connected && y.Network().Connectedness(x.ID()) != network.Connected {
					return nil
				}
				time.Sleep(50 * time.Microsecond)
			}
			if time.Now().After(deadline) {
				return errors.New("the peers stay connected")
			}
		}
	}
	one := []byte{7}
	ours := func() error {
		pid, err := a.Connect(ctx, z.Path())
		if err != nil {
			return err
		}
		if err := a.ping(ctx, pid, one); err != nil {
			return err
		}
		return disconnect(a.Host(), z.Host())
	}

	h1, h2 := rawHost(b), rawHost(b)
	h2.SetStreamHandler(echoProtocol, func(s network.Stream) {
		var buf [1]byte
		if _, err := io.ReadFull(s, buf[:]); err != nil {
			s.Reset()
			return
		}
		_, _ = s.Write(buf[:])
		_ = s.Close()
	})
	target := peer.AddrInfo{ID: h2.ID(), Addrs: h2.Addrs()}
	raw := func() error {
		if err := h1.Connect(ctx, target); err != nil {
			return err
		}
		s, err := h1.NewStream(ctx, h2.ID(), echoProtocol)
		if err != nil {
			return err
		}
		if _, err := s.Write(one); err != nil {
			return err
		}
		var buf [1]byte
		if _, err := io.ReadFull(s, buf[:]); err != nil {
			return err
		}
		_ = s.Close()
		return disconnect(h1, h2)
	}
	benchcmp.Compare(b, "first-call-vs-raw-libp2p", benchcmp.Options{Rounds: 7, Ops: 40}, ours, raw)
}
