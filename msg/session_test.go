package msg

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

// seqPayload is a send's payload: its sequence number.
func seqPayload(i uint64) *bytes.Reader {
	return bytes.NewReader(binary.BigEndian.AppendUint64(nil, i))
}

// seqRecorder is a handler that records the sequence numbers it gets.
type seqRecorder struct {
	mu  sync.Mutex
	got []uint64
}

func (rc *seqRecorder) handle(_ context.Context, m *Message) ([]byte, error) {
	var b [8]byte
	if _, err := m.Body.Read(b[:]); err != nil {
		return nil, err
	}
	rc.mu.Lock()
	rc.got = append(rc.got, binary.BigEndian.Uint64(b[:]))
	rc.mu.Unlock()
	return nil, nil
}

func (rc *seqRecorder) seen() []uint64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// seqPair starts two nodes, the second with a seqRecorder at its path
// seq.
func seqPair(t *testing.T) (a, b *testNode, p paths.Path, rc *seqRecorder) {
	t.Helper()
	a, b = pair(t, nettest.NewDomain(t), Config{}, Config{})
	p = mustJoin(t, b.node.Path(), "seq")
	rc = &seqRecorder{}
	if _, err := b.Handle(p, rc.handle); err != nil {
		t.Fatal(err)
	}
	return a, b, p, rc
}

func TestSendsKeepOrder(t *testing.T) {
	a, _, p, rc := seqPair(t)
	ctx := nettest.Context(t, 30*time.Second)
	const n = 3000
	for i := range uint64(n) {
		if err := a.Send(ctx, p, seqPayload(i), 8); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	waitFor(t, 20*time.Second, "not every send arrived", func() bool { return len(rc.seen()) == n })
	for i, v := range rc.seen() {
		if v != uint64(i) {
			t.Fatalf("send %d arrived as the %dth: sends from one router to one path must be handled in order", v, i)
		}
	}
}

func TestSlowTargetPushesBackAlone(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	slow := mustJoin(t, b.node.Path(), "slow")
	fast := mustJoin(t, b.node.Path(), "fast")
	release := make(chan struct{})
	var slowGot atomic.Int64
	if _, err := b.Handle(slow, func(ctx context.Context, m *Message) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		slowGot.Add(1)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	var fastRC seqRecorder
	if _, err := b.Handle(fast, fastRC.handle); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 60*time.Second)

	// Fill the slow path's window: the send after it waits for credit.
	for i := range DefaultTargetWindow {
		if err := a.Send(ctx, slow, seqPayload(uint64(i)), 8); err != nil {
			t.Fatalf("send %d to the slow path: %v", i, err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := a.Send(short, slow, seqPayload(999), 8)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrBusy) {
		t.Fatalf("send past the slow path's window = %v, want ErrBusy and DeadlineExceeded after its deadline", err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- a.Send(ctx, slow, seqPayload(1000), 8) }()

	// Other paths behind the same session are not held up.
	const n = 2000
	for i := range uint64(n) {
		if err := a.Send(ctx, fast, seqPayload(i), 8); err != nil {
			t.Fatalf("send %d to the fast path: %v", i, err)
		}
	}
	if _, err := a.Call(ctx, fast, seqPayload(n), 8); err != nil {
		t.Fatalf("call to the fast path while the slow one is full: %v", err)
	}
	// Calls are not ordered with sends: wait for the sends to be handled.
	waitFor(t, 20*time.Second, "the fast path did not get its messages while the slow one was stuck", func() bool { return len(fastRC.seen()) == n+1 })
	select {
	case err := <-blocked:
		t.Fatalf("a send to the full slow path returned before it had credit: %v", err)
	default:
	}
	close(release)
	if err := <-blocked; err != nil {
		t.Fatalf("the waiting send once the slow path drained: %v", err)
	}
	waitFor(t, 20*time.Second, "the slow path did not get its sends", func() bool { return slowGot.Load() == DefaultTargetWindow+1 })
}

func TestLargeMessageDoesNotDelaySmallCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB transfer")
	}
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{MaxMessage: 128 << 20}, Config{MaxMessage: 128 << 20})
	sink := mustJoin(t, b.node.Path(), "sink")
	echo := mustJoin(t, b.node.Path(), "echo")
	if _, err := b.Handle(sink, func(_ context.Context, m *Message) ([]byte, error) {
		var n int64
		buf := make([]byte, 64<<10)
		for {
			k, err := m.Body.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		return binary.BigEndian.AppendUint64(nil, uint64(n)), nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Handle(echo, func(_ context.Context, m *Message) ([]byte, error) {
		var buf [64]byte
		n, _ := m.Body.Read(buf[:])
		return buf[:n], nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 120*time.Second)
	small := make([]byte, 64)
	median := func(samples []time.Duration) time.Duration {
		slices.Sort(samples)
		return samples[len(samples)/2]
	}
	call := func() time.Duration {
		t0 := time.Now()
		if _, err := a.Call(ctx, echo, bytes.NewReader(small), 64); err != nil {
			t.Fatal(err)
		}
		return time.Since(t0)
	}
	var idle []time.Duration
	for range 200 {
		idle = append(idle, call())
	}
	const size = 64 << 20
	// Small calls while a 64 MiB message is in flight; as many transfers
	// as it takes (at most 5) to time 50 of them.
	var busy []time.Duration
	for range 5 {
		done := make(chan error, 1)
		go func() {
			reply, err := a.Call(ctx, sink, &patternReader{n: size}, size)
			if err == nil && binary.BigEndian.Uint64(reply) != size {
				err = errors.New("the sink got a cut payload")
			}
			done <- err
		}()
		var err error
	inFlight:
		for len(busy) < 2000 {
			select {
			case err = <-done:
				done = nil
				break inFlight
			default:
			}
			busy = append(busy, call())
		}
		if done != nil {
			err = <-done
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(busy) >= 50 {
			break
		}
	}
	if len(busy) < 5 {
		t.Fatalf("only %d small calls fit into five 64 MiB transfers: calls wait for the transfer to end", len(busy))
	}
	mi, mb := median(idle), median(busy)
	t.Logf("64 B call median: %v idle, %v during a 64 MiB transfer (%d calls)", mi, mb, len(busy))
	if mb > mi+20*time.Millisecond {
		t.Fatalf("64 B calls took %v (median) during a 64 MiB message to the same node, against %v idle: the large message holds the small ones up", mb, mi)
	}
}

func TestSendReportedLater(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	ctx := nettest.Context(t, 20*time.Second)
	missing := mustJoin(t, b.node.Path(), "missing")
	if err := a.SendConfirmed(ctx, missing, nil, 0); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("SendConfirmed to a path without a handler = %v, want ErrNoEndpoint", err)
	}
	if err := a.Send(ctx, missing, nil, 0); err != nil {
		t.Fatalf("Send queues without waiting for the receiver; got %v", err)
	}
	// The refusal comes back; the next Send there reports it.
	var err error
	waitFor(t, 10*time.Second, "the refusal of a sent message was never reported", func() bool {
		err = a.Send(ctx, missing, nil, 0)
		return err != nil
	})
	var ue *UndeliveredError
	if !errors.Is(err, ErrUndelivered) || !errors.Is(err, ErrNoEndpoint) || !errors.As(err, &ue) || ue.N < 1 || ue.Path != missing {
		t.Fatalf("next Send = %v, want an *UndeliveredError for %s wrapping ErrNoEndpoint", err, missing)
	}
	// Reported once: a confirmed send is its own.
	p := mustJoin(t, b.node.Path(), "here")
	if _, err := b.Handle(p, func(context.Context, *Message) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if err := a.SendConfirmed(ctx, p, nil, 0); err != nil {
		t.Fatalf("SendConfirmed to a handler: %v", err)
	}
}

func TestSessionLostMidBatch(t *testing.T) {
	a, b, p, rc := seqPair(t)
	ctx := nettest.Context(t, 60*time.Second)
	const n = 20000
	failed, reported := 0, 0
	cut := false
	for i := range uint64(n) {
		if !cut && i == n/4 {
			// Cut every connection between the nodes while sends are
			// in flight.
			cut = true
			_ = a.node.Host().Network().ClosePeer(b.node.Host().ID())
		}
		err := a.Send(ctx, p, seqPayload(i), 8)
		var ue *UndeliveredError
		switch {
		case errors.As(err, &ue):
			reported += ue.N
			failed++ // this one was not sent either
		case err != nil:
			failed++
		}
	}
	// Whatever is still unacknowledged is reported by one more Send.
	waitFor(t, 20*time.Second, "sends in flight were never acknowledged or reported", func() bool {
		a.link(b.node.Path()).mu.Lock()
		s := a.link(b.node.Path()).sess
		a.link(b.node.Path()).mu.Unlock()
		if s == nil {
			return true
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.inflight == 0
	})
	if err := a.failure(p); err != nil {
		reported += err.(*UndeliveredError).N
	}
	got := rc.seen()
	seen := make(map[uint64]bool, len(got))
	for _, v := range got {
		if seen[v] {
			t.Fatalf("send %d was handled twice", v)
		}
		seen[v] = true
	}
	t.Logf("%d sends: %d handled, %d failed at once, %d reported later", n, len(got), failed, reported)
	if len(got)+failed+reported < n {
		t.Fatalf("%d sends: %d handled, %d failed, %d reported: %d vanished without a report", n, len(got), failed, reported, n-len(got)-failed-reported)
	}
	if len(got) == n && failed == 0 && reported == 0 {
		t.Log("the cut came too late to catch sends in flight")
	}
}

func TestSessionFallback(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	// b speaks only one stream per message, as an older build does.
	b.node.Host().RemoveStreamHandler(SessionProtocol)
	p := mustJoin(t, b.node.Path(), "echo")
	if _, err := b.Handle(p, func(_ context.Context, m *Message) ([]byte, error) { return []byte("pong"), nil }); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	if reply, err := a.Call(ctx, p, nil, 0); err != nil || string(reply) != "pong" {
		t.Fatalf("Call to a node without sessions = %q, %v", reply, err)
	}
	if err := a.Send(ctx, mustJoin(t, b.node.Path(), "missing"), nil, 0); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Send to a node without sessions reports at once: %v, want ErrNoEndpoint", err)
	}
}

func TestSessionOverrunEndsIt(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "stuck")
	if _, err := b.Handle(p, func(ctx context.Context, m *Message) ([]byte, error) {
		<-ctx.Done()
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	if _, err := a.connect(ctx, b.node.Path()); err != nil {
		t.Fatal(err)
	}
	st, err := a.node.Host().NewStream(ctx, b.node.Host().ID(), SessionProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	_ = st.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := st.Write(appendHello(nil, nil)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(st)
	f, err := sessionFraming.Next(br)
	if err != nil {
		t.Fatal(err)
	}
	if typ, fields, _ := frameType(f); typ != frameWelcome {
		t.Fatalf("frame %d instead of a welcome", typ)
	} else if w, err := decodeWelcome(fields); err != nil || w.kind != kindOK {
		t.Fatalf("welcome %+v, %v", w, err)
	}
	// One more send to the stuck path than its window allows.
	var frames []byte
	for i := range DefaultTargetWindow + 1 {
		b, start := appendRequestHead(nil, &sreq{typ: frameSend, id: uint64(i + 1), to: p.String()})
		frames = append(frames, frameEnd(b, start)...)
	}
	if _, err := st.Write(frames); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = sessionFraming.Next(br); err != nil {
			break
		}
	}
	var se *network.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("after overrunning its window the session ended with %v, want a reset", err)
	}
}
