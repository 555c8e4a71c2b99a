package actors

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// StreamProtocol is the libp2p protocol of the stream transport: one
// long-lived stream per pair of nodes carries their runtimes' requests,
// pipelined (docs/actors.md, "Stream transport").
const StreamProtocol protocol.ID = "/blocktree/actors/1.0.0"

// Limits and timings of the stream transport.
const (
	// DefaultWindow is the requests a receiver lets one stream have in
	// flight: calls and watches not yet answered, tells not yet queued.
	DefaultWindow = 256
	// DefaultTargetWindow is the tells a receiver lets one stream have in
	// flight to one actor: what a full mailbox lets pile up before it
	// pushes back on the sender.
	DefaultTargetWindow = 32
	// maxWindow bounds the window a welcome may grant.
	maxWindow = 4096
	// maxPeerStreams bounds the inbound streams of one peer; a sender
	// opens one per node and a second only once the first has failed.
	maxPeerStreams = 4
	// openTimeout bounds connecting to a node and its welcome.
	openTimeout = 30 * time.Second
	// helloTimeout bounds how long a receiver waits for a hello.
	helloTimeout = 10 * time.Second
	// defaultAuthWait bounds how long a receiver waits for the proof of
	// path of a peer that opened a stream before proving it.
	defaultAuthWait = 10 * time.Second
	// writeTimeout bounds one write of the frames queued on a stream: a
	// peer that reads nothing for that long is dead to us.
	writeTimeout = 30 * time.Second
	// writeSlack is how much of writeTimeout a write may find used up:
	// the stream's write deadline is moved only when it is nearer than
	// writeTimeout-writeSlack, not on every write (moving it costs a
	// timer in the muxer), so a write has 29 to 30 s.
	writeSlack = time.Second
	// fallbackFor is how long a node that does not speak StreamProtocol is
	// reached through msg before it is asked again.
	fallbackFor = time.Minute
	// readBuf is the buffer of a stream's reader.
	readBuf = 64 << 10
)

// errFallback: the node does not speak StreamProtocol; use msg.
var errFallback = errors.New("actors: node does not speak " + string(StreamProtocol))

// transport is the stream transport of one runtime: the links to other
// nodes (sender side) and the inbound streams (receiver side,
// streamserve.go).
type transport struct {
	r        *Runtime
	node     *p2p.Node
	host     host.Host
	verifier *caps.Verifier
	authWait time.Duration

	// gmu guards grants.
	gmu    sync.Mutex
	grants []*caps.Writecap

	// mu guards links and inbound.
	mu      sync.Mutex
	links   map[paths.Path]*link // by node path
	inbound map[peer.ID]int      // open inbound streams per peer
}

func newTransport(r *Runtime, n *p2p.Node) *transport {
	t := &transport{r: r, node: n, host: n.Host(), verifier: r.cfg.verifier, authWait: r.cfg.authWait,
		links: make(map[paths.Path]*link), inbound: make(map[peer.ID]int), grants: r.cfg.grants}
	if t.verifier == nil {
		t.verifier = caps.NewVerifier()
	}
	return t
}

// grantFor returns the encoded writecap for a stream to node, of another
// domain, or nil.
func (t *transport) grantFor(node paths.Path) []byte {
	if node.Root() == t.r.self.Root() {
		return nil
	}
	t.gmu.Lock()
	defer t.gmu.Unlock()
	now := time.Now()
	for _, w := range t.grants {
		if now.Before(w.Expiry()) && w.Root() == node.Root() && node.HasPrefix(w.Prefix()) && t.verifier.Verify(w, node) == nil {
			return w.Marshal()
		}
	}
	return nil
}

// link is this runtime's way to one other node: at most one stream at a
// time, opened lazily and again after it failed.
type link struct {
	t    *transport
	node paths.Path

	// mu guards the fields below.
	mu       sync.Mutex
	conn     *outConn // the live stream, nil when none
	opening  *opening // the open in progress, nil when none
	fallback time.Time
}

// opening is one attempt to open a link's stream; done is closed when c
// or err is set.
type opening struct {
	done chan struct{}
	c    *outConn
	err  error
}

func (t *transport) link(node paths.Path) *link {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.links[node]
	if l == nil {
		l = &link{t: t, node: node}
		t.links[node] = l
	}
	return l
}

// get returns the link's live stream, opening one if need be and waiting
// for it until ctx ends. errFallback: use msg.
func (l *link) get(ctx context.Context) (*outConn, error) {
	l.mu.Lock()
	if c := l.conn; c != nil {
		select {
		case <-c.dead: // failing: open another
			l.conn = nil
		default:
			l.mu.Unlock()
			return c, nil
		}
	}
	if time.Now().Before(l.fallback) {
		l.mu.Unlock()
		return nil, errFallback
	}
	op := l.opening
	if op == nil {
		if !l.t.r.life.Enter() {
			l.mu.Unlock()
			return nil, ErrClosed
		}
		op = &opening{done: make(chan struct{})}
		l.opening = op
		go l.open(op)
	}
	l.mu.Unlock()
	select {
	case <-op.done:
		return op.c, op.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// open connects to the node and opens a stream, bounded by openTimeout
// rather than by the ctx of the request that asked, so that the requests
// waiting for it each wait by their own deadline.
func (l *link) open(op *opening) {
	r := l.t.r
	defer r.life.Leave()
	ctx, cancel := context.WithTimeout(r.ctx, openTimeout)
	c, err := l.dial(ctx)
	cancel()
	l.mu.Lock()
	l.opening = nil
	switch {
	case err == nil:
		l.conn = c
	case errors.Is(err, errFallback):
		l.fallback = time.Now().Add(fallbackFor)
	}
	l.mu.Unlock()
	op.c, op.err = c, err
	close(op.done)
	if c != nil {
		c.start()
	}
}

func isNoProtocol(err error) bool {
	var se *network.StreamError
	return errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) ||
		(errors.As(err, &se) && se.Remote && se.ErrorCode == network.StreamProtocolNegotiationFailed)
}

// dial opens a stream to the node, says hello and reads the welcome.
func (l *link) dial(ctx context.Context) (*outConn, error) {
	t := l.t
	pid, err := t.node.Connect(ctx, l.node)
	if err != nil {
		return nil, err
	}
	s, err := t.host.NewStream(network.WithAllowLimitedConn(ctx, "blocktree actors"), pid, StreamProtocol)
	if err != nil {
		if isNoProtocol(err) {
			return nil, errFallback
		}
		return nil, fmt.Errorf("open a stream to peer %s: %w", pid, err)
	}
	dl, _ := ctx.Deadline()
	_ = s.SetDeadline(dl)
	hello, err := appendFrame(nil, &wireFrame{K: kindHello, WC: t.grantFor(l.node)})
	if err != nil {
		_ = s.Reset()
		return nil, err
	}
	br := bufio.NewReaderSize(s, readBuf)
	_, werr := s.Write(hello)
	b, err := readFrame(br, nil)
	if err != nil {
		_ = s.Reset()
		if isNoProtocol(err) || isNoProtocol(werr) {
			return nil, errFallback
		}
		return nil, fmt.Errorf("peer %s: no welcome: %w", pid, err)
	}
	f, err := decodeFrame(b)
	if err == nil && f.kind != kindWelcome {
		err = fmt.Errorf("a frame of kind %d instead of a welcome: %w", f.kind, ErrBadMessage)
	}
	if err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("peer %s: welcome: %w", pid, err)
	}
	if f.rep != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("peer %s refused the stream: %s: %w", pid, f.rep.E, refusal(f.rep.C))
	}
	_ = s.SetDeadline(time.Time{})
	c := &outConn{l: l, s: s, pid: pid, br: br, window: f.n, perTarget: f.p,
		dead: make(chan struct{}), targets: make(map[paths.Path]int), pending: make(map[uint64]*pending)}
	c.w = newFrameWriter(s, c.fail)
	return c, nil
}

// refusal is the sentinel of a welcome's refusal code.
func refusal(c uint64) error {
	switch c {
	case codeDenied:
		return msg.ErrDenied
	case codeBusy:
		return msg.ErrBusy
	case codeClosed:
		return ErrClosed
	}
	return ErrBadMessage
}

// outConn is one open stream of a link, from the opener's side.
type outConn struct {
	l         *link
	s         network.Stream
	pid       peer.ID
	br        *bufio.Reader
	w         *frameWriter
	window    int // requests in flight, granted by the welcome
	perTarget int // tells in flight per target, granted by the welcome
	dead      chan struct{}

	// mu guards the fields below.
	mu       sync.Mutex
	err      error // why the stream is gone; set once, with dead closed
	nextID   uint64
	inflight int
	targets  map[paths.Path]int // tells in flight per target
	pending  map[uint64]*pending
	room     chan struct{} // closed when credit is given back; nil while nobody waits
}

// pending is a request in flight.
type pending struct {
	tell bool
	to   paths.Path
	from paths.Path
	ch   chan *frame // calls and watches: gets the reply
}

var pendingCh = sync.Pool{New: func() any { return make(chan *frame, 1) }}

// start runs the stream's reader and writer, and resets the stream when
// the runtime closes.
func (c *outConn) start() {
	r := c.l.t.r
	if !r.life.Enter() {
		c.fail(ErrClosed)
		return
	}
	go func() {
		defer r.life.Leave()
		stop := context.AfterFunc(r.ctx, func() { c.fail(ErrClosed) })
		defer stop()
		c.read()
	}()
	c.w.start(r)
}

// fail ends the stream: every request in flight fails with err (callers
// see it through dead), and the link opens a new stream next time.
func (c *outConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	tells := 0
	for _, p := range c.pending {
		if p.tell {
			tells++
		}
	}
	c.pending = nil
	close(c.dead)
	c.mu.Unlock()
	_ = c.s.Reset()
	c.w.fail(err)
	l := c.l
	l.mu.Lock()
	if l.conn == c {
		l.conn = nil
	}
	l.mu.Unlock()
	if tells > 0 && !errors.Is(err, ErrClosed) {
		l.t.r.log.Warn("stream to a node failed with tells in flight; they may be lost", "node", l.node, "tells", tells, "err", err)
	}
}

// errNoCredit: the window (or the target's) stayed full until the
// request's deadline.
var errNoCredit = errors.New("no credit")

// begin takes a slot of the window (and of the target's, for a tell),
// waiting until ctx ends or dl (if not zero) passes; it returns the
// request's ID.
func (c *outConn) begin(ctx context.Context, dl time.Time, p *pending) (uint64, error) {
	var timeout <-chan time.Time
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return 0, err
		}
		if c.inflight < c.window && (!p.tell || c.targets[p.to] < c.perTarget) {
			c.inflight++
			if p.tell {
				c.targets[p.to]++
			}
			c.nextID++
			id := c.nextID
			c.pending[id] = p
			c.mu.Unlock()
			return id, nil
		}
		if c.room == nil {
			c.room = make(chan struct{})
		}
		room := c.room
		c.mu.Unlock()
		if timeout == nil && !dl.IsZero() {
			t := time.NewTimer(time.Until(dl))
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-room:
		case <-c.dead:
		case <-timeout:
			return 0, errNoCredit
		case <-ctx.Done():
			return 0, errNoCredit
		}
	}
}

// done gives back the slots of request id; called with mu held.
func (c *outConn) doneLocked(id uint64, p *pending) {
	delete(c.pending, id)
	c.inflight--
	if p.tell {
		if n := c.targets[p.to] - 1; n > 0 {
			c.targets[p.to] = n
		} else {
			delete(c.targets, p.to)
		}
	}
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
}

// read reads replies and acks until the stream fails.
func (c *outConn) read() {
	var buf []byte
	for {
		b, err := readFrame(c.br, buf)
		if err != nil {
			c.fail(fmt.Errorf("stream to peer %s: %w", c.pid, err))
			return
		}
		buf = b
		f, err := decodeFrame(b)
		if err == nil && f.kind != kindReply && f.kind != kindAck {
			err = fmt.Errorf("a frame of kind %d from the receiver: %w", f.kind, ErrBadMessage)
		}
		if err != nil {
			c.fail(fmt.Errorf("stream to peer %s: %w", c.pid, err))
			return
		}
		if f.kind == kindAck {
			c.mu.Lock()
			for _, id := range f.acks {
				if p := c.pending[id]; p != nil && p.tell {
					c.doneLocked(id, p)
				}
			}
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		p := c.pending[f.id]
		if p != nil {
			c.doneLocked(f.id, p)
		}
		c.mu.Unlock()
		switch {
		case p == nil:
		case p.tell:
			c.l.t.r.log.Warn("a tell failed at its node after Send returned", "to", p.to, "from", p.from,
				"err", errOf("send", p.to, f.rep.C, f.rep.E))
		default:
			p.ch <- f
		}
	}
}

// deadline returns ctx's deadline, or now+wait without one.
func deadline(ctx context.Context, wait time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(wait)
}

// tell sends a tell frame to w.To, pipelined: it returns once the frame
// is queued on the stream with credit, waiting for credit until ctx's
// deadline (the runtime's send wait without one).
func (t *transport) tell(ctx context.Context, to, from, node paths.Path, w *wireFrame) error {
	c, err := t.link(node).get(ctx)
	if err != nil {
		return t.linkErr(ctx, "send", to, node, err)
	}
	dl := deadline(ctx, t.r.cfg.sendWait)
	w.D = dl.UnixNano()
	p := &pending{tell: true, to: to, from: from}
	id, err := c.begin(ctx, dl, p)
	if err != nil {
		if err == errNoCredit {
			if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("actors: send %s: %w", to, ctx.Err())
			}
			return fmt.Errorf("actors: send %s: node %s has not queued the %d tells in flight to it (its mailbox stayed full): %w", to, node, c.perTarget, ErrMailboxFull)
		}
		return c.streamErr("send", to, err)
	}
	w.I = id
	if err := c.w.write(w, false); err != nil {
		return c.streamErr("send", to, err)
	}
	return nil
}

// request sends a call or watch frame to node and waits, until ctx ends
// or the stream fails, for its reply.
func (t *transport) request(ctx context.Context, op string, to, node paths.Path, w *wireFrame) (*wireReply, error) {
	c, err := t.link(node).get(ctx)
	if err != nil {
		return nil, t.linkErr(ctx, op, to, node, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		w.D = dl.UnixNano()
	}
	ch := pendingCh.Get().(chan *frame)
	p := &pending{to: to, ch: ch}
	id, err := c.begin(ctx, time.Time{}, p)
	if err != nil {
		pendingCh.Put(ch)
		if err == errNoCredit {
			return nil, t.ctxErr(ctx, op, to, node, fmt.Sprintf("its window of %d requests stayed full", c.window))
		}
		return nil, c.streamErr(op, to, err)
	}
	w.I = id
	if err := c.w.write(w, true); err != nil {
		return nil, c.streamErr(op, to, err)
	}
	select {
	case f := <-ch:
		pendingCh.Put(ch)
		return f.rep, nil
	case <-c.dead:
		select {
		case f := <-ch:
			pendingCh.Put(ch)
			return f.rep, nil
		default:
		}
		return nil, c.streamErr(op, to, c.err)
	case <-ctx.Done():
		// The reply may still come: ch is left to the reader, which
		// gives the slot back then.
		return nil, t.ctxErr(ctx, op, to, node, "it did not answer")
	}
}

func (t *transport) ctxErr(ctx context.Context, op string, to, node paths.Path, why string) error {
	if t.r.ctx.Err() != nil {
		return fmt.Errorf("actors: %s %s: %w", op, to, ErrClosed)
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("actors: %s %s: node %s: %w", op, to, node, err)
	}
	return fmt.Errorf("actors: %s %s: node %s did not answer before the deadline (%s): %w", op, to, node, why, context.DeadlineExceeded)
}

func (t *transport) linkErr(ctx context.Context, op string, to, node paths.Path, err error) error {
	switch {
	case err == errFallback:
		return err
	case errors.Is(err, ErrClosed) || t.r.ctx.Err() != nil:
		return fmt.Errorf("actors: %s %s: %w", op, to, ErrClosed)
	case ctx.Err() != nil:
		return t.ctxErr(ctx, op, to, node, "no stream could be opened")
	case errors.Is(err, msg.ErrDenied), errors.Is(err, msg.ErrBusy), errors.Is(err, p2p.ErrUnreachable), errors.Is(err, p2p.ErrNotAuthenticated):
		return fmt.Errorf("actors: %s %s: node %s: %w", op, to, node, err)
	}
	return fmt.Errorf("actors: %s %s: node %s: %w: %w", op, to, node, msg.ErrUnreachable, err)
}

func (c *outConn) streamErr(op string, to paths.Path, err error) error {
	if errors.Is(err, ErrClosed) {
		return fmt.Errorf("actors: %s %s: %w", op, to, ErrClosed)
	}
	return fmt.Errorf("actors: %s %s: node %s (peer %s): the stream failed: %w: %w", op, to, c.l.node, c.pid, msg.ErrUnreachable, err)
}

// frameWriter queues frames for one stream and writes them in order,
// many to a write: a request that waits for its reply (now) writes what
// is queued itself when no one else is writing; other frames are left to
// the writer's goroutine, which writes everything queued meanwhile at
// once.
type frameWriter struct {
	s      network.Stream
	onErr  func(error)
	kick   chan struct{} // 1-buffered: hands the writing over to loop
	closed chan struct{}
	dl     time.Time // the stream's write deadline; the writer's (busy)

	// mu guards the fields below.
	mu    sync.Mutex
	buf   []byte // frames queued
	spare []byte
	busy  bool // someone is writing: it writes buf until empty
	err   error
}

func newFrameWriter(s network.Stream, onErr func(error)) *frameWriter {
	return &frameWriter{s: s, onErr: onErr, kick: make(chan struct{}, 1), closed: make(chan struct{})}
}

// start runs the writer's goroutine until fail.
func (w *frameWriter) start(r *Runtime) {
	if !r.life.Enter() {
		w.fail(ErrClosed)
		return
	}
	go func() {
		defer r.life.Leave()
		for {
			select {
			case <-w.kick:
			case <-w.closed:
				return
			}
			w.mu.Lock()
			w.flushLocked()
			w.mu.Unlock()
		}
	}()
}

// write encodes f (as version FrameVersion) onto the queue; with now,
// the caller writes it (and what is queued) unless someone is writing
// already. It never waits for the peer except in that write. Safe for
// concurrent use.
func (w *frameWriter) write(f *wireFrame, now bool) error {
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	var err error
	if w.buf, err = appendFrame(w.buf, f); err != nil {
		w.mu.Unlock()
		return err
	}
	if w.busy {
		w.mu.Unlock()
		return nil
	}
	w.busy = true
	if !now {
		w.mu.Unlock()
		w.kick <- struct{}{}
		return nil
	}
	w.flushLocked()
	err = w.err
	w.mu.Unlock()
	return err
}

// flushLocked writes buf until it is empty, unlocking mu around each
// write, and ends the turn (busy). Called with mu held and busy set.
func (w *frameWriter) flushLocked() {
	var failed error
	for len(w.buf) > 0 && w.err == nil {
		b := w.buf
		w.buf = w.spare[:0]
		w.mu.Unlock()
		if now := time.Now(); w.dl.Sub(now) < writeTimeout-writeSlack {
			w.dl = now.Add(writeTimeout)
			_ = w.s.SetWriteDeadline(w.dl)
		}
		_, err := w.s.Write(b)
		w.mu.Lock()
		if cap(b) <= readBuf {
			w.spare = b[:0]
		}
		if err != nil && w.err == nil {
			w.err, failed = err, err
		}
	}
	w.busy = false
	if failed != nil {
		w.mu.Unlock()
		w.onErr(failed)
		w.mu.Lock()
	}
}

// fail refuses further frames with err and stops the goroutine.
func (w *frameWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	select {
	case <-w.closed:
	default:
		close(w.closed)
	}
	w.buf = nil
}
