package msg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

// seen is what a handler saw of one message.
type seen struct {
	from, to paths.Path
	call     bool
	size     int64
	payload  []byte
	deadline time.Time
	ctxDL    time.Time
	hasDL    bool
}

// recorder is a handler that records what it sees and echoes the payload.
type recorder struct {
	ch chan seen
}

func newRecorder() *recorder { return &recorder{ch: make(chan seen, 16)} }

func (rec *recorder) handle(ctx context.Context, m *Message) ([]byte, error) {
	b, err := io.ReadAll(m.Body)
	if err != nil {
		return nil, err
	}
	dl, ok := ctx.Deadline()
	rec.ch <- seen{from: m.From, to: m.To, call: m.Call, size: m.Size, payload: b, deadline: m.Deadline, ctxDL: dl, hasDL: ok}
	return b, nil
}

func (rec *recorder) next(t *testing.T) seen {
	t.Helper()
	select {
	case s := <-rec.ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called within 10s")
		return seen{}
	}
}

func TestSendAndCall(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	inbox := mustJoin(t, b.node.Path(), "inbox")
	rec := newRecorder()
	if _, err := b.Handle(inbox, rec.handle); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)

	for _, size := range []int{0, 64, eagerMax, eagerMax + 1, 1 << 20} {
		t.Run(fmt.Sprintf("call-%d", size), func(t *testing.T) {
			payload := bytes.Repeat([]byte{byte(size)}, size)
			reply, err := a.Call(ctx, inbox, bytes.NewReader(payload), int64(size))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(reply, payload) {
				t.Fatalf("reply of %d bytes differs from the payload of %d", len(reply), size)
			}
			s := rec.next(t)
			if s.from != a.node.Path() || s.to != inbox || !s.call || s.size != int64(size) || !bytes.Equal(s.payload, payload) {
				t.Fatalf("handler saw from %s to %s call %v size %d (%d bytes); want from %s to %s call true size %d",
					s.from, s.to, s.call, s.size, len(s.payload), a.node.Path(), inbox, size)
			}
		})
		t.Run(fmt.Sprintf("send-%d", size), func(t *testing.T) {
			payload := bytes.Repeat([]byte{byte(size + 1)}, size)
			if err := a.Send(ctx, inbox, bytes.NewReader(payload), int64(size)); err != nil {
				t.Fatal(err)
			}
			s := rec.next(t)
			if s.from != a.node.Path() || s.to != inbox || s.call || !bytes.Equal(s.payload, payload) {
				t.Fatalf("handler saw from %s to %s call %v, %d bytes; want from %s, a send of %d bytes", s.from, s.to, s.call, len(s.payload), a.node.Path(), size)
			}
		})
	}
	t.Run("nil-body", func(t *testing.T) {
		if _, err := a.Call(ctx, inbox, nil, 0); err != nil {
			t.Fatal(err)
		}
		if s := rec.next(t); len(s.payload) != 0 {
			t.Fatalf("payload %q, want none", s.payload)
		}
	})
}

// countingReader counts the reads made through it: an in-process handler
// must read the caller's reader itself.
type countingReader struct {
	r     io.Reader
	reads atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.r.Read(p)
}

func TestInProcess(t *testing.T) {
	d := nettest.NewDomain(t)
	a := start(t, d, "solo", Config{})
	rec := newRecorder()
	p := mustJoin(t, a.node.Path(), "svc")
	if _, err := a.Handle(p, rec.handle); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 10*time.Second)

	body := &countingReader{r: strings.NewReader("in process")}
	reply, err := a.Call(ctx, p, body, 10)
	if err != nil || string(reply) != "in process" {
		t.Fatalf("Call = %q, %v", reply, err)
	}
	if body.reads.Load() == 0 {
		t.Fatal("the handler did not read the caller's reader")
	}
	s := rec.next(t)
	if s.from != a.node.Path() || !s.call {
		t.Fatalf("handler saw from %s call %v; want from %s call true", s.from, s.call, a.node.Path())
	}
	dl, _ := ctx.Deadline()
	if !s.hasDL || !s.ctxDL.Equal(dl) || !s.deadline.Equal(dl) {
		t.Fatalf("handler saw deadline %v (ctx %v, %v), want %v", s.deadline, s.ctxDL, s.hasDL, dl)
	}

	if err := a.Send(ctx, p, strings.NewReader("sent"), 4); err != nil {
		t.Fatal(err)
	}
	if s := rec.next(t); string(s.payload) != "sent" || s.call {
		t.Fatalf("send: handler saw %q call %v", s.payload, s.call)
	}

	t.Run("handler-error", func(t *testing.T) {
		errBoom := errors.New("boom")
		q := mustJoin(t, a.node.Path(), "fails")
		if _, err := a.Handle(q, func(context.Context, *Message) ([]byte, error) { return nil, errBoom }); err != nil {
			t.Fatal(err)
		}
		_, err := a.Call(ctx, q, nil, 0)
		var re *RemoteError
		if !errors.As(err, &re) || re.Path != q || re.Msg != "boom" || !errors.Is(err, errBoom) {
			t.Fatalf("Call = %v, want a RemoteError for %s wrapping boom", err, q)
		}
	})
	t.Run("no-endpoint", func(t *testing.T) {
		_, err := a.Call(ctx, mustJoin(t, a.node.Path(), "nobody"), nil, 0)
		if !errors.Is(err, ErrNoEndpoint) {
			t.Fatalf("Call = %v, want ErrNoEndpoint", err)
		}
	})
	t.Run("send-returns-before-handler-ends", func(t *testing.T) {
		q := mustJoin(t, a.node.Path(), "slow")
		release := make(chan struct{})
		done := make(chan struct{})
		if _, err := a.Handle(q, func(_ context.Context, m *Message) ([]byte, error) {
			_, err := io.ReadAll(m.Body)
			<-release
			close(done)
			return nil, err
		}); err != nil {
			t.Fatal(err)
		}
		if err := a.Send(ctx, q, strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
		close(release)
		<-done
	})
	t.Run("short-body", func(t *testing.T) {
		_, err := a.Call(ctx, p, strings.NewReader("short"), 10)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Call = %v, want io.ErrUnexpectedEOF", err)
		}
	})
}

func TestHandle(t *testing.T) {
	d := nettest.NewDomain(t)
	a := start(t, d, "a", Config{})
	h := func(context.Context, *Message) ([]byte, error) { return nil, nil }
	own := mustJoin(t, a.node.Path(), "x", "y")
	for _, tc := range []struct {
		name string
		p    paths.Path
		want error
	}{
		{"own-node-path", a.node.Path(), nil},
		{"under-own-path", own, nil},
		{"sibling-node", d.Path(t, "other", "x"), ErrNotOwnPath},
		{"prefix-not-component", d.Path(t, "ab"), ErrNotOwnPath},
		{"root", d.Path(t), ErrNotOwnPath},
		{"other-domain", nettest.NewDomain(t).Path(t, "a"), ErrNotOwnPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Handle(tc.p, h)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Handle(%s) = %v, want %v", tc.p, err, tc.want)
			}
		})
	}
	if _, err := a.Handle(own, h); !errors.Is(err, ErrExists) {
		t.Fatalf("second Handle = %v, want ErrExists", err)
	}
	q := mustJoin(t, a.node.Path(), "z")
	remove, err := a.Handle(q, h)
	if err != nil {
		t.Fatal(err)
	}
	remove()
	remove2, err := a.Handle(q, h)
	if err != nil {
		t.Fatalf("Handle after remove: %v", err)
	}
	remove() // stale: must not remove the new registration
	if a.handler(q) == nil {
		t.Fatal("a stale remove removed the new handler")
	}
	remove2()
	// Exact match only: a handler at a parent does not get its children.
	if _, err := a.Call(nettest.Context(t, 5*time.Second), mustJoin(t, own, "child"), nil, 0); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Call below a handler's path = %v, want ErrNoEndpoint", err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "echo")
	if _, err := b.Handle(p, echo); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 60*time.Second)
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			want := fmt.Appendf(nil, "call %d from %s", i, a.node.Path())
			got, err := a.Call(ctx, p, bytes.NewReader(want), int64(len(want)))
			switch {
			case err != nil:
				errs <- fmt.Errorf("call %d: %w", i, err)
			case !bytes.Equal(got, want):
				errs <- fmt.Errorf("call %d: reply %q, want %q", i, got, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d calls failed", failed, n)
	}
	t.Logf("%d concurrent calls in %v", n, time.Since(start).Round(time.Millisecond))
}

func TestTooLarge(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{MaxMessage: 1 << 10}, Config{MaxMessage: 1 << 10})
	var calls atomic.Int64
	count := func(ctx context.Context, m *Message) ([]byte, error) {
		calls.Add(1)
		if _, err := io.Copy(io.Discard, m.Body); err != nil {
			return nil, err
		}
		return bytes.Repeat([]byte{1}, int(m.Size)), nil
	}
	p := mustJoin(t, b.node.Path(), "small")
	if _, err := b.Handle(p, count); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)

	t.Run("sender", func(t *testing.T) {
		err := a.Send(ctx, p, bytes.NewReader(make([]byte, 2<<10)), 2<<10)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Send = %v, want ErrTooLarge", err)
		}
	})
	t.Run("within-limit", func(t *testing.T) {
		if _, err := a.Call(ctx, p, bytes.NewReader(make([]byte, 1<<10)), 1<<10); err != nil {
			t.Fatal(err)
		}
	})
	// A sender with a higher limit meets the receiver's.
	c := start(t, d, "c", Config{}, a.node.AddrInfo())
	waitPublished(t, c)
	for _, size := range []int64{2 << 10, 1 << 20} {
		t.Run(fmt.Sprintf("receiver-%d", size), func(t *testing.T) {
			err := c.Send(ctx, p, &patternReader{n: size}, size)
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "limit") {
				t.Fatalf("Send = %v, want ErrTooLarge naming the limit", err)
			}
			_, err = c.Call(ctx, p, &patternReader{n: size}, size)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Call = %v, want ErrTooLarge", err)
			}
		})
	}
	t.Run("reply", func(t *testing.T) {
		// c's handler answers 4 KiB: over a's limit, within c's own.
		q := mustJoin(t, c.node.Path(), "big")
		if _, err := c.Handle(q, func(context.Context, *Message) ([]byte, error) { return make([]byte, 4<<10), nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Call(ctx, q, nil, 0); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "reply") {
			t.Fatalf("Call = %v, want ErrTooLarge for the reply", err)
		}
		if _, err := c.Call(ctx, q, nil, 0); err != nil { // in process, c's own limit
			t.Fatal(err)
		}
		// And b's handler may not answer more than b's limit.
		if _, err := c.Call(ctx, p, bytes.NewReader(make([]byte, 1<<10)), 1<<10); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("crafted-header", func(t *testing.T) {
		// A header claiming a terabyte, with no payload behind it.
		resp := rawRequest(t, ctx, c, b, request{To: p, Size: 1 << 40})
		if resp.Kind != kindTooLarge {
			t.Fatalf("response %+v, want kind %d (too large)", resp, kindTooLarge)
		}
	})
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2 (refused messages must not reach it)", n)
	}
}

// rawRequest opens a stream from one node to another, writes a request
// header with no payload and returns the decoded response header.
func rawRequest(t *testing.T, ctx context.Context, from, to *testNode, q request) response {
	t.Helper()
	frame, err := appendRequest(nil, &q)
	if err != nil {
		t.Fatal(err)
	}
	return rawFrame(t, ctx, from, to, frame)
}

func rawFrame(t *testing.T, ctx context.Context, from, to *testNode, frame []byte) response {
	t.Helper()
	if _, err := from.node.Connect(ctx, to.node.Path()); err != nil {
		t.Fatal(err)
	}
	s, err := from.node.Host().NewStream(ctx, to.node.ID(), ProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
	br := getReader(s)
	defer putReader(br)
	h, err := readHeader(br, MaxResponseHeader)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	resp, err := decodeResponse(h)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestBadHeaders(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "x")
	if _, err := b.Handle(p, echo); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"version-2", frameOf(mustMarshal(t, map[string]any{"v": 2, "to": p.String(), "call": true, "size": 0, "dl": 0})), "version 2"},
		{"not-cbor", frameOf([]byte("hello")), "malformed"},
		{"unknown-field", frameOf(mustMarshal(t, map[string]any{"v": 1, "to": p.String(), "call": true, "size": 0, "dl": 0, "x": 1})), "malformed"},
		{"header-too-long", []byte{0xff, 0xff, 0x03}, "out of range"},
		{"zero-length", []byte{0}, "out of range"},
		{"bad-path", frameOf(mustMarshal(t, map[string]any{"v": 1, "to": "/not/a/path", "call": true, "size": 0, "dl": 0})), "target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := rawFrame(t, ctx, a, b, tc.frame)
			if resp.Kind != kindBadRequest || !strings.Contains(resp.Msg, tc.want) {
				t.Fatalf("response %+v, want kind %d with %q", resp, kindBadRequest, tc.want)
			}
		})
	}
}

func frameOf(h []byte) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(h)))
	return append(b, h...)
}

func TestUnreachable(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "x")
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	if _, err := b.Handle(p, func(ctx context.Context, _ *Message) ([]byte, error) {
		select { // a handler that ignores its deadline
		case <-block:
		case <-time.After(2 * time.Second):
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	call := func(t *testing.T) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		_, err := a.Call(ctx, p, strings.NewReader("ping"), 4)
		return time.Since(start), err
	}
	t.Run("handler-overruns", func(t *testing.T) {
		took, err := call(t)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), b.node.Path().String()) {
			t.Fatalf("Call = %v, want DeadlineExceeded naming %s", err, b.node.Path())
		}
		if took > 1500*time.Millisecond {
			t.Fatalf("Call took %v, want ≤ 1.5s", took)
		}
	})
	t.Run("node-closed", func(t *testing.T) {
		b.stop()
		took, err := call(t)
		if err == nil || !(errors.Is(err, ErrUnreachable) || errors.Is(err, context.DeadlineExceeded)) || !strings.Contains(err.Error(), b.node.Path().String()) {
			t.Fatalf("Call = %v, want ErrUnreachable or DeadlineExceeded naming %s", err, b.node.Path())
		}
		if took > 1500*time.Millisecond {
			t.Fatalf("Call took %v, want ≤ 1.5s", took)
		}
		t.Logf("%v after %v", err, took.Round(time.Millisecond))
	})
}

func TestRemoteErrorAndNoEndpoint(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "fails")
	long := strings.Repeat("é", MaxErrorMessage) // cut at a rune boundary
	if _, err := b.Handle(p, func(_ context.Context, m *Message) ([]byte, error) {
		if m.Size > 0 {
			return nil, errors.New(long)
		}
		return nil, fmt.Errorf("no such thing as %q", "x")
	}); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	_, err := a.Call(ctx, p, nil, 0)
	var re *RemoteError
	if !errors.As(err, &re) || re.Path != p || re.Msg != `no such thing as "x"` || re.Unwrap() != nil {
		t.Fatalf("Call = %#v, want a RemoteError", err)
	}
	_, err = a.Call(ctx, p, strings.NewReader("x"), 1)
	if !errors.As(err, &re) || len(re.Msg) > MaxErrorMessage+len("…") || !strings.HasSuffix(re.Msg, "…") {
		t.Fatalf("Call = %v, want a RemoteError cut to %d bytes", err, MaxErrorMessage)
	}
	// A send does not report the handler's error.
	if err := a.Send(ctx, p, nil, 0); err != nil {
		t.Fatalf("Send = %v", err)
	}
	for _, q := range []paths.Path{mustJoin(t, b.node.Path(), "nothing"), b.node.Path()} {
		_, err = a.Call(ctx, q, nil, 0)
		if !errors.Is(err, ErrNoEndpoint) || !strings.Contains(err.Error(), q.String()) {
			t.Fatalf("Call %s = %v, want ErrNoEndpoint naming it", q, err)
		}
	}
	if err := a.Send(ctx, d.Path(t), nil, 0); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Send to a root path = %v, want ErrNoEndpoint", err)
	}
	// A node path that no one hosts.
	ghost := d.Path(t, "ghost", "x")
	_, err = a.Call(nettest.Context(t, 3*time.Second), ghost, nil, 0)
	if !errors.Is(err, ErrUnreachable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call %s = %v, want ErrUnreachable", ghost, err)
	}
}

func TestCrossDomain(t *testing.T) {
	home := nettest.NewDomain(t)
	a := start(t, home, "a", Config{})
	guest := nettest.NewDomain(t)
	g := start(t, guest, "g", Config{}, a.node.AddrInfo())
	waitPublished(t, a, g)
	inbox := mustJoin(t, a.node.Path(), "inbox")
	rec := newRecorder()
	if _, err := a.Handle(inbox, rec.handle); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)

	_, err := g.Call(ctx, inbox, strings.NewReader("hi"), 2)
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "writecap") {
		t.Fatalf("Call without a writecap = %v, want ErrDenied naming the writecap", err)
	}

	// Grants that do not do: another root's, another holder's, another path's.
	g.AddGrant(guest.GrantDay(t, g.nodeID, guest.Path(t))) // g's own root: not attached for home's paths
	g.AddGrant(home.GrantDay(t, nettest.PrincipalID(t, nettest.NewKey(t).PublicKey()), inbox))
	_, err = g.Call(ctx, inbox, strings.NewReader("hi"), 2)
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "held by") {
		t.Fatalf("Call with another holder's writecap = %v, want ErrDenied", err)
	}

	g2 := start(t, guest, "g2", Config{}, a.node.AddrInfo())
	waitPublished(t, g2)
	g2.AddGrant(home.GrantDay(t, g2.nodeID, mustJoin(t, a.node.Path(), "elsewhere")))
	if _, err := g2.Call(ctx, inbox, strings.NewReader("hi"), 2); !errors.Is(err, ErrDenied) {
		t.Fatalf("Call with a writecap for another path = %v, want ErrDenied", err)
	}

	g3 := start(t, guest, "g3", Config{}, a.node.AddrInfo())
	waitPublished(t, g3)
	g3.AddGrant(home.GrantDay(t, g3.nodeID, inbox))
	reply, err := g3.Call(ctx, inbox, strings.NewReader("hi"), 2)
	if err != nil || string(reply) != "hi" {
		t.Fatalf("Call with a writecap from the target's root = %q, %v", reply, err)
	}
	if s := rec.next(t); s.from != g3.node.Path() {
		t.Fatalf("handler saw from %s, want %s", s.from, g3.node.Path())
	}
	if err := g3.Send(ctx, inbox, strings.NewReader("yo"), 2); err != nil {
		t.Fatal(err)
	}
	if s := rec.next(t); s.from != g3.node.Path() || string(s.payload) != "yo" {
		t.Fatalf("handler saw %q from %s", s.payload, s.from)
	}
	// The writecap covers inbox only.
	other := mustJoin(t, a.node.Path(), "other")
	if _, err := a.Handle(other, echo); err != nil {
		t.Fatal(err)
	}
	if _, err := g3.Call(ctx, other, nil, 0); !errors.Is(err, ErrDenied) {
		t.Fatalf("Call outside the writecap = %v, want ErrDenied", err)
	}
	// The home domain needs none.
	if _, err := a.Call(ctx, mustJoin(t, g3.node.Path(), "nothing"), nil, 0); !errors.Is(err, ErrDenied) {
		t.Fatalf("Call from home to guest = %v, want ErrDenied", err)
	}
}

func TestDeadlineCarried(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "dl")
	rec := newRecorder()
	if _, err := b.Handle(p, rec.handle); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	if _, err := a.Call(ctx, p, nil, 0); err != nil {
		t.Fatal(err)
	}
	s := rec.next(t)
	if !s.hasDL || s.ctxDL.Sub(want).Abs() > time.Millisecond || s.deadline.Sub(want).Abs() > time.Millisecond {
		t.Fatalf("handler saw deadline %v (ctx %v, %v), want ≈ %v", s.deadline, s.ctxDL, s.hasDL, want)
	}
	if _, err := a.Call(context.Background(), p, nil, 0); err != nil {
		t.Fatal(err)
	}
	if s := rec.next(t); s.hasDL || !s.deadline.IsZero() {
		t.Fatalf("handler saw deadline %v (ctx %v), want none", s.deadline, s.ctxDL)
	}
}

func TestEarlyReturn(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "peek")
	if _, err := b.Handle(p, func(_ context.Context, m *Message) ([]byte, error) {
		head := make([]byte, 16)
		_, err := io.ReadFull(m.Body, head)
		return head, err // the rest is not read
	}); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	for _, size := range []int64{1 << 10, 64 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			start := time.Now()
			reply, err := a.Call(ctx, p, &patternReader{n: size}, size)
			if err != nil || len(reply) != 16 {
				t.Fatalf("Call = %d bytes, %v", len(reply), err)
			}
			if err := a.Send(ctx, p, &patternReader{n: size}, size); err != nil {
				t.Fatalf("Send = %v", err)
			}
			t.Logf("took %v", time.Since(start))
		})
	}
}

func TestShortBody(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "x")
	got := make(chan error, 4)
	if _, err := b.Handle(p, func(_ context.Context, m *Message) ([]byte, error) {
		_, err := io.Copy(io.Discard, m.Body)
		got <- err
		return nil, err
	}); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	for _, size := range []int64{100, 1 << 20} {
		_, err := a.Call(ctx, p, &patternReader{n: size / 2}, size)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Call with a short body = %v, want io.ErrUnexpectedEOF", err)
		}
	}
	// The large one reached the handler, which must see it cut.
	select {
	case err := <-got:
		if err == nil {
			t.Fatal("the handler read a cut payload without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
}

func TestBackpressure(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{MaxInbound: 2})
	p := mustJoin(t, b.node.Path(), "x")
	var running, peak atomic.Int64
	release := make(chan struct{})
	if _, err := b.Handle(p, func(ctx context.Context, m *Message) ([]byte, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return []byte("ok"), nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			if _, err := a.Call(ctx, p, nil, 0); err != nil {
				errs <- err
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // let them queue
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if peak.Load() > 2 {
		t.Fatalf("%d handlers ran at once, want at most MaxInbound = 2", peak.Load())
	}
}

func TestClose(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "wait")
	entered := make(chan struct{}, 1)
	if _, err := b.Handle(p, func(ctx context.Context, m *Message) ([]byte, error) {
		entered <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	res := make(chan error, 1)
	go func() {
		_, err := a.Call(ctx, p, nil, 0)
		res <- err
	}()
	<-entered
	done := make(chan struct{})
	go func() {
		b.Router.Close()
		b.Router.Close() // idempotent
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: it must cancel running handlers and wait for them")
	}
	if err := <-res; err == nil {
		t.Fatal("Call to a closing router succeeded")
	}
	if err := b.Send(ctx, p, nil, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close = %v, want ErrClosed", err)
	}
	_, err := a.Call(ctx, p, nil, 0)
	if !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Call to a node whose router is closed = %v, want ErrNoEndpoint", err)
	}
}

func TestLargeMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB transfer")
	}
	const size = 256 << 20
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{MaxMessage: 1 << 30}, Config{MaxMessage: 1 << 30})
	p := mustJoin(t, b.node.Path(), "sink")
	var peak atomic.Uint64
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		for {
			old := peak.Load()
			if ms.HeapInuse <= old || peak.CompareAndSwap(old, ms.HeapInuse) {
				return
			}
		}
	}
	if _, err := b.Handle(p, func(_ context.Context, m *Message) ([]byte, error) {
		h := sha256.New()
		buf := make([]byte, 256<<10)
		var n int64
		for {
			k, err := m.Body.Read(buf)
			h.Write(buf[:k])
			if n += int64(k); n%(32<<20) < int64(k) {
				sample()
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		return h.Sum(nil), nil
	}); err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	if _, err := io.Copy(want, &patternReader{n: size}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	ctx := nettest.Context(t, 60*time.Second)
	start := time.Now()
	sum, err := a.Call(ctx, p, &patternReader{n: size}, size)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !bytes.Equal(sum, want.Sum(nil)) {
		t.Fatal("the handler hashed another payload")
	}
	grew := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("%d MiB in %v (%.0f MiB/s); heap in use grew by at most %d MiB", size>>20, took.Round(time.Millisecond), float64(size>>20)/took.Seconds(), grew>>20)
	if grew > 96<<20 {
		t.Fatalf("heap in use grew by %d MiB while streaming %d MiB: the payload is being buffered", grew>>20, size>>20)
	}
}

// mustMarshal encodes v as canonical CBOR, for hand-made headers.
func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := canon.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandleTree(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	tree := mustJoin(t, b.node.Path(), "svc")
	got := make(chan paths.Path, 4)
	remove, err := b.HandleTree(tree, func(_ context.Context, m *Message) ([]byte, error) {
		got <- m.To
		return []byte("tree"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.HandleTree(tree, func(context.Context, *Message) ([]byte, error) { return nil, nil }); !errors.Is(err, ErrExists) {
		t.Fatalf("second HandleTree = %v, want ErrExists", err)
	}
	if _, err := b.HandleTree(d.Path(t, "other"), func(context.Context, *Message) ([]byte, error) { return nil, nil }); !errors.Is(err, ErrNotOwnPath) {
		t.Fatalf("HandleTree of another node's path = %v, want ErrNotOwnPath", err)
	}
	exact := mustJoin(t, tree, "x")
	if _, err := b.Handle(exact, func(context.Context, *Message) ([]byte, error) { return []byte("exact"), nil }); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 10*time.Second)
	deep := mustJoin(t, tree, "y", "z")
	for _, tc := range []struct {
		to   paths.Path
		want string
	}{{deep, "tree"}, {exact, "exact"}, {mustJoin(t, exact, "under"), "tree"}} {
		reply, err := a.Call(ctx, tc.to, nil, 0)
		if err != nil || string(reply) != tc.want {
			t.Fatalf("Call(%s) = %q, %v; want %q", tc.to, reply, err, tc.want)
		}
	}
	if to := <-got; to != deep {
		t.Fatalf("the tree handler saw To %s, want the full target %s", to, deep)
	}
	if _, err := a.Call(ctx, tree, nil, 0); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Call of the tree's own path = %v, want ErrNoEndpoint", err)
	}
	remove()
	if _, err := a.Call(ctx, deep, nil, 0); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Call after remove = %v, want ErrNoEndpoint", err)
	}
}

func TestHandleTreeAsync(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	tree := mustJoin(t, b.node.Path(), "async")
	var sends atomic.Int64
	if _, err := b.HandleTreeAsync(tree, func(_ context.Context, m *Message, done func([]byte, error)) {
		body, err := io.ReadAll(m.Body) // valid until the handler returns
		if err != nil {
			done(nil, err)
			return
		}
		switch {
		case !m.Call:
			sends.Add(1)
			done(nil, nil)
		case string(body) == "panic":
			panic("boom")
		case string(body) == "fail":
			go done(nil, errors.New("refused later"))
		default:
			go func() { // answered from another goroutine, after the handler returned
				time.Sleep(time.Millisecond)
				done(append([]byte("re: "), body...), nil)
			}()
		}
	}); err != nil {
		t.Fatal(err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	to := mustJoin(t, tree, "x")
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			want := fmt.Sprintf("ping %d", i)
			reply, err := a.Call(ctx, to, strings.NewReader(want), int64(len(want)))
			if err != nil || string(reply) != "re: "+want {
				t.Errorf("Call = %q, %v; want %q", reply, err, "re: "+want)
			}
		})
	}
	wg.Wait()
	var re *RemoteError
	if _, err := a.Call(ctx, to, strings.NewReader("fail"), 4); !errors.As(err, &re) || re.Msg != "refused later" {
		t.Fatalf("Call answered with an error later = %v, want a RemoteError", err)
	}
	if _, err := a.Call(ctx, to, strings.NewReader("panic"), 5); !errors.As(err, &re) || !strings.Contains(re.Msg, "panicked") {
		t.Fatalf("Call whose handler panicked = %v, want a RemoteError", err)
	}
	for range 10 {
		if err := a.Send(ctx, to, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SendConfirmed(ctx, to, nil, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "sends to an async tree were not handled", func() bool { return sends.Load() == 11 })
	// In process too.
	if _, err := b.Call(ctx, to, strings.NewReader("local"), 5); err != nil {
		t.Fatalf("in-process Call to an async tree: %v", err)
	}
}
