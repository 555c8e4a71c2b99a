package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/paths"
)

// nodeOf returns /<root>/<node> of p, false for a root path.
func nodeOf(p paths.Path) (paths.Path, bool) {
	d := p.Depth()
	if d < 1 {
		return paths.Path{}, false
	}
	for ; d > 1; d-- {
		p, _ = p.Parent()
	}
	return p, true
}

// endpointOf returns the node of p and that node's runtime endpoint,
// /<root>/<node>/.actors.
func endpointOf(p paths.Path) (node, ep paths.Path, err error) {
	node, ok := nodeOf(p)
	if !ok {
		return paths.Path{}, paths.Path{}, fmt.Errorf("a root path names no node; address /<root>/<node>/…: %w", ErrNoActor)
	}
	ep, err = node.Join(endpointName)
	return node, ep, err
}

// targetOf returns the node of the actor path to and the msg path its
// tells and calls go to: the actor's path below its node, under the
// node's endpoint (/<root>/<node>/a/b → /<root>/<node>/.actors/a/b). So
// msg's flow control, which is per target path, is per actor.
func targetOf(to paths.Path) (node, target paths.Path, err error) {
	node, ok := nodeOf(to)
	if !ok || to == node {
		return paths.Path{}, paths.Path{}, fmt.Errorf("a root or node path names no actor; address /<root>/<node>/<name>: %w", ErrNoActor)
	}
	// Join checks the components only: the root is to's, already parsed
	// (parsing it again costs more than the rest of a message).
	rel, err := node.Rel(to)
	if err == nil {
		target, err = node.Join(append([]string{endpointName}, rel...)...)
	}
	if err != nil {
		return paths.Path{}, paths.Path{}, fmt.Errorf("%w: %w", ErrBadName, err)
	}
	return node, target, nil
}

// pathCacheSize bounds the caches of targetOf and actorOf: a node talks to
// the same actors again and again, and building a path costs more than
// looking it up.
const pathCacheSize = 4096

type nodeTarget struct{ node, target paths.Path }

var targets, _ = lru.New[paths.Path, nodeTarget](pathCacheSize)

// cachedTargetOf is targetOf through a process-wide cache.
func cachedTargetOf(to paths.Path) (node, target paths.Path, err error) {
	if nt, ok := targets.Get(to); ok {
		return nt.node, nt.target, nil
	}
	node, target, err = targetOf(to)
	if err == nil {
		targets.Add(to, nodeTarget{node, target})
	}
	return node, target, err
}

// cachedActorOf is actorOf under this runtime's endpoint, through its
// cache.
func (r *Runtime) cachedActorOf(target paths.Path) (paths.Path, bool) {
	if p, ok := r.actorPaths.Get(target); ok {
		return p, true
	}
	p, ok := actorOf(r.ep, target)
	if ok {
		r.actorPaths.Add(target, p)
	}
	return p, ok
}

// actorOf is targetOf backwards: the actor path that the msg path target,
// under this node's endpoint ep, stands for.
func actorOf(ep, target paths.Path) (paths.Path, bool) {
	if !ep.IsAncestorOf(target) {
		return paths.Path{}, false
	}
	node, _ := ep.Parent()
	rel, err := ep.Rel(target)
	if err != nil {
		return paths.Path{}, false
	}
	p, err := node.Join(rel...)
	return p, err == nil
}

// request encodes a tell or call of m from the actor at from.
func (r *Runtime) request(from paths.Path, m any) ([]byte, error) {
	name, data, err := r.types.encode(m)
	if err != nil {
		return nil, err
	}
	w := wireMsg{V: WireVersion, T: name, M: data}
	if from != r.self {
		w.From = from.String()[len(r.self.String())+1:]
	}
	b := appendWireMsg(nil, &w)
	if len(b) > MaxEnvelope {
		return nil, fmt.Errorf("a request of %d bytes, over %d: %w", len(b), MaxEnvelope, ErrBadMessage)
	}
	return b, nil
}

// remoteSend sends a tell as one msg Send to the target's path under its
// node's endpoint. It returns once msg has taken it; the receiving
// runtime's handler waits for room in the mailbox until the tell's
// deadline (ctx's, or the send wait) and holds msg's credit for that
// path meanwhile, which is how a full mailbox pushes back on its senders.
func (r *Runtime) remoteSend(ctx context.Context, from, to paths.Path, m any) error {
	if r.router == nil {
		return fmt.Errorf("actors: send %s: a local-only runtime (no router): %w", to, ErrRemote)
	}
	node, target, err := cachedTargetOf(to)
	if err != nil {
		return fmt.Errorf("actors: send %s: %w", to, err)
	}
	b, err := r.request(from, m)
	if err != nil {
		return fmt.Errorf("actors: send %s: %w", to, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.sendWait)
		defer cancel()
	}
	if err := r.router.Send(ctx, target, bytes.NewReader(b), int64(len(b))); err != nil {
		return r.netErr("send", to, node, err)
	}
	return nil
}

// remoteCall sends a call as one msg Call to the target's path under its
// node's endpoint and decodes the reply.
func (r *Runtime) remoteCall(ctx context.Context, from, to paths.Path, m any) (any, error) {
	if r.router == nil {
		return nil, fmt.Errorf("actors: call %s: a local-only runtime (no router): %w", to, ErrRemote)
	}
	node, target, err := cachedTargetOf(to)
	if err != nil {
		return nil, fmt.Errorf("actors: call %s: %w", to, err)
	}
	b, err := r.request(from, m)
	if err != nil {
		return nil, fmt.Errorf("actors: call %s: %w", to, err)
	}
	rep, err := r.exchange(ctx, "call", to, node, target, b)
	if err != nil {
		return nil, err
	}
	if rep.C != codeOK {
		return nil, errOf("call", to, rep.C, rep.E)
	}
	if rep.T == "" {
		return nil, nil
	}
	v, err := r.types.decode(rep.T, rep.M)
	if err != nil {
		return nil, fmt.Errorf("actors: call %s: reply: %w", to, err)
	}
	return v, nil
}

// exchange sends the request b as a msg Call to target, of node, and
// returns its checked reply.
func (r *Runtime) exchange(ctx context.Context, op string, to, node, target paths.Path, b []byte) (*wireReply, error) {
	rb, err := r.router.Call(ctx, target, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, r.netErr(op, to, node, err)
	}
	rep, err := decodeReply(rb)
	if err != nil {
		return nil, fmt.Errorf("actors: %s %s: reply from %s: %w", op, to, node, err)
	}
	return rep, nil
}

// netErr is the error of a msg Send or Call to node that failed.
func (r *Runtime) netErr(op string, to, node paths.Path, err error) error {
	switch {
	case errors.Is(err, msg.ErrNoEndpoint):
		return fmt.Errorf("actors: %s %s: node %s runs no actor runtime: %w: %w", op, to, node, ErrNoActor, err)
	case errors.Is(err, msg.ErrClosed) && r.ctx.Err() != nil:
		return fmt.Errorf("actors: %s %s: %w: %w", op, to, ErrClosed, err)
	case op == "send" && errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, msg.ErrUnreachable):
		// msg waits for the target's credit until the deadline: the
		// handlers of the tells before this one are still waiting for
		// room in the actor's mailbox.
		return fmt.Errorf("actors: send %s: node %s did not take the tell before the deadline (the actor's mailbox stayed full, or the node is slow): %w: %w", to, node, ErrMailboxFull, err)
	}
	return fmt.Errorf("actors: %s %s: node %s: %w", op, to, node, err)
}

// handleWatch is the msg handler of the runtime's endpoint itself: a
// watch, as a msg Call. The reply lists the watched actors that are gone.
func (r *Runtime) handleWatch(ctx context.Context, m *msg.Message) ([]byte, error) {
	if !m.Call {
		return nil, fmt.Errorf("actors: the endpoint %s takes watches, as calls; send tells to the actor's path under it: %w", m.To, ErrBadMessage)
	}
	b, err := readRequest(m)
	if err != nil {
		return errReply(err), nil
	}
	d, err := decodeMsg(b, true)
	if err != nil {
		return errReply(err), nil
	}
	return appendWireReply(nil, &wireReply{V: WireVersion, X: r.gone(d.watch)}), nil
}

// handleActor is the msg handler of every path under the runtime's
// endpoint: a tell (a msg Send) or a call (a msg Call) to the actor at
// that path below the node. A call's outcome travels in its reply, not
// as a msg error; a tell that fails is logged here and its error given
// to msg (which cannot tell the sender any more than that).
func (r *Runtime) handleActor(ctx context.Context, m *msg.Message) ([]byte, error) {
	reply, err := r.serveActor(ctx, m)
	if m.Call {
		if err != nil {
			return errReply(err), nil
		}
		return reply, nil
	}
	if err != nil {
		r.log.Warn("a tell failed at its node after Send returned", "to", m.To, "from", m.From, "err", err)
	}
	return nil, err
}

// handleActorAsync is the runtime's msg handler for the paths under its
// endpoint. A tell is handled as handleActor does (msg hands a path's
// tells over one at a time, so it may wait for mailbox room); a call is
// queued without a goroutine of its own when the mailbox has room, and
// answered from the actor's goroutine.
func (r *Runtime) handleActorAsync(ctx context.Context, m *msg.Message, done func([]byte, error)) {
	if !m.Call {
		reply, err := r.handleActor(ctx, m)
		done(reply, err)
		return
	}
	to, from, v, err := r.decodeRequest(m)
	if err != nil {
		done(errReply(err), nil)
		return
	}
	// The actor answers (or its stop answers ErrStopped); a caller whose
	// deadline passed has given up already. No timer per call.
	var once sync.Once
	answer := func(b []byte) { once.Do(func() { done(b, nil) }) }
	stop := func() {}
	e := envelope{msg: v, from: from, dl: m.Deadline, done: func(res result) {
		stop()
		answer(r.callReply(res.v, res.err))
	}}
	fail := func(err error) { stop(); answer(errReply(err)) }
	if p, err := r.resolve(to); err == nil && p.mb.push(ctx, e, false) == nil {
		return
	}
	// No room, or no actor yet: wait (or fail) on a goroutine.
	if !r.life.Enter() {
		fail(fmt.Errorf("actors: call %s: %w", to, ErrClosed))
		return
	}
	go func() {
		defer r.life.Leave()
		if err := r.deliverLocal(ctx, to, e, "call"); err != nil {
			fail(err)
		}
	}()
}

func (r *Runtime) serveActor(ctx context.Context, m *msg.Message) ([]byte, error) {
	to, from, v, err := r.decodeRequest(m)
	if err != nil {
		return nil, err
	}
	if !m.Call {
		return nil, r.deliverLocal(ctx, to, envelope{msg: v, from: from}, "send")
	}
	reply, err := r.call(ctx, from, to, v)
	return r.callReply(reply, err), nil
}

// decodeRequest decodes a remote request: the actor it is for, its
// sender and its message.
func (r *Runtime) decodeRequest(m *msg.Message) (to, from paths.Path, v any, err error) {
	to, ok := r.cachedActorOf(m.To)
	if !ok {
		return to, from, nil, fmt.Errorf("%s names no actor of node %s: %w", m.To, r.self, ErrNoActor)
	}
	b, err := readRequest(m)
	if err != nil {
		return to, from, nil, err
	}
	d, err := decodeMsg(b, false)
	if err != nil {
		return to, from, nil, err
	}
	from = m.From // a node path msg verified
	if d.from != nil {
		if from, err = m.From.Join(d.from...); err != nil {
			return to, from, nil, fmt.Errorf("sender: %w: %w", ErrBadMessage, err)
		}
	}
	v, err = r.types.decode(d.tname, d.data)
	return to, from, v, err
}

// callReply encodes a call's answer as a reply payload.
func (r *Runtime) callReply(reply any, err error) []byte {
	if err != nil {
		return errReply(err)
	}
	if reply == nil {
		return appendWireReply(nil, &wireReply{V: WireVersion})
	}
	name, data, err := r.types.encode(reply)
	if err != nil {
		return errReply(fmt.Errorf("reply: %w", err))
	}
	return appendWireReply(nil, &wireReply{V: WireVersion, T: name, M: data})
}

// readRequest reads a request's payload, at most MaxEnvelope bytes.
func readRequest(m *msg.Message) ([]byte, error) {
	if m.Size > MaxEnvelope {
		return nil, fmt.Errorf("request of %d bytes, over %d: %w", m.Size, MaxEnvelope, ErrBadMessage)
	}
	b := make([]byte, m.Size)
	if _, err := io.ReadFull(m.Body, b); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	return b, nil
}

// gone returns the watched paths that have no actor here, with their
// remembered outcomes.
func (r *Runtime) gone(ps []paths.Path) []wireExit {
	var out []wireExit
	for _, p := range ps {
		r.mu.RLock()
		live := r.procs[p] != nil
		r.mu.RUnlock()
		if live || (r.isLocal(p) && r.serviceFor(p) != nil) {
			continue
		}
		x := wireExit{P: p.String(), O: uint64(NoActor)}
		if e, ok := r.recall(p); ok {
			x.O = uint64(e.Outcome)
			if e.Err != nil {
				x.E = cut(e.Err.Error())
			}
		}
		out = append(out, x)
	}
	return out
}

// recentExits remembers the last exits, so that a monitor that asks
// after the fact learns the outcome. Guarded by Runtime.xmu.
type recentExits struct {
	max   int
	m     map[paths.Path]Exit
	order []paths.Path
	at    map[paths.Path]time.Time
}

func (x *recentExits) init(n int) {
	x.max = n
	x.m = make(map[paths.Path]Exit)
	x.at = make(map[paths.Path]time.Time)
}

func (r *Runtime) remember(e Exit) {
	r.xmu.Lock()
	defer r.xmu.Unlock()
	x := &r.recent
	if _, ok := x.m[e.Path]; !ok {
		x.order = append(x.order, e.Path)
	}
	x.m[e.Path] = e
	x.at[e.Path] = time.Now()
	for len(x.order) > x.max {
		delete(x.m, x.order[0])
		delete(x.at, x.order[0])
		x.order = x.order[1:]
	}
}

func (r *Runtime) recall(p paths.Path) (Exit, bool) {
	r.xmu.Lock()
	defer r.xmu.Unlock()
	e, ok := r.recent.m[p]
	if ok && time.Since(r.recent.at[p]) > recentExitTTL {
		return Exit{}, false
	}
	return e, ok
}

// monitors are the watches of this runtime on other nodes' actors.
type monitors struct {
	// mu guards the fields below.
	mu     sync.Mutex
	nextID uint64
	nodes  map[paths.Path]*nodeWatch
}

type nodeWatch struct {
	node    paths.Path
	ep      paths.Path // the node's endpoint
	watches map[uint64]*watch
}

type watch struct {
	target paths.Path
	once   sync.Once
	notify func(Down)
}

func (w *watch) fire(d Down) { w.once.Do(func() { w.notify(d) }) }

func (m *monitors) init() { m.nodes = make(map[paths.Path]*nodeWatch) }

// Monitor makes the actor at watcher (of this node) watch the actor at
// target, of this node or another: the watcher gets one Down notice when
// the target stops (outcome as in its Exit), is not there (NoActor), or
// its node stops answering (NodeDown, within WithMonitorBound). cancel
// stops watching. Safe for concurrent use.
func (r *Runtime) Monitor(ctx context.Context, watcher, target paths.Path) (cancel func(), err error) {
	r.mu.RLock()
	w := r.procs[watcher]
	r.mu.RUnlock()
	if w == nil {
		return nil, fmt.Errorf("actors: monitor %s: watcher %s is not a live actor of this node: %w", target, watcher, ErrNoActor)
	}
	return r.monitor(ctx, target, w)
}

// MonitorFunc is Monitor with a function instead of a watching actor: f
// is called once, on a goroutine of the runtime, with the Down notice.
func (r *Runtime) MonitorFunc(ctx context.Context, target paths.Path, f func(Down)) (cancel func(), err error) {
	return r.watchTarget(ctx, target, f)
}

func (r *Runtime) monitor(ctx context.Context, target paths.Path, w *proc) (func(), error) {
	cancel, err := r.watchTarget(ctx, target, func(d Down) { w.mb.notify(d) })
	if err != nil {
		return nil, err
	}
	id, ok := w.onStop(cancel)
	if !ok {
		cancel()
		return nil, fmt.Errorf("actors: monitor %s: watcher %s: %w", target, w.path, ErrStopped)
	}
	return func() { cancel(); w.dropCleanup(id) }, nil
}

func (r *Runtime) watchTarget(ctx context.Context, target paths.Path, f func(Down)) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("actors: monitor %s: %w", target, err)
	}
	w := &watch{target: target, notify: f}
	r.mon.mu.Lock()
	r.mon.nextID++
	id := r.mon.nextID
	r.mon.mu.Unlock()
	if r.isLocal(target) {
		r.mu.RLock()
		p := r.procs[target]
		r.mu.RUnlock()
		if p == nil || !p.watch(id, w.fire) {
			if p == nil && r.serviceFor(target) != nil {
				return func() {}, nil // a service path never stops
			}
			d := Down{Path: target, Outcome: NoActor, At: time.Now()}
			if p != nil {
				<-p.done
			}
			if e, ok := r.recall(target); ok {
				d.Outcome, d.Err = e.Outcome, e.Err
			}
			w.fire(d)
			return func() {}, nil
		}
		return func() { p.unwatch(id) }, nil
	}
	if r.router == nil {
		return nil, fmt.Errorf("actors: monitor %s: %w", target, ErrRemote)
	}
	node, ep, err := endpointOf(target)
	if err != nil {
		return nil, fmt.Errorf("actors: monitor %s: %w", target, err)
	}
	r.mon.mu.Lock()
	nw := r.mon.nodes[node]
	start := nw == nil
	if start {
		nw = &nodeWatch{node: node, ep: ep, watches: make(map[uint64]*watch)}
		r.mon.nodes[node] = nw
	}
	nw.watches[id] = w
	r.mon.mu.Unlock()
	if start {
		if !r.life.Enter() {
			r.mon.mu.Lock()
			delete(r.mon.nodes, node)
			r.mon.mu.Unlock()
			return nil, fmt.Errorf("actors: monitor %s: %w", target, ErrClosed)
		}
		go r.watchNode(nw)
	}
	return func() {
		r.mon.mu.Lock()
		delete(nw.watches, id)
		r.mon.mu.Unlock()
	}, nil
}

// watchNode asks node's runtime about the watched actors every bound/3,
// giving each question bound/3; two failed questions in a row mean the
// node is down. So a monitor hears of a stopped actor within about
// bound/3, and of a dead node within bound.
func (r *Runtime) watchNode(nw *nodeWatch) {
	defer r.life.Leave()
	every := r.cfg.monitorBound / 3
	t := time.NewTimer(0)
	defer t.Stop()
	failed := 0
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		started := time.Now()
		r.mon.mu.Lock()
		var targets []string
		seen := make(map[paths.Path]bool)
		for _, w := range nw.watches {
			if !seen[w.target] && len(targets) < maxWatch {
				seen[w.target] = true
				targets = append(targets, w.target.String())
			}
		}
		if len(targets) == 0 {
			delete(r.mon.nodes, nw.node)
			r.mon.mu.Unlock()
			return
		}
		r.mon.mu.Unlock()
		ctx, cancel := context.WithTimeout(r.ctx, every)
		rep, err := r.exchange(ctx, "watch", nw.node, nw.node, nw.ep, appendWireMsg(nil, &wireMsg{V: WireVersion, W: targets}))
		cancel()
		if r.ctx.Err() != nil {
			return
		}
		if err == nil && rep.C != codeOK {
			err = errOf("watch", nw.node, rep.C, rep.E)
		}
		if err != nil {
			failed++
			if failed >= 2 {
				r.nodeDown(nw, err)
				return
			}
		} else {
			failed = 0
			r.fireExits(nw, rep.X)
		}
		t.Reset(max(0, every-time.Since(started)))
	}
}

func (r *Runtime) nodeDown(nw *nodeWatch, err error) {
	r.mon.mu.Lock()
	ws := make([]*watch, 0, len(nw.watches))
	for _, w := range nw.watches {
		ws = append(ws, w)
	}
	clear(nw.watches)
	delete(r.mon.nodes, nw.node)
	r.mon.mu.Unlock()
	now := time.Now()
	for _, w := range ws {
		w.fire(Down{Path: w.target, Outcome: NodeDown, Err: fmt.Errorf("node %s stopped answering: %w", nw.node, err), At: now})
	}
}

func (r *Runtime) fireExits(nw *nodeWatch, xs []wireExit) {
	if len(xs) == 0 {
		return
	}
	gone := make(map[string]wireExit, len(xs))
	for _, x := range xs {
		gone[x.P] = x
	}
	var fire []*watch
	r.mon.mu.Lock()
	for id, w := range nw.watches {
		if _, ok := gone[w.target.String()]; ok {
			fire = append(fire, w)
			delete(nw.watches, id)
		}
	}
	r.mon.mu.Unlock()
	now := time.Now()
	for _, w := range fire {
		x := gone[w.target.String()]
		d := Down{Path: w.target, Outcome: Outcome(x.O), At: now}
		if x.E != "" {
			d.Err = errors.New(x.E)
		}
		w.fire(d)
	}
}
