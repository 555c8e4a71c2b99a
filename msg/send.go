package msg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// eagerMax is the largest payload sent with its header in one write,
// without a second goroutine: header and payload then fit the stream's
// initial flow-control window (256 KiB with yamux, more with QUIC), so the
// write never waits for the receiver, and the response is read after it.
// Larger payloads are streamed while another goroutine reads the response,
// which may come early (a refusal, or a reply from a handler that did not
// read everything).
const eagerMax = 64 << 10

// copyBufSize is the chunk in which large payloads are streamed.
const copyBufSize = 128 << 10

// stopGrace bounds how long a sender whose writes the receiver stopped
// waits for the receiver's answer or end.
const stopGrace = 5 * time.Second

// Retries of a stream refused for its resource limits, which only happens
// before anything reached a handler: backoff from retryMin doubling to
// retryMax, at most maxRetries times when ctx has no deadline.
const (
	retryMin   = time.Millisecond
	retryMax   = 50 * time.Millisecond
	maxRetries = 64
)

// Send delivers body, exactly size bytes, to the handler at path to, fire
// and forget. A payload of at most SessionMax bytes to another node is
// queued on the session to that node and Send returns once it has the
// credit of the session's windows, without waiting for the receiver:
// under load many go out in one write. A full window (a slow handler at
// to, or a slow node) makes Send wait, until ctx's deadline (a minute
// without one), then fail with ErrBusy and context.DeadlineExceeded.
// Sends from one Router to one path are handled at the receiver one at a
// time, in order. A send the receiver refuses after Send returned (no
// handler, denied, ...) or that is lost with its session is logged and
// reported by the next Send to the same path, which then fails with
// ErrUndelivered wrapping that error and does not send its own message;
// use SendConfirmed to learn each message's fate. A larger payload goes
// on a stream of its own and Send returns once the receiver accepted it.
//
// For a path of this node the handler is called in process with body
// itself (no encoding, no copy) on a goroutine of the Router, and Send
// returns when the handler has read the body or returned.
//
// Errors: ErrTooLarge (size over Config.MaxMessage, here or at the
// receiver); ErrNoEndpoint; ErrDenied; ErrUnreachable (with p2p's error);
// ErrBusy; ErrUndelivered; ErrClosed; context.DeadlineExceeded or
// context.Canceled, naming the node that did not answer; an error reading
// body. A handler's error is not reported. Safe for concurrent use.
func (r *Router) Send(ctx context.Context, to paths.Path, body io.Reader, size int64) error {
	_, err := r.deliver(ctx, frameSend, to, body, size)
	return err
}

// SendConfirmed is Send that returns only once the receiver has accepted
// the message: authorised it, found its handler and started it (a round
// trip); its errors are this message's own. It does not wait for the
// handler to finish.
func (r *Router) SendConfirmed(ctx context.Context, to paths.Path, body io.Reader, size int64) error {
	_, err := r.deliver(ctx, frameConfirm, to, body, size)
	return err
}

// Call delivers body, exactly size bytes, to the handler at path to and
// returns its reply. ctx's deadline travels with the message: the
// receiver's handler gets it in its ctx and the receiver gives up at it
// too. A payload of at most SessionMax bytes to another node travels on
// the session to that node, pipelined with the other messages there, and
// its reply comes back on it; a larger one on a stream of its own. For a
// path of this node the handler runs in process on the caller's
// goroutine, with body itself (no encoding, no copy).
//
// Errors: those of Send but ErrUndelivered, and *RemoteError when the
// handler returned an error; ErrTooLarge also for a reply over
// Config.MaxMessage. Without a deadline a Call waits as long as the
// handler takes (and the connection lives). Safe for concurrent use.
func (r *Router) Call(ctx context.Context, to paths.Path, body io.Reader, size int64) ([]byte, error) {
	return r.deliver(ctx, frameCall, to, body, size)
}

func opName(call bool) string {
	if call {
		return "call"
	}
	return "send"
}

func (r *Router) deliver(ctx context.Context, typ byte, to paths.Path, body io.Reader, size int64) ([]byte, error) {
	call := typ == frameCall
	op := opName(call)
	if !r.life.Enter() {
		return nil, fmt.Errorf("msg: %s %s: %w", op, to, ErrClosed)
	}
	defer r.life.Leave()
	switch {
	case to.IsZero():
		return nil, fmt.Errorf("msg: %s: empty target path: %w", op, ErrNoEndpoint)
	case size < 0:
		return nil, fmt.Errorf("msg: %s %s: negative payload size %d", op, to, size)
	case size > r.cfg.MaxMessage:
		return nil, fmt.Errorf("msg: %s %s: payload of %d bytes exceeds this node's limit of %d (Config.MaxMessage); send it in parts: %w",
			op, to, size, r.cfg.MaxMessage, ErrTooLarge)
	case body == nil && size > 0:
		return nil, fmt.Errorf("msg: %s %s: nil body for a payload of %d bytes", op, to, size)
	}
	if body == nil {
		body = eofReader{}
	}
	if to.HasPrefix(r.self) {
		return r.local(ctx, call, to, body, size)
	}
	node, ok := nodeOf(to)
	if !ok {
		return nil, fmt.Errorf("msg: %s %s: a root path names no node; address /<root>/<node>/…: %w", op, to, ErrNoEndpoint)
	}
	if typ == frameSend {
		if err := r.failure(to); err != nil {
			return nil, err
		}
	}
	dl, _ := ctx.Deadline()
	if size <= SessionMax {
		// On the session: x stays on this goroutine's stack.
		x := exchange{r: r, op: op, call: call, to: to, node: node, ctx: ctx, dl: dl, body: body, size: size}
		if err := ctx.Err(); err != nil {
			return nil, x.ctxErr()
		}
		s, err := r.link(node).get(ctx)
		switch {
		case err == nil:
			return s.deliver(&x, typ)
		case err != errFallback:
			return nil, x.linkErr(err)
		}
	}
	x := &exchange{r: r, op: op, call: call, to: to, node: node, ctx: ctx, dl: dl, body: body, size: size}
	return x.run()
}

// linkErr is the error for a session that could not be opened.
func (x *exchange) linkErr(err error) error {
	switch {
	case errors.Is(err, ErrClosed) || x.r.ctx.Err() != nil:
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, ErrClosed)
	case x.ctx.Err() != nil:
		return x.connectErr(err)
	case errors.Is(err, ErrDenied), errors.Is(err, ErrBusy), errors.Is(err, ErrBadMessage), errors.Is(err, ErrUnknownVersion):
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, err)
	}
	return x.connectErr(err)
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// exchange is one message to another node, from the sender's side.
type exchange struct {
	r    *Router
	op   string
	call bool
	to   paths.Path // target
	node paths.Path // the target's node path
	pid  peer.ID    // the node's peer, once connected
	ctx  context.Context
	dl   time.Time // ctx's deadline, zero if none
	body io.Reader
	size int64
	// A message a group's host forwards to a member: its sender.
	fwdFrom paths.Path
	fwdNode paths.ID
}

func (x *exchange) run() ([]byte, error) {
	if err := x.ctx.Err(); err != nil {
		return nil, x.ctxErr()
	}
	pid, err := x.r.connect(x.ctx, x.node)
	if err != nil {
		return nil, x.connectErr(err)
	}
	x.pid = pid
	release, err := x.r.gate(x.ctx, pid)
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return nil, fmt.Errorf("msg: %s %s: %w", x.op, x.to, ErrClosed)
		}
		return nil, x.ctxErr()
	}
	defer release()
	q := request{To: x.to, Call: x.call, Size: x.size, Deadline: x.dl, Writecap: x.r.grantFor(x.to)}
	if x.size <= eagerMax {
		return x.small(&q)
	}
	return x.large(&q)
}

// small sends header and payload in one write, then reads the response.
// It keeps the frame, so that a stream the receiver's resource manager
// refused (before any handler saw it) can be sent again.
func (x *exchange) small(q *request) ([]byte, error) {
	bp := getBuf(len(selectPrefix) + 64 + len(q.To.String()) + len(q.Writecap) + int(x.size))
	frame, err := appendRequest(append(*bp, selectPrefix...), q)
	if err != nil {
		putBuf(bp)
		return nil, fmt.Errorf("msg: %s %s: %w", x.op, x.to, err)
	}
	hl := len(frame)
	frame = slices.Grow(frame, int(x.size))[:hl+int(x.size)]
	*bp = frame
	defer putBuf(bp)
	if _, err := io.ReadFull(x.body, frame[hl:]); err != nil {
		return nil, x.bodyErr(err)
	}
	for attempt := 0; ; attempt++ {
		reply, err, again := x.try(frame)
		if !again {
			return reply, err
		}
		if !x.backoff(attempt) {
			return nil, err
		}
	}
}

// try sends one frame on a new stream and reads the response. again says
// the stream was refused for its resource limits and may be retried.
func (x *exchange) try(frame []byte) (reply []byte, err error, again bool) {
	s, err := x.open()
	if err != nil {
		return nil, x.streamErr(err), isResourceLimit(err)
	}
	defer x.watch(s)()
	// One write, which fits the stream's window: it needs no deadline of
	// its own. No half-close: the receiver knows the size, and a FIN now
	// would cost both sides a frame on the way to the answer; Close sends
	// it afterwards.
	_, werr := s.Write(frame)
	br := getReader(s)
	defer putReader(br)
	resp, reply, rerr := x.readResponse(br)
	if rerr == nil {
		_ = s.Close()
		reply, err := x.result(resp, reply)
		return reply, err, false
	}
	_ = s.Reset()
	if isRemoteLimit(rerr) || isRemoteLimit(werr) {
		return nil, x.streamErr(rerr), true
	}
	return nil, x.streamErr(rerr), false
}

// outcome is what the response reader found.
type outcome struct {
	resp  response
	reply []byte
	err   error
}

// large streams the payload after the header while a second goroutine
// reads the response; a response that ends the exchange before the
// payload is written stops the writer.
func (x *exchange) large(q *request) ([]byte, error) {
	hb := getBuf(len(selectPrefix) + 64 + len(q.To.String()) + len(q.Writecap))
	defer putBuf(hb)
	hdr, err := appendRequest(append(*hb, selectPrefix...), q)
	if err != nil {
		return nil, fmt.Errorf("msg: %s %s: %w", x.op, x.to, err)
	}
	*hb = hdr
	var s network.Stream
	for attempt := 0; ; attempt++ {
		s, err = x.open()
		if err == nil {
			break
		}
		if !isResourceLimit(err) || !x.backoff(attempt) {
			return nil, x.streamErr(err)
		}
	}
	defer x.watch(s)()
	w := &writer{s: s}
	if x.dl.IsZero() {
		w.extend()
	} else {
		_ = s.SetWriteDeadline(x.dl)
	}
	if _, err := s.Write(hdr); err != nil {
		_ = s.Reset()
		return nil, x.streamErr(err)
	}

	br := getReader(s)
	res := make(chan outcome, 1)
	done := make(chan struct{})
	x.r.life.EnterWithin() // within deliver's Enter: Close waits for it
	go func() {
		defer x.r.life.Leave()
		defer close(done)
		x.readLarge(br, w, res)
	}()

	cb := getBuf(copyBufSize)
	n, rerr, werr := x.copyBody(s, w, (*cb)[:copyBufSize])
	putBuf(cb)
	switch {
	case rerr != nil:
		// The body failed or ended early: the receiver must not take a
		// truncated payload for a whole one.
		_ = s.Reset()
		<-done
		putReader(br)
		return nil, x.bodyErr(rerr)
	}
	if werr != nil && !w.stopped() {
		// The write failed on its own. A receiver that stopped reading
		// (its handler returned early, or it refused) has answered or
		// closed first; with QUIC its Close stops our writes at once, so
		// give the reader a moment to see why. Otherwise (reset,
		// connection lost, deadline) end the stream.
		if isRemoteStreamErr(werr) {
			t := time.NewTimer(stopGrace)
			select {
			case <-done:
			case <-t.C:
			}
			t.Stop()
		}
		if !w.stopped() {
			_ = s.Reset()
		}
	}
	o := <-res
	_ = s.Close() // ends a reader still waiting for the end of a Send
	<-done
	putReader(br)
	if o.err != nil {
		if werr != nil && !w.stopped() {
			return nil, x.streamErr(werr)
		}
		return nil, x.streamErr(o.err)
	}
	if werr != nil && !w.stopped() && o.resp.Kind == kindOK && !x.call {
		return nil, fmt.Errorf("msg: send %s: node %s (peer %s) accepted the message but the payload was cut after %d of %d bytes: %v: %w",
			x.to, x.node, x.pid, n, x.size, werr, ErrUnreachable)
	}
	return x.result(o.resp, o.reply)
}

// readLarge reads the response of a large message. A response that ends
// the exchange (an error, or a Call's reply) stops the writer; after a
// Send's acceptance it waits for the receiver to close its side, which it
// does when the handler is done with the body, and stops the writer then.
func (x *exchange) readLarge(br *bufio.Reader, w *writer, res chan<- outcome) {
	resp, reply, err := x.readResponse(br)
	final := err != nil || resp.Kind != kindOK || x.call
	if err == nil && final {
		w.stop()
	}
	res <- outcome{resp: resp, reply: reply, err: err}
	if final {
		return
	}
	var b [1]byte
	if _, err := br.Read(b[:]); err == io.EOF {
		w.stop()
	}
}

// writer guards the write deadline of a large message's stream, which the
// response reader moves to now to stop the writer.
type writer struct {
	s network.Stream
	// mu guards halted, and orders the reader's stop against the
	// writer's extensions of the deadline.
	mu     sync.Mutex
	halted bool
}

// stop makes the current and every later write fail.
func (w *writer) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.halted = true
	_ = w.s.SetWriteDeadline(time.Now())
}

// extend pushes the write deadline idleTimeout ahead, unless stopped.
func (w *writer) extend() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.halted {
		return false
	}
	_ = w.s.SetWriteDeadline(time.Now().Add(idleTimeout))
	return true
}

func (w *writer) stopped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.halted
}

// copyBody writes exactly x.size bytes of the body to dst through buf. It
// returns how many it wrote and the error of the body (rerr: including a
// body that ends early) or of the stream (werr).
func (x *exchange) copyBody(dst io.Writer, w *writer, buf []byte) (n int64, rerr, werr error) {
	for n < x.size {
		chunk := buf[:min(int64(len(buf)), x.size-n)]
		m, err := x.body.Read(chunk)
		if m > 0 {
			if x.dl.IsZero() && !w.extend() {
				return n, nil, errStopped
			}
			if _, err := dst.Write(chunk[:m]); err != nil {
				return n, nil, err
			}
			n += int64(m)
		}
		switch {
		case err == io.EOF && n < x.size:
			return n, io.ErrUnexpectedEOF, nil
		case err != nil && err != io.EOF:
			return n, err, nil
		}
	}
	return n, nil, nil
}

var errStopped = errors.New("stopped by the response")

// open opens a stream of ProtocolID to the connected peer, on any of its
// connections, with ctx's deadline for reads.
func (x *exchange) open() (network.Stream, error) {
	ctx := network.WithAllowLimitedConn(network.WithNoDial(x.ctx, "msg: p2p.Connect dialled"), "blocktree msg")
	s, err := x.r.host.Network().NewStream(ctx, x.pid)
	if err != nil {
		return nil, err
	}
	if err := s.SetProtocol(ProtocolID); err != nil {
		_ = s.Reset()
		return nil, err
	}
	if !x.dl.IsZero() {
		// Reads only: a small message's one write cannot wait for the
		// peer, and large ones set their write deadline themselves.
		_ = s.SetReadDeadline(x.dl)
	}
	return s, nil
}

// watch resets s when ctx is cancelled or the Router closes; the stream's
// deadline covers ctx's deadline. Call the returned function when done.
func (x *exchange) watch(s network.Stream) (stop func()) {
	reset := func() { _ = s.Reset() }
	stopR := context.AfterFunc(x.r.ctx, reset)
	if x.ctx.Done() == nil {
		return func() { stopR() }
	}
	stopC := context.AfterFunc(x.ctx, reset)
	return func() { stopR(); stopC() }
}

// backoff sleeps before retry attempt+1; false when ctx or the Router
// ended first, or, without a deadline, after maxRetries.
func (x *exchange) backoff(attempt int) bool {
	if x.dl.IsZero() && attempt >= maxRetries {
		return false
	}
	d := min(retryMin<<min(attempt, 16), retryMax)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-x.ctx.Done():
	case <-x.r.ctx.Done():
	}
	return false
}

// readResponse reads a response header and, for a Call's success, the
// reply.
func (x *exchange) readResponse(br *bufio.Reader) (response, []byte, error) {
	if err := readSelected(br); err != nil {
		return response{}, nil, err
	}
	h, err := readHeader(br, MaxResponseHeader)
	if err != nil {
		if errors.Is(err, errFrameSize) {
			err = fmt.Errorf("response: %w: %v", ErrBadMessage, err)
		}
		return response{}, nil, err
	}
	resp, err := decodeResponse(h)
	if err != nil {
		return response{}, nil, err
	}
	if resp.Kind != kindOK || resp.Size == 0 {
		return resp, nil, nil
	}
	if !x.call {
		return response{}, nil, fmt.Errorf("response: acceptance of a send with a body of %d bytes: %w", resp.Size, ErrBadMessage)
	}
	if resp.Size > x.r.cfg.MaxMessage {
		return response{}, nil, fmt.Errorf("reply of %d bytes exceeds this node's limit of %d (Config.MaxMessage): %w", resp.Size, x.r.cfg.MaxMessage, ErrTooLarge)
	}
	reply, err := readN(br, resp.Size)
	return resp, reply, err
}

// readN reads exactly n bytes, growing the buffer as they come rather
// than trusting n for an allocation up front.
func readN(r io.Reader, n int64) ([]byte, error) {
	const step = 1 << 20
	b := make([]byte, 0, min(n, step))
	for int64(len(b)) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, int(min(n-int64(len(b)), int64(len(b)))))
		}
		end := min(int64(cap(b)), n)
		m, err := io.ReadFull(r, b[len(b):end])
		b = b[:len(b)+m]
		if err != nil {
			return nil, noEOF(err)
		}
	}
	return b, nil
}

// result turns a response into Call's results.
func (x *exchange) result(resp response, reply []byte) ([]byte, error) {
	var sentinel error
	switch resp.Kind {
	case kindOK:
		return reply, nil
	case kindHandler:
		return nil, &RemoteError{Path: x.to, Msg: resp.Msg}
	case kindNoEndpoint:
		sentinel = ErrNoEndpoint
	case kindTooLarge:
		sentinel = ErrTooLarge
	case kindDenied:
		sentinel = ErrDenied
	case kindDeadline:
		sentinel = context.DeadlineExceeded
	case kindBusy:
		sentinel = ErrBusy
	case kindBadRequest:
		sentinel = ErrBadMessage
	case kindClosed:
		sentinel = ErrUnreachable
	default:
		return nil, fmt.Errorf("msg: %s %s: node %s answered with error kind %d, unknown to this build: %s", x.op, x.to, x.node, resp.Kind, resp.Msg)
	}
	return nil, fmt.Errorf("msg: %s %s: refused by node %s: %s: %w", x.op, x.to, x.node, resp.Msg, sentinel)
}

// ctxErr is the error for x.ctx having ended, or the stream's deadline
// (which is ctx's) having passed.
func (x *exchange) ctxErr() error {
	err := x.ctx.Err()
	switch {
	case x.r.ctx.Err() != nil:
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, ErrClosed)
	case err == nil || errors.Is(err, context.DeadlineExceeded):
		who := "node " + x.node.String()
		if x.pid != "" {
			who += " (peer " + x.pid.String() + ")"
		}
		return fmt.Errorf("msg: %s %s: %s did not answer before the deadline: %w", x.op, x.to, who, context.DeadlineExceeded)
	default:
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, err)
	}
}

// connectErr is the error for a failed p2p.Connect.
func (x *exchange) connectErr(err error) error {
	switch {
	case x.r.ctx.Err() != nil || errors.Is(err, p2p.ErrClosed):
		return fmt.Errorf("msg: %s %s: %w: %w", x.op, x.to, ErrClosed, err)
	case x.ctx.Err() != nil && errors.Is(x.ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("msg: %s %s: node %s could not be reached before the deadline: %w: %w", x.op, x.to, x.node, context.DeadlineExceeded, err)
	case x.ctx.Err() != nil:
		return fmt.Errorf("msg: %s %s: %w: %w", x.op, x.to, x.ctx.Err(), err)
	case errors.Is(err, ErrUnreachable):
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, err)
	default:
		return fmt.Errorf("msg: %s %s: node %s: %w: %w", x.op, x.to, x.node, ErrUnreachable, err)
	}
}

// streamErr is the error for a failed stream.
func (x *exchange) streamErr(err error) error {
	switch {
	case errors.Is(err, ErrBadMessage), errors.Is(err, ErrUnknownVersion), errors.Is(err, ErrTooLarge):
		return fmt.Errorf("msg: %s %s: node %s (peer %s): %w", x.op, x.to, x.node, x.pid, err)
	case x.r.ctx.Err() != nil:
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, ErrClosed)
	case x.ctx.Err() != nil || isTimeout(err):
		return x.ctxErr()
	case errors.Is(err, errNoProtocol), isRemoteCode(err, network.StreamProtocolNegotiationFailed):
		return fmt.Errorf("msg: %s %s: node %s (peer %s) does not speak %s (an older bt?): %w", x.op, x.to, x.node, x.pid, ProtocolID, ErrNoEndpoint)
	case isRemoteLimit(err), isResourceLimit(err):
		return fmt.Errorf("msg: %s %s: node %s (peer %s) has too many streams open; retry later: %w: %v", x.op, x.to, x.node, x.pid, ErrBusy, err)
	default:
		return fmt.Errorf("msg: %s %s: node %s (peer %s): %v: %w", x.op, x.to, x.node, x.pid, err, ErrUnreachable)
	}
}

// bodyErr is the error for a body that failed or ended early.
func (x *exchange) bodyErr(err error) error {
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return fmt.Errorf("msg: %s %s: the body ended before the %d bytes of size: %w", x.op, x.to, x.size, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("msg: %s %s: reading the body: %w", x.op, x.to, err)
}

// isTimeout reports a deadline error of a stream.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// isRemoteLimit reports a stream the receiver reset for its resource
// limits, before any handler saw it.
func isRemoteLimit(err error) bool {
	return isRemoteCode(err, network.StreamResourceLimitExceeded)
}

// isRemoteStreamErr reports an error the peer caused on this stream (a
// reset, or with QUIC its stopping our writes), not the connection.
func isRemoteStreamErr(err error) bool {
	var se *network.StreamError
	return errors.As(err, &se) && se.Remote
}

// isRemoteCode reports a stream the peer reset with error code c.
func isRemoteCode(err error, c network.StreamErrorCode) bool {
	var se *network.StreamError
	return errors.As(err, &se) && se.Remote && se.ErrorCode == c
}

// isResourceLimit reports a stream this node's resource manager refused.
func isResourceLimit(err error) bool {
	return errors.Is(err, network.ErrResourceLimitExceeded)
}
