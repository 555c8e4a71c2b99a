package actors

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"blocktree.dev/bt/paths"
)

func TestSendCallLocal(t *testing.T) {
	r := newLocal(t)
	ctx := context.Background()
	p := spawn(t, r, "w", worker())
	got, err := r.Call(ctx, p, Ping{N: 1})
	if err != nil || got != (Pong{N: 2}) {
		t.Fatalf("call: %v, %v", got, err)
	}
	if err := r.Send(ctx, p, Ping{}); err != nil {
		t.Fatal(err)
	}
	missing := join(t, r.Node(), "missing")
	if err := r.Send(ctx, missing, Ping{}); !errors.Is(err, ErrNoActor) {
		t.Fatalf("send to a missing actor: %v", err)
	}
	if _, err := r.Spawn(ctx, "w", worker()); !errors.Is(err, ErrExists) {
		t.Fatalf("spawn twice: %v", err)
	}
	for _, bad := range []string{"", ".x", "a/b", "*"} {
		if _, err := r.Spawn(ctx, bad, worker()); !errors.Is(err, ErrBadName) {
			t.Errorf("spawn %q: %v", bad, err)
		}
	}
}

// TestExitNotices: an owner gets exactly one Exit for a child that
// returns, fails or panics, and a panic does not crash the process.
func TestExitNotices(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    any
		want Outcome
		err  string
	}{
		{"return", Quit{}, Normal, ""},
		{"error", Crash{Msg: "broken"}, Failed, "broken"},
		{"panic", Panic{}, Panicked, "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newLocal(t)
			ctx := context.Background()
			ch := make(chan any, 16)
			owner := spawn(t, r, "owner", collector(ch))
			child := spawn(t, r, "child", worker(), WithOwner(owner))
			if want := join(t, owner, "child"); child != want {
				t.Fatalf("child at %s, want %s", child, want)
			}
			_, err := r.Call(ctx, child, tc.m)
			if tc.want == Normal && err != nil {
				t.Fatalf("call: %v", err)
			}
			if tc.want != Normal {
				var ae *ActorError
				if !errors.As(err, &ae) || ae.Outcome != tc.want {
					t.Fatalf("call: %v, want an ActorError %s", err, tc.want)
				}
			}
			e := recv[Exit](t, ch, 5*time.Second)
			if e.Path != child || e.Outcome != tc.want {
				t.Fatalf("exit %v, want %s of %s", e, tc.want, child)
			}
			if tc.err != "" && (e.Err == nil || !strings.Contains(e.Err.Error(), tc.err)) {
				t.Fatalf("exit error %v, want %q", e.Err, tc.err)
			}
			// Exactly one.
			time.Sleep(50 * time.Millisecond)
			for len(ch) > 0 {
				if x, ok := (<-ch).(Exit); ok {
					t.Fatalf("second exit notice %v", x)
				}
			}
			if _, err := r.Call(ctx, child, Ping{}); !errors.Is(err, ErrNoActor) {
				t.Fatalf("call after exit: %v", err)
			}
		})
	}
}

func TestStopAndOwnerStopsChildren(t *testing.T) {
	r := newLocal(t)
	ctx := context.Background()
	ch := make(chan any, 16)
	top := spawn(t, r, "top", collector(ch))
	mid := spawn(t, r, "mid", worker(), WithOwner(top))
	leaf := spawn(t, r, "leaf", worker(), WithOwner(mid))
	var downs atomic.Int32
	if _, err := r.MonitorFunc(ctx, leaf, func(d Down) {
		if d.Outcome == Stopped {
			downs.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx, mid); err != nil {
		t.Fatal(err)
	}
	if e := recv[Exit](t, ch, 5*time.Second); e.Path != mid || e.Outcome != Stopped {
		t.Fatalf("exit %v", e)
	}
	if downs.Load() != 1 {
		t.Fatalf("leaf monitor fired %d times", downs.Load())
	}
	if got := len(r.List()); got != 1 {
		t.Fatalf("%d entries left, want 1: %v", got, r.List())
	}
}

// TestSupervisor restarts children by each strategy and gives up past
// the restart intensity.
func TestSupervisor(t *testing.T) {
	for _, tc := range []struct {
		strategy Strategy
		want     [3]int32 // starts of children a, b, c after b crashes once
	}{
		{OneForOne, [3]int32{1, 2, 1}},
		{OneForAll, [3]int32{2, 2, 2}},
		{RestForOne, [3]int32{1, 2, 2}},
	} {
		t.Run([]string{"one-for-one", "one-for-all", "rest-for-one"}[tc.strategy], func(t *testing.T) {
			r := newLocal(t)
			ctx := context.Background()
			var starts [3]atomic.Int32
			spec := SupervisorSpec{Strategy: tc.strategy, MaxRestarts: 2, Within: time.Minute}
			for i, name := range []string{"a", "b", "c"} {
				spec.Children = append(spec.Children, ChildSpec{Name: name, New: func() Actor {
					starts[i].Add(1)
					return worker()
				}})
			}
			ch := make(chan any, 16)
			owner := spawn(t, r, "owner", collector(ch))
			sup := spawn(t, r, "sup", Supervisor(spec), WithOwner(owner))
			kids := spec.ChildPaths(sup)
			waitFor(t, "children started", func() bool { return len(r.List()) == 5 })
			r.Call(ctx, kids[1], Crash{Msg: "once"})
			waitFor(t, "restarts", func() bool {
				for i := range starts {
					if starts[i].Load() != tc.want[i] {
						return false
					}
				}
				return len(r.List()) == 5
			})
			if got, err := r.Call(ctx, kids[2], Ping{N: 1}); err != nil || got != (Pong{N: 2}) {
				t.Fatalf("restarted child: %v, %v", got, err)
			}
			// Two more crashes exceed 2 restarts a minute: the supervisor
			// fails and its owner hears of it.
			for range 2 {
				waitFor(t, "b running", func() bool {
					_, err := r.Call(ctx, kids[1], Ping{})
					return err == nil
				})
				r.Call(ctx, kids[1], Crash{Msg: "again"})
			}
			e := recv[Exit](t, ch, 5*time.Second)
			if e.Path != sup || e.Outcome != Failed || !errors.Is(e.Err, ErrRestartIntensity) {
				t.Fatalf("supervisor exit %v", e)
			}
			if got := len(r.List()); got != 1 {
				t.Fatalf("children left behind: %v", r.List())
			}
		})
	}
}

func TestSupervisorRestartPolicies(t *testing.T) {
	r := newLocal(t)
	ctx := context.Background()
	var starts [3]atomic.Int32
	spec := SupervisorSpec{Children: []ChildSpec{
		{Name: "perm", Restart: Permanent, New: func() Actor { starts[0].Add(1); return worker() }},
		{Name: "trans", Restart: Transient, New: func() Actor { starts[1].Add(1); return worker() }},
		{Name: "temp", Restart: Temporary, New: func() Actor { starts[2].Add(1); return worker() }},
	}}
	sup := spawn(t, r, "sup", Supervisor(spec))
	kids := spec.ChildPaths(sup)
	waitFor(t, "children", func() bool { return len(r.List()) == 4 })
	for _, k := range kids {
		r.Call(ctx, k, Quit{}) // a normal exit
	}
	waitFor(t, "permanent restarted", func() bool { return starts[0].Load() == 2 && len(r.List()) == 2 })
	if starts[1].Load() != 1 || starts[2].Load() != 1 {
		t.Fatalf("starts %d %d", starts[1].Load(), starts[2].Load())
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMailboxFullPushesBack: a full mailbox makes Send wait until its
// deadline and then fail; nothing is dropped.
func TestMailboxFullPushesBack(t *testing.T) {
	r := newLocal(t, WithSendWait(20*time.Millisecond))
	ctx := context.Background()
	release := make(chan struct{})
	var got atomic.Int32
	p := spawn(t, r, "slow", Func(func(c *Context, m any) (any, error) {
		<-release
		got.Add(1)
		return nil, nil
	}), WithMailboxSize(2))
	// One in hand, two queued.
	for range 3 {
		if err := r.Send(ctx, p, Ping{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "first taken", func() bool { return r.List()[0].MailboxDepth == 2 })
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	start := time.Now()
	err := r.Send(dctx, p, Ping{})
	cancel()
	if !errors.Is(err, ErrMailboxFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send to a full mailbox: %v", err)
	}
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Fatalf("gave up after %v, before the deadline", el)
	}
	// Without a deadline: WithSendWait.
	if err := r.Send(ctx, p, Ping{}); !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("send without deadline: %v", err)
	}
	// A waiting sender gets in when room appears.
	done := make(chan error, 1)
	go func() {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		done <- r.Send(c, p, Ping{})
	}()
	time.Sleep(20 * time.Millisecond)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("blocked sender: %v", err)
	}
	waitFor(t, "all handled", func() bool { return got.Load() == 4 })
}

var doorProtocol = &Protocol{
	Name:    "door",
	Initial: "closed",
	States: []State{
		{Name: "closed", Accept: []Rule{On[Open, Ack]("open"), On[Lock, Ack]("locked"), On[Peek, Status]("")}},
		{Name: "open", Accept: []Rule{On[Close, Ack]("closed"), On[Peek, Status]("")}},
		{Name: "locked", Accept: []Rule{OnTell[Unlock]("closed")}},
	},
}

// door follows doorProtocol, except that it answers Peek in the open
// state with the wrong type when lie is set.
type door struct {
	seen atomic.Int32
	lie  bool
}

func (d *door) Receive(c *Context, m any) (any, error) {
	d.seen.Add(1)
	switch m.(type) {
	case Open, Close, Lock:
		return Ack{}, nil
	case Peek:
		if d.lie && c.ProtocolState() == "open" {
			return Ack{}, nil
		}
		return Status{State: c.ProtocolState()}, nil
	}
	return nil, nil
}

func TestProtocol(t *testing.T) {
	r := newLocal(t)
	ctx := context.Background()
	d := &door{}
	p := spawn(t, r, "door", d, WithProtocol(doorProtocol))
	if _, err := r.Call(ctx, p, Close{}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("close a closed door: %v", err)
	}
	if err := r.Send(ctx, p, Unknown{}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("send an undeclared message: %v", err)
	}
	if d.seen.Load() != 0 {
		t.Fatalf("the actor saw %d refused messages", d.seen.Load())
	}
	// Transitions are checked in queue order: Open, then Close is fine.
	if err := r.Send(ctx, p, Open{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Send(ctx, p, Close{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Send(ctx, p, Lock{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Call(ctx, p, Peek{}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("peek a locked door: %v", err)
	}
	if err := r.Send(ctx, p, Unlock{}); err != nil {
		t.Fatal(err)
	}
	st, err := r.Call(ctx, p, Peek{})
	if err != nil || st != (Status{State: "closed"}) {
		t.Fatalf("peek: %v %v", st, err)
	}
	if in := r.List()[0]; in.Protocol != "door" || in.ProtocolState != "closed" {
		t.Fatalf("list: %+v", in)
	}

	// A reply of the wrong type is an error to the caller, and fails the
	// actor.
	liar := spawn(t, r, "liar", &door{lie: true}, WithProtocol(doorProtocol))
	r.Call(ctx, liar, Open{})
	if _, err := r.Call(ctx, liar, Peek{}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("wrong reply type: %v", err)
	}

	bad := &Protocol{Name: "bad", Initial: "a", States: []State{{Name: "a", Accept: []Rule{OnTell[Ping]("nowhere")}}}}
	if _, err := r.Spawn(ctx, "bad", worker(), WithProtocol(bad)); err == nil {
		t.Fatal("a protocol with an undeclared state was accepted")
	}
}

func TestServiceActivation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, err := New(paths.MustParse("/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx := context.Background()
		var made, stopped atomic.Int32
		svc, unregister, err := r.RegisterService("users", Service{
			Idle: time.Minute,
			New: func(p paths.Path) Actor {
				made.Add(1)
				return &provider{stopped: &stopped}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		alice := join(t, svc, "alice")
		for range 3 {
			got, err := r.Call(ctx, alice, Ping{N: 1})
			if err != nil || got != "/users/alice" {
				t.Fatalf("call: %v %v", got, err)
			}
		}
		if _, err := r.Call(ctx, svc, Ping{}); err != nil {
			t.Fatal(err)
		}
		if made.Load() != 2 {
			t.Fatalf("%d providers made, want 2", made.Load())
		}
		kinds := map[Kind]int{}
		for _, in := range r.List() {
			kinds[in.Kind]++
		}
		if kinds[KindService] != 1 || kinds[KindProvider] != 2 {
			t.Fatalf("list: %v", r.List())
		}
		time.Sleep(59 * time.Second)
		if _, err := r.Call(ctx, alice, Ping{}); err != nil { // keeps alice alive
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if stopped.Load() != 1 {
			t.Fatalf("%d deactivated after 61 s, want 1", stopped.Load())
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if stopped.Load() != 2 || len(r.List()) != 1 {
			t.Fatalf("after idling: %d deactivated, list %v", stopped.Load(), r.List())
		}
		if _, err := r.Call(ctx, alice, Ping{}); err != nil || made.Load() != 3 {
			t.Fatalf("reactivation: %v, made %d", err, made.Load())
		}
		unregister()
		if _, err := r.Call(ctx, alice, Ping{}); !errors.Is(err, ErrNoActor) {
			t.Fatalf("after unregister: %v", err)
		}
		nothing := join(t, r.Node(), "nothing", "here")
		if _, err := r.Call(ctx, nothing, Ping{}); !errors.Is(err, ErrNoActor) || !strings.Contains(err.Error(), "no service") {
			t.Fatalf("unregistered path: %v", err)
		}
	})
}

type provider struct{ stopped *atomic.Int32 }

func (p *provider) Receive(c *Context, m any) (any, error) {
	rel, _ := c.Runtime().Node().Rel(c.Self())
	return "/" + strings.Join(rel, "/"), nil
}

func (p *provider) Stopped(c *Context, e Exit) { p.stopped.Add(1) }

// TestTimers: After fires once, not early; Every ticks on multiples of
// its period and skips ticks it missed.
func TestTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, err := New(paths.MustParse("/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		start := time.Now()
		type tick struct{ at time.Duration }
		got := make(chan any, 100)
		_, err = r.Spawn(context.Background(), "t", Func(func(c *Context, m any) (any, error) {
			switch m.(type) {
			case string:
				if m == "go" {
					c.After(1500*time.Millisecond, "once")
					c.Every(time.Second, "tick")
					return nil, nil
				}
				got <- tick{time.Since(start)}
				if m == "tick" && time.Since(start) < 2*time.Second {
					time.Sleep(2500 * time.Millisecond) // busy: misses ticks
				}
			}
			return nil, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		r.Send(context.Background(), join(t, r.Node(), "t"), "go")
		time.Sleep(10 * time.Second)
		synctest.Wait()
		close(got)
		var ats []time.Duration
		for m := range got {
			ats = append(ats, m.(tick).at)
		}
		// tick at 1 s (then busy until 3.5 s), "once" queued at 1.5 s and
		// handled at 3.5 s; ticks at 2 s and 3 s: 2 s queued, 3 s skipped
		// (the clock passed it while the 2 s tick waited); then 4 s … 10 s.
		if len(ats) == 0 || ats[0] != time.Second {
			t.Fatalf("first tick at %v", ats)
		}
		for _, a := range ats {
			if a < time.Second {
				t.Fatalf("a timer fired early: %v", ats)
			}
		}
		if len(ats) < 8 || len(ats) > 11 {
			t.Fatalf("ticks at %v", ats)
		}
	})
}

// TestList: List has what `bt actors --json` prints.
func TestList(t *testing.T) {
	r := newLocal(t)
	o := spawn(t, r, "o", worker())
	spawn(t, r, "c", worker(), WithOwner(o), WithMailboxSize(7))
	b, err := json.Marshal(r.List())
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	json.Unmarshal(b, &got)
	if len(got) != 2 || got[1]["owner"] != o.String() || got[1]["mailbox_cap"] != 7.0 || got[1]["kind"] != "actor" || got[1]["state"] != "running" {
		t.Fatalf("list json: %s", b)
	}
}

// Test100kActors spawns and stops 100,000 actors (10,000 at a time) and
// checks that no goroutine and no memory stays behind.
func Test100kActors(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r, err := New(paths.MustParse("/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	ps := make([]paths.Path, 0, 10000)
	var peak, first uint64
	for batch := range 10 {
		ps = ps[:0]
		for i := range 10000 {
			p, err := r.Spawn(ctx, "a"+itoa(batch*10000+i), worker())
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		if err := r.Send(ctx, ps[len(ps)-1], Ping{}); err != nil {
			t.Fatal(err)
		}
		if batch == 0 {
			peak = heap()
		}
		for _, p := range ps {
			if err := r.Stop(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		if batch == 0 {
			first = heap()
		}
	}
	if n := len(r.List()); n != 0 {
		t.Fatalf("%d actors left", n)
	}
	last := heap()
	r.Close()
	r, ps = nil, nil
	after := heap()
	t.Logf("heap: %d KiB before; %d KiB with 10,000 actors; %d KiB after the first 10,000 stopped, %d KiB after all 100,000; %d KiB once the runtime is closed and dropped",
		before>>10, peak>>10, first>>10, last>>10, after>>10)
	// What stays while the runtime lives (its maps' buckets, the 4,096
	// remembered exits) must not grow with the number of actors ever run.
	if last > first+1<<20 {
		t.Fatalf("heap grew from %d to %d bytes between 10,000 and 100,000 actors run", first, last)
	}
	// Go keeps the descriptor of every goroutine that ever ran at once
	// (runtime.malg, about 400 bytes each, never freed), so the floor
	// after 10,000 concurrent actors is the first batch's, not before's.
	if after > first+1<<20 {
		t.Fatalf("heap %d bytes after the runtime is gone, %d after the first batch", after, first)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}

func TestCloseIdempotent(t *testing.T) {
	r := newLocal(t)
	ctx := context.Background()
	ch := make(chan any, 4)
	o := spawn(t, r, "o", collector(ch))
	spawn(t, r, "c", worker(), WithOwner(o))
	go r.Close()
	r.Close()
	r.Close()
	if _, err := r.Spawn(ctx, "x", worker()); !errors.Is(err, ErrClosed) {
		t.Fatalf("spawn after close: %v", err)
	}
	if len(r.List()) != 0 {
		t.Fatalf("left: %v", r.List())
	}
}
