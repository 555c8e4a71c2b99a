package pubsub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	gossip "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
)

// PublishOption configures one Publish.
type PublishOption func(*publishOptions)

type publishOptions struct {
	confidential bool
	readers      []crypto.PubKey
}

// WithReaders makes a publication confidential: the payload is encrypted
// (AES-256-GCM) under this publisher's key for the topic, and the message
// carries that key wrapped, as a readcap, to each reader: the node public
// keys (Ed25519 or ECDSA P-256) of the nodes that may read it, at most
// MaxReaders. The key changes whenever the set of readers does. This node
// can read back its own publications whatever the readers. With no
// readers, nobody else can read the message.
func WithReaders(readers ...crypto.PubKey) PublishOption {
	return func(o *publishOptions) {
		o.confidential = true
		o.readers = append(o.readers, readers...)
	}
}

// Publish sends payload to every subscriber whose pattern matches topic,
// best effort: once Publish returns, the message has been handed to
// gossipsub, which delivers it to the subscribers it can reach; no
// acknowledgement comes back (docs/pubsub.md#delivery).
//
// It refuses locally, with an error wrapping ErrDenied and the caps error
// of each writecap it tried, when no writecap this node holds (its
// identity's or one given to AddGrant) covers topic now; with ErrTooLarge
// when the encoded message would exceed Config.MaxMessage; with ErrReaders
// for unusable readers; with ErrClosed after Close; with ctx's error when
// ctx ends first. Safe for concurrent use.
func (ps *PubSub) Publish(ctx context.Context, topic paths.Path, payload []byte, opts ...PublishOption) error {
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: publish %s: %w", topic, err)
	}
	if len(payload) > ps.cfg.MaxMessage && !ps.cfg.unchecked {
		return fmt.Errorf("pubsub: publish %s: %d-byte payload, more than %d: %w", topic, len(payload), ps.cfg.MaxMessage, ErrTooLarge)
	}
	w, err := ps.writecapFor(topic)
	if err != nil {
		if !ps.cfg.unchecked {
			return err
		}
		w = ps.id.Writecap
	}
	seq := ps.seq.Add(1)
	env := &envelope{topic: topic, seq: seq, from: ps.id.Path, hostCert: ps.id.Cert.Marshal(), nodeCap: ps.id.Writecap.Marshal()}
	if w != ps.id.Writecap {
		env.cap = w.Marshal()
	}
	if o.confidential {
		if env.sealed, err = ps.sealer.seal(topic, seq, payload, o.readers); err != nil {
			return fmt.Errorf("pubsub: publish %s: %w", topic, err)
		}
	} else {
		env.data = bytes.Clone(payload) // local subscribers must not see later changes
	}
	data, err := env.sign(ps.id.HostKey)
	if err != nil {
		return fmt.Errorf("pubsub: publish %s: %w", topic, err)
	}
	if len(data) > ps.cfg.MaxMessage && !ps.cfg.unchecked {
		return fmt.Errorf("pubsub: publish %s: %d-byte payload makes a %d-byte message, more than %d: %w",
			topic, len(payload), len(data), ps.cfg.MaxMessage, ErrTooLarge)
	}
	targets, err := ps.targets(topic)
	if err != nil {
		return err
	}
	in := &inbound{envelope: env, publisher: ps.self, node: ps.nodeID}
	for _, tp := range targets {
		if err := tp.h.Publish(ctx, data, gossip.WithValidatorData(in)); err != nil {
			if errors.Is(err, gossip.ErrTopicClosed) {
				continue // swept after targets returned: nobody was listening
			}
			return fmt.Errorf("pubsub: publish %s on %s: %w", topic, tp.name, err)
		}
		ps.stats.sent.Add(1)
	}
	ps.stats.published.Add(1)
	return nil
}

// writecapFor returns the first writecap held by this node's key that
// covers topic now: the identity's, then the grants in the order added.
func (ps *PubSub) writecapFor(topic paths.Path) (*caps.Writecap, error) {
	if topic.IsZero() {
		return nil, fmt.Errorf("pubsub: publish: no topic: %w", ErrDenied)
	}
	first := ps.verifier.VerifyHolder(ps.id.Writecap, ps.nodeID, topic)
	if first == nil {
		return ps.id.Writecap, nil
	}
	ps.mu.Lock()
	grants := ps.grants // appended to, never modified in place
	ps.mu.Unlock()
	errs := []error{first}
	for _, w := range grants {
		err := ps.verifier.VerifyHolder(w, ps.nodeID, topic)
		if err == nil {
			return w, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("pubsub: publish %s: %w: %w", topic, ErrDenied, errors.Join(errs...))
}

// peerCheckTTL is how long Publish trusts what it learnt about whether a
// subtree topic has subscribers before it asks gossipsub again.
const peerCheckTTL = 250 * time.Millisecond

// peerCheck remembers whether a topic had known subscribers.
type peerCheck struct {
	has        bool
	until      time.Time
	refreshing bool // a background refresh is under way
}

// targets returns the topics a publication to p goes to, joined: its exact
// topic always, and each subtree topic that a peer or a local Subscription
// is subscribed to. A subtree topic nobody subscribes to would reach
// nobody: gossipsub forwards only to subscribers, so skipping it saves a
// message with no change in who receives what.
func (ps *PubSub) targets(p paths.Path) ([]*topic, error) {
	now := time.Now()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		return nil, fmt.Errorf("pubsub: publish %s: %w", p, ErrClosed)
	}
	names, ok := ps.routes[p]
	if !ok {
		if len(ps.routes) >= maxRoutes {
			clear(ps.routes)
		}
		names = publishTopics(p)
		ps.routes[p] = names
	}
	out := make([]*topic, 0, len(names))
	for i, name := range names {
		if i > 0 && !ps.hasSubscribersLocked(name, now) {
			continue
		}
		tp, err := ps.joinLocked(name)
		if err != nil {
			return nil, err
		}
		tp.lastUsed = now
		out = append(out, tp)
	}
	return out, nil
}

// hasSubscribersLocked reports whether this node is in the mesh of name or a
// peer known to subscribe to it. gossipsub answers through its event loop,
// which a busy node may keep waiting for milliseconds, so only the first
// question about a topic waits for the answer; later ones take the last
// answer and, when it is older than peerCheckTTL, have it refreshed in the
// background. Called with mu held.
func (ps *PubSub) hasSubscribersLocked(name string, now time.Time) bool {
	if tp, ok := ps.topics[name]; ok && tp.relay != nil {
		return true
	}
	c, ok := ps.peerChecks[name]
	if !ok {
		if len(ps.peerChecks) >= maxPeerChecks {
			clear(ps.peerChecks)
		}
		c = peerCheck{has: len(ps.gs.ListPeers(name)) > 0, until: now.Add(peerCheckTTL)}
		ps.peerChecks[name] = c
		return c.has
	}
	if now.After(c.until) && !c.refreshing {
		c.refreshing = true
		ps.peerChecks[name] = c
		ps.wg.Go(func() {
			has := len(ps.gs.ListPeers(name)) > 0
			ps.mu.Lock()
			defer ps.mu.Unlock()
			ps.peerChecks[name] = peerCheck{has: has, until: time.Now().Add(peerCheckTTL)}
		})
	}
	return c.has
}

// maxPeerChecks bounds the remembered peerChecks, and maxRoutes the
// paths whose topic names are remembered.
const (
	maxPeerChecks = 4096
	maxRoutes     = 4096
)
