package msg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"blocktree.dev/bt/paths"
)

// local delivers a message to a handler of this node, in process: the
// handler reads the caller's body itself, through localBody, which only
// counts; nothing is encoded or copied.
func (r *Router) local(ctx context.Context, call bool, to paths.Path, body io.Reader, size int64) ([]byte, error) {
	op := opName(call)
	h := r.handler(to)
	if g := r.groupFor(to); h == nil && g != nil {
		typ := frameSend
		if call {
			typ = frameCall
		}
		h = r.forward(g, typ)
	}
	if h == nil {
		return nil, fmt.Errorf("msg: %s %s: this node has no handler at that path (register one with Handle): %w", op, to, ErrNoEndpoint)
	}
	if err := r.turn(ctx); err != nil {
		return nil, r.localErr(op, to, err)
	}
	dl, _ := ctx.Deadline()
	lb := &localBody{r: body, to: to, size: size, left: size, taken: make(chan struct{})}
	if size == 0 {
		lb.signal()
	}
	m := &Message{From: r.self, FromNode: r.node.NodeID(), To: to, Call: call, Size: size, Body: lb, Deadline: dl}
	if call {
		defer r.release()
		hctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(r.ctx, cancel)
		reply, err := r.run(hctx, h, m)
		stop()
		cancel()
		lb.close()
		var rf *refusal
		switch {
		case errors.As(err, &rf):
			return nil, fmt.Errorf("msg: call %s: %v: %w", to, rf.err, kindErr(rf.k))
		case err != nil:
			return nil, &RemoteError{Path: to, Msg: err.Error(), err: err}
		case ctx.Err() != nil:
			return nil, r.localErr(op, to, ctx.Err())
		case int64(len(reply)) > r.cfg.MaxMessage:
			return nil, fmt.Errorf("msg: call %s: the handler replied %d bytes, over the limit of %d (Config.MaxMessage): %w", to, len(reply), r.cfg.MaxMessage, ErrTooLarge)
		}
		return reply, nil
	}

	// A Send: the handler runs on a goroutine of the Router, with the
	// Router's context and the caller's deadline; Send returns once the
	// handler has read the body or returned.
	var hctx context.Context
	var cancel context.CancelFunc
	if dl.IsZero() {
		hctx, cancel = context.WithCancel(r.ctx)
	} else {
		hctx, cancel = context.WithDeadline(r.ctx, dl)
	}
	r.life.EnterWithin() // within deliver's Enter: Close waits for it
	go func() {
		defer r.life.Leave()
		defer r.release()
		defer cancel()
		if _, err := r.run(hctx, h, m); err != nil {
			r.log.Debug("handler failed on a sent message", "to", to, "from", r.self, "err", err)
		}
		lb.close()
	}()
	select {
	case <-lb.taken:
		return nil, nil
	case <-ctx.Done():
		lb.close() // the caller gets its reader back
		return nil, r.localErr(op, to, ctx.Err())
	}
}

// localErr is the error for a local delivery cut short by ctx or Close.
func (r *Router) localErr(op string, to paths.Path, err error) error {
	switch {
	case errors.Is(err, ErrClosed):
		return fmt.Errorf("msg: %s %s: %w", op, to, ErrClosed)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("msg: %s %s: the handler on this node did not answer before the deadline: %w", op, to, err)
	}
	return fmt.Errorf("msg: %s %s: %w", op, to, err)
}

// localBody is an in-process message's Body: the caller's reader, limited
// to the message's size. It signals taken when the handler has read all of
// it or is done with it, and after close, which waits for a read in
// progress, it no longer touches the caller's reader.
type localBody struct {
	to    paths.Path
	size  int64
	taken chan struct{}
	once  sync.Once

	// mu guards r and left, and holds close back while a read runs.
	mu   sync.Mutex
	r    io.Reader // nil once closed
	left int64
}

func (b *localBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.r == nil:
		return 0, errBodyGone
	case b.left == 0:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		b.signal()
		if err == io.EOF {
			err = nil
		}
	} else if err == io.EOF {
		err = fmt.Errorf("msg: body of a message to %s: the sender's body ended after %d of %d bytes: %w", b.to, b.size-b.left, b.size, io.ErrUnexpectedEOF)
	}
	return n, err
}

func (b *localBody) signal() { b.once.Do(func() { close(b.taken) }) }

func (b *localBody) close() {
	b.mu.Lock()
	b.r = nil
	b.mu.Unlock()
	b.signal()
}
