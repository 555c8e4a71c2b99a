package msg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// Queue groups (docs/msg.md, "Queue groups"): several endpoints, on
// different nodes, serve one path; each message to it goes to exactly one
// live member. The node that hosts the path keeps the group: members join
// it, proving with a writecap that they may serve the path, and renew
// their membership every groupBeat; it forwards each message to the
// member with the least in flight.
const (
	// groupsName is the name, under a node's path, of its endpoint for
	// joining and leaving its groups.
	groupsName = ".groups"
	// groupBeat is how often a member renews its membership.
	groupBeat = time.Second
	// groupTTL is how long a membership lasts without renewal: a member
	// that dies leaves the rotation within it.
	groupTTL = 3 * groupBeat
	// maxGroupName bounds a group's name.
	maxGroupName = 255
	// maxJoin bounds a join request.
	maxJoin = paths.MaxPathLen + caps.MaxEncodedSize + maxGroupName + 64
	// maxForwardAttempts bounds the members a message is tried on when
	// the first ones cannot be reached.
	maxForwardAttempts = 3
)

// group is a queue group at a path of this node, as its host keeps it.
type group struct {
	path paths.Path
	name string
	next atomic.Uint64 // where the next tie-break starts

	// mu guards members.
	mu      sync.Mutex
	members []*member
}

// member is one member of a group.
type member struct {
	node     paths.Path // the member's node; this node's own for a local one
	local    Handler    // a member on this node
	expiry   time.Time  // guarded by group.mu; zero for a local member
	inflight atomic.Int64
}

// membership is this node's membership of a group at another node's path.
type membership struct {
	name   string
	h      Handler
	wc     []byte
	cancel context.CancelFunc
}

// joinRequest joins (or renews, or with Leave leaves) a group.
type joinRequest struct {
	V        uint   `cbor:"v"`
	Path     string `cbor:"path"`
	Group    string `cbor:"group"`
	Leave    bool   `cbor:"leave,omitempty"`
	Writecap []byte `cbor:"wc,omitempty"`
}

// HandleGroup makes h a member of the queue group name serving path p:
// each message to p goes to exactly one live member of the group, spread
// by load. The node that hosts p keeps the group. For a path of this node
// (or under it) h joins at once; for another node's path, wc must be a
// writecap for p held by this node's key (issued under p's root, e.g.
// by `bt grant write`), and this Router joins the host's group and renews
// the membership every second until remove is called; the host drops a
// member whose renewals stop within 3 s, and at once when it cannot reach
// it. A path has one group: joining it under another name, or a path with
// a Handle registered, fails with ErrExists. Members receive messages of
// at most SessionMax bytes (larger ones are refused with ErrTooLarge);
// Message.From is the sender's node, as for any message.
func (r *Router) HandleGroup(p paths.Path, name string, wc *caps.Writecap, h Handler) (remove func(), err error) {
	switch {
	case h == nil:
		return nil, fmt.Errorf("msg: handle group %s: nil handler", p)
	case name == "" || len(name) > maxGroupName:
		return nil, fmt.Errorf("msg: handle group %s: a group name of 1 to %d bytes, not %q", p, maxGroupName, name)
	}
	if p.HasPrefix(r.self) {
		return r.joinLocal(p, name, h)
	}
	node, ok := nodeOf(p)
	if !ok {
		return nil, fmt.Errorf("msg: handle group %s: a root path names no node: %w", p, ErrNotOwnPath)
	}
	if wc == nil {
		return nil, fmt.Errorf("msg: handle group %s: %s is %s's path; serving it needs a writecap for it held by this node (%s), e.g. from `bt grant write`: %w",
			p, p, node, r.node.NodeID(), ErrDenied)
	}
	if err := r.verifier.VerifyHolder(wc, r.node.NodeID(), p); err != nil {
		return nil, fmt.Errorf("msg: handle group %s: the writecap does not let this node serve it: %w: %w", p, ErrDenied, err)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	ms := &membership{name: name, h: h, wc: wc.Marshal(), cancel: cancel}
	r.hmu.Lock()
	if old, ok := r.memberships[p]; ok {
		r.hmu.Unlock()
		cancel()
		return nil, fmt.Errorf("msg: handle group %s: this node is already a member (of group %q): %w", p, old.name, ErrExists)
	}
	r.memberships[p] = ms
	r.hmu.Unlock()
	// The first join is synchronous, so that a refusal reaches the caller.
	if err := r.join(ctx, p, node, ms, false); err != nil {
		cancel()
		r.dropMembership(p, ms)
		return nil, fmt.Errorf("msg: handle group %s: %w", p, err)
	}
	if !r.life.Enter() {
		cancel()
		r.dropMembership(p, ms)
		return nil, fmt.Errorf("msg: handle group %s: %w", p, ErrClosed)
	}
	go func() {
		defer r.life.Leave()
		r.renew(ctx, p, node, ms)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			r.dropMembership(p, ms)
			if !r.life.Enter() {
				return
			}
			defer r.life.Leave()
			lctx, lcancel := context.WithTimeout(r.ctx, 2*time.Second)
			defer lcancel()
			_ = r.join(lctx, p, node, ms, true)
		})
	}, nil
}

func (r *Router) dropMembership(p paths.Path, ms *membership) {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	if r.memberships[p] == ms {
		delete(r.memberships, p)
	}
}

// join asks p's host to add (or renew, or drop) this node in ms's group.
func (r *Router) join(ctx context.Context, p, node paths.Path, ms *membership, leave bool) error {
	b, err := canon.Marshal(joinRequest{V: Version, Path: p.String(), Group: ms.name, Leave: leave, Writecap: ms.wc})
	if err != nil {
		return err
	}
	ep, err := node.Join(groupsName)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, groupTTL)
	defer cancel()
	_, err = r.Call(ctx, ep, bytesReader(b), int64(len(b)))
	var re *RemoteError
	if errors.As(err, &re) {
		return fmt.Errorf("node %s refused the membership: %s: %w", node, re.Msg, ErrDenied)
	}
	return err
}

// renew renews a membership every groupBeat until ctx ends.
func (r *Router) renew(ctx context.Context, p, node paths.Path, ms *membership) {
	t := time.NewTicker(groupBeat)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := r.join(ctx, p, node, ms, false)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			failing = true
			r.log.Warn("cannot renew a group membership; retrying", "path", p, "group", ms.name, "err", err)
		case err == nil && failing:
			failing = false
			r.log.Info("group membership renewed again", "path", p, "group", ms.name)
		}
	}
}

// joinLocal adds a member on this node to the group at p, its own path.
func (r *Router) joinLocal(p paths.Path, name string, h Handler) (func(), error) {
	m := &member{node: r.self, local: h}
	if err := r.addMember(p, name, m); err != nil {
		return nil, fmt.Errorf("msg: handle group %s: %w", p, err)
	}
	var once sync.Once
	return func() { once.Do(func() { r.removeMember(p, m) }) }, nil
}

// addMember adds m to (or renews it in) the group name at p.
func (r *Router) addMember(p paths.Path, name string, m *member) error {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	if _, ok := r.handlers[p]; ok {
		return fmt.Errorf("%s has a handler of its own (Handle): %w", p, ErrExists)
	}
	g := r.groups[p]
	if g == nil {
		g = &group{path: p, name: name}
		r.groups[p] = g
	}
	if g.name != name {
		return fmt.Errorf("%s is served by group %q: %w", p, g.name, ErrExists)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, o := range g.members {
		if m.local == nil && o.local == nil && o.node == m.node {
			o.expiry = m.expiry
			return nil
		}
	}
	g.members = append(g.members, m)
	return nil
}

// removeMember takes m (or, for a remote one, the member of m's node) out
// of p's group, and drops a group left empty.
func (r *Router) removeMember(p paths.Path, m *member) {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	g := r.groups[p]
	if g == nil {
		return
	}
	g.mu.Lock()
	g.members = slices.DeleteFunc(g.members, func(o *member) bool {
		return o == m || (m.local == nil && o.local == nil && o.node == m.node)
	})
	empty := len(g.members) == 0
	g.mu.Unlock()
	if empty {
		delete(r.groups, p)
	}
}

// handleGroups is the handler of this node's groups endpoint: a member of
// this domain or another joins, renews or leaves a group at a path of
// this node.
func (r *Router) handleGroups(_ context.Context, m *Message) ([]byte, error) {
	if m.Size > maxJoin {
		return nil, fmt.Errorf("a join request of %d bytes, over %d: %w", m.Size, maxJoin, ErrBadMessage)
	}
	b := make([]byte, m.Size)
	if _, err := readFull(m.Body, b); err != nil {
		return nil, err
	}
	var q joinRequest
	if err := canon.Unmarshal(b, &q); err != nil {
		return nil, fmt.Errorf("join request: %w: %v", ErrBadMessage, err)
	}
	if q.V != Version {
		return nil, fmt.Errorf("join request version %d (this build reads %d): %w", q.V, Version, ErrUnknownVersion)
	}
	p, err := paths.Parse(q.Path)
	switch {
	case err != nil:
		return nil, fmt.Errorf("join request: path: %w: %v", ErrBadMessage, err)
	case !p.HasPrefix(r.self):
		return nil, fmt.Errorf("node %s does not host %s: %w", r.self, p, ErrNoEndpoint)
	case q.Group == "" || len(q.Group) > maxGroupName:
		return nil, fmt.Errorf("join request: a group name of 1 to %d bytes: %w", maxGroupName, ErrBadMessage)
	}
	mem := &member{node: m.From, expiry: time.Now().Add(groupTTL)}
	if q.Leave {
		r.removeMember(p, mem)
		return nil, nil
	}
	// Serving p is writing it: a writecap for p, held by the member's
	// node key, under this node's root.
	if len(q.Writecap) == 0 {
		return nil, fmt.Errorf("%s may not serve %s: no writecap attached: %w", m.From, p, ErrDenied)
	}
	w, err := r.verifier.VerifyBytes(q.Writecap, p)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s may not serve %s: %w: %w", m.From, p, ErrDenied, err)
	case w.Root() != r.self.Root():
		return nil, fmt.Errorf("%s may not serve %s: the writecap is issued under root %s, not %s: %w", m.From, p, w.Root(), r.self.Root(), ErrDenied)
	case w.Holder() != m.FromNode:
		return nil, fmt.Errorf("%s may not serve %s: the writecap is held by %s, not by its node %s: %w", m.From, p, w.Holder(), m.FromNode, ErrDenied)
	}
	if err := r.addMember(p, q.Group, mem); err != nil {
		return nil, err
	}
	return nil, nil
}

// groupFor returns the group serving p on this node, or nil.
func (r *Router) groupFor(p paths.Path) *group {
	r.hmu.RLock()
	defer r.hmu.RUnlock()
	return r.groups[p]
}

// pick returns the live member with the least in flight (ties taken in
// turn), skipping those in tried; nil when none is left.
func (g *group) pick(r *Router, tried []*member) *member {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members = slices.DeleteFunc(g.members, func(m *member) bool { return m.local == nil && !now.Before(m.expiry) })
	n := len(g.members)
	if n == 0 {
		return nil
	}
	start := int(g.next.Add(1) % uint64(n))
	var best *member
	var bestLoad int64
	for i := range n {
		m := g.members[(start+i)%n]
		if slices.Contains(tried, m) {
			continue
		}
		load := m.inflight.Load()
		if m.local == nil {
			load += r.sessionLoad(m.node, g.path)
		}
		if best == nil || load < bestLoad {
			best, bestLoad = m, load
		}
	}
	return best
}

// drop takes a member that could not be reached out of the rotation; it
// comes back with its next renewal.
func (g *group) drop(m *member) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m.expiry = time.Time{}
}

// sessionLoad is the messages to p in flight on the session to node.
func (r *Router) sessionLoad(node, p paths.Path) int64 {
	r.lmu.Lock()
	l := r.links[node]
	r.lmu.Unlock()
	if l == nil {
		return 0
	}
	l.mu.Lock()
	s := l.sess
	l.mu.Unlock()
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(s.targets[p])
}

// refusal is an error a handler of this package returns to have its
// message answered with a kind of its own rather than as a handler error.
type refusal struct {
	k   kind
	err error
}

func (e *refusal) Error() string { return e.err.Error() }
func (e *refusal) Unwrap() error { return e.err }

// forward is the handler of a group's path on its host: it hands the
// message to one live member, and to another when that one cannot be
// reached before anything was sent.
func (r *Router) forward(g *group, typ byte) Handler {
	return func(ctx context.Context, m *Message) ([]byte, error) {
		if m.Size > SessionMax {
			return nil, &refusal{kindTooLarge, fmt.Errorf("members of group %q at %s take messages of at most %d bytes, not %d", g.name, g.path, SessionMax, m.Size)}
		}
		var tried []*member
		for range maxForwardAttempts {
			mem := g.pick(r, tried)
			if mem == nil {
				break
			}
			tried = append(tried, mem)
			mem.inflight.Add(1)
			reply, err, sent := r.forwardTo(ctx, typ, mem, m)
			mem.inflight.Add(-1)
			if err == nil {
				return reply, nil
			}
			if sent {
				var re *RemoteError
				if errors.As(err, &re) {
					// The member's handler failed: its error is the caller's.
					return nil, errors.New(re.Msg)
				}
				return nil, &refusal{kindOfErr(err), fmt.Errorf("member %s of group %q at %s: %w", mem.node, g.name, g.path, err)}
			}
			g.drop(mem)
			r.log.Debug("group member unreachable; trying another", "path", g.path, "member", mem.node, "err", err)
		}
		return nil, &refusal{kindNoEndpoint, fmt.Errorf("group %q at %s has no live member", g.name, g.path)}
	}
}

// forwardTo hands m to one member. sent reports that the member may have
// seen it, so that it must not go to another.
func (r *Router) forwardTo(ctx context.Context, typ byte, mem *member, m *Message) (reply []byte, err error, sent bool) {
	if mem.local != nil {
		reply, err = r.run(ctx, mem.local, m)
		return reply, err, true
	}
	s, err := r.link(mem.node).get(ctx)
	if err != nil {
		return nil, err, false
	}
	x := exchange{r: r, op: opName(typ == frameCall), call: typ == frameCall, to: m.To, node: mem.node, ctx: ctx, dl: m.Deadline, body: m.Body, size: m.Size,
		fwdFrom: m.From, fwdNode: m.FromNode}
	reply, err = s.deliver(&x, forwardedType(typ))
	var ns notSent
	return reply, err, !errors.As(err, &ns)
}

// kindOfErr is the kind that answers a message a member failed with err.
func kindOfErr(err error) kind {
	switch {
	case errors.Is(err, ErrNoEndpoint):
		return kindNoEndpoint
	case errors.Is(err, ErrTooLarge):
		return kindTooLarge
	case errors.Is(err, ErrDenied):
		return kindDenied
	case errors.Is(err, context.DeadlineExceeded):
		return kindDeadline
	case errors.Is(err, ErrBusy):
		return kindBusy
	}
	return kindClosed // ErrUnreachable at the sender
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func readFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }
