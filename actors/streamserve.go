package actors

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/paths"
)

// handleStream serves one inbound stream of StreamProtocol on the
// goroutine libp2p started for it: hello, authorisation, welcome, then
// requests until the stream ends.
func (t *transport) handleStream(s network.Stream) {
	r := t.r
	if !r.life.Enter() {
		_ = s.ResetWithError(network.StreamShutdown)
		return
	}
	defer r.life.Leave()
	remote := s.Conn().RemotePeer()
	stop := context.AfterFunc(r.ctx, func() { _ = s.Reset() })
	defer stop()

	_ = s.SetDeadline(time.Now().Add(helloTimeout))
	br := bufio.NewReaderSize(s, readBuf)
	b, err := readFrame(br, nil)
	if err != nil {
		r.log.Debug("stream without a hello", "peer", remote, "err", err)
		_ = s.Reset()
		return
	}
	f, err := decodeFrame(b)
	if err == nil && f.kind != kindHello {
		err = fmt.Errorf("a frame of kind %d before the hello: %w", f.kind, ErrBadMessage)
	}
	if err != nil {
		t.refuse(s, remote, codeBad, err.Error())
		return
	}
	if !t.enterPeer(remote) {
		t.refuse(s, remote, codeBusy, fmt.Sprintf("peer %s has %d streams of %s open to node %s already", remote, maxPeerStreams, StreamProtocol, r.self))
		return
	}
	defer t.leavePeer(remote)
	from, expiry, why := t.authorise(remote, f.wc)
	if why != "" {
		t.refuse(s, remote, codeDenied, why)
		return
	}
	welcome, err := appendFrame(nil, &wireFrame{K: kindWelcome, N: DefaultWindow, P: DefaultTargetWindow})
	if err != nil {
		_ = s.Reset()
		return
	}
	if _, err := s.Write(welcome); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.SetDeadline(time.Time{})
	in := &inStream{t: t, s: s, peer: remote, from: from, br: br,
		targets: make(map[paths.Path]int), parked: make(map[paths.Path]*parkQueue)}
	in.w = newFrameWriter(s, func(error) { _ = s.Reset() })
	in.w.start(r)
	defer in.w.fail(ErrClosed)
	if !expiry.IsZero() {
		// The writecap that let the peer in lets it in until it expires.
		tm := time.AfterFunc(time.Until(expiry), func() { _ = s.Reset() })
		defer tm.Stop()
	}
	in.serve()
}

// refuse answers a hello with a refusal and ends the stream.
func (t *transport) refuse(s network.Stream, remote peer.ID, code uint64, why string) {
	t.r.log.Debug("stream refused", "peer", remote, "code", code, "why", why)
	b, err := appendFrame(nil, &wireFrame{K: kindWelcome, C: code, E: cut(why)})
	if err == nil {
		_, err = s.Write(b)
	}
	if err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

func (t *transport) enterPeer(id peer.ID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inbound[id] >= maxPeerStreams {
		return false
	}
	t.inbound[id]++
	return true
}

func (t *transport) leavePeer(id peer.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inbound[id]--; t.inbound[id] <= 0 {
		delete(t.inbound, id)
	}
}

// authorise applies msg's rule to a stream, once, at its hello: the peer
// must have proven its node path; a node of another domain must present
// a writecap from this node's root that covers this node's path and is
// held by the peer's node principal. It returns the peer's node path and
// when the writecap expires (zero for the same domain), or why not.
func (t *transport) authorise(remote peer.ID, wc []byte) (from paths.Path, expiry time.Time, why string) {
	r := t.r
	ctx, cancel := context.WithTimeout(r.ctx, t.authWait)
	defer cancel()
	from, node, err := t.node.VerifiedPeer(ctx, remote)
	if err != nil {
		return paths.Path{}, time.Time{}, fmt.Sprintf("peer %s has not proven a path to node %s: %v", remote, r.self, err)
	}
	if from.Root() == r.self.Root() {
		return from, time.Time{}, ""
	}
	if len(wc) == 0 {
		return paths.Path{}, time.Time{}, fmt.Sprintf(
			"%s is in another domain: a stream to %s needs a writecap from root %s that covers %s and is held by the sender's node %s; none was attached (have that root grant one, then add it with Runtime.AddGrant)",
			from, r.self, r.self.Root(), r.self, node)
	}
	w, err := t.verifier.VerifyBytes(wc, r.self)
	if err != nil {
		return paths.Path{}, time.Time{}, fmt.Sprintf("the writecap %s attached does not let it write %s: %v", from, r.self, err)
	}
	if w.Holder() != node {
		return paths.Path{}, time.Time{}, fmt.Sprintf("the writecap %s attached for %s is held by %s, not by its node %s", from, r.self, w.Holder(), node)
	}
	return from, w.Expiry(), ""
}

// inStream is one authorised inbound stream.
type inStream struct {
	t    *transport
	s    network.Stream
	peer peer.ID
	from paths.Path // the peer's proven node path
	br   *bufio.Reader
	w    *frameWriter
	acks []ackID // tells queued since the last ack frame; the reader's

	// mu guards the fields below.
	mu       sync.Mutex
	inflight int                // requests neither answered nor acknowledged
	targets  map[paths.Path]int // tells not yet acknowledged, per target
	parked   map[paths.Path]*parkQueue
}

type ackID struct {
	id uint64
	to paths.Path
}

// parkQueue holds, in order, the requests for one actor whose mailbox
// was full, or that came after one that was; one goroutine queues them
// as room appears, each until its deadline.
type parkQueue struct {
	items []parked
}

type parked struct {
	id   uint64
	tell bool
	dl   time.Time // the sender's deadline, zero if none
	e    envelope
}

// serve reads requests until the stream ends; a peer that breaks the
// protocol or the window gets its stream reset.
func (in *inStream) serve() {
	r := in.t.r
	var buf []byte
	pc := make(pathCache)
	for {
		if len(in.acks) > 0 && !wireFraming.Buffered(in.br) {
			in.flushAcks()
		}
		b, err := readFrame(in.br, buf)
		if err != nil {
			r.log.Debug("stream ended", "peer", in.peer, "from", in.from, "err", err)
			_ = in.s.Reset()
			return
		}
		buf = b
		f, err := decodeFrameWith(b, pc.parse)
		if err == nil && f.req == nil {
			err = fmt.Errorf("a frame of kind %d from the opener: %w", f.kind, ErrBadMessage)
		}
		if err == nil {
			err = in.request(f)
		}
		if err != nil {
			r.log.Debug("stream reset: protocol violation", "peer", in.peer, "from", in.from, "err", err)
			_ = in.s.Reset()
			return
		}
	}
}

// request handles one request frame without waiting for any actor.
func (in *inStream) request(f *frame) error {
	r := in.t.r
	d := f.req
	tell := d.kind == kindSend
	in.mu.Lock()
	if in.inflight >= DefaultWindow || (tell && in.targets[d.to] >= DefaultTargetWindow) {
		in.mu.Unlock()
		return fmt.Errorf("over the window of %d requests (%d tells per target): %w", DefaultWindow, DefaultTargetWindow, ErrBadMessage)
	}
	in.inflight++
	if tell {
		in.targets[d.to]++
	}
	in.mu.Unlock()

	if !f.dl.IsZero() && !time.Now().Before(f.dl) {
		in.fail(f.id, tell, d.to, fmt.Errorf("the deadline %s passed before the message reached node %s (clocks out of step?): %w",
			f.dl.UTC().Format(time.RFC3339Nano), r.self, context.DeadlineExceeded))
		return nil
	}
	if d.kind == kindWatch {
		in.reply(f.id, &wireFrame{K: kindReply, X: r.gone(d.watch)}, false)
		return nil
	}
	from := in.from
	if !d.from.IsZero() {
		if !d.from.HasPrefix(in.from) {
			in.fail(f.id, tell, d.to, fmt.Errorf("sender %s is not under its node %s: %w", d.from, in.from, ErrBadMessage))
			return nil
		}
		from = d.from
	}
	if !r.isLocal(d.to) {
		in.fail(f.id, tell, d.to, fmt.Errorf("%s is not on node %s: %w", d.to, r.self, ErrNoActor))
		return nil
	}
	v, err := r.types.decode(d.tname, d.data)
	if err != nil {
		in.fail(f.id, tell, d.to, err)
		return nil
	}
	e := envelope{msg: v, from: from}
	if !tell {
		e.dl = f.dl
		id, to := f.id, d.to
		e.answer = func(res result) { in.answer(id, to, res) }
	}
	pk := parked{id: f.id, tell: tell, dl: f.dl, e: e}
	in.mu.Lock()
	if q := in.parked[d.to]; q != nil { // behind others for the same actor
		q.items = append(q.items, pk)
		in.mu.Unlock()
		return nil
	}
	in.mu.Unlock()
	err = r.tryDeliver(d.to, e)
	switch {
	case err == nil:
		if tell {
			in.acks = append(in.acks, ackID{f.id, d.to})
			if len(in.acks) >= maxAcks {
				in.flushAcks()
			}
		}
	case errors.Is(err, ErrMailboxFull) || err == errRetry:
		in.park(d.to, pk)
	default:
		in.fail(f.id, tell, d.to, fmt.Errorf("actors: %s %s: %w", opName(tell), d.to, err))
	}
	return nil
}

func opName(tell bool) string {
	if tell {
		return "send"
	}
	return "call"
}

// tryDeliver queues e for the local actor at to without waiting:
// ErrMailboxFull when there is no room, errRetry for a provider being
// deactivated.
func (r *Runtime) tryDeliver(to paths.Path, e envelope) error {
	p, err := r.resolve(to)
	if err != nil {
		return err
	}
	return p.mb.push(context.Background(), e, false)
}

// park queues pk behind the actor's full mailbox and starts the
// goroutine that queues it when room appears.
func (in *inStream) park(to paths.Path, pk parked) {
	r := in.t.r
	in.mu.Lock()
	if q := in.parked[to]; q != nil {
		q.items = append(q.items, pk)
		in.mu.Unlock()
		return
	}
	if !r.life.Enter() {
		in.mu.Unlock()
		in.fail(pk.id, pk.tell, to, fmt.Errorf("actors: %s %s: %w", opName(pk.tell), to, ErrClosed))
		return
	}
	q := &parkQueue{items: []parked{pk}}
	in.parked[to] = q
	in.mu.Unlock()
	go in.drain(to, q)
}

// drain queues the parked requests for to in order, each waiting for
// room until its deadline (the runtime's send wait without one).
func (in *inStream) drain(to paths.Path, q *parkQueue) {
	r := in.t.r
	defer r.life.Leave()
	for {
		in.mu.Lock()
		if len(q.items) == 0 {
			delete(in.parked, to)
			in.mu.Unlock()
			return
		}
		pk := q.items[0]
		q.items[0] = parked{}
		q.items = q.items[1:]
		in.mu.Unlock()
		dl := pk.dl
		if dl.IsZero() {
			dl = time.Now().Add(r.cfg.sendWait)
		}
		ctx, cancel := context.WithDeadline(r.ctx, dl)
		err := r.deliverLocal(ctx, to, pk.e, opName(pk.tell))
		cancel()
		switch {
		case err != nil:
			in.fail(pk.id, pk.tell, to, err)
		case pk.tell:
			in.ackOne(pk.id, to)
		}
	}
}

// flushAcks acknowledges the tells queued by the reader, in one frame.
func (in *inStream) flushAcks() {
	ids := make([]uint64, len(in.acks))
	in.mu.Lock()
	for i, a := range in.acks {
		ids[i] = a.id
		in.doneLocked(true, a.to)
	}
	in.mu.Unlock()
	in.acks = in.acks[:0]
	_ = in.w.write(&wireFrame{K: kindAck, A: ids}, false)
}

func (in *inStream) ackOne(id uint64, to paths.Path) {
	in.mu.Lock()
	in.doneLocked(true, to)
	in.mu.Unlock()
	_ = in.w.write(&wireFrame{K: kindAck, A: []uint64{id}}, false)
}

// doneLocked gives back a request's slots; called with mu held.
func (in *inStream) doneLocked(tell bool, to paths.Path) {
	in.inflight--
	if tell {
		if n := in.targets[to] - 1; n > 0 {
			in.targets[to] = n
		} else {
			delete(in.targets, to)
		}
	}
}

// fail answers request id with err: the caller's error for a call, a
// late failure (logged by the sender) for a tell.
func (in *inStream) fail(id uint64, tell bool, to paths.Path, err error) {
	if tell {
		in.t.r.log.Debug("tell refused", "to", to, "from", in.from, "err", err)
		in.mu.Lock()
		in.doneLocked(true, to)
		in.mu.Unlock()
		_ = in.w.write(errFrame(id, err), false)
		return
	}
	in.reply(id, errFrame(id, err), false)
}

// reply sends the reply to call or watch id. With now, the caller writes
// it unless a write is under way.
func (in *inStream) reply(id uint64, f *wireFrame, now bool) {
	f.K, f.I = kindReply, id
	in.mu.Lock()
	in.doneLocked(false, paths.Path{})
	in.mu.Unlock()
	_ = in.w.write(f, now)
}

// answer sends a call's result. The actor's goroutine calls it, and
// writes the reply itself when the stream is idle: that saves the
// reply a hand-over to the writer's goroutine. Such a write waits for
// the peer only when the stream's flow-control window is exhausted, that
// is when the peer has stopped reading; writeTimeout bounds it.
func (in *inStream) answer(id uint64, to paths.Path, res result) {
	if res.err != nil {
		in.reply(id, errFrame(id, res.err), true)
		return
	}
	f := &wireFrame{}
	if res.v != nil {
		name, data, err := in.t.r.types.encode(res.v)
		if err != nil {
			in.reply(id, errFrame(id, fmt.Errorf("reply: %w", err)), true)
			return
		}
		f.T, f.M = name, data
	}
	in.reply(id, f, true)
}

// errFrame is the reply frame for err, as errReply.
func errFrame(id uint64, err error) *wireFrame {
	text := err.Error()
	var ae *ActorError
	if errors.As(err, &ae) {
		text = ae.Msg
	}
	return &wireFrame{K: kindReply, I: id, C: codeOf(err), E: cut(text)}
}
