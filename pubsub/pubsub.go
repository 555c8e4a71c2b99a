package pubsub

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	gossip "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// Errors callers branch on with errors.Is. Errors wrap them with the
// operation and the topic, and, for ErrDenied, the caps error that refused
// each writecap this node holds.
var (
	// ErrDenied: no writecap this node holds lets it publish to the topic.
	ErrDenied = errors.New("no writecap held covers the topic")
	// ErrTooLarge: the encoded message would exceed Config.MaxMessage.
	ErrTooLarge = errors.New("message too large")
	// ErrPattern: the pattern cannot be subscribed to (empty, or a
	// wildcard root: a subscription is always within one domain).
	ErrPattern = errors.New("pattern not supported")
	// ErrReaders: the readers of a confidential publication are unusable
	// (too many, or a key that cannot receive readcaps).
	ErrReaders = errors.New("unusable readers")
	// ErrCanceled: the subscription was canceled.
	ErrCanceled = errors.New("subscription canceled")
	// ErrClosed: the PubSub was closed.
	ErrClosed = errors.New("pubsub closed")
)

// Defaults and limits.
const (
	// DefaultMaxMessage is the default, and largest, Config.MaxMessage: the
	// canonical decoder's bound.
	DefaultMaxMessage = canon.MaxSize
	// DefaultBuffer is the default Config.Buffer.
	DefaultBuffer = 1024
	// DecapsulateTimeout bounds one Config.Decapsulate call.
	DecapsulateTimeout = 10 * time.Second
	// rpcSlack is what gossipsub's RPC framing may add to one message.
	rpcSlack = 16 << 10
	// queueSize is gossipsub's validation queue and per-peer outbound queue
	// (RPCs): its defaults (32) drop messages in bursts of a few hundred.
	queueSize = 256
	// seenSize bounds the (publisher, seq) duplicate filter.
	seenSize = 1 << 16
	// verdictCacheSize bounds the accepted messages remembered by content,
	// so that a publication's other copies are not validated again.
	verdictCacheSize = 4096
	// certCacheSize bounds the host certificates whose signature is cached.
	certCacheSize = 1024
	// unwrapQueue bounds the confidential messages waiting for their
	// topic key to be unwrapped.
	unwrapQueue = 256
	// topicIdle is how long a topic joined only to publish is kept after
	// its last use.
	topicIdle = time.Minute
)

// protocols are the gossipsub versions spoken: all those with meshes,
// none of floodsub.
var protocols = []protocol.ID{gossip.GossipSubID_v13, gossip.GossipSubID_v12, gossip.GossipSubID_v11}

// Config configures a PubSub. Validate fills in defaults for zero fields.
type Config struct {
	// MaxMessage bounds one encoded message: the payload (or its
	// ciphertext, plus readcaps) and an envelope of about 0.5–1 KiB
	// (topic, publisher, host certificate, writecaps). Default and maximum
	// DefaultMaxMessage (1 MiB). Every node of a domain should use the same
	// value: a larger message is refused by every relay.
	MaxMessage int
	// Buffer is how many messages one Subscription queues before new ones
	// are dropped (counted in Subscription.Dropped); default DefaultBuffer.
	Buffer int
	// Decapsulate is this node's key agreement (its node key's ECDH, such
	// as tpm.Key.ECDH), used to unwrap the readcaps of confidential topics
	// addressed to this node. It may be slow (a TPM): each topic key is
	// unwrapped once and cached. Nil: confidential messages from others are
	// never readable here.
	Decapsulate func(ctx context.Context, eph *ecdh.PublicKey) ([]byte, error)
	// Verifier checks writecaps; share one between subsystems so a chain
	// is verified once. Default: a new one on Clock.
	Verifier *caps.Verifier
	// Log receives the subsystem's log; default: discarded.
	Log *slog.Logger
	// Clock returns the time for certificates and writecaps (default
	// time.Now); timers run on real time.
	Clock func() time.Time

	// Test hooks, settable only from this package's tests.
	unchecked bool // Publish skips the writecap and size checks
}

// Validate fills in defaults and checks the values. It is idempotent.
func (c *Config) Validate() error {
	if c.MaxMessage == 0 {
		c.MaxMessage = DefaultMaxMessage
	}
	if c.MaxMessage < 1024 || c.MaxMessage > canon.MaxSize {
		return fmt.Errorf("pubsub: config: max message %d is outside [1024, %d]", c.MaxMessage, canon.MaxSize)
	}
	if c.Buffer == 0 {
		c.Buffer = DefaultBuffer
	}
	if c.Buffer < 0 {
		return fmt.Errorf("pubsub: config: buffer %d is negative", c.Buffer)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Verifier == nil {
		c.Verifier = caps.NewVerifier(caps.WithClock(c.Clock))
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// PubSub publishes and subscribes to topics named by paths, over gossipsub
// on a p2p.Node's host. Create it with New after the node, close it before
// the node. All methods are safe for concurrent use.
type PubSub struct {
	node     *p2p.Node
	id       *p2p.Identity
	self     peer.ID  // the host's peer ID: gossipsub's message author
	nodeID   paths.ID // the node principal: readcaps to it are ours
	cfg      Config
	log      *slog.Logger
	gs       *gossip.PubSub
	verifier *caps.Verifier
	certs    *lru.Cache[[sha256.Size]byte, *caps.HostCert] // signature checked
	verdicts *lru.Cache[[sha256.Size]byte, verdict]        // accepted messages by data SHA-256
	seen     *dedup
	sealer   *sealer
	opener   *opener
	seq      atomic.Uint64
	stats    counters

	ctx    context.Context // cancelled by Close; gossipsub runs on it
	cancel context.CancelFunc
	wg     sync.WaitGroup // readers and the sweeper

	// subs are the live Subscriptions: read without a lock by deliver,
	// replaced (never modified in place) with mu held.
	subs    atomic.Pointer[[]*Subscription]
	unwrapQ chan *inbound // confidential messages waiting for their key

	// mu guards topics, routes, peerChecks, grants, closed and graceTimer, orders changes of
	// subs, and orders wg.Add against Close's Wait. gossipsub is called
	// with mu held, so nothing gossipsub calls back (validator, peer
	// filter, score inspector) may take it.
	mu         sync.Mutex
	topics     map[string]*topic // joined gossipsub topics by name
	routes     map[paths.Path][]string
	peerChecks map[string]peerCheck
	grants     []*caps.Writecap
	closed     bool
	graceTimer *time.Timer // runs reconcileLocked when a covered topic's grace ends

	// scoresMu guards scores.
	scoresMu sync.Mutex
	scores   map[peer.ID]float64

	closeOnce sync.Once

	// recvHook, when set (benchmarks), sees every received copy.
	recvHook atomic.Pointer[func(*inbound)]
}

// topic is a joined gossipsub topic.
type topic struct {
	name     string
	h        *gossip.Topic
	relay    gossip.RelayCancelFunc // nil while this node is not in the topic's mesh
	refs     int                    // local Subscriptions using it
	leaveAt  time.Time              // when a relayed topic no longer needed is left (see reconcileLocked)
	lastUsed time.Time              // last publication, for the sweeper
}

// New starts pub-sub on node, whose identity is id (the same the node was
// made with); make one PubSub per node, since gossipsub owns its
// protocols on the host. It builds a gossipsub router on node.Host() with strict
// signing, the message validator for every topic, and peer scoring; it
// does no I/O and does not block (ctx is checked, not kept). Errors:
// cfg.Validate's, an id that is not node's, gossipsub's.
func New(ctx context.Context, node *p2p.Node, id *p2p.Identity, cfg Config) (*PubSub, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pubsub: new: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if node == nil || id == nil || id.HostKey == nil || id.Cert == nil || id.Writecap == nil {
		return nil, fmt.Errorf("pubsub: new: node or identity missing: %w", caps.ErrMalformed)
	}
	self, err := peer.IDFromPrivateKey(id.HostKey)
	if err != nil || self != node.ID() {
		return nil, fmt.Errorf("pubsub: new: identity's host key is not node %s's: %w", node.ID(), caps.ErrWrongHolder)
	}
	certs, _ := lru.New[[sha256.Size]byte, *caps.HostCert](certCacheSize)
	verdicts, _ := lru.New[[sha256.Size]byte, verdict](verdictCacheSize)
	ps := &PubSub{
		node: node, id: id, self: self, nodeID: id.Cert.NodeID, cfg: cfg,
		log: cfg.Log.With("subsystem", "pubsub"), verifier: cfg.Verifier, certs: certs, verdicts: verdicts,
		routes: make(map[paths.Path][]string),
		seen:   newDedup(seenSize), topics: make(map[string]*topic), peerChecks: make(map[string]peerCheck),
		scores: make(map[peer.ID]float64), unwrapQ: make(chan *inbound, unwrapQueue),
	}
	ps.subs.Store(new([]*Subscription))
	ps.opener = newOpener(ps.nodeID, cfg.Decapsulate, ps.log)
	ps.sealer = newSealer(ps.opener)
	ps.seq.Store(uint64(time.Now().UnixNano()))
	ps.ctx, ps.cancel = context.WithCancel(context.Background())
	ps.gs, err = gossip.NewGossipSub(ps.ctx, node.Host(),
		// Each message carries its own signature by the publisher's host
		// key, made once per publication however many topics carry it
		// (docs/pubsub.md#wire-format): gossipsub's would be one per copy.
		gossip.WithMessageSignaturePolicy(gossip.StrictNoSign),
		gossip.WithMessageIdFn(messageID),
		// gossipsub only: floodsub peers would get every message without
		// the peer filter.
		gossip.WithGossipSubProtocols(protocols, gossip.GossipSubDefaultFeatures),
		gossip.WithDefaultValidator(gossip.ValidatorEx(ps.validate), gossip.WithValidatorInline(true)),
		gossip.WithPeerFilter(ps.peerFilter),
		gossip.WithPeerScore(peerScoreParams(), peerScoreThresholds()),
		gossip.WithPeerScoreInspect(gossip.PeerScoreInspectFn(ps.inspectScores), scoreInspectPeriod),
		gossip.WithMaxMessageSize(cfg.MaxMessage+rpcSlack),
		gossip.WithValidateQueueSize(queueSize),
		gossip.WithPeerOutboundQueueSize(queueSize),
		gossip.WithLogger(cfg.Log.With("subsystem", "gossipsub")),
	)
	if err != nil {
		ps.cancel()
		return nil, fmt.Errorf("pubsub: new gossipsub: %w", err)
	}
	ps.wg.Go(ps.sweep)
	ps.wg.Go(ps.unwrapper)
	ps.log.Info("pubsub up", "path", id.Path, "peer", self, "max_message", cfg.MaxMessage)
	return ps, nil
}

// peerFilter admits to gossipsub's meshes, flood publishing and gossip
// only peers that proved a path (any domain's) on a live connection: a
// stranger that reached the host can neither read nor inject. Writers are
// checked per message anyway.
func (ps *PubSub) peerFilter(p peer.ID, _ string) bool {
	_, ok := ps.node.VerifiedPath(p)
	return ok
}

func (ps *PubSub) inspectScores(m map[peer.ID]float64) {
	ps.scoresMu.Lock()
	defer ps.scoresMu.Unlock()
	ps.scores = maps.Clone(m)
}

// PeerScores returns gossipsub's scores of connected peers, as of at most
// a second ago. A peer below -80 is graylisted: nothing it sends is
// processed (docs/pubsub.md#peer-scoring). Safe for concurrent use.
func (ps *PubSub) PeerScores() map[peer.ID]float64 {
	ps.scoresMu.Lock()
	defer ps.scoresMu.Unlock()
	return maps.Clone(ps.scores)
}

// Close cancels every Subscription (Next returns ErrClosed), stops
// gossipsub and waits for this package's goroutines. Close the node after
// its PubSub. Idempotent; later calls return nil.
func (ps *PubSub) Close() error {
	ps.closeOnce.Do(func() {
		ps.mu.Lock()
		ps.closed = true
		subs := *ps.subs.Swap(new([]*Subscription))
		ps.mu.Unlock()
		for _, s := range subs {
			s.end(ErrClosed)
		}
		ps.cancel()
		ps.wg.Wait()
		// gossipsub stops with its context but leaves its stream handlers.
		h := ps.node.Host()
		for _, id := range protocols {
			h.RemoveStreamHandler(id)
		}
		ps.log.Info("pubsub closed", "path", ps.id.Path)
	})
	return nil
}

// AddGrant adds a writecap this node holds, beyond its identity's, that
// Publish may use for topics outside the node's own subtree. A writecap
// held by another principal is ignored by Publish. Safe for concurrent use.
func (ps *PubSub) AddGrant(w *caps.Writecap) {
	if w == nil {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, g := range ps.grants {
		if g.Digest() == w.Digest() {
			return
		}
	}
	ps.grants = append(ps.grants, w)
}

// Stats counts what this PubSub has done since New.
type Stats struct {
	Published  uint64 // successful Publish calls
	Sent       uint64 // gossipsub messages those made (one per topic, docs/pubsub.md)
	Received   uint64 // valid gossipsub messages on this node's topics, its own included (one per topic copy)
	Cached     uint64 // of those, copies accepted by a remembered verdict, without a validation
	Duplicates uint64 // of those, copies dropped by the (publisher, seq) filter
	Delivered  uint64 // messages queued to Subscriptions (one per matching Subscription)
	Dropped    uint64 // messages dropped because a Subscription's queue was full
	Rejected   uint64 // messages the validator refused (and penalised)
	Ignored    uint64 // messages the validator dropped without penalty
	Unreadable uint64 // confidential messages delivered without a key to read them
}

type counters struct {
	published, sent, received, cached, duplicates, delivered, dropped, rejected, ignored, unreadable atomic.Uint64
}

// Stats returns the counters. Safe for concurrent use.
func (ps *PubSub) Stats() Stats {
	c := &ps.stats
	return Stats{Published: c.published.Load(), Sent: c.sent.Load(), Received: c.received.Load(), Cached: c.cached.Load(),
		Duplicates: c.duplicates.Load(), Delivered: c.delivered.Load(), Dropped: c.dropped.Load(),
		Rejected: c.rejected.Load(), Ignored: c.ignored.Load(), Unreadable: c.unreadable.Load()}
}

// sweep closes topics joined only to publish once they have been idle for
// topicIdle, so publishing to many paths does not accumulate state.
func (ps *PubSub) sweep() {
	t := time.NewTicker(topicIdle / 2)
	defer t.Stop()
	for {
		select {
		case <-ps.ctx.Done():
			return
		case <-t.C:
		}
		ps.mu.Lock()
		for name, tp := range ps.topics {
			if tp.refs == 0 && tp.relay == nil && time.Since(tp.lastUsed) > topicIdle {
				// Close fails while gossipsub still processes a canceled
				// subscription; the topic is then tried again next round.
				if err := tp.h.Close(); err == nil {
					delete(ps.topics, name)
				}
			}
		}
		ps.mu.Unlock()
	}
}

// join returns the joined topic name, joining it if needed. Called with
// mu held.
func (ps *PubSub) joinLocked(name string) (*topic, error) {
	if tp, ok := ps.topics[name]; ok {
		return tp, nil
	}
	h, err := ps.gs.Join(name)
	if err != nil {
		return nil, fmt.Errorf("pubsub: join %s: %w", name, err)
	}
	tp := &topic{name: name, h: h, lastUsed: time.Now()}
	ps.topics[name] = tp
	return tp, nil
}
