package fuse

import (
	"sync"
	"sync/atomic"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"blocktree.dev/bt/fsys"
)

// maxPending bounds the invalidations waiting for the kernel. Past it the
// oldest are dropped and logged: the kernel then sees the change when its
// attribute or entry timeout ends, as it would without notifications.
const maxPending = 1 << 16

// invalQueue carries invalidations from fsys.FS.Notify to the kernel.
//
// The kernel's notify calls can block: invalidating an entry takes the
// directory's lock, which a request in progress on that directory holds
// while it waits for fsys. Were the notifications sent from fsys's notify
// goroutine, that request and fsys could wait for each other, so push only
// queues, and one goroutine of ours (run) talks to the kernel.
//
// A reply the kernel gets after an invalidation of what it answers, but
// computed from fsys before the change, would sit in the kernel's cache
// for a whole timeout. Two things keep that from happening: seq counts
// the invalidations pushed, and a request that saw it move while it asked
// fsys answers with no cache time (fresh); and each invalidation is sent
// a second time invalAgain later, which drops a reply that was computed
// before the change but reached the kernel after the first one.
type invalQueue struct {
	wake chan struct{} // one token: the queue is not empty or closed
	seq  atomic.Uint64 // invalidations pushed so far

	// mu guards the fields below it.
	mu      sync.Mutex
	pending []fsys.Invalidation
	again   []fsys.Invalidation        // sent once already: send once more
	queued  map[fsys.Invalidation]bool // what pending holds, to drop duplicates
	dropped int
	closed  bool
}

func (q *invalQueue) init() {
	q.wake = make(chan struct{}, 1)
	q.queued = make(map[fsys.Invalidation]bool)
}

// push queues inv; it never blocks. It is the function given to
// fsys.FS.Notify; after close it does nothing.
func (q *invalQueue) push(inv fsys.Invalidation) {
	q.seq.Add(1)
	q.mu.Lock()
	if q.closed || q.queued[inv] {
		q.mu.Unlock()
		return
	}
	if len(q.pending) >= maxPending {
		delete(q.queued, q.pending[0])
		q.pending = q.pending[1:]
		q.dropped++
	}
	q.pending = append(q.pending, inv)
	q.queued[inv] = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// invalAgain is how long after an invalidation it is sent again.
const invalAgain = 250 * time.Millisecond

// fresh reports whether no invalidation was pushed since seq was read:
// whether an answer computed meanwhile may be cached by the kernel.
func (q *invalQueue) fresh(seq uint64) bool { return q.seq.Load() == seq }

// pushAgain queues batch, sent once already, to be sent once more.
func (q *invalQueue) pushAgain(batch []fsys.Invalidation) {
	q.mu.Lock()
	if q.closed || len(q.again) >= maxPending {
		q.mu.Unlock()
		return
	}
	q.again = append(q.again, batch...)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *invalQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.pending = nil
	q.again = nil
	clear(q.queued)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns the pending invalidations, or closed.
func (q *invalQueue) take() (batch, again []fsys.Invalidation, dropped int, closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch, q.pending = q.pending, nil
	again, q.again = q.again, nil
	clear(q.queued)
	dropped, q.dropped = q.dropped, 0
	return batch, again, dropped, q.closed
}

// run sends queued invalidations to the kernel until close.
func (q *invalQueue) run(m *Mounted) {
	for range q.wake {
		batch, again, dropped, closed := q.take()
		if closed {
			return
		}
		if dropped > 0 {
			m.log.Warn("kernel invalidations dropped; the kernel catches up at its cache timeouts", "dropped", dropped)
		}
		for _, inv := range batch {
			m.invalidate(inv)
		}
		for _, inv := range again {
			m.invalidate(inv)
		}
		if len(batch) > 0 {
			time.AfterFunc(invalAgain, func() { q.pushAgain(batch) })
		}
	}
}

// invalidate tells the kernel to forget what inv names. The kernel's node
// IDs are fsys inode numbers (Options.ExternalNodeID), so no table is
// needed; ENOENT means the kernel had nothing cached, which is fine.
func (m *Mounted) invalidate(inv fsys.Invalidation) {
	var st gofuse.Status
	if inv.Dir != 0 {
		// The entry, and the directory's attributes (size, mtime).
		st = m.server.EntryNotify(uint64(inv.Dir), inv.Name)
		m.logNotify("entry", inv, st)
		st = m.server.InodeNotify(uint64(inv.Dir), -1, 0)
		m.logNotify("dir", inv, st)
	}
	if inv.Ino != 0 {
		// Attributes and every cached page (offset 0, length 0: to the end).
		st = m.server.InodeNotify(uint64(inv.Ino), 0, 0)
		m.logNotify("inode", inv, st)
	}
}

func (m *Mounted) logNotify(what string, inv fsys.Invalidation, st gofuse.Status) {
	if st != gofuse.OK && st != gofuse.ENOENT {
		m.log.Debug("kernel invalidation failed", "what", what, "ino", inv.Ino, "dir", inv.Dir, "status", st)
	}
}
