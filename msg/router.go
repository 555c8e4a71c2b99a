package msg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/lifecycle"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// Defaults and fixed timings.
const (
	DefaultMaxMessage     = 64 << 20
	DefaultMaxInbound     = 1024
	DefaultMaxPeerStreams = 32

	// headerTimeout bounds how long a receiver waits for a request header
	// once the stream is open.
	headerTimeout = 10 * time.Second
	// authWait bounds how long a receiver waits for the sender's proof of
	// path, which may still be in flight on a new connection.
	authWait = 10 * time.Second
	// queueWait bounds how long a message waits for one of MaxInbound
	// turns at the receiver before it is refused with ErrBusy.
	queueWait = 10 * time.Second
	// idleTimeout bounds each read and write of a message that has no
	// deadline, so a stalled peer cannot hold a turn for ever.
	idleTimeout = time.Minute
)

// Config configures a Router. Validate fills in defaults for zero fields.
type Config struct {
	// MaxMessage is the largest payload this router sends or accepts, and
	// the largest reply it accepts or returns (default 64 MiB). Larger
	// ones are refused with ErrTooLarge: by the sender before anything is
	// sent, by the receiver on the header.
	MaxMessage int64
	// MaxInbound bounds the messages whose handlers run at once (default
	// 1024), in-process ones included. More wait for a turn, each on its
	// own stream (libp2p's resource manager bounds those), for up to 10 s,
	// then are refused with ErrBusy.
	MaxInbound int
	// MaxPeerStreams bounds this router's messages in flight to one peer
	// (default 32); more wait for a turn, until their context ends. Keep it
	// under the receiver's libp2p per-peer stream limit for ProtocolID
	// (64 inbound by default).
	MaxPeerStreams int
	// Verifier checks the writecaps of senders from other domains; default
	// a new one. Share one to share its cache.
	Verifier *caps.Verifier
	// Log receives the router's log; default: discarded.
	Log *slog.Logger
}

// Validate fills in defaults and checks the values. It is idempotent.
func (c *Config) Validate() error {
	if c.MaxMessage == 0 {
		c.MaxMessage = DefaultMaxMessage
	}
	if c.MaxInbound == 0 {
		c.MaxInbound = DefaultMaxInbound
	}
	if c.MaxPeerStreams == 0 {
		c.MaxPeerStreams = DefaultMaxPeerStreams
	}
	if c.Verifier == nil {
		c.Verifier = caps.NewVerifier()
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.MaxMessage < 0 || c.MaxInbound < 0 || c.MaxPeerStreams < 0 {
		return fmt.Errorf("msg: config: negative limit: max message %d, max inbound %d, max peer streams %d",
			c.MaxMessage, c.MaxInbound, c.MaxPeerStreams)
	}
	return nil
}

// Message is one message as its handler sees it.
type Message struct {
	// From is the sender's verified node path: the path its node proved
	// on the connection (p2p auth), or this node's path in process. Never
	// a path the sender merely claims.
	From paths.Path
	// FromNode is the principal of the sender's node key, as its host
	// certificate proved it (what writecaps for it are issued to).
	FromNode paths.ID
	To       paths.Path // the target path: the handler's own
	Call     bool       // a Call (a reply is sent back) rather than a Send
	Size     int64      // the payload's size in bytes
	// Body streams exactly Size bytes of payload, then io.EOF; a sender
	// that stops early makes it fail with io.ErrUnexpectedEOF. It is read
	// straight from the stream (or, in process, from the caller's reader:
	// no copy) and is never buffered whole. Valid until the handler
	// returns; not safe for concurrent reads.
	Body io.Reader
	// Deadline is the caller's deadline, zero if none. The handler's ctx
	// carries it too.
	Deadline time.Time
}

// Handler handles the messages to one path. For a Call, reply is sent back
// to the caller, and a non-nil err reaches the caller as a *RemoteError
// instead; for a Send both are dropped (an error is logged). ctx ends at
// the caller's deadline or when the Router closes. Handlers run
// concurrently, up to Config.MaxInbound at once.
type Handler func(ctx context.Context, m *Message) (reply []byte, err error)

// Router sends messages to paths and delivers those for this node's paths
// to their handlers. Create it with New; stop it with Close. All methods
// are safe for concurrent use.
type Router struct {
	node     *p2p.Node
	host     host.Host
	self     paths.Path
	domain   paths.Path // self's root path
	cfg      Config
	log      *slog.Logger
	verifier *caps.Verifier
	inbound  chan struct{} // a token per running handler: MaxInbound turns

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	// hmu guards handlers and trees.
	hmu         sync.RWMutex
	handlers    map[paths.Path]*endpoint   // Handle: the exact path
	trees       map[paths.Path]*endpoint   // HandleTree: the paths under it
	groups      map[paths.Path]*group      // queue groups at this node's paths
	memberships map[paths.Path]*membership // this node's memberships of others' groups

	// gmu guards grants.
	gmu    sync.Mutex
	grants []*caps.Writecap

	// pmu guards peers.
	pmu   sync.Mutex
	peers map[peer.ID]*peerGate

	// lmu guards links: the sessions to other nodes, by node path.
	lmu   sync.RWMutex
	links map[paths.Path]*link

	// smu guards inSessions: the inbound sessions of each peer.
	smu        sync.Mutex
	inSessions map[peer.ID]int

	// umu guards failures: the sends that failed after Send returned, by
	// target, reported by the next Send there.
	umu      sync.Mutex
	failures map[paths.Path]*UndeliveredError
	nfailed  atomic.Int32 // len(failures), read without umu

	// nodes remembers the peer that proved each node path, to skip
	// p2p.Connect while that peer stays verified and connected.
	nodes sync.Map // paths.Path → peer.ID

	life lifecycle.Group // every operation and goroutine in progress
}

// endpoint is one registered handler; its identity tells a stale remove
// function from the current registration.
type endpoint struct {
	h     Handler
	async AsyncHandler // set for HandleTreeAsync; h then waits for it
}

// AsyncHandler handles the messages to a subtree without holding a
// goroutine of msg while a message waits: it returns promptly and calls
// done, exactly once, from any goroutine, when the message is handled —
// for a Call with its reply (a non-nil err reaches the caller as a
// *RemoteError), for a Send with whatever it likes, ignored. m.Body is
// valid until the handler returns, not until done. On a session a call's
// handler runs on the goroutine that reads the session, so it must not
// block; a send's may block (sends to one path are handed over one at a
// time, in order, each once the one before called done). For a session's
// call ctx ends when the session or the Router ends, not at the caller's
// deadline, which is m.Deadline (a timer per message would cost more
// than the message); elsewhere it also ends at the deadline.
type AsyncHandler func(ctx context.Context, m *Message, done func(reply []byte, err error))

// syncHandler is a Handler that calls a and waits for its done.
func syncHandler(a AsyncHandler) Handler {
	return func(ctx context.Context, m *Message) ([]byte, error) {
		w := &waiter{}
		a(ctx, m, w.done)
		w.mu.Lock()
		if w.finished { // done was called before a returned: no channel
			w.mu.Unlock()
			return w.reply, w.err
		}
		w.ch = make(chan struct{})
		w.mu.Unlock()
		select {
		case <-w.ch:
			return w.reply, w.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// waiter takes an AsyncHandler's answer for syncHandler.
type waiter struct {
	mu       sync.Mutex
	finished bool
	reply    []byte
	err      error
	ch       chan struct{} // closed by done once someone waits
}

func (w *waiter) done(reply []byte, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished {
		return
	}
	w.finished, w.reply, w.err = true, reply, err
	if w.ch != nil {
		close(w.ch)
	}
}

// peerGate holds the turns of one peer: a token per message in flight to
// it. refs counts the users, so that an idle gate is dropped.
type peerGate struct {
	slots chan struct{}
	refs  int // guarded by Router.pmu
}

// New makes a Router for node and registers ProtocolID's stream handler on
// its host; make one Router per node (a second one takes the protocol
// over). It checks cfg (Config.Validate) first. The node stays the
// caller's: close the Router before it.
func New(node *p2p.Node, cfg Config) (*Router, error) {
	if node == nil {
		return nil, errors.New("msg: new router: nil node")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Router{
		node: node, host: node.Host(), self: node.Path(), domain: node.Path().RootPath(), cfg: cfg,
		log: cfg.Log.With("subsystem", "msg"), verifier: cfg.Verifier,
		inbound:     make(chan struct{}, cfg.MaxInbound),
		handlers:    make(map[paths.Path]*endpoint),
		trees:       make(map[paths.Path]*endpoint),
		groups:      make(map[paths.Path]*group),
		memberships: make(map[paths.Path]*membership),
		peers:       make(map[peer.ID]*peerGate),
		links:       make(map[paths.Path]*link),
		inSessions:  make(map[peer.ID]int),
		failures:    make(map[paths.Path]*UndeliveredError),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	ep, err := r.self.Join(groupsName)
	if err != nil {
		return nil, fmt.Errorf("msg: new router: %w", err)
	}
	r.handlers[ep] = &endpoint{h: r.handleGroups}
	r.host.SetStreamHandler(ProtocolID, r.handleStream)
	r.host.SetStreamHandler(SessionProtocol, r.handleSession)
	return r, nil
}

// Close stops the Router: it removes the stream handler, refuses new
// messages with ErrClosed, cancels the contexts of running handlers and
// resets the streams of messages in flight, and waits until every handler
// has returned and every operation has ended. It is idempotent and safe
// to call concurrently; it always returns nil.
func (r *Router) Close() error {
	r.life.Close(func() {
		r.host.RemoveStreamHandler(ProtocolID)
		r.host.RemoveStreamHandler(SessionProtocol)
		r.cancel()
	})
	return nil
}

// Handle registers h for the exact path p, which must be this node's path
// or under it (ErrNotOwnPath otherwise); a path has at most one handler
// (ErrExists). Messages go to the handler of their exact target path only:
// a handler at /r/laptop/a does not receive messages for /r/laptop/a/b.
// remove unregisters h; it is idempotent, and it does not wait for running
// calls of h. Safe for concurrent use.
func (r *Router) Handle(p paths.Path, h Handler) (remove func(), err error) {
	switch {
	case h == nil:
		return nil, fmt.Errorf("msg: handle %s: nil handler", p)
	case !p.HasPrefix(r.self):
		return nil, fmt.Errorf("msg: handle %s: this node hosts %s and the paths under it: %w", p, r.self, ErrNotOwnPath)
	}
	e := &endpoint{h: h}
	r.hmu.Lock()
	defer r.hmu.Unlock()
	if _, ok := r.handlers[p]; ok {
		return nil, fmt.Errorf("msg: handle %s: remove the registered handler first: %w", p, ErrExists)
	}
	if g, ok := r.groups[p]; ok {
		return nil, fmt.Errorf("msg: handle %s: it is served by group %q: %w", p, g.name, ErrExists)
	}
	r.handlers[p] = e
	return func() {
		r.hmu.Lock()
		defer r.hmu.Unlock()
		if r.handlers[p] == e {
			delete(r.handlers, p)
		}
	}, nil
}

// HandleTree registers h for every path strictly under p (not p itself),
// which must be this node's path or under it (ErrNotOwnPath otherwise),
// and at most one HandleTree per p (ErrExists). A message goes to the
// handler of its exact path if there is one (Handle), else to the tree
// handler of its nearest ancestor; Message.To is the full target path. A
// subtree's messages get their own flow control per target path, so one
// slow path under p does not hold up another. remove unregisters h; it is
// idempotent. Safe for concurrent use.
func (r *Router) HandleTree(p paths.Path, h Handler) (remove func(), err error) {
	if h == nil {
		return nil, fmt.Errorf("msg: handle tree %s: nil handler", p)
	}
	return r.handleTree(p, &endpoint{h: h})
}

func (r *Router) handleTree(p paths.Path, e *endpoint) (remove func(), err error) {
	if !p.HasPrefix(r.self) {
		return nil, fmt.Errorf("msg: handle tree %s: this node hosts %s and the paths under it: %w", p, r.self, ErrNotOwnPath)
	}
	r.hmu.Lock()
	defer r.hmu.Unlock()
	if _, ok := r.trees[p]; ok {
		return nil, fmt.Errorf("msg: handle tree %s: remove the registered handler first: %w", p, ErrExists)
	}
	r.trees[p] = e
	return func() {
		r.hmu.Lock()
		defer r.hmu.Unlock()
		if r.trees[p] == e {
			delete(r.trees, p)
		}
	}, nil
}

// HandleTreeAsync is HandleTree with an AsyncHandler: a session's calls
// to the subtree run h on the session's reader, with no goroutine of
// their own, and are answered when h calls done. It suits a handler that
// only hands messages over, such as a runtime's mailboxes.
func (r *Router) HandleTreeAsync(p paths.Path, h AsyncHandler) (remove func(), err error) {
	if h == nil {
		return nil, fmt.Errorf("msg: handle tree %s: nil handler", p)
	}
	return r.handleTree(p, &endpoint{h: syncHandler(h), async: h})
}

// handler returns the handler for p: the one registered at exactly p, else
// the tree handler of p's nearest ancestor within this node, or nil.
func (r *Router) handler(p paths.Path) Handler {
	if e := r.endpointOf(p); e != nil {
		return e.h
	}
	return nil
}

// endpointOf returns the endpoint for p, as handler does, or nil.
func (r *Router) endpointOf(p paths.Path) *endpoint {
	r.hmu.RLock()
	defer r.hmu.RUnlock()
	if e := r.handlers[p]; e != nil {
		return e
	}
	if len(r.trees) == 0 {
		return nil
	}
	for q, ok := p.Parent(); ok && q.HasPrefix(r.self); q, ok = q.Parent() {
		if e := r.trees[q]; e != nil {
			return e
		}
	}
	return nil
}

// AddGrant gives the Router a writecap that lets this node write to paths
// of another domain; it is attached to every message to a path it covers
// (the first valid one that does). The receiver checks it: it must be
// issued under the target's root, cover the target and be held by this
// node's principal (its node key). A nil writecap is ignored. Safe for
// concurrent use.
func (r *Router) AddGrant(w *caps.Writecap) {
	if w == nil || len(w.Links()) == 0 {
		return
	}
	r.gmu.Lock()
	defer r.gmu.Unlock()
	for _, g := range r.grants {
		if g.Digest() == w.Digest() {
			return
		}
	}
	r.grants = append(r.grants, w)
}

// grantFor returns the encoded writecap to attach to a message to another
// domain's path to, or nil. Expired grants are dropped on the way.
func (r *Router) grantFor(to paths.Path) []byte {
	if to.Root() == r.self.Root() {
		return nil
	}
	r.gmu.Lock()
	defer r.gmu.Unlock()
	now := time.Now()
	var found []byte
	kept := r.grants[:0]
	for _, w := range r.grants {
		if !now.Before(w.Expiry()) {
			continue
		}
		kept = append(kept, w)
		if found == nil && w.Root() == to.Root() && to.HasPrefix(w.Prefix()) && r.verifier.Verify(w, to) == nil {
			found = w.Marshal()
		}
	}
	clear(r.grants[len(kept):])
	r.grants = kept
	return found
}

// grantsFor returns the encoded writecaps to present in a session's hello
// to node, of another domain, and the prefixes they cover.
func (r *Router) grantsFor(node paths.Path) ([][]byte, []paths.Path) {
	if node.Root() == r.self.Root() {
		return nil, nil
	}
	r.gmu.Lock()
	defer r.gmu.Unlock()
	now := time.Now()
	var wcs [][]byte
	var covered []paths.Path
	for _, w := range r.grants {
		p := w.Prefix()
		if len(wcs) == maxHelloCaps || !now.Before(w.Expiry()) || w.Root() != node.Root() || !(p.HasPrefix(node) || node.HasPrefix(p)) {
			continue
		}
		if r.verifier.Verify(w, p) == nil {
			wcs = append(wcs, w.Marshal())
			covered = append(covered, p)
		}
	}
	return wcs, covered
}

// maxFailures bounds the failed sends remembered for their next Send.
const maxFailures = 4096

// undelivered remembers that n sends to to failed after Send returned,
// with err: the next Send to to reports them.
func (r *Router) undelivered(to paths.Path, n int, err error) {
	r.umu.Lock()
	defer r.umu.Unlock()
	if f := r.failures[to]; f != nil {
		f.N += n
		return
	}
	if len(r.failures) >= maxFailures {
		return // the log has them
	}
	r.failures[to] = &UndeliveredError{Path: to, N: n, Err: err}
	r.nfailed.Store(int32(len(r.failures)))
}

// failure takes the remembered failures of sends to to, if any.
func (r *Router) failure(to paths.Path) error {
	if r.nfailed.Load() == 0 {
		return nil
	}
	r.umu.Lock()
	defer r.umu.Unlock()
	f := r.failures[to]
	if f == nil {
		return nil
	}
	delete(r.failures, to)
	r.nfailed.Store(int32(len(r.failures)))
	return f
}

// gate waits for a turn to send to peer id; release gives it back.
func (r *Router) gate(ctx context.Context, id peer.ID) (release func(), err error) {
	r.pmu.Lock()
	g := r.peers[id]
	if g == nil {
		g = &peerGate{slots: make(chan struct{}, r.cfg.MaxPeerStreams)}
		r.peers[id] = g
	}
	g.refs++
	r.pmu.Unlock()
	unref := func() {
		r.pmu.Lock()
		if g.refs--; g.refs == 0 {
			delete(r.peers, id)
		}
		r.pmu.Unlock()
	}
	select {
	case g.slots <- struct{}{}:
	default:
		select {
		case g.slots <- struct{}{}:
		case <-ctx.Done():
			unref()
			return nil, ctx.Err()
		case <-r.ctx.Done():
			unref()
			return nil, ErrClosed
		}
	}
	return func() { <-g.slots; unref() }, nil
}

// connect returns the peer hosting node path p: the one remembered from
// an earlier message while it still has a verified, live connection for
// p, else the one p2p.Connect resolves, connects to and verifies.
func (r *Router) connect(ctx context.Context, p paths.Path) (peer.ID, error) {
	if v, ok := r.nodes.Load(p); ok {
		id := v.(peer.ID)
		if got, ok := r.node.VerifiedPath(id); ok && got == p {
			return id, nil
		}
		r.nodes.CompareAndDelete(p, id)
	}
	id, err := r.node.Connect(ctx, p)
	if err != nil {
		return "", err
	}
	r.nodes.Store(p, id)
	return id, nil
}

// turn waits, until ctx or the Router ends, for one of MaxInbound turns to
// run a handler.
func (r *Router) turn(ctx context.Context) error {
	select {
	case r.inbound <- struct{}{}:
		return nil
	default:
	}
	select {
	case r.inbound <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.ctx.Done():
		return ErrClosed
	}
}

func (r *Router) release() { <-r.inbound }

// run calls h, turning a panic into an error.
func (r *Router) run(ctx context.Context, h Handler, m *Message) (reply []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("handler panicked", "path", m.To, "from", m.From, "panic", v)
			reply, err = nil, fmt.Errorf("handler panicked: %v", v)
		}
	}()
	return h(ctx, m)
}

// nodeOf returns the node path of p, its first two components
// /<root>/<node>, and false for a bare root path.
func nodeOf(p paths.Path) (paths.Path, bool) {
	q, ok := p.Ancestor(1)
	if !ok || q.Depth() < 1 { // a root path is its own Ancestor(1)
		return paths.Path{}, false
	}
	return q, true
}
