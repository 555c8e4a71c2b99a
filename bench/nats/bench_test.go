package natsbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"

	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// start runs a node named name of d on 127.0.0.1 (as msg's own tests do),
// bootstrapped to bs, with a msg.Router on it; both are closed at cleanup.
func start(b *testing.B, d *nettest.Domain, name string, bs ...peer.AddrInfo) (*p2p.Node, *msg.Router) {
	b.Helper()
	nk, p, w := d.Member(b, name)
	id, err := p2p.NewIdentity(context.Background(), nk, w, p, 24*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	n, err := p2p.New(context.Background(), id, p2p.Config{
		Listen:         []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Bootstrap:      bs,
		Loopback:       true,
		RecordTTL:      time.Minute,
		ResolveRefresh: time.Minute,
		ResolveTimeout: 10 * time.Second,
		Log:            nettest.Logger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- n.Serve(context.Background()) }()
	r, err := msg.New(n, msg.Config{Log: nettest.Logger()})
	if err != nil {
		n.Close()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		r.Close()
		n.Close()
		select {
		case err := <-served:
			// ErrClosed: closed before Serve began.
			if err != nil && !errors.Is(err, p2p.ErrClosed) {
				b.Errorf("serve %s: %v", p, err)
			}
		case <-time.After(10 * time.Second):
			b.Errorf("serve %s did not return after Close", p)
		}
	})
	return n, r
}

// waitPublished waits until every node's record has reached the DHT.
func waitPublished(b *testing.B, nodes ...*p2p.Node) {
	b.Helper()
	for _, n := range nodes {
		for deadline := time.Now().Add(20 * time.Second); ; {
			pub := n.Published()
			if pub.Seq != 0 && pub.Err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: record not published in 20s: %v", n.Path(), pub.Err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func mustJoin(b *testing.B, p paths.Path, comps ...string) paths.Path {
	b.Helper()
	q, err := p.Join(comps...)
	if err != nil {
		b.Fatal(err)
	}
	return q
}

// startNATS runs Debian's nats-server on a free loopback port for b.
func startNATS(b *testing.B) string {
	b.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		b.Skip("nats-server not installed (apt-get install nats-server): the outside anchor needs it")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", fmt.Sprint(port))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return url
		}
		if time.Now().After(deadline) {
			b.Fatalf("nats-server did not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkVsNATS measures Blocktree against NATS on the same machine, as
// an outside anchor: 64 B request/reply latency, and the rate of 1→1
// fire-and-forget messages (ours: Send to one endpoint; NATS: publish to
// one subscriber). The ratio is the long-term target, not a pass condition.
func BenchmarkVsNATS(b *testing.B) {
	url := startNATS(b)
	d := nettest.NewDomain(b)
	an, a := start(b, d, "a")
	zn, z := start(b, d, "b", an.AddrInfo())
	waitPublished(b, an, zn)
	echoPath := mustJoin(b, zn.Path(), "echo")
	if _, err := z.Handle(echoPath, func(_ context.Context, m *msg.Message) ([]byte, error) {
		return io.ReadAll(m.Body)
	}); err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	sinkPath := mustJoin(b, zn.Path(), "sink")
	if _, err := z.Handle(sinkPath, func(_ context.Context, m *msg.Message) ([]byte, error) {
		io.Copy(io.Discard, m.Body)
		got.Add(1)
		return nil, nil
	}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 64)
	if _, err := a.Call(ctx, echoPath, bytes.NewReader(payload), 64); err != nil {
		b.Fatal(err)
	}

	srv, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	cli, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	if _, err := srv.Subscribe("echo", func(m *nats.Msg) { m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	var natsGot atomic.Int64
	if _, err := srv.Subscribe("sink", func(*nats.Msg) { natsGot.Add(1) }); err != nil {
		b.Fatal(err)
	}
	srv.Flush()

	ours := func() error { _, err := a.Call(ctx, echoPath, bytes.NewReader(payload), 64); return err }
	anchor := func() error { _, err := cli.Request("echo", payload, 10*time.Second); return err }
	benchcmp.Compare(b, "msg-call-64B-vs-nats-request (outside anchor)", benchcmp.Options{Rounds: 7, Ops: 300}, ours, anchor)

	// 1→1 rate: send n messages and wait until the receiver has them all.
	const n = 50000
	rate := func(send func() error, received func() int64) (float64, error) {
		start := received()
		t0 := time.Now()
		for range n {
			if err := send(); err != nil {
				return 0, err
			}
		}
		for received()-start < n {
			if time.Since(t0) > 60*time.Second {
				return 0, fmt.Errorf("only %d of %d delivered", received()-start, n)
			}
			time.Sleep(time.Millisecond)
		}
		return n / time.Since(t0).Seconds(), nil
	}
	// One sender, one receiver: Send queues on the session without a
	// round trip, as a NATS publish does.
	send := func() error { return a.Send(ctx, sinkPath, bytes.NewReader(payload), 64) }
	var oursR, natsR []float64
	for range 5 {
		r1, err := rate(send, got.Load)
		if err != nil {
			b.Fatal(err)
		}
		r2, err := rate(func() error { return cli.Publish("sink", payload) }, natsGot.Load)
		if err != nil {
			b.Fatal(err)
		}
		oursR, natsR = append(oursR, r1), append(natsR, r2)
	}
	mo, mn := medianF(oursR), medianF(natsR)
	fmt.Printf("bench msg-send-rate-vs-nats-publish (outside anchor; 1 sender to 1 receiver, 64 B): ours %.0f msg/s, nats %.0f msg/s, ratio(ours/nats) %.3f (target ≥ 0.5; 5 interleaved rounds of %d, medians)\n", mo, mn, mo/mn, n)
	b.ReportMetric(mo, "ours-msg/s")
	b.ReportMetric(mn, "nats-msg/s")
}

func medianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
