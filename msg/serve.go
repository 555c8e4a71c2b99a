package msg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/paths"
)

// handleStream serves one inbound message: it runs on the goroutine
// libp2p starts for the stream, and is the only one the message uses.
func (r *Router) handleStream(s network.Stream) {
	if !r.life.Enter() {
		_ = s.ResetWithError(network.StreamShutdown)
		return
	}
	defer r.life.Leave()
	r.serve(s)
}

func (r *Router) serve(s network.Stream) {
	remote := s.Conn().RemotePeer()
	if err := r.queue(); err != nil {
		k, why := kindBusy, fmt.Sprintf("node %s is running %d handlers (its MaxInbound); retry later", r.self, r.cfg.MaxInbound)
		if errors.Is(err, ErrClosed) {
			k, why = kindClosed, fmt.Sprintf("node %s is shutting down", r.self)
		}
		r.refuse(s, remote, k, why)
		return
	}
	defer r.release()

	_ = s.SetReadDeadline(time.Now().Add(headerTimeout))
	br := getReader(s)
	defer putReader(br)
	h, err := readHeader(br, MaxRequestHeader)
	if err != nil {
		if errors.Is(err, errFrameSize) {
			r.refuse(s, remote, kindBadRequest, fmt.Sprintf("request header: %v", err))
			return
		}
		r.log.Debug("no request header", "peer", remote, "err", err)
		_ = s.Reset()
		return
	}
	q, err := decodeRequest(h)
	if err != nil {
		r.refuse(s, remote, kindBadRequest, err.Error())
		return
	}
	if !q.Deadline.IsZero() && !time.Now().Before(q.Deadline) {
		r.refuse(s, remote, kindDeadline,
			fmt.Sprintf("the deadline %s passed before the message reached %s (clocks out of step?)", q.Deadline.UTC().Format(time.RFC3339Nano), r.self))
		return
	}
	from, fromNode, k, why := r.admit(remote, &q)
	if k != kindOK {
		r.refuse(s, remote, k, why)
		return
	}
	handler := r.handler(q.To)
	if g := r.groupFor(q.To); handler == nil && g != nil {
		typ := frameSend
		if q.Call {
			typ = frameCall
		}
		handler = r.forward(g, typ)
	}
	if handler == nil {
		r.refuse(s, remote, kindNoEndpoint, fmt.Sprintf("node %s has no handler at %s", r.self, q.To))
		return
	}
	if !q.Deadline.IsZero() {
		_ = s.SetReadDeadline(q.Deadline) // and respond sets it for writes that may wait
	} // else reads of the body and writes of a large reply have idle timeouts

	ctx := r.ctx // ends when the Router closes
	if !q.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(r.ctx, q.Deadline)
		defer cancel()
	}
	body := &streamBody{br: br, s: s, to: q.To, size: q.Size, left: q.Size, idle: q.Deadline.IsZero()}
	m := &Message{From: from, FromNode: fromNode, To: q.To, Call: q.Call, Size: q.Size, Body: body, Deadline: q.Deadline}
	if !q.Call {
		if err := r.respond(s, q.Deadline, &response{Kind: kindOK}, nil); err != nil {
			r.log.Debug("cannot accept message", "to", q.To, "from", from, "err", err)
			_ = s.Reset()
			return
		}
	}
	reply, herr := r.run(ctx, handler, m)
	body.close()
	if !q.Call {
		if herr != nil {
			r.log.Debug("handler failed on a sent message", "to", q.To, "from", from, "err", herr)
		}
		_ = s.Close() // tells the sender the handler is done with the body
		return
	}
	k, why, answered := r.answer(ctx, q.To, reply, herr)
	resp := response{Kind: k, Msg: why, Size: int64(len(answered))}
	if err := r.respond(s, q.Deadline, &resp, answered); err != nil {
		r.log.Debug("cannot send reply", "to", q.To, "from", from, "err", err)
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// queue waits, at most queueWait, for a turn to run a handler.
func (r *Router) queue() error { return r.queueFor(r.ctx) }

// queueFor waits, at most queueWait and until ctx ends, for a turn to run
// a handler: ErrBusy when none came, ErrClosed when the Router closed.
func (r *Router) queueFor(ctx context.Context) error {
	select {
	case r.inbound <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(queueWait)
	defer t.Stop()
	select {
	case r.inbound <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		if r.ctx.Err() != nil {
			return ErrClosed
		}
		return ctx.Err()
	}
}

// answer is how a call whose handler returned reply and herr is answered:
// a kind, its message, and the reply for kind OK.
func (r *Router) answer(ctx context.Context, to paths.Path, reply []byte, herr error) (kind, string, []byte) {
	k, why := kindOK, ""
	var rf *refusal
	switch {
	case errors.As(herr, &rf):
		k, why = rf.k, rf.err.Error()
	case herr != nil && ctx.Err() != nil && errors.Is(herr, context.DeadlineExceeded):
		k, why = kindDeadline, fmt.Sprintf("the handler at %s did not answer before the deadline", to)
	case herr != nil:
		k, why = kindHandler, herr.Error()
	case int64(len(reply)) > r.cfg.MaxMessage:
		k, why = kindTooLarge, fmt.Sprintf("the handler at %s replied %d bytes, over the limit of %d (Config.MaxMessage)", to, len(reply), r.cfg.MaxMessage)
	}
	if k != kindOK {
		reply = nil
	}
	return k, why, reply
}

// admit authorises a request from peer remote: it returns the sender's
// verified path, or the kind of refusal and a message that says what is
// missing.
func (r *Router) admit(remote peer.ID, q *request) (paths.Path, paths.ID, kind, string) {
	if !q.To.HasPrefix(r.self) {
		return paths.Path{}, "", kindNoEndpoint, fmt.Sprintf("node %s does not host %s (a stale path record?)", r.self, q.To)
	}
	// Verified peers answer at once, without a timer; a proof still in
	// flight is waited for.
	from, node, err := r.node.VerifiedPeer(doneCtx, remote)
	if err != nil {
		dl := time.Now().Add(authWait)
		if !q.Deadline.IsZero() && q.Deadline.Before(dl) {
			dl = q.Deadline
		}
		ctx, cancel := context.WithDeadline(r.ctx, dl)
		from, node, err = r.node.VerifiedPeer(ctx, remote)
		cancel()
	}
	if err != nil {
		return paths.Path{}, "", kindDenied, fmt.Sprintf("peer %s has not proven a path to %s: %v", remote, r.self, err)
	}
	if from.Root() != q.To.Root() {
		if len(q.Writecap) == 0 {
			return paths.Path{}, "", kindDenied, fmt.Sprintf(
				"%s is in another domain: a message to %s needs a writecap from root %s that covers it and is held by the sender's node %s; none was attached (have that root grant one, then add it with AddGrant)",
				from, q.To, q.To.Root(), node)
		}
		w, err := r.verifier.VerifyBytes(q.Writecap, q.To)
		if err != nil {
			return paths.Path{}, "", kindDenied, fmt.Sprintf("the writecap %s attached does not let it write %s: %v", from, q.To, err)
		}
		if w.Holder() != node {
			return paths.Path{}, "", kindDenied, fmt.Sprintf("the writecap %s attached for %s is held by %s, not by its node %s", from, q.To, w.Holder(), node)
		}
	}
	if q.Size > r.cfg.MaxMessage {
		return paths.Path{}, "", kindTooLarge, fmt.Sprintf("a payload of %d bytes exceeds the limit of node %s, %d bytes (its Config.MaxMessage); send it in parts", q.Size, r.self, r.cfg.MaxMessage)
	}
	return from, node, kindOK, ""
}

// doneCtx is an ended context: VerifiedPeer with it does not wait.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// refuse answers a request with an error response and closes the stream
// without reading the payload.
func (r *Router) refuse(s network.Stream, remote peer.ID, k kind, why string) {
	r.log.Debug("message refused", "peer", remote, "kind", k, "why", why)
	if err := r.respond(s, time.Time{}, &response{Kind: k, Msg: why}, nil); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// respond writes a response and reply: in one write when small, else the
// header, then the reply. A small response fits the stream's window, so
// its write cannot wait for the peer; a large one is bounded by the
// message's deadline dl, or by an idle timeout.
func (r *Router) respond(s network.Stream, dl time.Time, resp *response, reply []byte) error {
	small := len(reply) <= eagerMax
	if !small {
		if dl.IsZero() {
			dl = time.Now().Add(idleTimeout)
		}
		_ = s.SetWriteDeadline(dl)
	}
	n := 64 + len(resp.Msg)
	if small {
		n += len(reply)
	}
	bp := getBuf(n)
	defer putBuf(bp)
	b, err := appendResponse(*bp, resp)
	if err != nil {
		return err
	}
	if small {
		b = append(b, reply...)
	}
	*bp = b
	if _, err := s.Write(b); err != nil {
		return err
	}
	if !small {
		_, err = s.Write(reply)
	}
	return err
}

// streamBody is a remote message's Body: the payload, read from the
// stream through the reader that read the header.
type streamBody struct {
	br     *bufio.Reader
	s      network.Stream
	to     paths.Path
	size   int64
	left   int64
	idle   bool  // no deadline: each read has idleTimeout
	err    error // sticky
	closed bool
}

var errBodyGone = errors.New("msg: body read after the handler returned")

func (b *streamBody) Read(p []byte) (int, error) {
	switch {
	case b.closed:
		return 0, errBodyGone
	case b.err != nil:
		return 0, b.err
	case b.left == 0:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	if b.idle && b.br.Buffered() == 0 {
		_ = b.s.SetReadDeadline(time.Now().Add(idleTimeout))
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if err != nil {
		got := b.size - b.left
		switch {
		case err == io.EOF && b.left == 0:
			err = nil
		case err == io.EOF:
			err = fmt.Errorf("msg: body of a message to %s: the sender stopped after %d of %d bytes: %w", b.to, got, b.size, io.ErrUnexpectedEOF)
		case isTimeout(err) && !b.idle:
			err = fmt.Errorf("msg: body of a message to %s: the deadline passed after %d of %d bytes: %w", b.to, got, b.size, context.DeadlineExceeded)
		case isTimeout(err):
			err = fmt.Errorf("msg: body of a message to %s: no data for %v after %d of %d bytes: %w", b.to, idleTimeout, got, b.size, err)
		default:
			err = fmt.Errorf("msg: body of a message to %s: cut after %d of %d bytes: %w", b.to, got, b.size, err)
		}
		b.err = err
	}
	return n, err
}

// close ends the body's life when its handler returns.
func (b *streamBody) close() { b.closed = true }
