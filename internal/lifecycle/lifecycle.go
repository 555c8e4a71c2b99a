package lifecycle

import (
	"sync"
	"sync/atomic"
)

// Group counts the operations in flight of a server that Close waits
// for. It must not be copied after first use.
type Group struct {
	// mu orders Enter's wg.Add against Close's Wait: Enter holds it
	// shared, so operations enter without contending, and Close sets
	// closed holding it exclusively. closed is also read alone, by
	// Closed, which is on the hot paths of message delivery.
	mu     sync.RWMutex
	closed atomic.Bool
	wg     sync.WaitGroup

	once sync.Once
}

// Enter registers an operation that Close waits for. It reports false,
// and registers nothing, once Close has begun.
func (g *Group) Enter() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed.Load() {
		return false
	}
	g.wg.Add(1)
	return true
}

// EnterWithin registers one more operation from inside one that has
// entered and not yet left (a goroutine it hands work to, say). It cannot
// fail: Close is still waiting for the caller, so it waits for this one too.
func (g *Group) EnterWithin() { g.wg.Add(1) }

// Leave ends an operation registered by a successful Enter.
func (g *Group) Leave() { g.wg.Done() }

// Go runs f on a new goroutine that Close waits for, unless Close has
// begun; it reports whether f was started.
func (g *Group) Go(f func()) bool {
	if !g.Enter() {
		return false
	}
	go func() {
		defer g.Leave()
		f()
	}()
	return true
}

// Closed reports whether Close has begun.
func (g *Group) Closed() bool {
	return g.closed.Load()
}

// Close refuses new operations, then runs stop (when not nil) to end the
// running ones, then waits until each has left. Only the first call runs
// stop; every call returns once the first has finished waiting.
func (g *Group) Close(stop func()) {
	g.once.Do(func() {
		g.mu.Lock()
		g.closed.Store(true)
		g.mu.Unlock()
		if stop != nil {
			stop()
		}
		g.wg.Wait()
	})
}
