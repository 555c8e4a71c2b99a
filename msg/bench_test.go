package msg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/nettest"
)

// The benchmarks compare against raw libp2p anchors on the same two nodes
// and connection, in the same run, and print the ratio (anchor/ours, so
// 1.0 is parity); run with -benchtime=1x:
//
//	go test ./msg -run '^$' -bench . -benchtime=1x

const (
	benchEchoStream protocol.ID = "/bench/echo-stream/1.0.0" // one long-lived stream, 64 B each way per op
	benchEchoOnce   protocol.ID = "/bench/echo-once/1.0.0"   // a stream per op
	benchSink       protocol.ID = "/bench/sink/1.0.0"        // drains a stream, answers one byte
)

// BenchmarkCall64B: a 64 B Call on an existing connection against (a) a
// raw echo on one long-lived stream (target ratio ≥ 1/1.5) and (b) a raw
// echo on a new stream per request (target ≥ 1/1.1); then the p50 and p99
// of single operations, interleaved (target: our p99 ≤ 2× the anchor's).
func BenchmarkCall64B(b *testing.B) {
	d := nettest.NewDomain(b)
	a, z := pair(b, d, Config{}, Config{})
	p := mustJoin(b, z.node.Path(), "echo")
	if _, err := z.Handle(p, echo); err != nil {
		b.Fatal(err)
	}
	zh, ah := z.node.Host(), a.node.Host()
	zh.SetStreamHandler(benchEchoStream, func(s network.Stream) {
		defer s.Close()
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				s.Reset()
				return
			}
		}
	})
	zh.SetStreamHandler(benchEchoOnce, func(s network.Stream) {
		buf := make([]byte, 64)
		if _, err := io.ReadFull(s, buf); err != nil {
			s.Reset()
			return
		}
		if _, err := s.Write(buf); err != nil {
			s.Reset()
			return
		}
		s.Close()
	})
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 64)
	if _, err := a.Call(ctx, p, bytes.NewReader(payload), 64); err != nil { // connects
		b.Fatal(err)
	}
	// Identify has told a's host that z speaks the anchors' protocols by
	// now, so NewStream negotiates them lazily, as ours does.
	waitProtocols(b, a, z, benchEchoStream, benchEchoOnce)

	ours := func() error {
		r, err := a.Call(ctx, p, bytes.NewReader(payload), 64)
		if err == nil && len(r) != 64 {
			err = fmt.Errorf("reply of %d bytes", len(r))
		}
		return err
	}
	long, err := ah.NewStream(ctx, z.node.ID(), benchEchoStream)
	if err != nil {
		b.Fatal(err)
	}
	defer long.Close()
	in := make([]byte, 64)
	oneStream := func() error {
		if _, err := long.Write(payload); err != nil {
			return err
		}
		_, err := io.ReadFull(long, in)
		return err
	}
	streamPerOp := func() error {
		s, err := ah.NewStream(ctx, z.node.ID(), benchEchoOnce)
		if err != nil {
			return err
		}
		if _, err := s.Write(payload); err != nil {
			s.Reset()
			return err
		}
		if _, err := io.ReadFull(s, in); err != nil {
			s.Reset()
			return err
		}
		return s.Close()
	}
	opts := benchcmp.Options{Rounds: 21, Ops: 300}
	benchcmp.Compare(b, "msg-call-64B-vs-one-stream-echo (target ≥ 0.667)", opts, ours, oneStream)
	benchcmp.Compare(b, "msg-call-64B-vs-stream-per-request-echo (target ≥ 0.909)", opts, ours, streamPerOp)
	// The floor of any protocol with a stream per message: the raw
	// stream-per-request echo against the one-stream echo.
	benchcmp.Compare(b, "raw-stream-per-request-echo-vs-one-stream-echo (floor for a stream per message)", opts, streamPerOp, oneStream)

	withDeadline := func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := a.Call(ctx, p, bytes.NewReader(payload), 64)
		return err
	}
	benchcmp.Compare(b, "msg-call-64B-with-deadline-vs-stream-per-request-echo", opts, withDeadline, streamPerOp)

	percentiles(b, 3000, ours, map[string]func() error{"one-stream-echo": oneStream, "stream-per-request-echo": streamPerOp})
}

// percentiles times n single operations of ours and of each anchor,
// interleaved, and prints their p50 and p99.
func percentiles(b *testing.B, n int, ours func() error, anchors map[string]func() error) {
	b.Helper()
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range anchors {
			if !yield(k) {
				return
			}
		}
	})
	var oursT []time.Duration
	anchorT := make(map[string][]time.Duration)
	timed := func(f func() error) time.Duration {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for i := range n {
		// Alternate who goes first, so that neither always runs on the
		// heels of the other.
		if i%2 == 0 {
			oursT = append(oursT, timed(ours))
		}
		for _, k := range names {
			anchorT[k] = append(anchorT[k], timed(anchors[k]))
		}
		if i%2 == 1 {
			oursT = append(oursT, timed(ours))
		}
	}
	op50, op99 := pct(oursT, 50), pct(oursT, 99)
	for _, k := range names {
		a50, a99 := pct(anchorT[k], 50), pct(anchorT[k], 99)
		fmt.Printf("bench msg-call-64B-latency vs %s: p50 ours %v anchor %v ours/anchor %.2f (target ≤ 1.5); p99 ours %v anchor %v ours/anchor %.2f (target ≤ 2) (%d single ops each, interleaved)\n",
			k, op50, a50, float64(op50)/float64(a50), op99, a99, float64(op99)/float64(a99), n)
	}
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

// waitProtocols waits until from's peerstore knows that to speaks ps.
func waitProtocols(b *testing.B, from, to *testNode, ps ...protocol.ID) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := from.node.Host().Peerstore().SupportsProtocols(to.node.ID(), ps...)
		if err == nil && len(got) == len(ps) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("identify did not report %v in 10s", ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// repeatReader yields n bytes, copied from a fixed pattern: cheap to
// generate, so the benchmarks time the transport.
type repeatReader struct {
	pattern []byte
	n       int64
}

func newRepeatReader(n int64) *repeatReader {
	p := make([]byte, 1<<20)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return &repeatReader{pattern: p, n: n}
}

func (r *repeatReader) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), r.n, int64(len(r.pattern)))]
	n := copy(b, r.pattern)
	r.n -= int64(n)
	return n, nil
}

// drain reads r to its end in 256 KiB reads and returns the count.
func drain(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// BenchmarkStream1GiB: 1 GiB as one Call (the handler drains it and
// answers once it has all) against a raw libp2p stream copying 1 GiB to a
// handler that drains it and answers one byte, on the same connection.
// Target ratio ≥ 0.85.
func BenchmarkStream1GiB(b *testing.B) {
	const size = 1 << 30
	d := nettest.NewDomain(b)
	a, z := pair(b, d, Config{MaxMessage: 2 << 30}, Config{MaxMessage: 2 << 30})
	p := mustJoin(b, z.node.Path(), "sink")
	if _, err := z.Handle(p, func(_ context.Context, m *Message) ([]byte, error) {
		n, err := drain(m.Body, make([]byte, 256<<10))
		if err == nil && n != m.Size {
			err = fmt.Errorf("drained %d of %d bytes", n, m.Size)
		}
		return nil, err
	}); err != nil {
		b.Fatal(err)
	}
	z.node.Host().SetStreamHandler(benchSink, func(s network.Stream) {
		n, err := drain(s, make([]byte, 256<<10))
		if err != nil || n != size {
			s.Reset()
			return
		}
		_, _ = s.Write([]byte{1})
		s.Close()
	})
	ctx := context.Background()
	if _, err := a.Call(ctx, p, nil, 0); err != nil { // connects
		b.Fatal(err)
	}
	waitProtocols(b, a, z, benchSink)
	ours := func() error {
		_, err := a.Call(ctx, p, newRepeatReader(size), size)
		return err
	}
	buf := make([]byte, 128<<10)
	anchor := func() error {
		s, err := a.node.Host().NewStream(ctx, z.node.ID(), benchSink)
		if err != nil {
			return err
		}
		if _, err := io.CopyBuffer(s, newRepeatReader(size), buf); err != nil {
			s.Reset()
			return err
		}
		if err := s.CloseWrite(); err != nil {
			s.Reset()
			return err
		}
		var ack [1]byte
		if _, err := io.ReadFull(s, ack[:]); err != nil {
			s.Reset()
			return errors.Join(errors.New("no ack"), err)
		}
		return s.Close()
	}
	benchcmp.Compare(b, "msg-call-1GiB-vs-raw-stream (target ≥ 0.85)", benchcmp.Options{Rounds: 5, Ops: 1}, ours, anchor)
}
