package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Service is a long-lived part: Serve runs until ctx ends, then returns
// nil (or the error it failed with).
type Service interface {
	Serve(ctx context.Context) error
}

// closer is the optional Close a service is stopped with after its
// context is cancelled.
type closer interface{ Close() error }

// Supervisor runs services and stops them in reverse order of start.
type Supervisor struct {
	log    *slog.Logger
	failed chan error // the first failure (capacity 1)

	// mu guards running and stopped.
	mu      sync.Mutex
	running []*entry
	stopped bool
}

type entry struct {
	name   string
	svc    Service
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve has returned

	// stopping is set before the service is stopped, so its Serve's
	// return is not taken for a failure.
	mu       sync.Mutex
	stopping bool
}

// New returns a supervisor that logs to log (nil: nowhere).
func New(log *slog.Logger) *Supervisor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{log: log, failed: make(chan error, 1)}
}

// ErrStopped is returned by Start after Stop.
var ErrStopped = errors.New("supervise: stopped")

// Start runs svc.Serve in a goroutine under name. After Stop it starts
// nothing and returns ErrStopped (svc is closed if it has a Close).
func (s *Supervisor) Start(name string, svc Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		if c, ok := svc.(closer); ok {
			_ = c.Close()
		}
		return ErrStopped
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &entry{name: name, svc: svc, cancel: cancel, done: make(chan struct{})}
	s.running = append(s.running, e)
	go func() {
		defer close(e.done)
		err := svc.Serve(ctx)
		e.mu.Lock()
		stopping := e.stopping
		e.mu.Unlock()
		switch {
		case stopping && err != nil && !errors.Is(err, context.Canceled):
			s.log.Warn("service stopped with an error", "service", name, "err", err)
		case stopping:
		case err != nil:
			s.log.Error("service failed", "service", name, "err", err)
			select {
			case s.failed <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		default:
			s.log.Info("service ended", "service", name)
		}
	}()
	return nil
}

// Wait blocks until ctx ends or a service fails, then stops every
// service (Stop). It returns the first failure, else what Stop returns.
func (s *Supervisor) Wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.failed:
	}
	if serr := s.Stop(); err == nil {
		err = serr
	}
	return err
}

// Stop stops the running services in reverse order of start and returns
// the errors of their Close, joined. Idempotent: later calls return nil.
func (s *Supervisor) Stop() error {
	s.mu.Lock()
	running := s.running
	s.running, s.stopped = nil, true
	s.mu.Unlock()
	var errs []error
	for _, e := range running {
		e.mu.Lock()
		e.stopping = true
		e.mu.Unlock()
	}
	for i := len(running) - 1; i >= 0; i-- {
		e := running[i]
		e.cancel()
		if c, ok := e.svc.(closer); ok {
			if err := c.Close(); err != nil {
				s.log.Warn("closing a service", "service", e.name, "err", err)
				errs = append(errs, fmt.Errorf("closing %s: %w", e.name, err))
			}
		}
		<-e.done
	}
	return errors.Join(errs...)
}

// Closer is a part with nothing to serve that must be closed in order:
// its Serve waits for its context and Close calls close once.
func Closer(close func() error) Service { return &closeOnly{close: close} }

type closeOnly struct {
	close func() error
	once  sync.Once
	err   error
}

func (c *closeOnly) Serve(ctx context.Context) error { <-ctx.Done(); return nil }

func (c *closeOnly) Close() error {
	c.once.Do(func() { c.err = c.close() })
	return c.err
}

// Func is a Service of a function (with no Close).
type Func func(ctx context.Context) error

// Serve calls f.
func (f Func) Serve(ctx context.Context) error { return f(ctx) }
