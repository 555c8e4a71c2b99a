package msg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
)

// maxPeerSessions bounds the inbound sessions of one peer; a sender opens
// one per node, and another only once the first has failed.
const maxPeerSessions = 4

// inSession is one session stream, from the receiver's side.
type inSession struct {
	r        *Router
	st       network.Stream
	remote   peer.ID
	from     paths.Path // the sender's verified node path
	fromNode paths.ID   // and its node principal
	grants   []grant    // what the hello's writecaps let the sender write here
	wr       *frameWriter
	ctx      context.Context // ends with the session: handlers' contexts derive from it
	cancel   context.CancelFunc

	// parsed caches the targets parsed on this session (read goroutine
	// only): a sender sends to the same few paths again and again.
	parsed map[string]paths.Path

	// mu guards the fields below.
	mu       sync.Mutex
	failed   bool
	inflight int
	bytes    int64
	targets  map[paths.Path]*target
}

// grant is a writecap of a hello, checked: the sender may write paths
// under prefix until expiry.
type grant struct {
	prefix paths.Path
	expiry time.Time
}

// target is the requests in flight on a session to one target path: its
// sends wait in order in queue and run one at a time.
type target struct {
	to      paths.Path
	n       int      // requests in flight: queued, running or answering
	queue   []*inReq // sends not started
	running bool     // a goroutine runs the queue
}

var inReqs = sync.Pool{New: func() any { return new(inReq) }}

// inReq is one request being served; serve returns it to inReqs.
type inReq struct {
	typ      byte
	id       uint64
	to       paths.Path
	dl       time.Time
	h        Handler
	from     paths.Path // the sender's node: the session's, or a group host's sender
	fromNode paths.ID
	payload  *[]byte // pooled; returned when the handler is done
}

// handleSession serves one inbound session: it reads the hello, welcomes
// the sender, and then reads requests until the stream ends. It runs on
// the goroutine libp2p starts for the stream.
func (r *Router) handleSession(st network.Stream) {
	if !r.life.Enter() {
		_ = st.ResetWithError(network.StreamShutdown)
		return
	}
	defer r.life.Leave()
	remote := st.Conn().RemotePeer()
	if !r.takeSession(remote) {
		r.welcomeRefusal(st, kindBusy, fmt.Sprintf("node %s already has %d sessions from peer %s", r.self, maxPeerSessions, remote))
		return
	}
	defer r.dropSession(remote)

	_ = st.SetReadDeadline(time.Now().Add(headerTimeout))
	br := bufio.NewReaderSize(st, sessionReadBuf)
	f, err := sessionFraming.Next(br)
	if err != nil {
		r.log.Debug("no session hello", "peer", remote, "err", err)
		_ = st.Reset()
		return
	}
	typ, fields, err := frameType(f)
	var wcs [][]byte
	if err == nil {
		if typ != frameHello {
			err = fmt.Errorf("a frame of type %d instead of a hello: %w", typ, errSession)
		} else {
			wcs, err = decodeHello(fields)
		}
	}
	if err != nil {
		r.welcomeRefusal(st, kindBadRequest, err.Error())
		return
	}
	from, node, err := r.node.VerifiedPeer(doneCtx, remote)
	if err != nil {
		ctx, cancel := context.WithTimeout(r.ctx, authWait)
		from, node, err = r.node.VerifiedPeer(ctx, remote)
		cancel()
	}
	if err != nil {
		r.welcomeRefusal(st, kindDenied, fmt.Sprintf("peer %s has not proven a path to %s: %v", remote, r.self, err))
		return
	}
	in := &inSession{r: r, st: st, remote: remote, from: from, fromNode: node, targets: make(map[paths.Path]*target)}
	in.grants = r.checkGrants(from, node, wcs)
	in.ctx, in.cancel = context.WithCancel(r.ctx)
	defer in.cancel()
	in.wr = newFrameWriter(st, in.fail)
	b, _ := in.wr.begin()
	b = appendWelcome(b, &welcome{kind: kindOK, window: DefaultWindow, targetWindow: DefaultTargetWindow, bytes: DefaultWindowBytes, maxMessage: r.cfg.MaxMessage})
	if err := in.wr.end(b, true); err != nil {
		_ = st.Reset()
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	r.life.EnterWithin()
	go func() {
		defer r.life.Leave()
		in.wr.loop()
	}()
	stop := context.AfterFunc(r.ctx, func() { in.fail(ErrClosed) })
	defer stop()
	in.read(br)
}

func (r *Router) takeSession(p peer.ID) bool {
	r.smu.Lock()
	defer r.smu.Unlock()
	if r.inSessions[p] >= maxPeerSessions {
		return false
	}
	r.inSessions[p]++
	return true
}

func (r *Router) dropSession(p peer.ID) {
	r.smu.Lock()
	defer r.smu.Unlock()
	if r.inSessions[p]--; r.inSessions[p] <= 0 {
		delete(r.inSessions, p)
	}
}

// welcomeRefusal answers a hello with a refusal and ends the stream.
func (r *Router) welcomeRefusal(st network.Stream, k kind, why string) {
	r.log.Debug("session refused", "peer", st.Conn().RemotePeer(), "kind", k, "why", why)
	_ = st.SetWriteDeadline(time.Now().Add(headerTimeout))
	if _, err := st.Write(appendWelcome(nil, &welcome{kind: k, msg: why})); err != nil {
		_ = st.Reset()
		return
	}
	_ = st.Close()
}

// checkGrants keeps the writecaps of a hello that let the sender's node
// (principal node) write under this node, in this node's domain. Others
// are ignored: a message they would have covered is refused with why.
func (r *Router) checkGrants(from paths.Path, node paths.ID, wcs [][]byte) []grant {
	var gs []grant
	for _, b := range wcs {
		w, err := caps.Decode(b)
		if err == nil {
			err = r.verifier.VerifyHolder(w, node, w.Prefix())
		}
		if err == nil && w.Root() != r.self.Root() {
			err = fmt.Errorf("issued under root %s, not this domain's %s", w.Root(), r.self.Root())
		}
		if err != nil {
			r.log.Debug("a session's writecap is not valid here", "from", from, "err", err)
			continue
		}
		if p := w.Prefix(); p.HasPrefix(r.self) || r.self.HasPrefix(p) {
			gs = append(gs, grant{prefix: p, expiry: w.Expiry()})
		}
	}
	return gs
}

// fail ends the session: running handlers' contexts end, queued sends are
// dropped (their senders report them), and the stream is reset.
func (in *inSession) fail(err error) {
	in.mu.Lock()
	if in.failed {
		in.mu.Unlock()
		return
	}
	in.failed = true
	for _, t := range in.targets {
		for _, q := range t.queue {
			putBuf(q.payload)
		}
		t.queue = nil
	}
	in.mu.Unlock()
	in.cancel()
	_ = in.st.Reset()
	in.wr.fail(err)
	if !errors.Is(err, ErrClosed) {
		in.r.log.Debug("inbound session ended", "peer", in.remote, "from", in.from, "err", err)
	}
}

// read reads requests until the session fails.
func (in *inSession) read(br *bufio.Reader) {
	for {
		f, err := sessionFraming.Next(br)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			in.fail(err)
			return
		}
		typ, fields, err := frameType(f)
		if err == nil {
			switch typ {
			case frameSend, frameConfirm, frameCall, frameFwdSend, frameFwdConfirm, frameFwdCall:
				var q sreq
				if q, err = decodeRequestFrame(typ, fields); err == nil {
					err = in.request(&q)
				}
			default:
				err = fmt.Errorf("a frame of type %d from the sender: %w", typ, errSession)
			}
		}
		if err != nil {
			in.r.log.Debug("bad session frame", "peer", in.remote, "err", err)
			in.fail(err)
			return
		}
	}
}

// request takes one request's credit and starts it, or refuses it at
// once. An error breaks the session: the sender overran its windows.
func (in *inSession) request(q *sreq) error {
	r := in.r
	to, perr := in.parse(q.toBytes)
	in.mu.Lock()
	if in.failed {
		in.mu.Unlock()
		return nil
	}
	size := int64(len(q.payload))
	t := in.targets[to]
	if in.inflight >= DefaultWindow || in.bytes+size > max(DefaultWindowBytes, size) || (t != nil && t.n >= DefaultTargetWindow) {
		in.mu.Unlock()
		return fmt.Errorf("the sender overran its windows (%d requests, %d bytes in flight): %w", in.inflight, in.bytes, errSession)
	}
	if t == nil {
		t = &target{to: to}
		in.targets[to] = t
	}
	in.inflight++
	in.bytes += size
	t.n++
	in.mu.Unlock()

	var dl time.Time
	if q.deadline != 0 {
		dl = time.Unix(0, q.deadline)
	}
	var h Handler
	var async AsyncHandler
	typ := q.typ
	from, fromNode := in.from, in.fromNode
	k, why := kindOK, ""
	switch {
	case isForwarded(typ):
		typ = directType(typ)
		h, from, fromNode, k, why = in.forwarded(q, to, perr)
	case perr != nil:
		k, why = kindBadRequest, fmt.Sprintf("target: %v", perr)
	case size > r.cfg.MaxMessage:
		k, why = kindTooLarge, fmt.Sprintf("a payload of %d bytes exceeds the limit of node %s, %d bytes (its Config.MaxMessage); send it in parts", size, r.self, r.cfg.MaxMessage)
	case !dl.IsZero() && !time.Now().Before(dl):
		k, why = kindDeadline, fmt.Sprintf("the deadline %s passed before the message reached %s (clocks out of step?)", dl.UTC().Format(time.RFC3339Nano), r.self)
	default:
		k, why = in.admit(to, q.writecap)
		if k == kindOK {
			if e := r.endpointOf(to); e != nil {
				h, async = e.h, e.async
			} else {
				if g := r.groupFor(to); g != nil {
					h = r.forward(g, typ)
				} else {
					k, why = kindNoEndpoint, fmt.Sprintf("node %s has no handler at %s", r.self, to)
				}
			}
		}
	}
	if k != kindOK {
		in.finish(typ, q.id, to, size, k, why, nil)
		return nil
	}
	if typ == frameCall && async != nil {
		in.callInline(async, q, to, dl, from, fromNode)
		return nil
	}
	bp := getBuf(len(q.payload))
	*bp = append((*bp)[:0], q.payload...)
	req := inReqs.Get().(*inReq)
	*req = inReq{typ: typ, id: q.id, to: to, dl: dl, h: h, from: from, fromNode: fromNode, payload: bp}
	r.life.EnterWithin() // within handleSession's Enter
	if typ == frameCall {
		go func() {
			defer r.life.Leave()
			in.serve(req)
		}()
		return nil
	}
	in.mu.Lock()
	t.queue = append(t.queue, req)
	start := !t.running
	t.running = true
	in.mu.Unlock()
	if start {
		go func() {
			defer r.life.Leave()
			in.drain(t)
		}()
	} else {
		r.life.Leave()
	}
	return nil
}

// maxParsed bounds a session's cache of parsed targets.
const maxParsed = 1024

// parse parses a target, through the session's cache.
func (in *inSession) parse(b []byte) (paths.Path, error) {
	if p, ok := in.parsed[string(b)]; ok {
		return p, nil
	}
	s := string(b)
	p, err := paths.Parse(s)
	if err != nil {
		return p, err
	}
	if in.parsed == nil || len(in.parsed) >= maxParsed {
		in.parsed = make(map[string]paths.Path)
	}
	in.parsed[s] = p
	return p, nil
}

// admit authorises a message to to, with today's rule: a sender of this
// domain may, one of another domain needs a writecap, from the hello or
// this frame, issued under this root, covering to, held by its node.
func (in *inSession) admit(to paths.Path, wc []byte) (kind, string) {
	r := in.r
	if !to.HasPrefix(r.self) {
		return kindNoEndpoint, fmt.Sprintf("node %s does not host %s (a stale path record?)", r.self, to)
	}
	if in.from.Root() == to.Root() {
		return kindOK, ""
	}
	now := time.Now()
	for _, g := range in.grants {
		if to.HasPrefix(g.prefix) && now.Before(g.expiry) {
			return kindOK, ""
		}
	}
	if len(wc) == 0 {
		return kindDenied, fmt.Sprintf(
			"%s is in another domain: a message to %s needs a writecap from root %s that covers it and is held by the sender's node; none was attached (have that root grant one, then add it with AddGrant)",
			in.from, to, to.Root())
	}
	w, err := r.verifier.VerifyBytes(wc, to)
	if err != nil {
		return kindDenied, fmt.Sprintf("the writecap %s attached does not let it write %s: %v", in.from, to, err)
	}
	if _, node, err := r.node.VerifiedPeer(doneCtx, in.remote); err != nil || w.Holder() != node {
		return kindDenied, fmt.Sprintf("the writecap %s attached for %s is held by %s, not by its node", in.from, to, w.Holder())
	}
	return kindOK, ""
}

// ackBatch bounds the sends a drain acknowledges in one frame.
const ackBatch = 128

// forwarded checks a message a group's host forwards to this node, a
// member: the session must be that host's, and this node a member of the
// group at the path. It returns the member's handler and the sender.
func (in *inSession) forwarded(q *sreq, to paths.Path, perr error) (Handler, paths.Path, paths.ID, kind, string) {
	r := in.r
	if perr != nil {
		return nil, paths.Path{}, "", kindBadRequest, fmt.Sprintf("target: %v", perr)
	}
	if host, ok := nodeOf(to); !ok || host != in.from {
		return nil, paths.Path{}, "", kindDenied, fmt.Sprintf("%s forwarded a message to %s, which it does not host", in.from, to)
	}
	r.hmu.RLock()
	ms := r.memberships[to]
	r.hmu.RUnlock()
	if ms == nil {
		return nil, paths.Path{}, "", kindNoEndpoint, fmt.Sprintf("node %s is not a member of a group at %s (any more)", r.self, to)
	}
	from, err := paths.Parse(string(q.from))
	if err != nil {
		return nil, paths.Path{}, "", kindBadRequest, fmt.Sprintf("forwarded sender: %v", err)
	}
	node, err := paths.ParseID(string(q.fromNode))
	if err != nil {
		return nil, paths.Path{}, "", kindBadRequest, fmt.Sprintf("forwarded sender's node: %v", err)
	}
	return ms.h, from, node, kindOK, ""
}

// drain runs the queued sends of t, one at a time, in order, and
// acknowledges them in batches: when the queue runs dry, or every
// ackBatch.
func (in *inSession) drain(t *target) {
	acks := make([]uint64, 0, ackBatch)
	var bytes int64 // of the sends in acks
	var batch []*inReq
	yielded := false
	for {
		in.mu.Lock()
		if len(t.queue) == 0 && len(acks) > 0 {
			in.mu.Unlock()
			in.ack(t, acks, bytes)
			acks, bytes = acks[:0], 0
			continue
		}
		if len(t.queue) == 0 && !yielded && !in.failed {
			// Under load the next send is usually a moment away: look
			// again once before this goroutine ends.
			in.mu.Unlock()
			yielded = true
			runtime.Gosched()
			continue
		}
		if len(t.queue) == 0 || in.failed {
			t.running = false
			if t.n == 0 {
				delete(in.targets, t.to)
			}
			in.mu.Unlock()
			return
		}
		yielded = false
		// Take every queued send at once; the two slices swap, so that
		// neither is allocated again.
		batch, t.queue = t.queue, batch[:0]
		in.mu.Unlock()
		for i, q := range batch {
			batch[i] = nil
			if in.ctx.Err() != nil { // the session failed: drop the rest, as fail does
				putBuf(q.payload)
				continue
			}
			id, size := q.id, int64(len(*q.payload)) // serve recycles q
			if in.serve(q) {
				bytes += size
				if acks = append(acks, id); len(acks) == ackBatch {
					in.ack(t, acks, bytes)
					acks, bytes = acks[:0], 0
				}
			}
		}
	}
}

// ack gives back the credit of sends to t whose handlers returned and
// acknowledges them in one frame.
func (in *inSession) ack(t *target, ids []uint64, bytes int64) {
	in.mu.Lock()
	in.inflight -= len(ids)
	in.bytes -= bytes
	t.n -= len(ids)
	in.mu.Unlock()
	b, err := in.wr.begin()
	if err != nil {
		return
	}
	_ = in.wr.end(appendAck(b, ids), false)
}

// serve runs one request's handler and answers it; for a send whose
// handler returned it leaves the ack to the caller and returns true.
func (in *inSession) serve(q *inReq) (ack bool) {
	defer func() { *q = inReq{}; inReqs.Put(q) }()
	r := in.r
	size := int64(len(*q.payload))
	ctx := in.ctx
	if !q.dl.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, q.dl)
		defer cancel()
	}
	if err := in.r.queueFor(ctx); err != nil {
		putBuf(q.payload)
		k, why := kindBusy, fmt.Sprintf("node %s is running %d handlers (its MaxInbound); retry later", r.self, r.cfg.MaxInbound)
		switch {
		case errors.Is(err, ErrClosed) || in.ctx.Err() != nil:
			k, why = kindClosed, fmt.Sprintf("node %s is shutting down", r.self)
		case errors.Is(err, context.DeadlineExceeded):
			k, why = kindDeadline, fmt.Sprintf("the message's deadline passed while it waited for a turn at %s", r.self)
		}
		in.finish(q.typ, q.id, q.to, size, k, why, nil)
		return false
	}
	if q.typ == frameConfirm {
		in.accept(q.id)
	}
	mb := &msgBody{body: frameBody{b: *q.payload}}
	m := &mb.m
	*m = Message{From: q.from, FromNode: q.fromNode, To: q.to, Call: q.typ == frameCall, Size: size, Body: &mb.body, Deadline: q.dl}
	reply, herr := r.run(ctx, q.h, m)
	r.release()
	mb.body.close()
	putBuf(q.payload)
	if q.typ != frameCall {
		var rf *refusal
		if errors.As(herr, &rf) {
			in.finish(q.typ, q.id, q.to, size, rf.k, rf.err.Error(), nil)
			return false
		}
		if herr != nil {
			r.log.Debug("handler failed on a sent message", "to", q.to, "from", q.from, "err", herr)
		}
		return true // the caller gives back its credit and bytes with the ack
	}
	k, why, reply := in.r.answer(ctx, q.to, reply, herr)
	in.finish(q.typ, q.id, q.to, size, k, why, reply)
	return false
}

// callInline runs a call's AsyncHandler on the session's reader, with the
// payload where the frame holds it (valid until the handler returns), and
// answers it when the handler calls done.
func (in *inSession) callInline(h AsyncHandler, q *sreq, to paths.Path, dl time.Time, from paths.Path, fromNode paths.ID) {
	r := in.r
	size := int64(len(q.payload))
	// No context of its own: a timer per call costs more than the rest
	// of it; the handler has the deadline in the Message.
	ctx := in.ctx
	id := q.id
	var once sync.Once
	done := func(reply []byte, herr error) {
		once.Do(func() {
			k, why, reply := in.r.answer(ctx, to, reply, herr)
			in.finish(frameCall, id, to, size, k, why, reply)
		})
	}
	mb := &msgBody{body: frameBody{b: q.payload}}
	mb.m = Message{From: from, FromNode: fromNode, To: to, Call: true, Size: size, Body: &mb.body, Deadline: dl}
	func() {
		defer func() {
			if v := recover(); v != nil {
				r.log.Error("handler panicked", "path", to, "from", from, "panic", v)
				done(nil, fmt.Errorf("handler panicked: %v", v))
			}
		}()
		h(ctx, &mb.m, done)
	}()
	mb.body.close()
}

// accept tells a confirmed send's sender that its handler has started.
func (in *inSession) accept(id uint64) {
	b, err := in.wr.begin()
	if err != nil {
		return
	}
	_ = in.wr.end(appendReply(b, id, kindOK, "", 0, nil), true)
}

// finish gives back a request's credit and answers it: a send's ack, or a
// reply (a call's, or a refusal), the reply's payload in parts of at most
// SessionMax bytes, each a frame of its own, so that other frames go out
// between them.
func (in *inSession) finish(typ byte, id uint64, to paths.Path, size int64, k kind, why string, reply []byte) {
	in.mu.Lock()
	in.inflight--
	in.bytes -= size
	if t := in.targets[to]; t != nil {
		if t.n--; t.n == 0 && !t.running {
			delete(in.targets, to)
		}
	}
	in.mu.Unlock()
	b, err := in.wr.begin()
	if err != nil {
		return
	}
	if typ != frameCall && k == kindOK {
		_ = in.wr.end(appendAck(b, []uint64{id}), false)
		return
	}
	first := reply[:min(len(reply), SessionMax)]
	if err := in.wr.end(appendReply(b, id, k, why, int64(len(reply)), first), true); err != nil {
		return
	}
	for rest := reply[len(first):]; len(rest) > 0; {
		part := rest[:min(len(rest), SessionMax)]
		rest = rest[len(part):]
		if b, err = in.wr.begin(); err != nil {
			return
		}
		if err := in.wr.end(appendMore(b, id, part), true); err != nil {
			return
		}
	}
}

// msgBody is a session message and its body, in one allocation.
type msgBody struct {
	m    Message
	body frameBody
}

// frameBody is a session message's Body: its payload, valid until the
// handler returns.
type frameBody struct {
	b      []byte
	closed bool
}

func (b *frameBody) Read(p []byte) (int, error) {
	switch {
	case b.closed:
		return 0, errBodyGone
	case len(b.b) == 0:
		return 0, io.EOF
	}
	n := copy(p, b.b)
	b.b = b.b[n:]
	return n, nil
}

func (b *frameBody) close() { b.closed = true }
