package lifecycle

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestEnterAfterClose(t *testing.T) {
	var g Group
	if g.Closed() {
		t.Fatal("a new group is closed")
	}
	g.Close(nil)
	if !g.Closed() {
		t.Fatal("not closed after Close")
	}
	if g.Enter() {
		t.Fatal("Enter succeeded after Close")
	}
	if g.Go(func() { t.Error("ran after Close") }) {
		t.Fatal("Go started after Close")
	}
}

// TestCloseWaits: Close returns only after every entered operation has
// left, and runs stop after refusing new ones and before waiting.
func TestCloseWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Group
		release := make(chan struct{})
		var left atomic.Int32
		for range 3 {
			if !g.Go(func() {
				<-release
				left.Add(1)
			}) {
				t.Fatal("Go refused before Close")
			}
		}
		done := make(chan struct{})
		stopped := false
		go func() {
			g.Close(func() {
				if g.Enter() {
					t.Error("Enter succeeded while stopping")
				}
				stopped = true
				close(release)
			})
			close(done)
		}()
		synctest.Wait()
		<-done
		if !stopped || left.Load() != 3 {
			t.Fatalf("Close returned with stop run %v and %d of 3 operations left", stopped, left.Load())
		}
	})
}

// TestCloseBlocksUntilLeave: Close does not return while an operation
// is in flight.
func TestCloseBlocksUntilLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Group
		if !g.Enter() {
			t.Fatal("Enter refused")
		}
		var closed atomic.Bool
		go func() {
			g.Close(nil)
			closed.Store(true)
		}()
		synctest.Wait()
		if closed.Load() {
			t.Fatal("Close returned with an operation in flight")
		}
		g.Leave()
		synctest.Wait()
		if !closed.Load() {
			t.Fatal("Close did not return after the last Leave")
		}
	})
}

// TestCloseIdempotent: stop runs once, and concurrent calls all return
// only after the operation in flight has left.
func TestCloseIdempotent(t *testing.T) {
	var g Group
	if !g.Enter() {
		t.Fatal("Enter refused")
	}
	var stops atomic.Int32
	var left atomic.Bool
	var started, wg sync.WaitGroup
	for range 4 {
		started.Add(1)
		wg.Go(func() {
			started.Done()
			g.Close(func() { stops.Add(1) })
			if !left.Load() {
				t.Error("Close returned with an operation in flight")
			}
		})
	}
	started.Wait()
	time.Sleep(10 * time.Millisecond) // let the Close calls reach their wait
	left.Store(true)
	g.Leave()
	wg.Wait()
	if stops.Load() != 1 {
		t.Fatalf("stop ran %d times", stops.Load())
	}
	g.Close(func() { t.Error("stop ran on a later Close") })
}

// TestEnterWithin: an operation started from inside an entered one, even
// once Close has begun, is waited for.
func TestEnterWithin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Group
		if !g.Enter() {
			t.Fatal("Enter refused")
		}
		release := make(chan struct{})
		var innerDone atomic.Bool
		closed := make(chan struct{})
		go func() {
			g.Close(nil)
			close(closed)
		}()
		synctest.Wait()
		g.EnterWithin()
		go func() {
			defer g.Leave()
			<-release
			innerDone.Store(true)
		}()
		g.Leave()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned before the inner operation left")
		default:
		}
		close(release)
		<-closed
		if !innerDone.Load() {
			t.Fatal("the inner operation did not finish")
		}
	})
}

func ExampleGroup() {
	var g Group
	g.Go(func() { /* serve a stream */ })
	g.Close(func() { /* remove the handler, cancel the context */ })
	// Output:
}
