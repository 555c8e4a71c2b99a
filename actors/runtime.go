package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/lifecycle"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
)

// Defaults.
const (
	DefaultMailbox      = 1024
	DefaultIdle         = time.Minute
	DefaultMonitorBound = 5 * time.Second
	DefaultSendWait     = 5 * time.Second
	DefaultRecentExits  = 4096
	recentExitTTL       = time.Minute
	endpointName        = ".actors" // the runtime's msg endpoint under the node path
)

// Option configures a Runtime.
type Option func(*config)

type config struct {
	log          *slog.Logger
	mailbox      int
	monitorBound time.Duration
	sendWait     time.Duration
	types        []TypeSpec
	ps           *pubsub.PubSub
	grants       []*caps.Writecap
}

// WithLogger sets the runtime's logger (default: discarded).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithMailbox sets the default mailbox capacity (default 1024 messages).
func WithMailbox(n int) Option { return func(c *config) { c.mailbox = n } }

// WithMonitorBound sets the bound on how long after a remote actor or its
// node dies its monitors hear of it (default 5 s). The runtime asks each
// watched node about its watched actors every bound/3, and gives each
// question bound/3 to be answered.
func WithMonitorBound(d time.Duration) Option { return func(c *config) { c.monitorBound = d } }

// WithSendWait bounds how long a Send or Call whose ctx has no deadline
// waits for room in a full mailbox (default 5 s); with a deadline it waits
// until the deadline.
func WithSendWait(d time.Duration) Option { return func(c *config) { c.sendWait = d } }

// WithTypes registers the message types that may travel to and from other
// nodes (see TypeOf). Local delivery needs no registration.
func WithTypes(ts ...TypeSpec) Option { return func(c *config) { c.types = append(c.types, ts...) } }

// WithPubSub lets actors subscribe to topics (Context.Subscribe).
func WithPubSub(ps *pubsub.PubSub) Option { return func(c *config) { c.ps = ps } }

// WithGrants gives the runtime's router writecaps for the nodes of
// other domains (see Runtime.AddGrant).
func WithGrants(ws ...*caps.Writecap) Option {
	return func(c *config) { c.grants = append(c.grants, ws...) }
}

// Runtime runs the actors of one node. Create it with New, stop it with
// Close (or by ending Serve's ctx). All methods are safe for concurrent
// use.
type Runtime struct {
	self paths.Path // the node path
	ep   paths.Path // the runtime's endpoint, self/.actors
	// actorPaths caches the actor paths of msg targets under ep.
	actorPaths *lru.Cache[paths.Path, paths.Path]
	router     *msg.Router // nil for a local-only runtime
	cfg        config
	log        *slog.Logger
	types      *typeRegistry

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	// mu guards procs, services and inc, and orders a spawn's life.Enter
	// with its entry in procs, so that Close, which collects procs after
	// life refuses new entries, sees every proc it must stop.
	mu       sync.RWMutex
	procs    map[paths.Path]*proc
	services map[paths.Path]*service
	inc      uint64

	life lifecycle.Group // every goroutine and operation of the runtime

	// xmu guards recent.
	xmu    sync.Mutex
	recent recentExits

	mon      monitors
	unhandle []func()
}

// New makes the runtime for the node at path node (/<root>/<name>).
// router may be nil for a local-only runtime; otherwise New registers the
// runtime's endpoint on it, node/.actors and every path under it (see
// docs/actors.md), and remote actors are reached through it: msg is the
// runtime's only transport. Close the runtime before the router.
func New(node paths.Path, router *msg.Router, opts ...Option) (*Runtime, error) {
	if node.Depth() != 1 {
		return nil, fmt.Errorf("actors: new: %q is not a node path /<root>/<node>", node)
	}
	cfg := config{mailbox: DefaultMailbox, monitorBound: DefaultMonitorBound, sendWait: DefaultSendWait}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	if cfg.mailbox <= 0 || cfg.monitorBound <= 0 || cfg.sendWait < 0 {
		return nil, fmt.Errorf("actors: new: mailbox %d, monitor bound %v and send wait %v must be positive", cfg.mailbox, cfg.monitorBound, cfg.sendWait)
	}
	types, err := newTypeRegistry(cfg.types)
	if err != nil {
		return nil, err
	}
	r := &Runtime{
		self: node, router: router, cfg: cfg, log: cfg.log.With("subsystem", "actors"), types: types,
		procs: make(map[paths.Path]*proc), services: make(map[paths.Path]*service),
	}
	r.ep, err = node.Join(endpointName)
	if err != nil {
		return nil, fmt.Errorf("actors: new: %w", err)
	}
	r.actorPaths, _ = lru.New[paths.Path, paths.Path](pathCacheSize)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.mon.init()
	r.recent.init(DefaultRecentExits)
	if router != nil {
		unwatch, err := router.Handle(r.ep, r.handleWatch)
		if err != nil {
			return nil, fmt.Errorf("actors: new: register endpoint %s: %w", r.ep, err)
		}
		unactors, err := router.HandleTreeAsync(r.ep, r.handleActorAsync)
		if err != nil {
			unwatch()
			return nil, fmt.Errorf("actors: new: register the paths under endpoint %s: %w", r.ep, err)
		}
		r.unhandle = []func(){unwatch, unactors}
		for _, w := range cfg.grants {
			router.AddGrant(w)
		}
	}
	return r, nil
}

func (r *Runtime) closeRouter() {
	for _, f := range r.unhandle {
		f()
	}
}

// AddGrant gives the runtime's router a writecap that lets this node's
// actors reach the actors of another domain's nodes: msg attaches it to
// every message to a path it covers (msg.Router.AddGrant, which this
// is). The receiver checks that it is issued under its root, covers the
// target (a writecap for the node path covers all its actors) and is
// held by this node's principal. A nil writecap, or a runtime without a
// router, ignores it. Safe for concurrent use.
func (r *Runtime) AddGrant(w *caps.Writecap) {
	if w == nil || r.router == nil {
		return
	}
	r.router.AddGrant(w)
}

// Node returns the runtime's node path.
func (r *Runtime) Node() paths.Path { return r.self }

// Serve runs until ctx ends or Close is called, then closes the runtime
// (stopping every actor) and returns nil. The runtime works from New on;
// Serve only ties its life to ctx.
func (r *Runtime) Serve(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-r.ctx.Done():
	}
	r.Close()
	return nil
}

// Close stops every actor — owners after the actors they own, each
// getting its Exit notices — removes the runtime's endpoint, stops
// monitors, timers and subscriptions, and waits for every goroutine of
// the runtime. Messages still queued are dropped; their callers get
// ErrStopped. It is idempotent and safe for concurrent use; it returns
// nil.
func (r *Runtime) Close() error {
	r.life.Close(func() {
		r.mu.Lock()
		var top []*proc
		for _, p := range r.procs {
			if p.owner == nil {
				top = append(top, p)
			}
		}
		r.mu.Unlock()
		r.closeRouter()
		// Newest first, as an owner stops the actors it owns.
		slices.SortFunc(top, func(a, b *proc) int { return int(b.inc - a.inc) })
		for _, p := range top {
			p.stop(Stopped, nil)
		}
		for _, p := range top {
			<-p.done
		}
		r.cancel()
	})
	return nil
}

// SpawnOption configures one actor.
type SpawnOption func(*spawnConfig)

type spawnConfig struct {
	owner    paths.Path
	mailbox  int
	protocol *Protocol
	kind     Kind
	idle     time.Duration
	svc      *service
}

// WithOwner makes the actor at owner (a live actor of this node) the new
// actor's owner: the new actor's path is under the owner's, the owner gets
// its Exit notice, and it is stopped when the owner stops.
func WithOwner(owner paths.Path) SpawnOption { return func(s *spawnConfig) { s.owner = owner } }

// WithMailboxSize sets this actor's mailbox capacity.
func WithMailboxSize(n int) SpawnOption { return func(s *spawnConfig) { s.mailbox = n } }

// WithProtocol declares the actor's protocol; every message is checked
// against it (see Protocol).
func WithProtocol(p *Protocol) SpawnOption { return func(s *spawnConfig) { s.protocol = p } }

// Spawn starts actor a at /<root>/<node>/<name>, or under its owner's path
// (WithOwner). name must be one valid path component not starting with
// ".". It returns the actor's path once the actor is registered (its Start,
// if any, runs on its own goroutine). Errors: ErrBadName, ErrExists,
// ErrNoActor (the owner is not a live actor here), ErrClosed, a bad
// protocol. Safe for concurrent use.
func (r *Runtime) Spawn(ctx context.Context, name string, a Actor, opts ...SpawnOption) (paths.Path, error) {
	sc := spawnConfig{kind: KindActor}
	for _, o := range opts {
		o(&sc)
	}
	if err := ctx.Err(); err != nil {
		return paths.Path{}, fmt.Errorf("actors: spawn %q: %w", name, err)
	}
	var owner *proc
	parent := r.self
	if !sc.owner.IsZero() {
		r.mu.RLock()
		owner = r.procs[sc.owner]
		r.mu.RUnlock()
		if owner == nil || owner.kind != KindActor {
			return paths.Path{}, fmt.Errorf("actors: spawn %q: owner %s is not a live actor of this node: %w", name, sc.owner, ErrNoActor)
		}
		parent = owner.path
	}
	p, err := r.spawn(parent, name, a, owner, sc)
	if err != nil {
		return paths.Path{}, err
	}
	return p.path, nil
}

func checkName(name string) error {
	if err := paths.ValidComponent(name); err != nil {
		return fmt.Errorf("%w: %w", ErrBadName, err)
	}
	if strings.HasPrefix(name, ".") {
		return fmt.Errorf("%w: names starting with \".\" are reserved", ErrBadName)
	}
	return nil
}

// spawn registers and starts a proc at parent/name.
func (r *Runtime) spawn(parent paths.Path, name string, a Actor, owner *proc, sc spawnConfig) (*proc, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("actors: spawn %q under %s: %w", name, parent, err)
	}
	if a == nil {
		return nil, fmt.Errorf("actors: spawn %q: nil actor", name)
	}
	path, err := parent.Join(name)
	if err != nil {
		return nil, fmt.Errorf("actors: spawn %q under %s: %w: %w", name, parent, ErrBadName, err)
	}
	return r.spawnAt(path, a, owner, sc)
}

func (r *Runtime) spawnAt(path paths.Path, a Actor, owner *proc, sc spawnConfig) (*proc, error) {
	var pr *protoRun
	if sc.protocol != nil {
		if err := sc.protocol.compile(); err != nil {
			return nil, err
		}
		pr = newProtoRun(sc.protocol)
	}
	if sc.mailbox <= 0 {
		sc.mailbox = r.cfg.mailbox
	}
	p := &proc{r: r, path: path, owner: owner, kind: sc.kind, actor: a, idle: sc.idle, svc: sc.svc,
		done: make(chan struct{}), stopCh: make(chan struct{}), started: time.Now(), proto: pr}
	p.mb.init(sc.mailbox, pr)
	p.c = Context{p: p}
	r.mu.Lock()
	if !r.life.Enter() {
		r.mu.Unlock()
		return nil, fmt.Errorf("actors: spawn %s: %w", path, ErrClosed)
	}
	if _, ok := r.procs[path]; ok {
		r.life.Leave()
		r.mu.Unlock()
		return nil, fmt.Errorf("actors: spawn %s: %w", path, ErrExists)
	}
	if _, ok := r.services[path]; ok && sc.kind != KindProvider {
		r.life.Leave()
		r.mu.Unlock()
		return nil, fmt.Errorf("actors: spawn %s: a service is registered there: %w", path, ErrExists)
	}
	if owner != nil && !owner.adopt(p) {
		r.life.Leave()
		r.mu.Unlock()
		return nil, fmt.Errorf("actors: spawn %s: owner %s is stopping: %w", path, owner.path, ErrNoActor)
	}
	r.inc++
	p.inc = r.inc
	r.procs[path] = p
	r.mu.Unlock()
	p.ctx, p.cancel = context.WithCancel(r.ctx)
	go p.run()
	return p, nil
}

// Stop stops the actor at p (of this node) and waits, until ctx ends,
// for it to finish: its current message, its Stopped hook, and the actors
// it owns. Its owner gets an Exit with outcome Stopped. Errors: ErrNoActor,
// ctx's error. Safe for concurrent use.
func (r *Runtime) Stop(ctx context.Context, p paths.Path) error {
	r.mu.RLock()
	pr := r.procs[p]
	r.mu.RUnlock()
	if pr == nil {
		return fmt.Errorf("actors: stop %s: %w", p, ErrNoActor)
	}
	pr.stop(Stopped, nil)
	select {
	case <-pr.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("actors: stop %s: %w", p, ctx.Err())
	}
}

// isLocal reports whether p is on this runtime's node.
func (r *Runtime) isLocal(p paths.Path) bool { return p.HasPrefix(r.self) }

// Send delivers m to the actor at path to, fire and forget: locally m
// itself is queued (no copy, no encoding); to another node it is encoded
// (its type must be registered, WithTypes) and sent as one msg Send.
// Locally, Send returns once m is queued in the target's mailbox; to
// another node, once msg has taken it (see "Remote flow control" in the
// package doc: a failure at the receiving node after that is logged
// there, and a refusal by its router surfaces as the error of a later
// Send or Call to the same actor). A full mailbox pushes back: Send
// waits for room (remotely: for msg's credit for the actor) until ctx's
// deadline (WithSendWait without one) and then fails with
// ErrMailboxFull; nothing is dropped silently. Errors: ErrNoActor,
// ErrMailboxFull, ErrProtocol, ErrStopped, ErrUnregisteredType,
// ErrRemote, ErrClosed, msg's errors for the network, ctx's error. Safe
// for concurrent use.
func (r *Runtime) Send(ctx context.Context, to paths.Path, m any) error {
	return r.send(ctx, r.self, to, m)
}

// Call delivers m to the actor at path to and waits, until ctx ends, for
// its reply. ctx's deadline travels with the message: a Call whose
// deadline has passed by the time the actor would handle it is dropped
// with context.DeadlineExceeded. Errors: those of Send, *ActorError when
// the actor failed or panicked on m, ErrProtocol for a reply of the wrong
// type, context.DeadlineExceeded naming the node for a remote target that
// did not answer. Safe for concurrent use.
func (r *Runtime) Call(ctx context.Context, to paths.Path, m any) (any, error) {
	return r.call(ctx, r.self, to, m)
}

func (r *Runtime) send(ctx context.Context, from, to paths.Path, m any) error {
	if m == nil {
		return fmt.Errorf("actors: send %s: %w", to, errNilMessage)
	}
	if !r.isLocal(to) {
		return r.remoteSend(ctx, from, to, m)
	}
	return r.deliverLocal(ctx, to, envelope{msg: m, from: from}, "send")
}

// deliverLocal queues e for the local target to, activating a service
// provider if need be.
func (r *Runtime) deliverLocal(ctx context.Context, to paths.Path, e envelope, op string) error {
	for range 8 {
		p, err := r.resolve(to)
		if err != nil {
			return fmt.Errorf("actors: %s %s: %w", op, to, err)
		}
		err = p.mb.push(ctx, e, false)
		if err == ErrMailboxFull { // only now pay for a bounded wait
			wctx, cancel := r.waitCtx(ctx)
			err = p.mb.push(wctx, e, true)
			cancel()
		}
		if err == nil {
			return nil
		}
		if err == errRetry {
			<-p.done // deactivated provider: let it go, then activate a new one
			continue
		}
		if errors.Is(err, ErrMailboxFull) {
			if ctx.Err() != nil {
				return fmt.Errorf("actors: %s %s: mailbox of %d stayed full: %w: %w", op, to, p.mb.cap, ErrMailboxFull, ctx.Err())
			}
			return fmt.Errorf("actors: %s %s: mailbox of %d stayed full: %w", op, to, p.mb.cap, ErrMailboxFull)
		}
		return fmt.Errorf("actors: %s %s: %w", op, to, err)
	}
	return fmt.Errorf("actors: %s %s: provider kept deactivating: %w", op, to, ErrStopped)
}

// waitCtx bounds a wait for mailbox room: ctx's deadline, or sendWait.
func (r *Runtime) waitCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, r.cfg.sendWait)
}

func (r *Runtime) call(ctx context.Context, from, to paths.Path, m any) (any, error) {
	if m == nil {
		return nil, fmt.Errorf("actors: call %s: %w", to, errNilMessage)
	}
	if !r.isLocal(to) {
		return r.remoteCall(ctx, from, to, m)
	}
	ch := replyPool.Get().(chan result)
	dl, _ := ctx.Deadline()
	if err := r.deliverLocal(ctx, to, envelope{msg: m, from: from, reply: ch, dl: dl}, "call"); err != nil {
		replyPool.Put(ch)
		return nil, err
	}
	select {
	case res := <-ch:
		replyPool.Put(ch)
		return res.v, res.err
	case <-ctx.Done():
		// ch may still get its answer: leave it to the collector.
		return nil, fmt.Errorf("actors: call %s: the actor did not answer in time: %w", to, ctx.Err())
	}
}

var replyPool = sync.Pool{New: func() any { return make(chan result, 1) }}

// resolve finds the proc for a local path: a running actor or provider,
// or a new provider of the service registered at the path or an ancestor.
func (r *Runtime) resolve(to paths.Path) (*proc, error) {
	r.mu.RLock()
	p := r.procs[to]
	closed := r.life.Closed()
	r.mu.RUnlock()
	if p != nil {
		return p, nil
	}
	if closed {
		return nil, ErrClosed
	}
	svc := r.serviceFor(to)
	if svc == nil {
		return nil, fmt.Errorf("no actor is running and no service is registered there (spawn one or RegisterService): %w", ErrNoActor)
	}
	return svc.activate(to)
}

// List describes every actor, service and provider of this node, sorted
// by path. Safe for concurrent use.
func (r *Runtime) List() []ActorInfo {
	r.mu.RLock()
	ps := make([]*proc, 0, len(r.procs))
	for _, p := range r.procs {
		ps = append(ps, p)
	}
	ss := make([]*service, 0, len(r.services))
	for _, s := range r.services {
		ss = append(ss, s)
	}
	r.mu.RUnlock()
	out := make([]ActorInfo, 0, len(ps)+len(ss))
	for _, p := range ps {
		out = append(out, p.info())
	}
	for _, s := range ss {
		out = append(out, ActorInfo{Path: s.path, Kind: KindService, State: StateRunning, MailboxCap: s.spec.Mailbox})
	}
	slices.SortFunc(out, func(a, b ActorInfo) int { return strings.Compare(a.Path.String(), b.Path.String()) })
	return out
}
