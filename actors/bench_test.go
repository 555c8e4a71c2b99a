package actors

import (
	"context"
	"encoding/binary"
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

// The benchmarks compare against anchors in the same run and print the
// ratio (anchor/ours: 1.0 is parity, larger is faster); run with
//
//	go test ./actors -run '^$' -bench . -benchtime=1x
//
// The comparison with protoactor-go lives in bench/protoactor, a module
// of its own.

const (
	benchFrames protocol.ID = "/bench/frames/1.0.0" // length-prefixed 64 B frames, one ack byte per batch
	benchEcho   protocol.ID = "/bench/echo/1.0.0"   // 64 B echo on one long-lived stream
)

// batch is the messages per timed operation in the throughput
// benchmarks: batch-1 tells and one call (or ack) that returns once all
// were handled.
const batch = 100

// BenchmarkLocalTell: tells to a local actor against a ping-pong over a
// plain Go channel between two goroutines (target ≥ 0.25).
func BenchmarkLocalTell(b *testing.B) {
	r := newLocal(b)
	ctx := context.Background()
	n := 0
	p := spawn(b, r, "counter", Func(func(c *Context, m any) (any, error) {
		n++
		return nil, nil
	}))
	ours := func() error {
		for range batch - 1 {
			if err := r.Send(ctx, p, Ping{}); err != nil {
				return err
			}
		}
		_, err := r.Call(ctx, p, Ping{})
		return err
	}
	ping, pong := make(chan Ping), make(chan Ping)
	go func() {
		for m := range ping {
			pong <- m
		}
	}()
	defer close(ping)
	anchor := func() error {
		for range batch {
			ping <- Ping{}
			<-pong
		}
		return nil
	}
	res := benchcmp.Compare(b, "local-tell-x100-vs-chan-ping-pong-x100 (target ≥ 0.25)", benchcmp.Options{Rounds: 9, Ops: 200}, ours, anchor)
	fmt.Printf("bench local-tell: %.0f msg/s ours, %.0f ping-pongs/s anchor\n", batch/res.Ours.Seconds(), batch/res.Anchor.Seconds())
}

// BenchmarkRemote: remote tells against a raw libp2p stream of
// length-prefixed 64 B frames between the same hosts (target ≥ 0.5), and
// the p50 of a remote Call against a raw 64 B echo (target ≤ 1.5×).
func BenchmarkRemote(b *testing.B) {
	d := nettest.NewDomain(b)
	a, z := pair(b, d)
	ctx := context.Background()
	sink := spawn(b, z.Runtime, "sink", Func(func(c *Context, m any) (any, error) {
		if p, ok := m.(Ping); ok && p.N == 1 {
			return Pong{}, nil
		}
		return nil, nil
	}))
	zh, ah := z.node.Host(), a.node.Host()
	zh.SetStreamHandler(benchFrames, func(s network.Stream) {
		defer s.Close()
		var hdr [2]byte
		buf := make([]byte, 64)
		for i := 1; ; i++ {
			if _, err := io.ReadFull(s, hdr[:]); err != nil {
				return
			}
			if _, err := io.ReadFull(s, buf[:binary.BigEndian.Uint16(hdr[:])]); err != nil {
				return
			}
			if i%batch == 0 {
				if _, err := s.Write([]byte{1}); err != nil {
					return
				}
			}
		}
	})
	zh.SetStreamHandler(benchEcho, func(s network.Stream) {
		defer s.Close()
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	})
	if _, err := a.Call(ctx, sink, Ping{N: 1}); err != nil { // connects
		b.Fatal(err)
	}
	nettest.WaitFor(b, 10*time.Second, "identify", func() bool {
		got, err := ah.Peerstore().SupportsProtocols(z.node.ID(), benchFrames, benchEcho)
		return err == nil && len(got) == 2
	})
	frames, err := ah.NewStream(ctx, z.node.ID(), benchFrames)
	if err != nil {
		b.Fatal(err)
	}
	defer frames.Close()
	echo, err := ah.NewStream(ctx, z.node.ID(), benchEcho)
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	frame := make([]byte, 66)
	binary.BigEndian.PutUint16(frame, 64)
	ack := make([]byte, 1)
	anchorTell := func() error {
		for range batch {
			if _, err := frames.Write(frame); err != nil {
				return err
			}
		}
		_, err := io.ReadFull(frames, ack)
		return err
	}
	oursTell := func() error {
		for range batch - 1 {
			if err := a.Send(ctx, sink, Ping{}); err != nil {
				return err
			}
		}
		_, err := a.Call(ctx, sink, Ping{N: 1})
		return err
	}
	res := benchcmp.Compare(b, "remote-tell-x100-vs-raw-stream-64B-frames-x100 (target ≥ 0.5)", benchcmp.Options{Rounds: 5, Ops: 3}, oursTell, anchorTell)
	fmt.Printf("bench remote-tell: %.0f msg/s ours, %.0f frames/s anchor\n", batch/res.Ours.Seconds(), batch/res.Anchor.Seconds())

	in := make([]byte, 64)
	out := make([]byte, 64)
	oursCall := func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := a.Call(ctx, sink, Ping{N: 1})
		return err
	}
	anchorEcho := func() error {
		if _, err := echo.Write(out); err != nil {
			return err
		}
		_, err := io.ReadFull(echo, in)
		return err
	}
	benchcmp.Compare(b, "remote-call-vs-raw-64B-echo", benchcmp.Options{Rounds: 7, Ops: 100}, oursCall, anchorEcho)
	var ot, at []time.Duration
	for i := range 1000 {
		for j, f := range []func() error{oursCall, anchorEcho} {
			if i%2 == 1 {
				j = 1 - j
				f = []func() error{oursCall, anchorEcho}[j]
			}
			start := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			if j == 0 {
				ot = append(ot, time.Since(start))
			} else {
				at = append(at, time.Since(start))
			}
		}
	}
	o50, a50 := pct(ot, 50), pct(at, 50)
	fmt.Printf("bench remote-call-latency: p50 ours %v anchor %v ours/anchor %.2f (target ≤ 1.5); p99 ours %v anchor %v (1000 single ops each, interleaved)\n",
		o50, a50, float64(o50)/float64(a50), pct(ot, 99), pct(at, 99))
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}
