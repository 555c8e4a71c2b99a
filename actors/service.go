package actors

import (
	"context"
	"fmt"
	"sync"
	"time"

	"blocktree.dev/bt/paths"
)

// Service is a virtual actor: registered at a path, it has no goroutine
// until a message arrives. A message to the service's path, or to any
// path under it, activates a provider for that exact path (New makes its
// Actor) if none is running; each path has at most one provider at a
// time, so each message goes to exactly one provider. A provider that
// gets no message for Idle is deactivated (stopped, outcome Stopped); the
// next message activates a new one. Providers show in List with kind
// "provider".
type Service struct {
	// New makes the actor of the provider for path p (the service's path
	// or one under it). It runs on the sender's goroutine.
	New func(p paths.Path) Actor
	// Idle is how long a provider may go without a message before it is
	// deactivated (default DefaultIdle, one minute).
	Idle time.Duration
	// Mailbox is each provider's mailbox capacity (default: the runtime's).
	Mailbox int
	// Protocol, if set, is each provider's declared protocol.
	Protocol *Protocol
}

type service struct {
	r    *Runtime
	path paths.Path
	spec Service
}

// RegisterService registers spec at /<root>/<node>/<name> and returns
// the path. Errors: ErrBadName, ErrExists (an actor or a service is
// there), ErrClosed. unregister removes the registration and stops its
// providers. Safe for concurrent use.
func (r *Runtime) RegisterService(name string, spec Service) (paths.Path, func(), error) {
	if err := checkName(name); err != nil {
		return paths.Path{}, nil, fmt.Errorf("actors: register service %q: %w", name, err)
	}
	if spec.New == nil {
		return paths.Path{}, nil, fmt.Errorf("actors: register service %q: nil New", name)
	}
	if spec.Idle <= 0 {
		spec.Idle = DefaultIdle
	}
	if spec.Mailbox <= 0 {
		spec.Mailbox = r.cfg.mailbox
	}
	if spec.Protocol != nil {
		if err := spec.Protocol.compile(); err != nil {
			return paths.Path{}, nil, err
		}
	}
	p, err := r.self.Join(name)
	if err != nil {
		return paths.Path{}, nil, fmt.Errorf("actors: register service %q: %w", name, err)
	}
	s := &service{r: r, path: p, spec: spec}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.life.Closed():
		return paths.Path{}, nil, fmt.Errorf("actors: register service %s: %w", p, ErrClosed)
	case r.services[p] != nil || r.procs[p] != nil:
		return paths.Path{}, nil, fmt.Errorf("actors: register service %s: %w", p, ErrExists)
	}
	r.services[p] = s
	return p, func() { r.unregister(s) }, nil
}

func (r *Runtime) unregister(s *service) {
	r.mu.Lock()
	if r.services[s.path] != s {
		r.mu.Unlock()
		return
	}
	delete(r.services, s.path)
	var ps []*proc
	for _, p := range r.procs {
		if p.svc == s {
			ps = append(ps, p)
		}
	}
	r.mu.Unlock()
	for _, p := range ps {
		p.stop(Stopped, nil)
	}
	for _, p := range ps {
		<-p.done
	}
}

// serviceFor returns the service registered at p or its nearest ancestor
// under the node path, or nil.
func (r *Runtime) serviceFor(p paths.Path) *service {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.services) == 0 {
		return nil
	}
	for p.Depth() > 1 {
		if s := r.services[p]; s != nil {
			return s
		}
		p, _ = p.Parent()
	}
	return nil
}

// activate returns the provider for path p, starting one if none runs.
func (s *service) activate(p paths.Path) (*proc, error) {
	r := s.r
	r.mu.RLock()
	pr := r.procs[p]
	r.mu.RUnlock()
	if pr != nil {
		return pr, nil
	}
	a := s.spec.New(p)
	if a == nil {
		return nil, fmt.Errorf("service %s made no provider for %s: %w", s.path, p, ErrNoActor)
	}
	pr, err := r.spawnAt(p, a, nil, spawnConfig{kind: KindProvider, mailbox: s.spec.Mailbox, protocol: s.spec.Protocol, idle: s.spec.Idle, svc: s})
	if err == nil {
		return pr, nil
	}
	// Another sender activated it first: use that one.
	r.mu.RLock()
	pr = r.procs[p]
	r.mu.RUnlock()
	if pr != nil {
		return pr, nil
	}
	return nil, err
}

// After delivers m to this actor once, d from now (never earlier). The
// message goes through the mailbox like any other: it waits for room up
// to the runtime's send wait, and is logged if it cannot be queued.
// cancel stops it if it has not fired. The timer ends with the actor.
func (c *Context) After(d time.Duration, m any) (cancel func()) {
	return c.p.r.timer(c.p, d, 0, m)
}

// Every delivers m to this actor every d (d > 0), the first time d from
// now. Ticks are never early; a tick that finds the mailbox full, or that
// the clock has passed while the actor was busy, is skipped, and the next
// comes at the next multiple of d. cancel stops it. The timer ends with
// the actor.
func (c *Context) Every(d time.Duration, m any) (cancel func()) {
	return c.p.r.timer(c.p, d, d, m)
}

// SendAfter sends m to the actor at path to (of this node or another)
// once, d from now. cancel stops it if it has not fired; Close stops it
// too. An error from the delayed Send is logged.
func (r *Runtime) SendAfter(to paths.Path, d time.Duration, m any) (cancel func()) {
	if !r.life.Enter() {
		return func() {}
	}
	ctx, stop := context.WithCancel(r.ctx)
	t := time.AfterFunc(d, func() {
		defer r.life.Leave()
		defer stop()
		if err := r.Send(ctx, to, m); err != nil {
			r.log.Warn("delayed message not delivered", "to", to, "err", err)
		}
	})
	return func() {
		if t.Stop() {
			stop()
			r.life.Leave()
		}
	}
}

// timer runs a one-shot (period 0) or periodic timer for p.
func (r *Runtime) timer(p *proc, d, period time.Duration, m any) (cancel func()) {
	if period < 0 || (period == 0 && d < 0) {
		period, d = 0, 0
	}
	tm := &ptimer{p: p, period: period, m: m, start: time.Now()}
	tm.stopped = make(chan struct{})
	id, ok := p.onStop(tm.cancel)
	if !ok {
		return func() {}
	}
	tm.cleanup = id
	tm.mu.Lock()
	tm.t = time.AfterFunc(d, tm.fire)
	tm.mu.Unlock()
	return func() { tm.cancel(); p.dropCleanup(id) }
}

type ptimer struct {
	p      *proc
	period time.Duration
	m      any
	start  time.Time

	cleanup uint64 // its id among p's cleanups

	// mu guards t and stopped's closing.
	mu      sync.Mutex
	t       *time.Timer
	stopped chan struct{}
}

func (tm *ptimer) cancel() {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	select {
	case <-tm.stopped:
	default:
		close(tm.stopped)
		if tm.t != nil {
			tm.t.Stop()
		}
	}
}

func (tm *ptimer) fire() {
	select {
	case <-tm.stopped:
		return
	default:
	}
	p := tm.p
	if tm.period == 0 {
		p.dropCleanup(tm.cleanup)
		ctx, cancel := p.r.waitCtx(p.ctx)
		err := p.mb.push(ctx, envelope{msg: tm.m, from: p.path}, true)
		cancel()
		if err != nil {
			p.r.log.Warn("timer message not delivered", "path", p.path, "err", err)
		}
		return
	}
	if err := p.mb.push(p.ctx, envelope{msg: tm.m, from: p.path}, false); err != nil {
		p.r.log.Debug("tick skipped", "path", p.path, "err", err)
	}
	// The next tick is the first multiple of period after now: missed
	// ones are skipped, and none comes early.
	now := time.Now()
	k := int64(now.Sub(tm.start)/tm.period) + 1
	next := tm.start.Add(time.Duration(k) * tm.period)
	tm.mu.Lock()
	defer tm.mu.Unlock()
	select {
	case <-tm.stopped:
	default:
		tm.t.Reset(next.Sub(now))
	}
}

// Subscribe subscribes this actor to the topics pattern matches (the
// runtime needs WithPubSub): each message arrives in its mailbox as a
// *pubsub.Message, waiting for room (a full mailbox holds back this
// subscription's queue, whose overflow pubsub drops and counts). The
// subscription ends with the actor, or with cancel.
func (c *Context) Subscribe(ctx context.Context, pattern paths.Pattern) (cancel func(), err error) {
	p := c.p
	r := p.r
	if r.cfg.ps == nil {
		return nil, fmt.Errorf("actors: subscribe %s: the runtime has no pubsub (WithPubSub)", pattern)
	}
	sub, err := r.cfg.ps.Subscribe(ctx, pattern)
	if err != nil {
		return nil, fmt.Errorf("actors: subscribe %s: %w", pattern, err)
	}
	if !r.life.Enter() {
		sub.Cancel()
		return nil, fmt.Errorf("actors: subscribe %s: %w", pattern, ErrClosed)
	}
	id, ok := p.onStop(sub.Cancel)
	if !ok {
		r.life.Leave()
		sub.Cancel()
		return nil, fmt.Errorf("actors: subscribe %s: %w", pattern, ErrStopped)
	}
	go func() {
		defer r.life.Leave()
		for {
			m, err := sub.Next(p.ctx)
			if err != nil {
				return
			}
			if err := p.mb.push(p.ctx, envelope{msg: m, from: m.From}, true); err != nil {
				if p.ctx.Err() != nil {
					return
				}
				r.log.Warn("publication refused by the actor's mailbox", "path", p.path, "topic", m.Topic, "err", err)
			}
		}
	}()
	return func() { sub.Cancel(); p.dropCleanup(id) }, nil
}
