package actors

import (
	"context"
	"sync"
	"time"

	"blocktree.dev/bt/paths"
)

// envelope is one message in a mailbox.
type envelope struct {
	msg   any
	from  paths.Path
	reply chan result // a Call's answer; nil for a Send and for notices
	// done takes a remote Call's answer instead of reply, on the goroutine
	// that answers it.
	done func(result)
	dl   time.Time // the sender's deadline, zero if none
	rule *rule     // the protocol rule that admitted it, nil without a protocol
}

// isCall reports whether e waits for a result.
func (e *envelope) isCall() bool { return e.reply != nil || e.done != nil }

// respond gives a Call its result, once.
func (e *envelope) respond(res result) {
	if e.reply != nil {
		e.reply <- res
	}
	if e.done != nil {
		e.done(res)
	}
	e.reply, e.done = nil, nil
}

// result is a Call's answer.
type result struct {
	v   any
	err error
}

// errRetry: the mailbox was closed because its provider was deactivated
// for idleness; the sender resolves the path again.
type retryError struct{}

func (retryError) Error() string { return "actors: provider deactivated" }

var errRetry error = retryError{}

// mailbox is an actor's bounded queue. Messages are kept in a ring that
// grows on demand up to cap, so an idle actor costs a few words, not cap
// slots. Notices (Exit, Down, stop) go to sys: they are few (bounded by
// the actor's children and monitors), never refused for capacity, and
// are handled before messages.
type mailbox struct {
	cap   int
	ready chan struct{} // 1-buffered: wakes the actor

	// mu guards the fields below.
	mu     sync.Mutex
	buf    []envelope // ring
	head   int
	n      int
	sys    []any
	closed error         // non-nil once closed: what pushes get
	space  chan struct{} // closed when room appears; nil while nobody waits
	proto  *protoRun     // the declared protocol, nil if none
}

func (mb *mailbox) init(capacity int, pr *protoRun) {
	mb.cap = capacity
	mb.ready = make(chan struct{}, 1)
	mb.proto = pr
}

func (mb *mailbox) wake() {
	select {
	case mb.ready <- struct{}{}:
	default:
	}
}

// push queues e. When the mailbox is full it waits for room until ctx
// ends (wait true) and fails with ErrMailboxFull; a closed mailbox gives
// its close error. A protocol refuses e before it is queued.
func (mb *mailbox) push(ctx context.Context, e envelope, wait bool) error {
	for {
		mb.mu.Lock()
		if mb.closed != nil {
			err := mb.closed
			mb.mu.Unlock()
			return err
		}
		if mb.n < mb.cap {
			if mb.proto != nil {
				r, err := mb.proto.admit(e.msg)
				if err != nil {
					mb.mu.Unlock()
					return err
				}
				e.rule = r
			}
			if mb.n == len(mb.buf) {
				mb.grow()
			}
			mb.buf[(mb.head+mb.n)%len(mb.buf)] = e
			mb.n++
			mb.mu.Unlock()
			mb.wake()
			return nil
		}
		if !wait {
			mb.mu.Unlock()
			return ErrMailboxFull
		}
		if mb.space == nil {
			mb.space = make(chan struct{})
		}
		sp := mb.space
		mb.mu.Unlock()
		select {
		case <-sp:
		case <-ctx.Done():
			return ErrMailboxFull
		}
	}
}

// grow doubles the ring, up to cap; called with mu held and the ring full.
func (mb *mailbox) grow() {
	size := max(4, 2*len(mb.buf))
	size = min(size, mb.cap)
	nb := make([]envelope, size)
	for i := range mb.n {
		nb[i] = mb.buf[(mb.head+i)%len(mb.buf)]
	}
	mb.buf, mb.head = nb, 0
}

// notify queues a notice; false if the mailbox is closed.
func (mb *mailbox) notify(v any) bool {
	mb.mu.Lock()
	if mb.closed != nil {
		mb.mu.Unlock()
		return false
	}
	mb.sys = append(mb.sys, v)
	mb.mu.Unlock()
	mb.wake()
	return true
}

// pop takes the next notice or message without waiting.
func (mb *mailbox) pop() (sys any, e envelope, ok bool) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if len(mb.sys) > 0 {
		sys = mb.sys[0]
		mb.sys[0] = nil
		mb.sys = mb.sys[1:]
		if len(mb.sys) == 0 {
			mb.sys = nil
		}
		return sys, envelope{}, true
	}
	if mb.n == 0 {
		return nil, envelope{}, false
	}
	e = mb.buf[mb.head]
	mb.buf[mb.head] = envelope{}
	mb.head = (mb.head + 1) % len(mb.buf)
	mb.n--
	if mb.n == 0 {
		mb.head = 0
		if len(mb.buf) > 256 { // give a burst's memory back
			mb.buf = nil
		}
	}
	if mb.space != nil {
		close(mb.space)
		mb.space = nil
	}
	return nil, e, true
}

// closeIfIdle closes the mailbox with err if it holds nothing.
func (mb *mailbox) closeIfIdle(err error) bool {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.closed != nil {
		return true
	}
	if mb.n > 0 || len(mb.sys) > 0 {
		return false
	}
	mb.closed = err
	return true
}

// close refuses further pushes with err and returns what was queued.
func (mb *mailbox) close(err error) []envelope {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.closed == nil {
		mb.closed = err
	}
	var left []envelope
	for i := range mb.n {
		left = append(left, mb.buf[(mb.head+i)%len(mb.buf)])
	}
	mb.buf, mb.head, mb.n, mb.sys = nil, 0, 0, nil
	if mb.space != nil {
		close(mb.space)
		mb.space = nil
	}
	return left
}

// depth returns the number of queued messages.
func (mb *mailbox) depth() int {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.n
}
