package actors

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/msg"
)

// streamsOf returns the open streams of StreamProtocol from peer id on
// n's host.
func inboundStreams(n *testNode, id peer.ID) int {
	k := 0
	for _, c := range n.node.Host().Network().ConnsToPeer(id) {
		for _, s := range c.GetStreams() {
			if s.Protocol() == StreamProtocol {
				k++
			}
		}
	}
	return k
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

// TestStreamConcurrentCalls: many concurrent calls share one stream, and
// their replies come back out of order, each to its caller.
func TestStreamConcurrentCalls(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 30*time.Second)
	release := make(chan struct{})
	var handled atomic.Int64
	slow := spawn(t, b.Runtime, "slow", gate(release, &handled))
	fast := spawn(t, b.Runtime, "fast", worker())
	if _, err := a.Call(ctx, fast, Ping{}); err != nil { // opens the stream
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
				err = errors.New("reply to another call")
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
	if k := inboundStreams(b, a.node.ID()); k != 1 {
		t.Fatalf("%d streams from a at b, want 1", k)
	}
}

// TestStreamSlowActor: an actor whose mailbox is full does not hold up
// the messages for another actor on the same stream.
func TestStreamSlowActor(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 30*time.Second)
	release := make(chan struct{})
	defer close(release)
	var handled atomic.Int64
	slow := spawn(t, b.Runtime, "slow", gate(release, &handled), WithMailboxSize(1))
	fast := spawn(t, b.Runtime, "fast", worker())
	for i := range 10 { // one handled, one queued, the rest parked at b
		if err := a.Send(ctx, slow, Ping{N: i}); err != nil {
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

// TestStreamPushBack: a full remote mailbox pushes back on the sender:
// once the tells in flight to it fill its window, Send waits for credit
// until its deadline and fails with ErrMailboxFull; nothing sent before
// is lost.
func TestStreamPushBack(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 30*time.Second)
	release := make(chan struct{})
	var handled atomic.Int64
	slow := spawn(t, b.Runtime, "slow", gate(release, &handled), WithMailboxSize(1))
	// One in the actor, one in its mailbox, DefaultTargetWindow parked.
	const room = 2 + DefaultTargetWindow
	for i := range room {
		if err := a.Send(ctx, slow, Ping{N: i}); err != nil {
			t.Fatalf("tell %d: %v", i, err)
		}
	}
	const wait = 300 * time.Millisecond
	sctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	err := a.Send(sctx, slow, Ping{N: room})
	took := time.Since(start)
	if !errors.Is(err, ErrMailboxFull) || !strings.Contains(err.Error(), b.Node().String()) {
		t.Fatalf("tell %d to a full mailbox: %v, want ErrMailboxFull naming the node", room, err)
	}
	if took < wait-50*time.Millisecond || took > wait+time.Second {
		t.Fatalf("push-back after %v, deadline %v", took, wait)
	}
	close(release)
	nettest.WaitFor(t, 10*time.Second, "every accepted tell handled", func() bool { return handled.Load() == room })
	time.Sleep(100 * time.Millisecond)
	if n := handled.Load(); n != room {
		t.Fatalf("handled %d tells, want %d", n, room)
	}
	// Credit is back.
	if err := a.Send(ctx, slow, Ping{}); err != nil {
		t.Fatal(err)
	}
}

// TestStreamResetMidCall: a call in flight fails as soon as its stream is
// reset, naming the node, and the next call opens a new stream.
func TestStreamResetMidCall(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d)
	ctx := nettest.Context(t, 30*time.Second)
	release := make(chan struct{})
	defer close(release)
	var handled atomic.Int64
	w := spawn(t, b.Runtime, "w", gate(release, &handled))
	if err := a.Send(ctx, w, "open the stream"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := a.Call(ctx, w, Ping{}) // the actor waits for release
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	for _, c := range b.node.Host().Network().ConnsToPeer(a.node.ID()) {
		for _, s := range c.GetStreams() {
			if s.Protocol() == StreamProtocol {
				s.Reset()
			}
		}
	}
	select {
	case err := <-done:
		t.Logf("call failed after %v: %v", time.Since(start), err)
		if !errors.Is(err, msg.ErrUnreachable) || !strings.Contains(err.Error(), b.Node().String()) {
			t.Fatalf("call on a reset stream: %v, want ErrUnreachable naming the node", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call on a reset stream still waiting")
	}
	w2 := spawn(t, b.Runtime, "w2", worker())
	if got, err := a.Call(ctx, w2, Ping{N: 1}); err != nil || got != (Pong{N: 2}) {
		t.Fatalf("call after the reset: %v, %v", got, err)
	}
}

// TestStreamRefusesForeign: a node of another domain needs a writecap
// from the target's root, covering the target node and held by its node;
// a peer that proved no path is refused.
func TestStreamRefusesForeign(t *testing.T) {
	home := nettest.NewDomain(t)
	a := startNode(t, home, "a", nodeOpts{opts: []Option{withAuthWait(time.Second)}})
	guest := nettest.NewDomain(t)
	g := startNode(t, guest, "g", nodeOpts{bs: []peer.AddrInfo{a.node.AddrInfo()}})
	for _, n := range []*testNode{a, g} {
		nettest.WaitFor(t, 20*time.Second, "record published", func() bool {
			p := n.node.Published()
			return p.Seq != 0 && p.Err == nil
		})
	}
	ctx := nettest.Context(t, 30*time.Second)
	w := spawn(t, a.Runtime, "w", worker())

	_, err := g.Call(ctx, w, Ping{})
	if !errors.Is(err, msg.ErrDenied) || !strings.Contains(err.Error(), "writecap") {
		t.Fatalf("call without a writecap: %v, want ErrDenied naming the writecap", err)
	}
	if err := g.Send(ctx, w, Ping{}); !errors.Is(err, msg.ErrDenied) {
		t.Fatalf("send without a writecap: %v, want ErrDenied", err)
	}
	g.AddGrant(home.GrantDay(t, nettest.PrincipalID(t, nettest.NewKey(t).PublicKey()), a.Node()))
	if _, err := g.Call(ctx, w, Ping{}); !errors.Is(err, msg.ErrDenied) || !strings.Contains(err.Error(), "held by") {
		t.Fatalf("call with another holder's writecap: %v, want ErrDenied", err)
	}

	g2 := startNode(t, guest, "g2", nodeOpts{bs: []peer.AddrInfo{a.node.AddrInfo()}})
	nettest.WaitFor(t, 20*time.Second, "record published", func() bool {
		p := g2.node.Published()
		return p.Seq != 0 && p.Err == nil
	})
	g2.AddGrant(home.GrantDay(t, g2.nodeID, a.Node()))
	if got, err := g2.Call(ctx, w, Ping{N: 1}); err != nil || got != (Pong{N: 2}) {
		t.Fatalf("call with a writecap for the node: %v, %v", got, err)
	}
	// The sender's actor path must lie under its proven node path.
	sink := make(chan any, 1)
	c := spawn(t, a.Runtime, "c", collector(sink))
	if err := g2.Send(ctx, c, Ping{}); err != nil {
		t.Fatal(err)
	}
	recv[Ping](t, sink, 5*time.Second)

	// A libp2p peer that proved no path at all.
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Connect(ctx, a.node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, a.node.ID(), StreamProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	hello, _ := appendFrame(nil, &wireFrame{K: kindHello})
	if _, err := s.Write(hello); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := readFrame(newReader(s), nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := decodeFrame(b)
	if err != nil || f.kind != kindWelcome || f.rep == nil || f.rep.C != codeDenied || !strings.Contains(f.rep.E, "not proven") {
		t.Fatalf("welcome to an unverified peer: %+v %+v, %v", f, f.rep, err)
	}
}

// TestStreamFallback: a runtime without the stream transport is still
// reached, through msg.
func TestStreamFallback(t *testing.T) {
	d := nettest.NewDomain(t)
	a := startNode(t, d, "a", nodeOpts{})
	b := startNode(t, d, "b", nodeOpts{noP2P: true, bs: []peer.AddrInfo{a.node.AddrInfo()}})
	for _, n := range []*testNode{a, b} {
		nettest.WaitFor(t, 20*time.Second, "record published", func() bool {
			p := n.node.Published()
			return p.Seq != 0 && p.Err == nil
		})
	}
	ctx := nettest.Context(t, 30*time.Second)
	w := spawn(t, b.Runtime, "w", worker())
	if got, err := a.Call(ctx, w, Ping{N: 1}); err != nil || got != (Pong{N: 2}) {
		t.Fatalf("call through msg: %v, %v", got, err)
	}
	if err := a.Send(ctx, w, Ping{}); err != nil {
		t.Fatal(err)
	}
}

func newReader(s interface{ Read([]byte) (int, error) }) *bufio.Reader { return bufio.NewReader(s) }
