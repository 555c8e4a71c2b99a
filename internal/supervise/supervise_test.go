package supervise

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder records the order in which services stop.
type recorder struct {
	mu    sync.Mutex
	order []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.order = append(r.order, s)
	r.mu.Unlock()
}

// svc serves until its context ends, or returns fail at once.
type svc struct {
	name string
	rec  *recorder
	fail error
}

func (s *svc) Serve(ctx context.Context) error {
	if s.fail != nil {
		return s.fail
	}
	<-ctx.Done()
	s.rec.add("serve " + s.name)
	return nil
}

// withClose also has a Close.
type withClose struct{ svc }

func (s *withClose) Close() error { s.rec.add("close " + s.name); return nil }

func TestStopsInReverseOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  bool // stop by ending Wait's context, else by a failure
	}{{"context ends", true}, {"a service fails", false}} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			sup := New(nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sup.Start("a", &svc{name: "a", rec: rec})
			sup.Start("b", &withClose{svc{name: "b", rec: rec}})
			sup.Start("c", Closer(func() error { rec.add("close c"); return nil }))
			sup.Start("d", &svc{name: "d", rec: rec})
			boom := errors.New("boom")
			if tc.ctx {
				cancel()
			} else {
				sup.Start("e", &svc{name: "e", rec: rec, fail: boom})
			}
			err := sup.Wait(ctx)
			if tc.ctx && err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if !tc.ctx && (!errors.Is(err, boom) || err.Error() != "e: boom") {
				t.Fatalf("Wait: %v, want e: boom", err)
			}
			want := []string{"serve d", "close c", "serve b", "close b", "serve a"}
			got := rec.order
			// b's Serve may see its context end before or after its
			// Close runs; only the order between services matters.
			if len(got) == len(want) && got[2] == "close b" {
				got[2], got[3] = got[3], got[2]
			}
			if !slices.Equal(got, want) {
				t.Fatalf("stop order %v, want %v", rec.order, want)
			}
			if err := sup.Stop(); err != nil {
				t.Fatalf("second Stop: %v", err)
			}
		})
	}
}

func TestEarlyNilIsNoFailure(t *testing.T) {
	sup := New(nil)
	sup.Start("done", Func(func(context.Context) error { return nil }))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := sup.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func TestErrorWhileStoppingIsNoFailure(t *testing.T) {
	sup := New(nil)
	sup.Start("x", Func(func(ctx context.Context) error { <-ctx.Done(); return errors.New("closed under me") }))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sup.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func TestCloseErrorsAndStartAfterStop(t *testing.T) {
	sup := New(nil)
	bad := errors.New("bad close")
	sup.Start("x", Closer(func() error { return bad }))
	if err := sup.Stop(); !errors.Is(err, bad) {
		t.Fatalf("Stop: %v, want %v", err, bad)
	}
	closed := false
	if err := sup.Start("late", Closer(func() error { closed = true; return nil })); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Stop: %v", err)
	}
	if !closed {
		t.Fatal("a service started after Stop was not closed")
	}
}
