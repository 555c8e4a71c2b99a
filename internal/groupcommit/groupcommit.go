package groupcommit

import "sync"

// Commit commits one group, in order, and sets every request's outcome
// except the deferred ones; it returns those, a subsequence of group in
// group's order, to be committed with the next group.
type Commit[T comparable] func(group []T) (deferred []T)

// Group is a group-commit queue of requests of type T (usually a pointer
// to a request struct). The zero value is not usable; use New.
type Group[T comparable] struct {
	commit Commit[T]
	lock   sync.Locker // nil: none

	// mu guards queue and leading: the requests waiting for the next
	// group, and whether a leader is committing (leading is false only
	// while the queue is empty and no one commits).
	mu      sync.Mutex
	queue   []*waiter[T]
	leading bool
}

// waiter is one request waiting in the queue. A false on wake means its
// group is committed; true makes its receiver the next leader.
type waiter[T comparable] struct {
	r    T
	wake chan bool
}

// Option configures a Group.
type Option func(*options)

type options struct{ lock sync.Locker }

// WithLock makes the leader hold l while it takes a group from the queue
// and commits it (a lock the committed state shares with other writers).
func WithLock(l sync.Locker) Option { return func(o *options) { o.lock = l } }

// New returns a Group that commits with commit.
func New[T comparable](commit Commit[T], opts ...Option) *Group[T] {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return &Group[T]{commit: commit, lock: o.lock}
}

// Do queues r and returns when the group holding r is committed (r's
// outcome is whatever the commit function set in it). Safe for concurrent
// use.
func (g *Group[T]) Do(r T) {
	w := &waiter[T]{r: r, wake: make(chan bool, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if !lead && !<-w.wake {
		return
	}
	// Leader: w is the head of the queue (a handed-off leader is its head).
	for {
		if g.lock != nil {
			g.lock.Lock()
		}
		g.mu.Lock()
		ws := g.queue
		g.queue = nil
		g.mu.Unlock()
		group := make([]T, len(ws))
		for i, q := range ws {
			group[i] = q.r
		}
		deferred := g.commit(group)
		if g.lock != nil {
			g.lock.Unlock()
		}
		var back []*waiter[T]
		mine := false // w itself deferred
		j := 0
		for _, q := range ws {
			if j < len(deferred) && deferred[j] == q.r {
				back = append(back, q)
				j++
				mine = mine || q == w
				continue
			}
			if q != w {
				q.wake <- false
			}
		}
		if j != len(deferred) {
			panic("groupcommit: deferred requests are not a subsequence of the group")
		}
		g.mu.Lock()
		g.queue = append(back, g.queue...)
		switch {
		case mine:
			// w is the head again: lead the next group too.
			g.mu.Unlock()
			continue
		case len(g.queue) > 0:
			g.queue[0].wake <- true
		default:
			g.leading = false
		}
		g.mu.Unlock()
		return
	}
}

// Len returns how many requests wait for the next group (for tests and
// metrics).
func (g *Group[T]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}
