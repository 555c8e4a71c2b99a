package pubsub

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	gossip "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
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
// forwarded; gossipsub has already dropped copies it has seen on that
// topic. It is also where this package delivers: an accepted message goes
// to the local Subscriptions from here (subscribed topics are joined with
// Relay, not a gossipsub subscription), which saves a channel and a
// goroutine per message. A message this node published itself carries its
// inbound and is accepted as is. One publication travels on up to three
// topics with the same data, so a verdict is remembered by the data's
// SHA-256 (the first half of the message ID): a second copy costs a
// lookup and a topic check, not a validation.
func (ps *PubSub) validate(_ context.Context, _ peer.ID, m *gossip.Message) gossip.ValidationResult {
	if m.ReceivedFrom == ps.self {
		if in, ok := m.ValidatorData.(*inbound); ok {
			ps.deliver(in)
			return gossip.ValidationAccept
		}
	}
	topic := m.GetTopic()
	key, keyed := contentKey(m.ID)
	if keyed {
		if v, ok := ps.verdicts.Get(key); ok && ps.cfg.Clock().Before(v.until) && topicCarries(topic, v.in.topic) {
			ps.stats.cached.Add(1)
			m.ValidatorData = v.in
			ps.deliver(v.in)
			return gossip.ValidationAccept
		}
	}
	in, until, err := ps.check(topic, m.GetData())
	if err != nil {
		if ignorable(err) {
			ps.stats.ignored.Add(1)
			ps.log.Debug("message ignored", "topic", topic, "via", m.ReceivedFrom, "err", err)
			return gossip.ValidationIgnore
		}
		ps.stats.rejected.Add(1)
		ps.log.Debug("message rejected", "topic", topic, "via", m.ReceivedFrom, "err", err)
		return gossip.ValidationReject
	}
	if keyed {
		ps.verdicts.Add(key, verdict{in: in, until: until})
	}
	m.ValidatorData = in
	ps.deliver(in)
	return gossip.ValidationAccept
}

// verdict is a message the validator accepted, remembered by its data's
// SHA-256 until the earliest expiry of its certificate and writecaps.
type verdict struct {
	in    *inbound
	until time.Time
}

// messageID is gossipsub's message ID (docs/pubsub.md#message-ids): the
// SHA-256 of the data, then the first 16 bytes of the SHA-256 of the
// gossipsub topic, so the copies of one publication on different topics
// are different gossipsub messages, each relayed on its own mesh.
func messageID(m *pb.Message) string {
	var id [sha256.Size + topicHashSize]byte
	h := sha256.Sum256(m.GetData())
	t := sha256.Sum256([]byte(m.GetTopic()))
	copy(id[:], h[:])
	copy(id[sha256.Size:], t[:topicHashSize])
	return string(id[:])
}

const topicHashSize = 16

// contentKey returns the data's SHA-256 from a message ID made by
// messageID.
func contentKey(id string) (k [sha256.Size]byte, ok bool) {
	if len(id) != sha256.Size+topicHashSize {
		return k, false
	}
	copy(k[:], id)
	return k, true
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

// check verifies an encoded message that arrived on gossipsub topic name.
// In order (docs/pubsub.md#validation): size and canonical form; name
// carries the message's topic; the host certificate is signed by its node
// key and is valid now; the message is signed by the certificate's host
// key; the node writecap is held by that node key and covers the
// message's from path, a node path; the topic writecap (or the node
// writecap) is held by the same key and covers the topic. Certificate and
// writecap signature checks are cached (host certificates here, writecaps
// by the Verifier), so a warm check costs a decode, the message's own
// signature check, a few hashes and comparisons. It returns the accepted
// message and when the earliest of its certificate and writecaps expires.
func (ps *PubSub) check(name string, data []byte) (*inbound, time.Time, error) {
	env, err := decodeMessage(data, ps.cfg.MaxMessage)
	if err != nil {
		return nil, time.Time{}, err
	}
	if env.version != WireVersion {
		return nil, time.Time{}, fmt.Errorf("message version %d, which gossipsub signed, on a version %d topic: %w", env.version, WireVersion, caps.ErrUnknownVersion)
	}
	if !topicCarries(name, env.topic) {
		return nil, time.Time{}, fmt.Errorf("message for %s on gossipsub topic %q: %w", env.topic, name, caps.ErrPathNotCovered)
	}
	now := ps.cfg.Clock()
	cert, err := ps.hostCert(env.hostCert, now)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("message from %s: %w", env.from, err)
	}
	if ok, err := cert.Host.Verify(signedBytes(env.sigHash), env.sig); !ok || err != nil {
		return nil, time.Time{}, fmt.Errorf("message from %s: not signed by the certified host %s: %w", env.from, cert.HostID, caps.ErrBadSignature)
	}
	nodeW, err := ps.verifyCap(env.nodeCap, cert.NodeID, env.from, now)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("message from %s: node writecap: %w", env.from, err)
	}
	topicW := nodeW
	if env.cap != nil {
		topicW, err = ps.verifyCap(env.cap, cert.NodeID, env.topic, now)
	} else {
		err = capError(nodeW, ps.verifier.Verify(nodeW, env.topic), now)
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("message from %s to %s: %w", env.from, env.topic, err)
	}
	until := cert.Expiry
	for _, w := range []*caps.Writecap{nodeW, topicW} {
		if e := w.Expiry(); e.Before(until) {
			until = e
		}
	}
	return &inbound{envelope: env, publisher: cert.HostID, node: cert.NodeID}, until, nil
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
func (ps *PubSub) verifyCap(b []byte, holder paths.ID, target paths.Path, now time.Time) (*caps.Writecap, error) {
	w, err := ps.verifier.VerifyBytes(b, target)
	if err == nil && w.Holder() != holder {
		err = fmt.Errorf("writecap held by %s, not the publisher's node %s: %w", w.Holder(), holder, caps.ErrWrongHolder)
	}
	return w, capError(w, err, now)
}

// capError marks a time check of w that failed by less than the allowed
// clock skew.
func capError(w *caps.Writecap, err error, now time.Time) error {
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
