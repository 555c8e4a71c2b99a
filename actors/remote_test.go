package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p/p2ptest"
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
	if err := a.Send(ctx, w, strings.Repeat("x", MaxEnvelope)); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("a message over MaxEnvelope: %v, want ErrBadMessage", err)
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

// gate is an actor that answers Ping after <-release (or its stop) and
// counts what it handled.
func gate(release <-chan struct{}, handled *atomic.Int64) Actor {
	return Func(func(c *Context, m any) (any, error) {
		select {
		case <-release:
		case <-c.Ctx().Done():
		}
		handled.Add(1)
		if p, ok := m.(Ping); ok {
			return Pong{N: p.N + 1}, nil
		}
		return nil, nil
	})
}

// TestRemoteAddressing: a path that names no actor (a root, a node) is
// refused before anything is sent; the runtime's endpoint takes watches
// only, as calls.
func TestRemoteAddressing(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 30*time.Second)
	for _, p := range []paths.Path{b.Node(), b.Node().RootPath()} {
		if err := a.Send(ctx, p, Ping{}); !errors.Is(err, ErrNoActor) {
			t.Errorf("send to %s: %v, want ErrNoActor", p, err)
		}
		if _, err := a.Call(ctx, p, Ping{}); !errors.Is(err, ErrNoActor) {
			t.Errorf("call to %s: %v, want ErrNoActor", p, err)
		}
	}
	ep := join(t, b.Node(), endpointName)
	body, _ := a.request(a.Node(), Ping{})
	rb, err := a.router.Call(ctx, ep, bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := decodeReply(rb); err != nil || rep.C != codeBad {
		t.Fatalf("a call to the endpoint itself: %+v, %v; want a bad-message reply", rep, err)
	}
	// A path under the endpoint that no actor could have.
	rb, err = a.router.Call(ctx, join(t, ep, ".x"), bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := decodeReply(rb); err != nil || rep.C != codeNoActor {
		t.Fatalf("a call to %s: %+v, %v; want a no-actor reply", join(t, ep, ".x"), rep, err)
	}
}

// TestRemoteConcurrentCalls: many concurrent calls to one node come back
// each to its caller, and one slow call does not hold up the others.
func TestRemoteConcurrentCalls(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 30*time.Second)
	release := make(chan struct{})
	var handled atomic.Int64
	slow := spawn(t, b.Runtime, "slow", gate(release, &handled))
	fast := spawn(t, b.Runtime, "fast", worker())
	if _, err := a.Call(ctx, fast, Ping{}); err != nil { // connects
		t.Fatal(err)
	}
	slowDone := make(chan error, 1)
	go func() {
		got, err := a.Call(ctx, slow, Ping{N: 1})
		if err == nil && got != (Pong{N: 2}) {
			err = errors.New("wrong reply")
		}
		slowDone <- err
	}()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			got, err := a.Call(ctx, fast, Ping{N: i})
			if err == nil && got != (Pong{N: i + 1}) {
				err = fmt.Errorf("call %d: the reply to another call: %v", i, got)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	select {
	case err := <-slowDone:
		t.Fatalf("the slow call returned before the fast ones' replies: %v", err)
	default:
	}
	close(release) // the first call's reply comes last
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
}

// TestRemoteSlowActor: an actor whose mailbox is full does not hold up
// the messages from the same node to another actor of its node.
func TestRemoteSlowActor(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 30*time.Second)
	release := make(chan struct{})
	defer close(release)
	var handled atomic.Int64
	slow := spawn(t, b.Runtime, "slow", gate(release, &handled), WithMailboxSize(1))
	fast := spawn(t, b.Runtime, "fast", worker())
	// One handled, one queued, the rest waiting at b for room, or pushed
	// back here once the slow actor's credit is used up.
	for i := range 10 {
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := a.Send(sctx, slow, Ping{N: i})
		cancel()
		if errors.Is(err, ErrMailboxFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for i := range 50 {
		if err := a.Send(ctx, fast, Ping{N: i}); err != nil {
			t.Fatal(err)
		}
		if got, err := a.Call(ctx, fast, Ping{N: i}); err != nil || got != (Pong{N: i + 1}) {
			t.Fatalf("call to the fast actor: %v, %v", got, err)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("50 round trips to the fast actor took %v", took)
	}
	if n := handled.Load(); n != 0 {
		t.Fatalf("the slow actor handled %d messages", n)
	}
}

// TestRemotePushBack: a full remote mailbox pushes back on the senders
// to that actor only: once its credit is used up, Send waits until its
// deadline and fails with ErrMailboxFull naming the node, while the
// same node's other actor keeps receiving from the same sender; and
// nothing accepted before is lost.
func TestRemotePushBack(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 60*time.Second)
	release := make(chan struct{})
	var handled atomic.Int64
	slow := spawn(t, b.Runtime, "slow", gate(release, &handled), WithMailboxSize(1))
	fast := spawn(t, b.Runtime, "fast", worker())
	if _, err := a.Call(ctx, fast, Ping{}); err != nil { // connects
		t.Fatal(err)
	}
	// Tells with a long deadline, until one of them waits.
	var sent atomic.Int64
	senderDone := make(chan error, 1)
	go func() {
		for i := range 100000 {
			if err := a.Send(ctx, slow, Ping{N: i}); err != nil {
				senderDone <- fmt.Errorf("tell %d: %w", i, err)
				return
			}
			sent.Add(1)
			select {
			case <-release:
				senderDone <- nil
				return
			default:
			}
		}
		senderDone <- errors.New("100,000 tells to a full mailbox never waited")
	}()
	last, still := int64(-1), time.Time{}
	nettest.WaitFor(t, 20*time.Second, "the sender to the full mailbox waits", func() bool {
		select {
		case err := <-senderDone:
			t.Fatal(err)
		default:
		}
		if n := sent.Load(); n != last {
			last, still = n, time.Now()
			return false
		}
		return time.Since(still) > 300*time.Millisecond
	})
	t.Logf("%d tells taken before the sender waited", last)

	// The other actor of the node keeps receiving from the same node.
	start := time.Now()
	for i := range 20 {
		if err := a.Send(ctx, fast, Ping{N: i}); err != nil {
			t.Fatal(err)
		}
		if got, err := a.Call(ctx, fast, Ping{N: i}); err != nil || got != (Pong{N: i + 1}) {
			t.Fatalf("call to the other actor: %v, %v", got, err)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("20 round trips to the other actor took %v while one actor was full", took)
	}

	// A tell with a short deadline fails at it, with ErrMailboxFull.
	const wait = 300 * time.Millisecond
	sctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start = time.Now()
	err := a.Send(sctx, slow, Ping{N: -1})
	took := time.Since(start)
	if !errors.Is(err, ErrMailboxFull) || !strings.Contains(err.Error(), b.Node().String()) {
		t.Fatalf("tell to a full mailbox: %v, want ErrMailboxFull naming the node", err)
	}
	if took < wait-50*time.Millisecond || took > wait+time.Second {
		t.Fatalf("push-back after %v, deadline %v", took, wait)
	}

	close(release)
	if err := <-senderDone; err != nil {
		t.Fatal(err)
	}
	want := sent.Load()
	nettest.WaitFor(t, 20*time.Second, "every accepted tell handled", func() bool { return handled.Load() == want })
	time.Sleep(100 * time.Millisecond)
	if n := handled.Load(); n != want {
		t.Fatalf("handled %d tells, want %d", n, want)
	}
}

// TestRemoteOrder: tells from one node to one actor arrive in the order
// they were sent, interleaved with tells to another actor.
func TestRemoteOrder(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 60*time.Second)
	const n = 500
	ch1, ch2 := make(chan any, n), make(chan any, n)
	c1 := spawn(t, b.Runtime, "c1", collector(ch1))
	c2 := spawn(t, b.Runtime, "c2", collector(ch2))
	for i := range n {
		if err := a.Send(ctx, c1, Ping{N: i}); err != nil {
			t.Fatal(err)
		}
		if err := a.Send(ctx, c2, Ping{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []chan any{ch1, ch2} {
		for i := range n {
			if got := recv[Ping](t, ch, 10*time.Second); got.N != i {
				t.Fatalf("tell %d arrived as number %d", got.N, i)
			}
		}
	}
}

// TestRemoteNodeRestart: after a node restarts, with the same identity
// and new addresses, its new actors are reached again, and a monitor of
// an actor of the old run hears of it.
func TestRemoteNodeRestart(t *testing.T) {
	const bound = 1500 * time.Millisecond
	d := nettest.NewDomain(t)
	a := startNode(t, d, "a", nodeOpts{opts: []Option{WithMonitorBound(bound)}})
	id, nk := p2ptest.Identity(t, d, "b")
	b := startNodeWith(t, id, nk, nodeOpts{bs: []peer.AddrInfo{a.node.AddrInfo()}})
	p2ptest.WaitPublished(t, a.node, b.node)
	ctx := nettest.Context(t, 60*time.Second)
	w := spawn(t, b.Runtime, "w", worker())
	if got, err := a.Call(ctx, w, Ping{N: 1}); err != nil || got != (Pong{N: 2}) {
		t.Fatalf("call before the restart: %v, %v", got, err)
	}
	ch := make(chan any, 4)
	watcher := spawn(t, a.Runtime, "watcher", collector(ch))
	if _, err := a.Monitor(ctx, watcher, w); err != nil {
		t.Fatal(err)
	}
	b.stop()
	if dn := recv[Down](t, ch, 3*bound); dn.Path != w || (dn.Outcome != NodeDown && dn.Outcome != NoActor) {
		t.Fatalf("down %+v, want w nodedown or noactor", dn)
	}

	b2 := startNodeWith(t, id, nk, nodeOpts{bs: []peer.AddrInfo{a.node.AddrInfo()}})
	p2ptest.WaitPublished(t, b2.node)
	w2 := spawn(t, b2.Runtime, "w", worker())
	if w2 != w {
		t.Fatalf("the restarted node's actor is at %s, not %s", w2, w)
	}
	var err error
	nettest.WaitFor(t, 30*time.Second, "the restarted node reached", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var got any
		got, err = a.Call(cctx, w, Ping{N: 2})
		return err == nil && got == (Pong{N: 3})
	})
	if err := a.Send(ctx, w, Ping{}); err != nil {
		t.Fatalf("send after the restart: %v", err)
	}
}

// TestRemoteForeign: a node of another domain needs a writecap from the
// target's root, covering the target node and held by its node, given
// to the runtime (AddGrant hands it to the router); with one, its
// actors' tells and calls go through, and their sender paths with them.
func TestRemoteForeign(t *testing.T) {
	home := nettest.NewDomain(t)
	a := startNode(t, home, "a", nodeOpts{})
	guest := nettest.NewDomain(t)
	g := startNode(t, guest, "g", nodeOpts{bs: []peer.AddrInfo{a.node.AddrInfo()}})
	p2ptest.WaitPublished(t, a.node, g.node)
	ctx := nettest.Context(t, 60*time.Second)
	w := spawn(t, a.Runtime, "w", worker())

	_, err := g.Call(ctx, w, Ping{})
	if !errors.Is(err, msg.ErrDenied) || !strings.Contains(err.Error(), "writecap") {
		t.Fatalf("call without a writecap: %v, want ErrDenied naming the writecap", err)
	}
	// A refused Send may surface only on a later one.
	denied := false
	for range 20 {
		if err := g.Send(ctx, w, Ping{}); errors.Is(err, msg.ErrDenied) {
			denied = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !denied {
		t.Fatal("sends without a writecap never refused with ErrDenied")
	}
	g.AddGrant(home.GrantDay(t, nettest.PrincipalID(t, nettest.NewKey(t).PublicKey()), a.Node()))
	if _, err := g.Call(ctx, w, Ping{}); !errors.Is(err, msg.ErrDenied) || !strings.Contains(err.Error(), "held by") {
		t.Fatalf("call with another holder's writecap: %v, want ErrDenied", err)
	}

	g2 := startNode(t, guest, "g2", nodeOpts{bs: []peer.AddrInfo{a.node.AddrInfo()}})
	p2ptest.WaitPublished(t, g2.node)
	g2.AddGrant(home.GrantDay(t, g2.nodeID, a.Node()))
	if got, err := g2.Call(ctx, w, Ping{N: 1}); err != nil || got != (Pong{N: 2}) {
		t.Fatalf("call with a writecap for the node: %v, %v", got, err)
	}
	// An actor's tell, with its sender path, which lies under its node.
	sink := make(chan any, 1)
	c := spawn(t, a.Runtime, "c", Func(func(c *Context, m any) (any, error) {
		sink <- c.Sender()
		return nil, nil
	}))
	sender := spawn(t, g2.Runtime, "sender", Func(func(cx *Context, m any) (any, error) {
		return nil, cx.Send(ctx, c, Ping{})
	}))
	if _, err := g2.Call(ctx, sender, Ping{}); err != nil {
		t.Fatal(err)
	}
	if got := recv[paths.Path](t, sink, 5*time.Second); got != sender {
		t.Fatalf("sender %s, want %s", got, sender)
	}
}
