// Package protoactor compares Blocktree's actor runtime with
// protoactor-go doing the same in-process work in the same run. It is a
// module of its own so that protoactor-go never enters the main module's
// dependencies. Run:
//
//	cd bench/protoactor && go test -run '^$' -bench . -benchtime=1x
package protoactor

import (
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/paths"
)

type (
	tick  struct{}
	flush struct{}
)

// batch is the messages per timed operation: batch-1 tells and one
// request, which returns once all of them were handled (mailboxes are
// FIFO).
const batch = 100

// BenchmarkTellVsProtoactor: one actor counting messages, fed by one
// sender, in Blocktree's runtime and in protoactor-go.
func BenchmarkTellVsProtoactor(b *testing.B) {
	ctx := context.Background()
	rt, err := actors.New(paths.MustParse("/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/bench"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	n := 0
	p, err := rt.Spawn(ctx, "counter", actors.Func(func(c *actors.Context, m any) (any, error) {
		n++
		return nil, nil
	}))
	if err != nil {
		b.Fatal(err)
	}
	ours := func() error {
		for range batch - 1 {
			if err := rt.Send(ctx, p, tick{}); err != nil {
				return err
			}
		}
		_, err := rt.Call(ctx, p, flush{})
		return err
	}

	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	pn := 0
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch c.Message().(type) {
		case tick:
			pn++
		case flush:
			pn++
			c.Respond(true)
		}
	}))
	anchor := func() error {
		for range batch - 1 {
			sys.Root.Send(pid, tick{})
		}
		_, err := sys.Root.RequestFuture(pid, flush{}, 10*time.Second).Result()
		return err
	}
	r := benchcmp.Compare(b, "actors-tell-x100-vs-protoactor-go", benchcmp.Options{Rounds: 9, Ops: 300}, ours, anchor)
	b.Logf("per message: ours %v, protoactor-go %v", r.Ours/batch, r.Anchor/batch)
}

// BenchmarkSpawnStopVsProtoactor: spawn an actor, call it once, stop it.
func BenchmarkSpawnStopVsProtoactor(b *testing.B) {
	ctx := context.Background()
	rt, err := actors.New(paths.MustParse("/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/bench"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	echo := actors.Func(func(c *actors.Context, m any) (any, error) { return m, nil })
	i := 0
	ours := func() error {
		i++
		p, err := rt.Spawn(ctx, "a"+itoa(i), echo)
		if err != nil {
			return err
		}
		if _, err := rt.Call(ctx, p, flush{}); err != nil {
			return err
		}
		return rt.Stop(ctx, p)
	}
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	props := actor.PropsFromFunc(func(c actor.Context) {
		if _, ok := c.Message().(flush); ok {
			c.Respond(true)
		}
	})
	anchor := func() error {
		pid := sys.Root.Spawn(props)
		if _, err := sys.Root.RequestFuture(pid, flush{}, 10*time.Second).Result(); err != nil {
			return err
		}
		return sys.Root.StopFuture(pid).Wait()
	}
	benchcmp.Compare(b, "actors-spawn-call-stop-vs-protoactor-go", benchcmp.Options{Rounds: 9, Ops: 300}, ours, anchor)
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}
