package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
)

// Files is what the runtime needs of the file system: the module's bytes,
// and the module's read_file and write_file. The daemon adapts its
// fsys.FS (FSFiles does).
type Files interface {
	// ReadFile returns the whole file at p.
	ReadFile(ctx context.Context, p paths.Path) ([]byte, error)
	// WriteFile replaces the file at p with data and returns once it is
	// durable.
	WriteFile(ctx context.Context, p paths.Path, data []byte) error
}

// Config configures a Runtime.
type Config struct {
	// Actors runs the modules' actors (required); modules run at
	// /<root>/<node>/<name> under its node.
	Actors *actors.Runtime
	// Files holds the modules and serves read_file and write_file
	// (required).
	Files Files
	// PubSub serves publish; nil: publish and subscribe fail with
	// CodeUnavailable. Subscriptions need the actors runtime to have it
	// too (actors.WithPubSub).
	PubSub *pubsub.PubSub
	// Node is this node's path; zero: Actors.Node(). It must be the
	// actors runtime's node.
	Node paths.Path
	// CacheDir keeps wazero's compiled code across processes; "": in
	// memory only.
	CacheDir string
	// Verifier checks manifests' writecaps; nil: a new one.
	Verifier *caps.Verifier
	// Log receives the runtime's events; nil discards them.
	Log *slog.Logger
	// Clock stamps times in InstanceInfo; nil: time.Now. (Back-off waits
	// use real timers.)
	Clock func() time.Time
	// LogLines is how many output lines are kept per instance
	// (default DefaultLogLines).
	LogLines int
	// MaxFile bounds read_file and write_file (default 16 MiB).
	MaxFile int
}

// MaxMessage bounds a message payload or reply crossing the ABI: the
// actors runtime's largest remote message.
const MaxMessage = 1 << 20

// Errors callers branch on (with ErrManifest, ErrSignature, ErrRights).
var (
	// ErrNotThisNode: the manifest lists nodes and this node is not one.
	ErrNotThisNode = errors.New("wasm: the manifest does not run on this node")
	// ErrExists: an instance of that name is running here.
	ErrExists = errors.New("wasm: an instance of that name is running")
	// ErrNoInstance: no instance of that name.
	ErrNoInstance = errors.New("wasm: no such instance")
	// ErrClosed: the runtime is closed.
	ErrClosed = errors.New("wasm: runtime closed")
	// ErrModule: the module cannot run here: it does not compile, it is
	// not a reactor with bt_handle, or it exceeds its memory limit at
	// start.
	ErrModule = errors.New("wasm: bad module")
)

// Instance states.
const (
	StateStarting = "starting" // loading, compiling, instantiating
	StateRunning  = "running"
	StateBackoff  = "backoff" // exited; waiting to restart
	StateStopped  = "stopped" // exited cleanly with no restart, or Stop
	StateFailed   = "failed"  // failed and the policy gives up
)

// InstanceInfo describes one instance, for Instances (and `bt ps
// --json`).
type InstanceInfo struct {
	Name      string     `json:"name"`
	Path      paths.Path `json:"path"`
	Module    paths.Path `json:"module"`
	ModuleCID string     `json:"module_cid,omitempty"`
	State     string     `json:"state"`
	Restarts  int        `json:"restarts"`
	LastError string     `json:"last_error,omitempty"`
	Started   time.Time  `json:"started,omitzero"` // the current (or last) incarnation's start
}

// Runtime runs Wasm modules as actors. Every method is safe for
// concurrent use.
type Runtime struct {
	cfg      Config
	log      *slog.Logger
	node     paths.Path
	verifier *caps.Verifier
	cache    wazero.CompilationCache
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	compileMu sync.Mutex
	// guarded by compileMu:
	engines  map[uint32]*engine // by memory limit in pages
	compiled map[compiledKey]wazero.CompiledModule

	mu sync.Mutex
	// guarded by mu:
	insts  map[string]*instance
	closed bool
}

type compiledKey struct {
	cid   cid.Cid
	pages uint32
}

// engine is one wazero runtime: one per memory limit, since wazero sets
// the limit per runtime; they share the compilation cache.
type engine struct {
	rt wazero.Runtime
}

// New makes a Runtime. It fails without Actors or Files, or when
// CacheDir cannot be used.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if cfg.Actors == nil || cfg.Files == nil {
		return nil, errors.New("wasm: new: Config.Actors and Config.Files are required")
	}
	if cfg.Node.IsZero() {
		cfg.Node = cfg.Actors.Node()
	}
	if cfg.Node != cfg.Actors.Node() {
		return nil, fmt.Errorf("wasm: new: node %s is not the actors runtime's node %s", cfg.Node, cfg.Actors.Node())
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.LogLines <= 0 {
		cfg.LogLines = DefaultLogLines
	}
	if cfg.MaxFile <= 0 {
		cfg.MaxFile = 16 << 20
	}
	if cfg.MaxFile > 1<<30 {
		cfg.MaxFile = 1 << 30
	}
	r := &Runtime{cfg: cfg, node: cfg.Node, log: cfg.Log, verifier: cfg.Verifier,
		engines: make(map[uint32]*engine), compiled: make(map[compiledKey]wazero.CompiledModule),
		insts: make(map[string]*instance)}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r.log = r.log.With("subsystem", "wasm")
	if r.verifier == nil {
		r.verifier = caps.NewVerifier()
	}
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm: new: cache dir: %w", err)
		}
		r.cache = c
	} else {
		r.cache = wazero.NewCompilationCache()
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Close stops every instance, waits for them and releases the compiled
// modules. Idempotent.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	insts := make([]*instance, 0, len(r.insts))
	for _, in := range r.insts {
		insts = append(insts, in)
	}
	r.mu.Unlock()
	for _, in := range insts {
		in.requestStop()
	}
	r.cancel()
	r.wg.Wait()
	r.compileMu.Lock()
	defer r.compileMu.Unlock()
	var errs []error
	for _, e := range r.engines {
		errs = append(errs, e.rt.Close(context.Background()))
	}
	r.engines, r.compiled = nil, nil
	errs = append(errs, r.cache.Close(context.Background()))
	return errors.Join(errs...)
}

// withDefaults returns m with its zero fields set to their defaults.
func withDefaults(m Manifest) Manifest {
	if m.Restart.Mode == "" {
		m.Restart.Mode = RestartOnFailure
	}
	if m.Restart.Backoff == 0 {
		m.Restart.Backoff = DefaultBackoff
	}
	if m.Restart.MaxBackoff == 0 {
		m.Restart.MaxBackoff = DefaultMaxBackoff
	}
	if m.Restart.MaxBackoff < m.Restart.Backoff {
		m.Restart.MaxBackoff = m.Restart.Backoff
	}
	if m.MemoryLimit == 0 {
		m.MemoryLimit = DefaultMemoryLimit
	}
	if m.Deadline == 0 {
		m.Deadline = DefaultDeadline
	}
	return m
}

// pages converts a memory limit in bytes to wasm pages, rounding up.
func pages(limit uint64) uint32 {
	p := (limit + 65535) / 65536
	if p > 65536 {
		p = 65536
	}
	return uint32(p)
}

// Start verifies sm (signature; the signer's writecap covers every right
// and the actor path on this node), and starts the module as the actor
// /<node>/<Name>: in the background it loads the module
// (Files.ReadFile(sm.Module)), compiles it (cached by the CID of its
// bytes and the memory limit), instantiates it and spawns the actor,
// supervised by the manifest's restart policy with exponential back-off.
// It returns once the instance is registered; what happens next shows in
// Instances, Logs and WaitRunning. Errors: ErrManifest, ErrSignature,
// ErrRights, ErrNotThisNode, ErrExists (a running instance has the name;
// a stopped or failed one is replaced), ErrClosed.
func (r *Runtime) Start(ctx context.Context, sm *SignedManifest) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wasm: start: %w", err)
	}
	if sm == nil {
		return fmt.Errorf("wasm: start: %w: nil manifest", ErrManifest)
	}
	if err := sm.Validate(); err != nil {
		return fmt.Errorf("wasm: start %s: %w", sm.Name, err)
	}
	if len(sm.Nodes) > 0 {
		found := false
		for _, n := range sm.Nodes {
			found = found || n == r.node
		}
		if !found {
			return fmt.Errorf("wasm: start %s on %s: %w", sm.Name, r.node, ErrNotThisNode)
		}
	}
	if err := sm.verify(r.verifier, r.node); err != nil {
		return fmt.Errorf("wasm: start %s: %w", sm.Name, err)
	}
	path, err := r.node.Join(sm.Name)
	if err != nil {
		return fmt.Errorf("wasm: start %s: %w: %w", sm.Name, ErrManifest, err)
	}
	in := newInstance(r, sm, path)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fmt.Errorf("wasm: start %s: %w", sm.Name, ErrClosed)
	}
	if old, ok := r.insts[sm.Name]; ok {
		select {
		case <-old.done:
		default:
			r.mu.Unlock()
			return fmt.Errorf("wasm: start %s: %w", sm.Name, ErrExists)
		}
		in.logs = old.logs // the log outlives a replaced instance
		in.stdout.r, in.stderr.r = old.logs, old.logs
	}
	r.insts[sm.Name] = in
	r.wg.Add(1)
	r.mu.Unlock()
	r.log.Info("starting module", "name", sm.Name, "module", sm.Module, "signer", sm.Signer)
	go in.supervise()
	return nil
}

// Stop stops the instance name (its actor, any pending restart) and
// forgets it, waiting until ctx ends. Errors: ErrNoInstance, ctx's error.
func (r *Runtime) Stop(ctx context.Context, name string) error {
	r.mu.Lock()
	in := r.insts[name]
	r.mu.Unlock()
	if in == nil {
		return fmt.Errorf("wasm: stop %q: %w", name, ErrNoInstance)
	}
	in.requestStop()
	select {
	case <-in.done:
	case <-ctx.Done():
		return fmt.Errorf("wasm: stop %q: %w", name, ctx.Err())
	}
	r.mu.Lock()
	if r.insts[name] == in {
		delete(r.insts, name)
	}
	r.mu.Unlock()
	return nil
}

// Instances lists the instances, running or not (a stopped one is
// forgotten by Stop; a failed one stays until replaced), sorted by name.
func (r *Runtime) Instances() []InstanceInfo {
	r.mu.Lock()
	insts := make([]*instance, 0, len(r.insts))
	for _, in := range r.insts {
		insts = append(insts, in)
	}
	r.mu.Unlock()
	out := make([]InstanceInfo, 0, len(insts))
	for _, in := range insts {
		out = append(out, in.info())
	}
	sortInfos(out)
	return out
}

// Instance returns the instance name's info.
func (r *Runtime) Instance(name string) (InstanceInfo, bool) {
	r.mu.Lock()
	in := r.insts[name]
	r.mu.Unlock()
	if in == nil {
		return InstanceInfo{}, false
	}
	return in.info(), true
}

// Logs returns the last lines the instance name wrote (stdout, stderr,
// log calls, and the runtime's notes on its exits), oldest first; with
// follow, next carries each further line until cancel (a reader too slow
// loses lines rather than block the module). Unknown name: nil lines, a
// nil channel.
func (r *Runtime) Logs(name string, follow bool) (lines []string, next <-chan string, cancel func()) {
	r.mu.Lock()
	in := r.insts[name]
	r.mu.Unlock()
	if in == nil {
		return nil, nil, func() {}
	}
	return in.logs.snapshot(follow)
}

// WaitRunning waits until the instance name runs (nil), gives up
// (the error: its last error), or ctx ends.
func (r *Runtime) WaitRunning(ctx context.Context, name string) error {
	r.mu.Lock()
	in := r.insts[name]
	r.mu.Unlock()
	if in == nil {
		return fmt.Errorf("wasm: wait %q: %w", name, ErrNoInstance)
	}
	for {
		in.mu.Lock()
		state, last, ch := in.state, in.lastErr, in.changed
		in.mu.Unlock()
		switch state {
		case StateRunning:
			return nil
		case StateFailed, StateStopped:
			return fmt.Errorf("wasm: %s %s: %s", name, state, last)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wasm: wait %q (%s: %s): %w", name, state, last, ctx.Err())
		}
	}
}

// engineFor returns the engine for a memory limit; called with compileMu.
func (r *Runtime) engineFor(pg uint32) (*engine, error) {
	if r.engines == nil {
		return nil, ErrClosed
	}
	if e, ok := r.engines[pg]; ok {
		return e, nil
	}
	cfg := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(pg).
		WithCompilationCache(r.cache)
	rt := wazero.NewRuntimeWithConfig(r.ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(r.ctx, rt); err != nil {
		rt.Close(context.Background())
		return nil, fmt.Errorf("wasm: wasi: %w", err)
	}
	if err := instantiateHost(r.ctx, rt); err != nil {
		rt.Close(context.Background())
		return nil, fmt.Errorf("wasm: host module: %w", err)
	}
	e := &engine{rt: rt}
	r.engines[pg] = e
	return e, nil
}

// compile returns the compiled module for data under a memory limit,
// from the cache when it is there.
func (r *Runtime) compile(ctx context.Context, data []byte, limit uint64) (*engine, wazero.CompiledModule, cid.Cid, error) {
	id := blocks.Sum(data)
	pg := pages(limit)
	r.compileMu.Lock()
	defer r.compileMu.Unlock()
	e, err := r.engineFor(pg)
	if err != nil {
		return nil, nil, id, err
	}
	key := compiledKey{id, pg}
	if c, ok := r.compiled[key]; ok {
		return e, c, id, nil
	}
	c, err := e.rt.CompileModule(ctx, data)
	if err != nil {
		return nil, nil, id, fmt.Errorf("%w: compile %s: %w", ErrModule, id, err)
	}
	r.compiled[key] = c
	return e, c, id, nil
}
