package pubsub

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	gossip "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// inbound is a message the validator accepted, carried to the readers as
// gossipsub's ValidatorData so it is decoded once.
type inbound struct {
	*envelope
	publisher peer.ID  // the signing host, gossipsub's author
	node      paths.ID // the publisher's node principal
}

// validate is gossipsub's validator for every topic, run inline by every
// node that receives a message, relays included, before the message is
// forwarded; gossipsub has already checked the author's signature
// (StrictSign) and dropped copies it has seen. It is also where this
// package delivers: an accepted message goes to the local Subscriptions
// from here (subscribed topics are joined with Relay, not a gossipsub
// subscription), which saves a channel and a goroutine per message. A
// message this node published itself carries its inbound and is accepted
// as is.
func (ps *PubSub) validate(_ context.Context, _ peer.ID, m *gossip.Message) gossip.ValidationResult {
	if m.ReceivedFrom == ps.self {
		if in, ok := m.ValidatorData.(*inbound); ok {
			ps.deliver(in)
			return gossip.ValidationAccept
		}
	}
	topic := m.GetTopic()
	if ps.cfg.rawTopics && !strings.HasPrefix(topic, TopicPrefix) {
		return gossip.ValidationAccept
	}
	in, err := ps.check(topic, m.GetFrom(), m.GetData())
	if err != nil {
		if ignorable(err) {
			ps.stats.ignored.Add(1)
			ps.log.Debug("message ignored", "topic", topic, "from", m.GetFrom(), "via", m.ReceivedFrom, "err", err)
			return gossip.ValidationIgnore
		}
		ps.stats.rejected.Add(1)
		ps.log.Debug("message rejected", "topic", topic, "from", m.GetFrom(), "via", m.ReceivedFrom, "err", err)
		return gossip.ValidationReject
	}
	m.ValidatorData = in
	ps.deliver(in)
	return gossip.ValidationAccept
}

// errSkewed marks a time check that failed by less than the clock skew
// peers are allowed: the message is dropped, but nobody is penalised,
// since an honest relay with a slightly different clock may have accepted
// and forwarded it.
var errSkewed = errors.New("within clock skew")

// ignorable reports whether a refusal should not cost the sender score:
// a message format later than this build's (a newer peer), or a time
// check failed within the allowed skew.
func ignorable(err error) bool {
	return errors.Is(err, errNewer) || errors.Is(err, errSkewed)
}

// check verifies an encoded message that arrived on gossipsub topic name,
// signed by the host from. In order (docs/pubsub.md#validation): size and
// canonical form; name carries the message's topic; the host certificate
// is signed by its node key, is valid now and certifies exactly from; the
// node writecap is held by that node key and covers the message's from
// path, a node path; the topic writecap (or the node writecap) is held by
// the same key and covers the topic. Signature checks are cached (host
// certificates here, writecaps by the Verifier), so a warm check costs a
// decode, two hashes and a few comparisons.
func (ps *PubSub) check(name string, from peer.ID, data []byte) (*inbound, error) {
	env, err := decodeMessage(data, ps.cfg.MaxMessage)
	if err != nil {
		return nil, err
	}
	if !topicCarries(name, env.topic) {
		return nil, fmt.Errorf("message for %s on gossipsub topic %q: %w", env.topic, name, caps.ErrPathNotCovered)
	}
	now := ps.cfg.Clock()
	cert, err := ps.hostCert(env.hostCert, now)
	if err != nil {
		return nil, fmt.Errorf("message from %s: %w", env.from, err)
	}
	if cert.HostID != from {
		return nil, fmt.Errorf("message from %s: host certificate is for %s but %s signed it: %w", env.from, cert.HostID, from, caps.ErrWrongHolder)
	}
	if err := ps.verifyCap(env.nodeCap, cert.NodeID, env.from, now); err != nil {
		return nil, fmt.Errorf("message from %s: node writecap: %w", env.from, err)
	}
	if env.cap != nil {
		err = ps.verifyCap(env.cap, cert.NodeID, env.topic, now)
	} else {
		err = ps.verifyCap(env.nodeCap, cert.NodeID, env.topic, now)
	}
	if err != nil {
		return nil, fmt.Errorf("message from %s to %s: %w", env.from, env.topic, err)
	}
	return &inbound{envelope: env, publisher: from, node: cert.NodeID}, nil
}

// hostCert decodes a host certificate and verifies it at now, caching the
// signature check by the encoding's SHA-256.
func (ps *PubSub) hostCert(b []byte, now time.Time) (*caps.HostCert, error) {
	key := sha256.Sum256(b)
	c, ok := ps.certs.Get(key)
	if !ok {
		var err error
		if c, err = caps.DecodeHostCert(b); err != nil {
			return nil, err
		}
		// At NotBefore, Verify checks the signature alone; the window
		// is checked below on every use.
		if err := c.Verify(c.NotBefore); err != nil {
			return nil, err
		}
		ps.certs.Add(key, c)
	}
	switch {
	case now.Before(c.NotBefore):
		return nil, skewed(fmt.Errorf("host certificate valid from %s: %w", c.NotBefore.UTC().Format(time.RFC3339), caps.ErrNotYetValid), c.NotBefore.Sub(now))
	case !now.Before(c.Expiry):
		return nil, skewed(fmt.Errorf("host certificate expired at %s: %w", c.Expiry.UTC().Format(time.RFC3339), caps.ErrExpired), now.Sub(c.Expiry))
	}
	return c, nil
}

// verifyCap verifies the encoded writecap b for target at now and checks
// it is held by holder.
func (ps *PubSub) verifyCap(b []byte, holder paths.ID, target paths.Path, now time.Time) error {
	w, err := ps.verifier.VerifyBytes(b, target)
	if err == nil && w.Holder() != holder {
		err = fmt.Errorf("writecap held by %s, not the publisher's node %s: %w", w.Holder(), holder, caps.ErrWrongHolder)
	}
	switch {
	case errors.Is(err, caps.ErrExpired):
		return skewed(err, now.Sub(w.Expiry()))
	case errors.Is(err, caps.ErrNotYetValid):
		return skewed(err, w.NotBefore().Sub(now))
	}
	return err
}

// skewed marks err with errSkewed when the time check failed by less
// than p2p.ClockSkew.
func skewed(err error, by time.Duration) error {
	if by < p2p.ClockSkew {
		return fmt.Errorf("%w (%w by %v)", err, errSkewed, by.Round(time.Second))
	}
	return err
}
