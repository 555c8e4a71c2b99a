package pubsub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/paths"
)

// Message is a publication delivered to a Subscription. Messages and their
// payloads are shared with the node's other Subscriptions: treat them as
// read-only.
type Message struct {
	// Topic is the path the message was published to.
	Topic paths.Path
	// From is the publisher's node path, proven by the message's host
	// certificate and node writecap: never a claim.
	From paths.Path
	// Seq is the publisher's sequence number: it grows with every
	// publication of that publisher (node process), across topics.
	Seq uint64
	// Payload is the message; nil when the message is confidential and not
	// Readable.
	Payload []byte
	// Confidential reports that the payload was encrypted for a set of
	// readers.
	Confidential bool
	// Readable is false when the message is confidential and this node
	// holds no readcap for its key (or could not unwrap it).
	Readable bool
}

// Subscription receives the messages whose topic matches one pattern.
// Create it with PubSub.Subscribe; stop it with Cancel. Next is safe for
// concurrent use.
type Subscription struct {
	ps      *PubSub
	pattern paths.Pattern
	topic   string // the gossipsub topic serving the pattern
	ch      chan *Message
	done    chan struct{} // closed when the subscription ends; err is set first
	err     error
	endOnce sync.Once
	dropped atomic.Uint64
}

// Subscribe starts receiving the messages published, from now on, to the
// paths pattern matches: "*" is any one component, a final "..." any
// number (zero included). The pattern must name its domain: a wildcard
// root is refused with ErrPattern. Messages are queued (Config.Buffer) and
// dropped when the queue is full. A subscription hears of publications
// once its peers have learnt of it, usually within milliseconds; see
// docs/pubsub.md#delivery. Errors: ErrPattern, ErrClosed, ctx's error.
// Safe for concurrent use.
func (ps *PubSub) Subscribe(ctx context.Context, pattern paths.Pattern) (*Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pubsub: subscribe %s: %w", pattern, err)
	}
	name, err := subscribeTopic(pattern)
	if err != nil {
		return nil, err
	}
	s := &Subscription{ps: ps, pattern: pattern, topic: name, ch: make(chan *Message, ps.cfg.Buffer), done: make(chan struct{})}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		return nil, fmt.Errorf("pubsub: subscribe %s: %w", pattern, ErrClosed)
	}
	tp, err := ps.joinLocked(name)
	if err != nil {
		return nil, err
	}
	if tp.relay == nil && !ps.coveredLocked(name) {
		if err := ps.relayLocked(tp); err != nil {
			return nil, fmt.Errorf("pubsub: subscribe %s: %w", pattern, err)
		}
	}
	tp.refs++
	subs := append(slices.Clone(*ps.subs.Load()), s)
	ps.subs.Store(&subs)
	if err := ps.reconcileLocked(); err != nil {
		ps.log.Warn("topic membership", "err", err)
	}
	return s, nil
}

// Covering topics. A node is in the mesh of only the coarsest topics its
// Subscriptions need (docs/pubsub.md#covering-topics):
// while one of them uses its root's subtree topic, that topic serves
// every Subscription of the domain, and while one uses a node's subtree
// topic, that topic serves every Subscription under the node path. A
// covered topic is left coverGrace after its cover was joined (both
// deliver meanwhile, duplicates dropped), so no message falls between the
// two meshes; a cover that loses its last Subscription is kept as long
// while the topics it covered are joined again.
const coverGrace = 3 * time.Second

// relayLocked joins tp's mesh: Relay is mesh membership without a
// gossipsub subscription, since messages are delivered by the validator
// (see deliver). Called with mu held.
func (ps *PubSub) relayLocked(tp *topic) error {
	if err := tp.h.SetScoreParams(topicScoreParams()); err != nil {
		return fmt.Errorf("score parameters of %s: %w", tp.name, err)
	}
	relay, err := tp.h.Relay()
	if err != nil {
		return fmt.Errorf("relay %s: %w", tp.name, err)
	}
	tp.relay, tp.leaveAt = relay, time.Time{}
	return nil
}

// covers returns the topics that would serve the Subscriptions of topic
// name in its place: its root's subtree topic, then its node's.
func covers(name string) (root, node string) {
	p, subtree, ok := parseTopic(name)
	if !ok || subtree && p.Depth() == 0 {
		return "", ""
	}
	root = subtreeTopic(p.RootPath())
	if !subtree && p.Depth() >= 1 {
		node = subtreeTopic(ancestorAt(p, 1))
	}
	return root, node
}

// coveredLocked reports whether a topic with local Subscriptions serves
// those of name. Called with mu held.
func (ps *PubSub) coveredLocked(name string) bool {
	root, node := covers(name)
	for _, c := range []string{root, node} {
		if tp, ok := ps.topics[c]; ok && c != "" && tp.refs > 0 {
			return true
		}
	}
	return false
}

// coversJoinedLocked reports whether name would serve the Subscriptions
// of a topic whose mesh this node is in. Called with mu held.
func (ps *PubSub) coversJoinedLocked(name string) bool {
	for other, tp := range ps.topics {
		if tp.relay == nil || other == name {
			continue
		}
		if root, node := covers(other); root == name || node == name {
			return true
		}
	}
	return false
}

// reconcileLocked brings mesh membership in line with the Subscriptions:
// every topic with Subscriptions that no other topic covers is relayed;
// every other relayed topic is left, at once when no Subscription lost
// anything by it, else after coverGrace. Called with mu held.
func (ps *PubSub) reconcileLocked() error {
	now := time.Now()
	var errs []error
	var later bool
	// Join first, so that nothing is left before its replacement is in.
	for name, tp := range ps.topics {
		if tp.refs > 0 && !ps.coveredLocked(name) {
			if tp.relay == nil {
				if err := ps.relayLocked(tp); err != nil {
					errs = append(errs, err)
				}
			}
			tp.leaveAt = time.Time{}
		}
	}
	for name, tp := range ps.topics {
		if tp.relay == nil || tp.refs > 0 && !ps.coveredLocked(name) {
			continue
		}
		switch {
		case tp.leaveAt.IsZero() && (tp.refs > 0 || ps.coversJoinedLocked(name)):
			tp.leaveAt, later = now.Add(coverGrace), true
		case tp.leaveAt.IsZero() || !now.Before(tp.leaveAt):
			tp.relay()
			tp.relay, tp.leaveAt, tp.lastUsed = nil, time.Time{}, now
		default:
			later = true
		}
	}
	if later && ps.graceTimer == nil {
		ps.graceTimer = time.AfterFunc(coverGrace+10*time.Millisecond, func() {
			ps.mu.Lock()
			defer ps.mu.Unlock()
			ps.graceTimer = nil
			if !ps.closed {
				if err := ps.reconcileLocked(); err != nil {
					ps.log.Warn("topic membership", "err", err)
				}
			}
		})
	}
	return errors.Join(errs...)
}

// deliver queues a message the validator accepted to every matching
// Subscription, once per (publisher, seq) however many topics it came by.
// It runs in gossipsub's validation pipeline (or, for this node's own
// publications, in Publish), so it never blocks: a confidential message
// whose key is not yet unwrapped is handed to the unwrapper goroutine.
func (ps *PubSub) deliver(in *inbound) {
	ps.stats.received.Add(1)
	if h := ps.recvHook.Load(); h != nil {
		(*h)(in)
	}
	if !ps.seen.add(msgKey{in.publisher, in.seq}) {
		ps.stats.duplicates.Add(1)
		return
	}
	subs := *ps.subs.Load()
	if !slices.ContainsFunc(subs, func(s *Subscription) bool { return s.pattern.Match(in.topic) }) {
		return
	}
	if in.sealed == nil {
		ps.dispatch(subs, in, in.data, true)
		return
	}
	if pt, readable, known := ps.opener.openCached(in); known {
		ps.dispatch(subs, in, pt, readable)
		return
	}
	select {
	case ps.unwrapQ <- in:
	default:
		ps.stats.dropped.Add(1)
		ps.log.Warn("confidential message dropped: too many waiting for their topic key", "topic", in.topic, "from", in.from)
	}
}

// unwrapper opens the confidential messages whose topic key is not yet
// known, one at a time (the node key may be a TPM), then dispatches them.
func (ps *PubSub) unwrapper() {
	for {
		select {
		case <-ps.ctx.Done():
			return
		case in := <-ps.unwrapQ:
			pt, readable := ps.opener.open(ps.ctx, in)
			ps.dispatch(*ps.subs.Load(), in, pt, readable)
		}
	}
}

// dispatch queues the message to every Subscription in subs that matches.
func (ps *PubSub) dispatch(subs []*Subscription, in *inbound, payload []byte, readable bool) {
	msg := Message{Topic: in.topic, From: in.from, Seq: in.seq, Payload: payload, Confidential: in.sealed != nil, Readable: readable}
	if !readable {
		ps.stats.unreadable.Add(1)
	}
	for _, s := range subs {
		if s.pattern.Match(in.topic) {
			m := msg
			s.push(&m)
		}
	}
}

func (s *Subscription) push(m *Message) {
	select {
	case <-s.done:
		return
	default:
	}
	select {
	case s.ch <- m:
		s.ps.stats.delivered.Add(1)
	default:
		s.dropped.Add(1)
		s.ps.stats.dropped.Add(1)
	}
}

// Next returns the next message. It blocks until one arrives, the
// subscription ends (ErrCanceled after Cancel, ErrClosed after the
// PubSub's Close; queued messages are then discarded) or ctx ends (ctx's
// error).
func (s *Subscription) Next(ctx context.Context) (*Message, error) {
	select {
	case <-s.done:
		return nil, s.err
	default:
	}
	select {
	case m := <-s.ch:
		return m, nil
	case <-s.done:
		return nil, s.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Cancel ends the subscription; Next then returns ErrCanceled. It is
// idempotent and does not block on the network.
func (s *Subscription) Cancel() {
	s.end(ErrCanceled)
	s.ps.unsubscribe(s)
}

// Pattern returns the subscription's pattern.
func (s *Subscription) Pattern() paths.Pattern { return s.pattern }

// Dropped counts the messages dropped because the queue was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

func (s *Subscription) end(err error) {
	s.endOnce.Do(func() {
		s.err = fmt.Errorf("pubsub: subscription %s: %w", s.pattern, err)
		close(s.done)
	})
}

// unsubscribe removes s and leaves its gossipsub topic when s was the last
// Subscription using it (see reconcileLocked). The topic handle stays
// joined for publishing until the sweeper closes it.
func (ps *PubSub) unsubscribe(s *Subscription) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	old := *ps.subs.Load()
	i := slices.Index(old, s)
	if i < 0 {
		return // already removed, or the PubSub closed
	}
	subs := slices.Delete(slices.Clone(old), i, i+1)
	ps.subs.Store(&subs)
	tp := ps.topics[s.topic]
	if tp == nil {
		return
	}
	tp.refs--
	if err := ps.reconcileLocked(); err != nil {
		ps.log.Warn("topic membership", "err", err)
	}
}

// msgKey identifies a publication: gossipsub author and publisher seq.
type msgKey struct {
	publisher peer.ID
	seq       uint64
}

// dedup remembers the last n publications delivered, first in first out.
type dedup struct {
	max int
	// mu guards set, ring and next.
	mu   sync.Mutex
	set  map[msgKey]struct{}
	ring []msgKey // grows to max, then is reused from next
	next int
}

func newDedup(n int) *dedup {
	return &dedup{set: make(map[msgKey]struct{}), max: n}
}

// add reports whether k is new, and remembers it.
func (d *dedup) add(k msgKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.set[k]; ok {
		return false
	}
	if len(d.ring) < d.max {
		d.ring = append(d.ring, k)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = k
		d.next = (d.next + 1) % len(d.ring)
	}
	d.set[k] = struct{}{}
	return true
}
