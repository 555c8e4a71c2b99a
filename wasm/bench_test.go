package wasm

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/nettest"
)

// BenchmarkCallEcho compares a Call to the Wasm echo module with a Call to
// a native Go echo actor on the same actors runtime (target: Wasm p50 ≤ 2×
// native). Run with -benchtime=1x.
func BenchmarkCallEcho(b *testing.B) {
	l := newLocal(b)
	wp := l.start(b, Manifest{Name: "echo", Module: l.module(b, "echo")})
	np, err := l.acts.Spawn(context.Background(), "native-echo", actors.Func(func(c *actors.Context, m any) (any, error) {
		return m.([]byte), nil
	}))
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 64)
	ctx := context.Background()
	wasmCall := func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := l.acts.Call(ctx, wp, payload)
		return err
	}
	nativeCall := func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := l.acts.Call(ctx, np, payload)
		return err
	}
	benchcmp.Compare(b, "wasm-echo-call-vs-native-go-echo", benchcmp.Options{Rounds: 7, Ops: 200}, wasmCall, nativeCall)
	var ot, at []time.Duration
	fs := []func() error{wasmCall, nativeCall}
	for i := range 2000 {
		for k := range 2 {
			j := k
			if i%2 == 1 {
				j = 1 - k
			}
			start := time.Now()
			if err := fs[j](); err != nil {
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
	b.ReportMetric(float64(o50)/float64(a50), "p50-wasm/native")
	fmt.Printf("bench wasm-call-latency: p50 wasm %v native %v wasm/native %.2f (target ≤ 2); p99 wasm %v native %v (2000 single calls each, interleaved)\n",
		o50, a50, float64(o50)/float64(a50), pct(ot, 99), pct(at, 99))
}

// BenchmarkStart reports cold start (a new runtime, empty compilation
// cache: Start → first reply) and warm start (the compiled module cached:
// Stop, Start → first reply) of the echo module.
func BenchmarkStart(b *testing.B) {
	l := newLocal(b)
	mod := l.module(b, "echo")
	sm := l.admin.sign(b, Manifest{Name: "echo", Module: mod})
	p := join(b, l.node, "echo")
	firstReply := func(rt *Runtime) time.Duration {
		ctx := nettest.Context(b, 2*time.Minute)
		start := time.Now()
		if err := rt.Start(ctx, sm); err != nil {
			b.Fatal(err)
		}
		if err := rt.WaitRunning(ctx, "echo"); err != nil {
			b.Fatal(err)
		}
		if got := call(b, l.acts, p, "x"); got != "x" {
			b.Fatalf("reply %q", got)
		}
		d := time.Since(start)
		if err := rt.Stop(ctx, "echo"); err != nil {
			b.Fatal(err)
		}
		return d
	}
	var cold, warm []time.Duration
	for range 3 {
		rt, err := New(context.Background(), Config{Actors: l.acts, Files: l.files})
		if err != nil {
			b.Fatal(err)
		}
		cold = append(cold, firstReply(rt))
		for range 5 {
			warm = append(warm, firstReply(rt))
		}
		rt.Close()
	}
	c50, w50 := pct(cold, 50), pct(warm, 50)
	b.ReportMetric(float64(c50.Microseconds()), "cold-µs")
	b.ReportMetric(float64(w50.Microseconds()), "warm-µs")
	fmt.Printf("bench wasm-start: cold (empty cache; Start → first reply) p50 %v (min %v, %d runs); warm (compiled module cached) p50 %v (min %v, %d runs); module %d bytes\n",
		c50, slices.Min(cold), len(cold), w50, slices.Min(warm), len(warm), len(module(b, "echo")))
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}
