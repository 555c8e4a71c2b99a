package actors

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
)

type pubsubMessage = pubsub.Message

// TestRemote: Send and Call reach an actor on another node the same way
// as a local one, with the same errors.
func TestRemote(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 30*time.Second)
	w := spawn(t, b.Runtime, "w", worker())
	got, err := a.Call(ctx, w, Ping{N: 41})
	if err != nil || got != (Pong{N: 42}) {
		t.Fatalf("remote call: %v, %v", got, err)
	}
	if err := a.Send(ctx, w, Ping{}); err != nil {
		t.Fatalf("remote send: %v", err)
	}
	if _, err := a.Call(ctx, join(t, b.Node(), "nobody"), Ping{}); !errors.Is(err, ErrNoActor) {
		t.Fatalf("remote call to nobody: %v", err)
	}
	if _, err := a.Call(ctx, w, Crash{Msg: "bad"}); err == nil {
		t.Fatal("remote crash: no error")
	} else if ae := (*ActorError)(nil); !errors.As(err, &ae) || ae.Outcome != Failed || ae.Msg != "bad" {
		t.Fatalf("remote crash: %v", err)
	}
	if err := a.Send(ctx, w, Unknown{}); !errors.Is(err, ErrUnregisteredType) {
		t.Fatalf("unregistered type: %v", err)
	}
	door := spawn(t, b.Runtime, "door", &door{}, WithProtocol(&Protocol{Name: "d", Initial: "closed", States: []State{
		{Name: "closed", Accept: []Rule{On[Open, Ack]("open")}},
		{Name: "open", Accept: []Rule{On[Close, Ack]("closed")}},
	}}))
	if _, err := a.Call(ctx, door, Close{}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("remote protocol violation: %v", err)
	}
	if got, err := a.Call(ctx, door, Open{}); err != nil || got != (Ack{}) {
		t.Fatalf("remote open: %v %v", got, err)
	}
	// An actor's sender path crosses too.
	ch := make(chan any, 4)
	sink := spawn(t, b.Runtime, "sink", Func(func(c *Context, m any) (any, error) {
		ch <- c.Sender()
		return nil, nil
	}))
	sender := spawn(t, a.Runtime, "sender", Func(func(c *Context, m any) (any, error) {
		return nil, c.Send(ctx, sink, Ping{})
	}))
	if _, err := a.Call(ctx, sender, Ping{}); err != nil {
		t.Fatal(err)
	}
	if got := recv[paths.Path](t, ch, 5*time.Second); got != sender {
		t.Fatalf("sender %s, want %s", got, sender)
	}
}

// TestRemoteCallToCrashedNode: a Call with a deadline to a node that died
// fails within the deadline, naming the node.
func TestRemoteCallToCrashedNode(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 30*time.Second)
	w := spawn(t, b.Runtime, "w", worker())
	if _, err := a.Call(ctx, w, Ping{}); err != nil {
		t.Fatal(err)
	}
	b.stop()
	const deadline = 2 * time.Second
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	start := time.Now()
	_, err := a.Call(cctx, w, Ping{})
	took := time.Since(start)
	t.Logf("call to the dead node failed after %v: %v", took, err)
	if err == nil {
		t.Fatal("call to a dead node succeeded")
	}
	if took > deadline+200*time.Millisecond {
		t.Fatalf("took %v, deadline %v", took, deadline)
	}
	if !strings.Contains(err.Error(), b.Node().String()) {
		t.Fatalf("error does not name node %s: %v", b.Node(), err)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, msg.ErrUnreachable) {
		t.Fatalf("error is neither a deadline nor unreachable: %v", err)
	}
}

// TestRemoteMonitor: a monitor hears of a remote actor's stop, and of its
// node's death within the configured bound.
func TestRemoteMonitor(t *testing.T) {
	const bound = 1500 * time.Millisecond
	d := nettest.NewDomain(t)
	a, b := pair(t, d, WithMonitorBound(bound))
	ctx := nettest.Context(t, 30*time.Second)
	w1 := spawn(t, b.Runtime, "w1", worker())
	w2 := spawn(t, b.Runtime, "w2", worker())
	ch := make(chan any, 8)
	watcher := spawn(t, a.Runtime, "watcher", collector(ch))
	for _, w := range []paths.Path{w1, w2} {
		if _, err := a.Monitor(ctx, watcher, w); err != nil {
			t.Fatal(err)
		}
	}
	gone := join(t, b.Node(), "never")
	if _, err := a.Monitor(ctx, watcher, gone); err != nil {
		t.Fatal(err)
	}
	if dn := recv[Down](t, ch, 5*time.Second); dn.Path != gone || dn.Outcome != NoActor {
		t.Fatalf("down %+v, want noactor", dn)
	}
	a.Call(ctx, w1, Crash{Msg: "gone"})
	dn := recv[Down](t, ch, 5*time.Second)
	if dn.Path != w1 || dn.Outcome != Failed || dn.Err == nil || dn.Err.Error() != "gone" {
		t.Fatalf("down %+v, want w1 failed", dn)
	}
	time.Sleep(bound / 2) // a successful poll in between
	killed := time.Now()
	b.stop()
	dn = recv[Down](t, ch, 3*bound)
	took := time.Since(killed)
	t.Logf("node down noticed after %v (bound %v): %v", took, bound, dn.Err)
	if dn.Path != w2 || dn.Outcome != NodeDown || !strings.Contains(dn.Err.Error(), b.Node().String()) {
		t.Fatalf("down %+v, want w2 nodedown", dn)
	}
	if took > bound+200*time.Millisecond {
		t.Fatalf("node down noticed after %v, bound %v", took, bound)
	}
}

// TestPubSub: an actor subscribed to a pattern gets publications in its
// mailbox.
func TestPubSub(t *testing.T) {
	d := nettest.NewDomain(t)
	n := startNode(t, d, "p", nodeOpts{pubsub: true})
	ctx := nettest.Context(t, 30*time.Second)
	ch := make(chan any, 8)
	sub := spawn(t, n.Runtime, "sub", Func(func(c *Context, m any) (any, error) {
		if s, ok := m.(string); ok && s == "subscribe" {
			_, err := c.Subscribe(ctx, d.Pattern(t, "/p/news/..."))
			return nil, err
		}
		ch <- m
		return nil, nil
	}))
	if _, err := n.Call(ctx, sub, "subscribe"); err != nil {
		t.Fatal(err)
	}
	topic := d.Path(t, "p", "news", "today")
	if err := n.ps.Publish(ctx, topic, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	m := recv[*pubsubMessage](t, ch, 10*time.Second)
	if m.Topic != topic || string(m.Payload) != "hello" || m.From != n.Node() {
		t.Fatalf("got %+v", m)
	}
}
