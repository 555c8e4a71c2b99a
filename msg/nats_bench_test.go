package msg

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/nettest"
)

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
	a, z := pair(b, d, Config{}, Config{})
	echoPath := mustJoin(b, z.node.Path(), "echo")
	if _, err := z.Handle(echoPath, echo); err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	sinkPath := mustJoin(b, z.node.Path(), "sink")
	if _, err := z.Handle(sinkPath, func(_ context.Context, m *Message) ([]byte, error) {
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
	const n = 2000
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
	// Send returns once the receiver accepted the message, so one sender
	// waits a round trip per message; applications send concurrently.
	const senders = 64
	work := make(chan struct{}, senders)
	errs := make(chan error, 1)
	for range senders {
		go func() {
			for range work {
				if err := a.Send(ctx, sinkPath, bytes.NewReader(payload), 64); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	defer close(work)
	concurrentSend := func() error {
		select {
		case err := <-errs:
			return err
		case work <- struct{}{}:
			return nil
		}
	}
	var oursR, natsR []float64
	for range 5 {
		r1, err := rate(concurrentSend, got.Load)
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
	fmt.Printf("bench msg-send-rate-vs-nats-publish (outside anchor; ours with %d concurrent senders): ours %.0f msg/s, nats %.0f msg/s, ratio(ours/nats) %.3f (5 interleaved rounds of %d, medians)\n", senders, mo, mn, mo/mn, n)
	b.ReportMetric(mo, "ours-msg/s")
	b.ReportMetric(mn, "nats-msg/s")
}

func medianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
