package groupcommit

import (
	"runtime"
	"slices"
	"sync"
	"testing"
)

type req struct {
	id    int
	group int // which commit served it (1-based)
}

// recorder is a commit function that records its groups; block, if set,
// holds the first commit until it is closed.
type recorder struct {
	mu     sync.Mutex
	groups [][]int
	block  chan struct{}
	defer_ func(r *req) bool // nil: defer nothing
	locked func() bool       // nil: not checked
	t      *testing.T
}

func (c *recorder) commit(group []*req) (deferred []*req) {
	c.mu.Lock()
	n := len(c.groups) + 1
	c.mu.Unlock()
	if n == 1 && c.block != nil {
		<-c.block
	}
	if c.locked != nil && !c.locked() {
		c.t.Error("commit called without the lock held")
	}
	var ids []int
	for _, r := range group {
		ids = append(ids, r.id)
		if c.defer_ != nil && r.group == 0 && c.defer_(r) {
			r.group = -1 // deferred once
			deferred = append(deferred, r)
			continue
		}
		r.group = n
	}
	c.mu.Lock()
	c.groups = append(c.groups, ids)
	c.mu.Unlock()
	return deferred
}

func TestLoneRequest(t *testing.T) {
	c := &recorder{t: t}
	g := New(c.commit)
	for i := range 3 {
		r := &req{id: i}
		g.Do(r)
		if r.group != i+1 {
			t.Fatalf("request %d served by group %d, want %d", i, r.group, i+1)
		}
	}
	if g.Len() != 0 {
		t.Fatalf("Len = %d after every Do returned", g.Len())
	}
}

// start runs Do(r) for each r in its own goroutine once the first is
// committing, and waits until all of them are queued behind it.
func start(t *testing.T, g *Group[*req], first *req, rest []*req) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() { g.Do(first) })
	for g.Len() != 0 || !leading(g) {
		runtime.Gosched()
	}
	for _, r := range rest {
		wg.Go(func() { g.Do(r) })
		for !queued(g, r) {
			runtime.Gosched()
		}
	}
	return &wg
}

func leading(g *Group[*req]) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.leading
}

func queued(g *Group[*req], r *req) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.ContainsFunc(g.queue, func(w *waiter[*req]) bool { return w.r == r })
}

func TestGroup(t *testing.T) {
	tests := []struct {
		name   string
		defer_ func(r *req) bool
		want   [][]int // the groups' request ids
	}{
		{"all", nil, [][]int{{0}, {1, 2, 3, 4}}},
		{"deferred", func(r *req) bool { return r.id == 2 || r.id == 4 }, [][]int{{0}, {1, 2, 3, 4}, {2, 4}}},
		{"head deferred", func(r *req) bool { return r.id == 1 }, [][]int{{0}, {1, 2, 3, 4}, {1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			held := false
			c := &recorder{t: t, block: make(chan struct{}), defer_: tt.defer_,
				locked: func() bool { return held }}
			g := New(c.commit, WithLock(lockFunc{&mu, &held}))
			reqs := []*req{{id: 0}, {id: 1}, {id: 2}, {id: 3}, {id: 4}}
			wg := start(t, g, reqs[0], reqs[1:])
			close(c.block)
			wg.Wait()
			if !slices.EqualFunc(c.groups, tt.want, slices.Equal) {
				t.Fatalf("groups = %v, want %v", c.groups, tt.want)
			}
			for _, r := range reqs {
				if r.group <= 0 {
					t.Errorf("request %d not committed (%d)", r.id, r.group)
				}
			}
			if g.Len() != 0 || leading(g) {
				t.Fatalf("Len = %d, leading = %v after every Do returned", g.Len(), leading(g))
			}
		})
	}
}

// lockFunc is a mutex that records whether it is held.
type lockFunc struct {
	mu   *sync.Mutex
	held *bool
}

func (l lockFunc) Lock()   { l.mu.Lock(); *l.held = true }
func (l lockFunc) Unlock() { *l.held = false; l.mu.Unlock() }

func TestNotSubsequence(t *testing.T) {
	g := New(func(group []*req) []*req { return []*req{{id: 99}} })
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a deferred request not in the group")
		}
	}()
	g.Do(&req{})
}

// TestConcurrent runs many Do calls at once: each returns once, after its
// request is committed, and no request is committed twice.
func TestConcurrent(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	g := New(func(group []*req) []*req {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range group {
			seen[r.id]++
			r.group = 1
		}
		return nil
	})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			r := &req{id: i}
			g.Do(r)
			if r.group != 1 {
				t.Errorf("request %d returned uncommitted", i)
			}
		})
	}
	wg.Wait()
	for i := range 200 {
		if seen[i] != 1 {
			t.Fatalf("request %d committed %d times", i, seen[i])
		}
	}
}
