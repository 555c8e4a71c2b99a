package actors

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"blocktree.dev/bt/paths"
)

// proc is one running actor (or provider): its goroutine, mailbox and
// bookkeeping.
type proc struct {
	r       *Runtime
	path    paths.Path
	owner   *proc // nil: top level
	kind    Kind
	actor   Actor
	inc     uint64
	idle    time.Duration // providers: deactivate after this long without a message
	svc     *service      // providers: their service (nil otherwise)
	started time.Time
	proto   *protoRun
	mb      mailbox
	c       Context

	ctx    context.Context // ends when the actor stops
	cancel context.CancelFunc

	stopOnce sync.Once
	stopCh   chan struct{} // closed by stop
	stopWhy  Outcome       // set before stopCh is closed
	stopErr  error
	stopping atomic.Bool
	done     chan struct{} // closed when everything about the actor is over

	// mu guards the fields below.
	mu       sync.Mutex
	children []*proc
	exiting  bool // no more children, watchers or cleanups
	watchers map[uint64]func(Down)
	cleanups map[uint64]func()
	nextID   uint64
}

// adopt adds child to p's children; false once p is exiting.
func (p *proc) adopt(child *proc) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exiting {
		return false
	}
	p.children = append(p.children, child)
	return true
}

// onStop registers f to run when the actor stops and returns its id for
// dropCleanup; false (and f is not kept) once it is stopping.
func (p *proc) onStop(f func()) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exiting {
		return 0, false
	}
	if p.cleanups == nil {
		p.cleanups = make(map[uint64]func())
	}
	p.nextID++
	p.cleanups[p.nextID] = f
	return p.nextID, true
}

func (p *proc) dropCleanup(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.cleanups, id)
}

// stop asks the actor to stop after its current message, with outcome o.
func (p *proc) stop(o Outcome, err error) {
	p.stopOnce.Do(func() {
		p.stopWhy, p.stopErr = o, err
		p.stopping.Store(true)
		close(p.stopCh)
		p.cancel()
	})
}

func (p *proc) run() {
	defer p.r.life.Leave()
	exit := p.loop()
	p.finish(exit)
}

// loop runs Start and then handles notices and messages until the actor
// stops; it returns the exit.
func (p *proc) loop() Exit {
	if s, ok := p.actor.(Starter); ok {
		if o, err := p.guard(func() error { return s.Start(&p.c) }); o != Normal || err != nil {
			return p.exitOf(o, err)
		}
	}
	var idle *time.Timer
	var idleC <-chan time.Time
	if p.idle > 0 {
		idle = time.NewTimer(p.idle)
		defer idle.Stop()
		idleC = idle.C
	}
	for {
		select {
		case <-p.stopCh:
			return p.exitOf(p.stopWhy, p.stopErr)
		default:
		}
		sys, e, ok := p.mb.pop()
		if !ok {
			select {
			case <-p.mb.ready:
				continue
			case <-p.stopCh:
				return p.exitOf(p.stopWhy, p.stopErr)
			case <-idleC:
				if p.deactivate() {
					return p.exitOf(Stopped, nil)
				}
				idle.Reset(p.idle)
				continue
			}
		}
		if idle != nil {
			idle.Reset(p.idle)
		}
		var o Outcome
		var err error
		if sys != nil {
			o, err = p.handleNotice(sys)
		} else {
			o, err = p.handle(e)
		}
		if o != Normal || err != nil {
			return p.exitOf(o, err)
		}
	}
}

// exitOf builds the actor's exit from an outcome and error.
func (p *proc) exitOf(o Outcome, err error) Exit {
	if errors.Is(err, ErrStop) {
		o, err = Normal, nil
	}
	if o == Normal && err != nil {
		o = Failed
	}
	return Exit{Path: p.path, Outcome: o, Err: err, inc: p.inc}
}

// guard runs f, turning a panic into Panicked.
func (p *proc) guard(f func() error) (o Outcome, err error) {
	defer func() {
		if v := recover(); v != nil {
			p.r.log.Error("actor panicked", "path", p.path, "panic", v, "stack", string(debug.Stack()))
			o, err = Panicked, &panicError{v: v}
		}
	}()
	if err := f(); err != nil {
		if errors.Is(err, ErrStop) {
			return Normal, err
		}
		return Failed, err
	}
	return Normal, nil
}

type panicError struct{ v any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.v) }

// handleNotice gives a notice to the actor.
func (p *proc) handleNotice(v any) (Outcome, error) {
	p.c.sender = p.r.self
	o, err := p.guard(func() error {
		_, err := p.actor.Receive(&p.c, v)
		return err
	})
	if o == Normal && err == nil && p.c.stopSelf {
		return Normal, ErrStop
	}
	return o, err
}

// handle gives a message to the actor and answers a Call.
func (p *proc) handle(e envelope) (o Outcome, err error) {
	if e.isCall() && !e.dl.IsZero() && time.Now().After(e.dl) {
		e.respond(result{err: fmt.Errorf("actors: call %s: the deadline passed while the message was queued: %w", p.path, context.DeadlineExceeded)})
		p.advance(e.rule)
		return Normal, nil
	}
	p.c.sender = e.from
	var reply any
	o, err = p.guard(func() error {
		var err error
		reply, err = p.actor.Receive(&p.c, e.msg)
		return err
	})
	if o == Normal && e.rule != nil {
		if perr := e.rule.checkReply(p.proto.p, reply); perr != nil {
			o, err = Failed, fmt.Errorf("actors: actor %s: %w", p.path, perr)
			e.respond(result{err: err})
		}
	}
	p.advance(e.rule)
	if e.isCall() {
		switch o {
		case Normal:
			e.respond(result{v: reply})
		default:
			e.respond(result{err: &ActorError{Path: p.path, Outcome: o, Msg: err.Error(), err: err}})
		}
	}
	if o == Normal && err == nil && p.c.stopSelf {
		return Normal, ErrStop
	}
	return o, err
}

func (p *proc) advance(r *rule) {
	if r != nil {
		next := r.next
		p.proto.current.Store(&next)
	}
}

// deactivate closes an idle provider's mailbox and unregisters it; false
// if a message came in meanwhile.
func (p *proc) deactivate() bool {
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if !p.mb.closeIfIdle(errRetry) {
		return false
	}
	if r.procs[p.path] == p {
		delete(r.procs, p.path)
	}
	return true
}

// finish ends everything about the actor: it refuses and fails what is
// queued, runs Stopped, stops the actors it owns, unregisters it, and
// tells its owner and monitors.
func (p *proc) finish(exit Exit) {
	p.stopping.Store(true)
	for _, e := range p.mb.close(fmt.Errorf("%w (%s)", ErrStopped, exit.Outcome)) {
		if e.isCall() {
			e.respond(result{err: fmt.Errorf("actors: call %s: the actor stopped (%s) before it handled the message: %w", p.path, exit.Outcome, ErrStopped)})
		} else {
			p.r.log.Debug("message dropped: actor stopped", "path", p.path, "type", fmt.Sprintf("%T", e.msg))
		}
	}
	if s, ok := p.actor.(Stopper); ok {
		p.guard(func() error { s.Stopped(&p.c, exit); return nil })
	}
	p.mu.Lock()
	p.exiting = true
	children, cleanups, watchers := p.children, p.cleanups, p.watchers
	p.children, p.cleanups, p.watchers = nil, nil, nil
	p.mu.Unlock()
	for i := len(children) - 1; i >= 0; i-- {
		children[i].stop(Stopped, nil)
		<-children[i].done
	}
	for _, f := range cleanups {
		f()
	}
	p.cancel()
	r := p.r
	r.mu.Lock()
	if r.procs[p.path] == p {
		delete(r.procs, p.path)
	}
	r.mu.Unlock()
	if p.owner != nil {
		p.owner.forget(p)
		p.owner.mb.notify(exit)
	}
	if p.kind != KindProvider {
		r.remember(exit)
	}
	d := Down{Path: p.path, Outcome: exit.Outcome, Err: exit.Err, At: time.Now()}
	for _, w := range watchers {
		w(d)
	}
	close(p.done)
}

// forget drops a stopped child from p's children.
func (p *proc) forget(child *proc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range p.children {
		if c == child {
			p.children = append(p.children[:i], p.children[i+1:]...)
			return
		}
	}
}

// watch adds a local monitor; false if the actor is already exiting.
func (p *proc) watch(id uint64, f func(Down)) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exiting {
		return false
	}
	if p.watchers == nil {
		p.watchers = make(map[uint64]func(Down))
	}
	p.watchers[id] = f
	return true
}

func (p *proc) unwatch(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.watchers, id)
}

func (p *proc) info() ActorInfo {
	in := ActorInfo{Path: p.path, Kind: p.kind, State: StateRunning,
		MailboxDepth: p.mb.depth(), MailboxCap: p.mb.cap, Started: p.started}
	if p.owner != nil {
		in.Owner = p.owner.path
	}
	if p.stopping.Load() {
		in.State = StateStopping
	}
	if p.proto != nil {
		in.Protocol = p.proto.p.Name
		in.ProtocolState = *p.proto.current.Load()
	}
	return in
}

// Context is what an actor knows of itself and the runtime while it
// handles a message. It belongs to the actor's goroutine: use it only
// from Start, Receive and Stopped (the methods that take a ctx may be
// called from goroutines the actor starts, as long as the actor lives).
type Context struct {
	p        *proc
	sender   paths.Path
	stopSelf bool
}

// Self returns the actor's path.
func (c *Context) Self() paths.Path { return c.p.path }

// Owner returns the owner's path, zero for a top-level actor.
func (c *Context) Owner() paths.Path {
	if c.p.owner == nil {
		return paths.Path{}
	}
	return c.p.owner.path
}

// Sender returns the sender of the current message: an actor's path, or
// the node path of a sender that is not an actor. Across nodes only the
// node part is verified (msg proves the node's path).
func (c *Context) Sender() paths.Path { return c.sender }

// Ctx returns a context that ends when the actor stops.
func (c *Context) Ctx() context.Context { return c.p.ctx }

// Runtime returns the actor's runtime.
func (c *Context) Runtime() *Runtime { return c.p.r }

// ProtocolState returns the declared protocol's current state, "" without
// one.
func (c *Context) ProtocolState() string {
	if c.p.proto == nil {
		return ""
	}
	return *c.p.proto.current.Load()
}

// Stop stops the actor normally once the current message is handled.
func (c *Context) Stop() { c.stopSelf = true }

// Spawn starts a child: an actor owned by this one, at Self()/name.
func (c *Context) Spawn(name string, a Actor, opts ...SpawnOption) (paths.Path, error) {
	sc := spawnConfig{kind: KindActor}
	for _, o := range opts {
		o(&sc)
	}
	p, err := c.p.r.spawn(c.p.path, name, a, c.p, sc)
	if err != nil {
		return paths.Path{}, err
	}
	return p.path, nil
}

// Send is Runtime.Send with this actor as the sender.
func (c *Context) Send(ctx context.Context, to paths.Path, m any) error {
	return c.p.r.send(ctx, c.p.path, to, m)
}

// Call is Runtime.Call with this actor as the sender. A Call to the
// actor itself would wait for itself: it fails at once.
func (c *Context) Call(ctx context.Context, to paths.Path, m any) (any, error) {
	if to == c.p.path {
		return nil, fmt.Errorf("actors: call %s: an actor cannot call itself", to)
	}
	return c.p.r.call(ctx, c.p.path, to, m)
}

// Monitor watches the actor at target, here or on another node: this
// actor gets one Down notice when it stops (or is not there, or its node
// stops answering). cancel stops watching.
func (c *Context) Monitor(ctx context.Context, target paths.Path) (cancel func(), err error) {
	return c.p.r.monitor(ctx, target, c.p)
}
