package msg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"

	"blocktree.dev/bt/paths"
)

// Session windows: what a receiver lets one session have in flight.
const (
	// DefaultWindow bounds the requests in flight on a session: calls not
	// answered and sends whose handlers have not returned.
	DefaultWindow = 1024
	// DefaultTargetWindow bounds the requests in flight to one target
	// path: what a slow handler lets pile up before it pushes back on
	// its senders (and only on those to its path).
	DefaultTargetWindow = 256
	// DefaultWindowBytes bounds the payload bytes in flight on a session.
	DefaultWindowBytes = 8 << 20

	maxWindow      = 1 << 16
	maxWindowBytes = 1 << 30

	// sessionOpenTimeout bounds connecting to a node and its welcome.
	sessionOpenTimeout = 30 * time.Second
	// fallbackFor is how long a node that does not speak SessionProtocol
	// is sent one stream per message before it is asked again.
	fallbackFor = time.Minute
	// sessionReadBuf is the buffer of a session's reader.
	sessionReadBuf = 64 << 10
)

// errFallback: the node does not speak SessionProtocol.
var errFallback = errors.New("msg: node does not speak " + string(SessionProtocol))

// link is this router's way to one other node: at most one session at a
// time, opened lazily, and again after it failed.
type link struct {
	r    *Router
	node paths.Path

	// mu guards the fields below.
	live atomic.Pointer[session] // sess, read without mu

	mu       sync.Mutex
	sess     *session // the live session, nil when none
	opening  *opening // the open in progress, nil when none
	fallback time.Time
}

// opening is one attempt to open a session; done is closed when s or err
// is set.
type opening struct {
	done chan struct{}
	s    *session
	err  error
}

func (r *Router) link(node paths.Path) *link {
	r.lmu.RLock()
	l := r.links[node]
	r.lmu.RUnlock()
	if l != nil {
		return l
	}
	r.lmu.Lock()
	defer r.lmu.Unlock()
	l = r.links[node]
	if l == nil {
		l = &link{r: r, node: node}
		r.links[node] = l
	}
	return l
}

// get returns the link's live session, opening one if need be, and waits
// for it until ctx ends. errFallback: send one stream per message.
func (l *link) get(ctx context.Context) (*session, error) {
	if s := l.live.Load(); s != nil && !s.failed.Load() {
		return s, nil
	}
	l.mu.Lock()
	if s := l.sess; s != nil {
		select {
		case <-s.dead:
			l.sess = nil
			l.live.Store(nil)
		default:
			l.mu.Unlock()
			return s, nil
		}
	}
	if time.Now().Before(l.fallback) {
		l.mu.Unlock()
		return nil, errFallback
	}
	op := l.opening
	if op == nil {
		if !l.r.life.Enter() {
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
		return op.s, op.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// open connects and opens a session, bounded by sessionOpenTimeout rather
// than by the ctx of the message that asked, so that each message waiting
// for it waits by its own deadline.
func (l *link) open(op *opening) {
	r := l.r
	defer r.life.Leave()
	ctx, cancel := context.WithTimeout(r.ctx, sessionOpenTimeout)
	s, err := l.dial(ctx)
	cancel()
	l.mu.Lock()
	l.opening = nil
	switch {
	case err == nil:
		l.sess = s
		l.live.Store(s)
	case errors.Is(err, errFallback):
		l.fallback = time.Now().Add(fallbackFor)
	}
	l.mu.Unlock()
	op.s, op.err = s, err
	close(op.done)
	if s != nil {
		s.start()
	}
}

func isNoProtocol(err error) bool {
	return errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) || isRemoteCode(err, network.StreamProtocolNegotiationFailed)
}

// dial opens a session stream to the node, says hello and reads the
// welcome.
func (l *link) dial(ctx context.Context) (*session, error) {
	r := l.r
	pid, err := r.connect(ctx, l.node)
	if err != nil {
		return nil, err
	}
	st, err := r.host.NewStream(network.WithAllowLimitedConn(network.WithNoDial(ctx, "msg: p2p.Connect dialled"), "blocktree msg"), pid, SessionProtocol)
	if err != nil {
		if isNoProtocol(err) {
			return nil, errFallback
		}
		return nil, fmt.Errorf("open a session to peer %s: %w", pid, err)
	}
	dl, _ := ctx.Deadline()
	_ = st.SetDeadline(dl)
	wcs, covered := r.grantsFor(l.node)
	br := bufio.NewReaderSize(st, sessionReadBuf)
	_, werr := st.Write(appendHello(nil, wcs))
	f, err := sessionFraming.Next(br)
	if err != nil {
		_ = st.Reset()
		if isNoProtocol(err) || isNoProtocol(werr) {
			return nil, errFallback
		}
		return nil, fmt.Errorf("peer %s: no welcome: %w", pid, noEOF(err))
	}
	typ, fields, err := frameType(f)
	var w welcome
	if err == nil {
		if typ != frameWelcome {
			err = fmt.Errorf("a frame of type %d instead of a welcome: %w", typ, errSession)
		} else {
			w, err = decodeWelcome(fields)
		}
	}
	if err != nil {
		_ = st.Reset()
		return nil, fmt.Errorf("peer %s: welcome: %w", pid, err)
	}
	if w.kind != kindOK {
		_ = st.Reset()
		return nil, fmt.Errorf("node %s (peer %s) refused the session: %s: %w", l.node, pid, w.msg, kindErr(w.kind))
	}
	_ = st.SetDeadline(time.Time{})
	s := &session{l: l, st: st, pid: pid, br: br, w: w, covered: covered,
		dead: make(chan struct{}), targets: make(map[paths.Path]int), pending: make(map[uint64]*pending)}
	s.wr = newFrameWriter(st, s.fail)
	return s, nil
}

// kindErr is the sentinel of an error kind.
func kindErr(k kind) error {
	switch k {
	case kindNoEndpoint:
		return ErrNoEndpoint
	case kindTooLarge:
		return ErrTooLarge
	case kindDenied:
		return ErrDenied
	case kindDeadline:
		return context.DeadlineExceeded
	case kindBusy:
		return ErrBusy
	case kindBadRequest:
		return ErrBadMessage
	case kindClosed:
		return ErrUnreachable
	}
	return ErrBadMessage
}

// session is one open session stream, from the opener's side.
type session struct {
	l       *link
	st      network.Stream
	pid     peer.ID
	br      *bufio.Reader
	wr      *frameWriter
	w       welcome       // the windows granted
	covered []paths.Path  // prefixes the hello's writecaps cover
	dead    chan struct{} // closed by fail
	failed  atomic.Bool   // set by fail, before dead is closed

	// mu guards the fields below.
	mu       sync.Mutex
	err      error // why the session is gone; set once, with dead closed
	nextID   uint64
	inflight int
	bytes    int64
	targets  map[paths.Path]int // requests in flight per target
	pending  map[uint64]*pending
	room     chan struct{} // closed when credit comes back; nil while nobody waits
}

// pending is a request in flight.
type pending struct {
	typ  byte
	to   paths.Path
	size int64
	// ch gets the outcome of a call or confirmed send; nil for a send.
	ch    chan outcome
	reply []byte // a call's reply being assembled from parts
	want  int64  // its size
	got   int64  // the bytes of it received
	drop  bool   // the caller is gone or refused the reply: discard its parts
	sent  bool   // the outcome went to ch
	freed bool   // its credit is back
	fwd   bool   // forwarded to a group member: a failure is not remembered
}

// resolveLocked gives p's caller its outcome, once; ch is buffered, so
// it never waits. Called with the session's mu held (or p unshared).
func (p *pending) resolveLocked(o outcome) {
	if p.ch != nil && !p.sent {
		p.sent = true
		p.ch <- o
	}
}

// start runs the session's reader and writer, and ends the session when
// the router closes.
func (s *session) start() {
	r := s.l.r
	if !r.life.Enter() {
		s.fail(ErrClosed)
		return
	}
	go func() {
		defer r.life.Leave()
		stop := context.AfterFunc(r.ctx, func() { s.fail(ErrClosed) })
		defer stop()
		s.read()
	}()
	if !r.life.Enter() {
		s.fail(ErrClosed)
		return
	}
	go func() {
		defer r.life.Leave()
		s.wr.loop()
	}()
}

// fail ends the session: requests in flight fail with err, sends not yet
// acknowledged are reported (they may or may not have been delivered),
// and the link opens a new session next time.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	s.failed.Store(true)
	pending := s.pending
	s.pending = nil
	close(s.dead)
	s.mu.Unlock()
	_ = s.st.Reset()
	s.wr.fail(err)
	l := s.l
	l.mu.Lock()
	if l.sess == s {
		l.sess = nil
		l.live.Store(nil)
	}
	l.mu.Unlock()
	lost := 0
	byTarget := make(map[paths.Path]int)
	for _, p := range pending {
		switch {
		case p.ch != nil && !p.sent:
			p.resolveLocked(outcome{err: err})
		case p.typ != frameCall && !p.freed:
			lost++
			if !p.fwd {
				byTarget[p.to]++
			}
		}
	}
	for to, n := range byTarget {
		l.r.undelivered(to, n, fmt.Errorf("the session to node %s (peer %s) failed before the node acknowledged them, so they may not have been handled: %w: %v", l.node, s.pid, ErrUnreachable, err))
	}
	if lost > 0 && !errors.Is(err, ErrClosed) {
		l.r.log.Warn("session failed with sends unacknowledged; they may not have been delivered", "node", l.node, "sends", lost, "err", err)
	}
}

// errNoCredit: a window stayed full until the message's deadline.
var errNoCredit = errors.New("no credit")

// begin takes the credit for p in the session's windows, waiting until
// ctx ends or, if wait is not zero, wait has passed; it returns p's ID.
func (s *session) begin(ctx context.Context, wait time.Duration, p *pending) (uint64, error) {
	var timeout <-chan time.Time
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		if s.inflight < s.w.window && s.targets[p.to] < s.w.targetWindow && (s.bytes == 0 || s.bytes+p.size <= s.w.bytes) {
			s.inflight++
			s.bytes += p.size
			s.targets[p.to]++
			s.nextID++
			id := s.nextID
			s.pending[id] = p
			s.mu.Unlock()
			return id, nil
		}
		if s.room == nil {
			s.room = make(chan struct{})
		}
		room := s.room
		s.mu.Unlock()
		if timeout == nil && wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-room:
		case <-s.dead:
		case <-timeout:
			return 0, errNoCredit
		case <-ctx.Done():
			return 0, errNoCredit
		}
	}
}

// freeLocked gives back p's credit; called with mu held.
func (s *session) freeLocked(p *pending) {
	if p.freed {
		return
	}
	p.freed = true
	s.inflight--
	s.bytes -= p.size
	if n := s.targets[p.to] - 1; n > 0 {
		s.targets[p.to] = n
	} else {
		delete(s.targets, p.to)
	}
	if s.room != nil {
		close(s.room)
		s.room = nil
	}
}

// read reads replies, parts and acks until the session fails.
func (s *session) read() {
	var ids []uint64
	for {
		f, err := sessionFraming.Next(s.br)
		if err != nil {
			s.fail(fmt.Errorf("session to peer %s: %w", s.pid, noEOF(err)))
			return
		}
		typ, fields, err := frameType(f)
		if err == nil {
			switch typ {
			case frameAck:
				ids, err = decodeAck(fields, ids[:0])
				if err == nil {
					s.acked(ids)
				}
			case frameReply:
				var rep srep
				if rep, err = decodeReply(fields); err == nil {
					err = s.replied(&rep)
				}
			case frameMore:
				var id uint64
				var part []byte
				if id, part, err = decodeMore(fields); err == nil {
					err = s.more(id, part)
				}
			default:
				err = fmt.Errorf("a frame of type %d from the receiver: %w", typ, errSession)
			}
		}
		if err != nil {
			s.fail(fmt.Errorf("session to peer %s: %w", s.pid, err))
			return
		}
	}
}

// acked ends the sends whose handlers returned.
func (s *session) acked(ids []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		p := s.pending[id]
		if p == nil || p.typ == frameCall {
			continue
		}
		delete(s.pending, id)
		s.freeLocked(p)
		p.resolveLocked(outcome{})
		if p.typ == frameSend {
			// Nothing else holds a send's pending once it is out of
			// the map: its Send returned when it was written.
			*p = pending{}
			sendPendings.Put(p)
		}
	}
}

var sendPendings = sync.Pool{New: func() any { return new(pending) }}

// outcomeChans recycles the channels of calls and confirmed sends; a
// channel goes back only once its one outcome was received.
var outcomeChans = sync.Pool{New: func() any { return make(chan outcome, 1) }}

// replied handles a reply: a call's answer (or its first part), a
// confirmed send's acceptance, or a send's refusal.
func (s *session) replied(rep *srep) error {
	s.mu.Lock()
	p := s.pending[rep.id]
	if p == nil {
		s.mu.Unlock()
		return nil // an answer to a request that ended here already
	}
	defer s.mu.Unlock()
	if p.typ != frameCall {
		var err error
		if rep.kind != kindOK {
			delete(s.pending, rep.id)
			s.freeLocked(p)
			err = s.refused(p.to, rep)
			if (p.ch == nil || p.sent) && !p.fwd {
				s.l.r.undelivered(p.to, 1, err)
				s.l.r.log.Warn("a send was refused after Send returned", "to", p.to, "node", s.l.node, "err", err)
			}
		}
		p.resolveLocked(outcome{err: err})
		return nil
	}
	if rep.kind != kindOK || rep.size == int64(len(rep.payload)) {
		delete(s.pending, rep.id)
		s.freeLocked(p)
		o := outcome{resp: response{Kind: rep.kind, Msg: rep.msg, Size: rep.size}}
		switch {
		case rep.kind == kindOK && rep.size > s.l.r.cfg.MaxMessage:
			o = outcome{err: fmt.Errorf("reply of %d bytes exceeds this node's limit of %d (Config.MaxMessage): %w", rep.size, s.l.r.cfg.MaxMessage, ErrTooLarge)}
		case rep.kind == kindOK && !p.drop:
			o.reply = slices.Clone(rep.payload)
		}
		p.resolveLocked(o)
		return nil
	}
	if p.want != 0 {
		return fmt.Errorf("a second reply to request %d: %w", rep.id, errSession)
	}
	if rep.size > s.l.r.cfg.MaxMessage {
		p.drop = true
		p.resolveLocked(outcome{err: fmt.Errorf("reply of %d bytes exceeds this node's limit of %d (Config.MaxMessage): %w", rep.size, s.l.r.cfg.MaxMessage, ErrTooLarge)})
	}
	p.want = rep.size
	p.got = int64(len(rep.payload))
	if !p.drop {
		p.reply = append(make([]byte, 0, min(rep.size, 1<<20)), rep.payload...)
	}
	return nil
}

// more adds the next part of a call's reply.
func (s *session) more(id uint64, part []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending[id]
	if p == nil {
		return nil // the request ended here already (its session part was answered)
	}
	if p.typ != frameCall || p.want == 0 || p.got+int64(len(part)) > p.want {
		return fmt.Errorf("a reply part for request %d, which expects none or less: %w", id, errSession)
	}
	p.got += int64(len(part))
	if !p.drop {
		p.reply = append(p.reply, part...)
	}
	if p.got < p.want {
		return nil
	}
	delete(s.pending, id)
	s.freeLocked(p)
	o := outcome{resp: response{Kind: kindOK, Size: p.want}}
	if !p.drop {
		o.reply = p.reply
	}
	p.resolveLocked(o)
	return nil
}

// refused is the error of a request the receiver refused.
func (s *session) refused(to paths.Path, rep *srep) error {
	if rep.kind == kindHandler {
		return &RemoteError{Path: to, Msg: rep.msg}
	}
	if rep.kind > kindClosed {
		return fmt.Errorf("node %s answered with error kind %d, unknown to this build: %s", s.l.node, rep.kind, rep.msg)
	}
	return fmt.Errorf("refused by node %s: %s: %w", s.l.node, rep.msg, kindErr(rep.kind))
}

// deliver sends one message of at most SessionMax bytes on the session.
// For a send it returns once the frame is queued with credit; for a
// confirmed send once the receiver accepted it; for a call with the
// reply.
func (s *session) deliver(x *exchange, typ byte) ([]byte, error) {
	if x.size > s.w.maxMessage {
		x.pid = s.pid
		return nil, fmt.Errorf("msg: %s %s: a payload of %d bytes exceeds the limit of node %s (peer %s), %d bytes (its Config.MaxMessage); send it in parts: %w",
			x.op, x.to, x.size, x.node, s.pid, s.w.maxMessage, ErrTooLarge)
	}
	wire := typ // the frame's type
	fwd := isForwarded(typ)
	if fwd {
		typ = directType(typ)
	}
	var p *pending
	if typ == frameSend {
		p = sendPendings.Get().(*pending)
		*p = pending{typ: typ, to: x.to, size: x.size, fwd: fwd}
	} else {
		p = &pending{typ: typ, to: x.to, size: x.size, fwd: fwd, ch: outcomeChans.Get().(chan outcome)}
	}
	// A send without a deadline waits for credit for at most idleTimeout:
	// a receiver that takes nothing for that long is stuck.
	var wait time.Duration
	if typ == frameSend && x.dl.IsZero() {
		wait = idleTimeout
	}
	id, err := s.begin(x.ctx, wait, p)
	if err != nil {
		if err == errNoCredit {
			return nil, x.creditErr(s)
		}
		return nil, notSent{s.streamErr(x, err)}
	}
	q := sreq{typ: wire, id: id, to: x.to.String()}
	if fwd {
		q.from, q.fromNode = []byte(x.fwdFrom.String()), []byte(x.fwdNode)
	}
	if !x.dl.IsZero() {
		q.deadline = max(x.dl.UnixNano(), 1)
	}
	if !s.covers(x.to) {
		q.writecap = x.r.grantFor(x.to)
	}
	b, err := s.wr.begin()
	if err != nil {
		s.abandon(id)
		return nil, notSent{s.streamErr(x, err)}
	}
	b, start := appendRequestHead(b, &q)
	n := len(b)
	b = slices.Grow(b, int(x.size))[:n+int(x.size)]
	if _, err := io.ReadFull(x.body, b[n:]); err != nil {
		s.wr.abandon()
		s.abandon(id)
		return nil, x.bodyErr(err)
	}
	if err := s.wr.end(frameEnd(b, start), typ != frameSend); err != nil {
		return nil, s.streamErr(x, err)
	}
	if typ == frameSend {
		return nil, nil
	}
	select {
	case o := <-p.ch:
		outcomeChans.Put(p.ch) // received: nothing sends on it again
		if o.err != nil {
			return nil, x.sessionErr(s, o.err)
		}
		if typ != frameCall {
			return nil, nil
		}
		return x.result(o.resp, o.reply)
	case <-x.ctx.Done():
		s.mu.Lock()
		p.drop = true
		p.reply = nil
		s.mu.Unlock()
		return nil, x.ctxErr()
	}
}

// notSent marks the error of a message that was not written at all, so
// that it may go elsewhere (another member of a group).
type notSent struct{ error }

func (e notSent) Unwrap() error { return e.error }

// abandon gives back the credit of a request that was never written.
func (s *session) abandon(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pending[id]; p != nil {
		delete(s.pending, id)
		s.freeLocked(p)
	}
}

// covers reports whether the hello's writecaps cover to (or none is
// needed, in this node's domain).
func (s *session) covers(to paths.Path) bool {
	if to.HasPrefix(s.l.r.domain) {
		return true
	}
	for _, p := range s.covered {
		if to.HasPrefix(p) {
			return true
		}
	}
	return false
}

// streamErr is the error for a session that failed under a message.
func (s *session) streamErr(x *exchange, err error) error {
	x.pid = s.pid
	if errors.Is(err, ErrClosed) || x.r.ctx.Err() != nil {
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, ErrClosed)
	}
	return fmt.Errorf("msg: %s %s: node %s (peer %s): the session failed: %v: %w", x.op, x.to, x.node, s.pid, err, ErrUnreachable)
}

// sessionErr is the error for a request the receiver refused or whose
// session failed.
func (x *exchange) sessionErr(s *session, err error) error {
	var re *RemoteError
	switch {
	case errors.As(err, &re):
		return re
	case errors.Is(err, ErrNoEndpoint), errors.Is(err, ErrTooLarge), errors.Is(err, ErrDenied),
		errors.Is(err, ErrBusy), errors.Is(err, ErrBadMessage), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrUnreachable) && !isStreamFailure(err):
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, err)
	}
	return s.streamErr(x, err)
}

// isStreamFailure tells a failed session (an error of the stream) from a
// refusal that maps to ErrUnreachable.
func isStreamFailure(err error) bool {
	var se *network.StreamError
	return errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errSession) || errors.Is(err, ErrClosed)
}

// creditErr is the error for a message whose windows stayed full.
func (x *exchange) creditErr(s *session) error {
	x.pid = s.pid
	if x.r.ctx.Err() != nil {
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, ErrClosed)
	}
	if err := x.ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("msg: %s %s: %w", x.op, x.to, err)
	}
	return fmt.Errorf("msg: %s %s: node %s (peer %s) has not taken the messages in flight to it (%d to this path, its window) before the deadline; its handler is slow or stuck: %w: %w",
		x.op, x.to, x.node, s.pid, s.w.targetWindow, ErrBusy, context.DeadlineExceeded)
}
