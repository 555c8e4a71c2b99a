package exchange

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/lifecycle"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// Protocol is the libp2p protocol of the block exchange.
const Protocol = protocol.ID("/blocktree/blocks/1.0.0")

// Defaults of Config.
const (
	DefaultMaxWantBatch       = 64
	DefaultMaxInflightPerPeer = 32 // × 256 KiB blocks = 8 MiB in flight per peer
	DefaultMaxPeers           = 4
	DefaultRequestTimeout     = 10 * time.Second
	DefaultServeConcurrency   = 64
	DefaultMaxStrikes         = 3
	DefaultBackoff            = time.Minute
	DefaultMaxPeerStreams     = 8
	DefaultHedgeAfter         = 200 * time.Millisecond
	DefaultMaxWantCopies      = 3
)

// Fixed timings.
const (
	// authWait bounds how long the server waits for a client's proof of
	// path, which may still be in flight on a new connection.
	authWait = 10 * time.Second
	// serveIdle bounds how long a server waits for the next request frame
	// of a stream; an idle stream is closed.
	serveIdle = time.Minute
	// providerLimit is how many providers one lookup asks for.
	providerLimit = 8
	// provideTimeout bounds the announcement of a replicated root.
	provideTimeout = time.Minute
	// serveReadAhead is how many answers a server stream loads (reads from
	// the store, which verifies them) ahead of the one it is writing.
	serveReadAhead = 4
	// verifyAhead is how many received blocks a fetch session queues for
	// verification and storage while its reader reads the next frames.
	verifyAhead = 4
)

// Errors callers branch on with errors.Is; every error wraps one of them
// (or one of blocks') with the operation.
var (
	// ErrClosed: the Exchange was closed.
	ErrClosed = errors.New("exchange closed")
	// ErrDenied: the peer refused us (we are not verified, or of another
	// domain), or we refused it.
	ErrDenied = errors.New("peer not authorised")
	// ErrBusy: the peer is at its ServeConcurrency or per-peer stream
	// bound; try later or elsewhere.
	ErrBusy = errors.New("peer busy")
	// ErrProtocol: a frame broke the wire format (unknown version or type,
	// over its size bound, malformed body, out of turn).
	ErrProtocol = errors.New("block exchange protocol violation")
	// ErrReplicate: the peer could not complete a replication; the text
	// it sent says why.
	ErrReplicate = errors.New("replication failed")
)

// Config configures an Exchange. Validate fills in defaults for zero
// fields.
type Config struct {
	// MaxWantBatch bounds the CIDs of one want-list message (default 64,
	// at most WireMaxWant).
	MaxWantBatch int
	// MaxInflightPerPeer bounds the blocks requested from one peer and not
	// yet answered (default 32), which bounds the bytes in flight per peer
	// to MaxInflightPerPeer × MaxBlockSize.
	MaxInflightPerPeer int
	// MaxPeers bounds the peers one Fetch reads from in parallel (default
	// 4).
	MaxPeers int
	// RequestTimeout: a peer that answers nothing for this long while it
	// owes answers gets a strike and its wants move elsewhere (default
	// 10s). It also bounds dialling a peer and each write.
	RequestTimeout time.Duration
	// ServeConcurrency bounds the inbound streams served at once (default
	// 64); beyond it a stream is refused at once as busy.
	ServeConcurrency int
	// MaxPeerStreams bounds the inbound streams served at once for one peer
	// (default 8); beyond it a stream is refused as busy.
	MaxPeerStreams int
	// MaxStrikes: a peer with this many strikes is ignored for Backoff
	// (default 3); peers with fewer strikes are tried after clean ones.
	MaxStrikes int
	// Backoff is how long a peer that reached MaxStrikes is ignored
	// (default 1 minute); then its strikes are forgiven.
	Backoff time.Duration
	// HedgeAfter is the least time a want waits at one peer before it is
	// also asked of another one that was not asked for it yet (a hedged
	// request; default 200ms). The wait adapts to the peer: it is
	// max(HedgeAfter, 4 × the peer's median answer time), at most
	// max(HedgeAfter, RequestTimeout/4). The first verified answer wins;
	// later copies are dropped without penalty. A silent peer is still
	// struck at RequestTimeout.
	HedgeAfter time.Duration
	// MaxWantCopies bounds the peers asked for one block at the same time
	// (default 3); 1 turns hedging off.
	MaxWantCopies int
	// Log receives the exchange's log; default: discarded.
	Log *slog.Logger
}

// Validate fills in defaults and checks the values. It is idempotent.
func (c *Config) Validate() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxWantBatch, DefaultMaxWantBatch)
	def(&c.MaxInflightPerPeer, DefaultMaxInflightPerPeer)
	def(&c.MaxPeers, DefaultMaxPeers)
	def(&c.ServeConcurrency, DefaultServeConcurrency)
	def(&c.MaxPeerStreams, DefaultMaxPeerStreams)
	def(&c.MaxStrikes, DefaultMaxStrikes)
	def(&c.MaxWantCopies, DefaultMaxWantCopies)
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.HedgeAfter == 0 {
		c.HedgeAfter = DefaultHedgeAfter
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.MaxWantBatch < 0 || c.MaxWantBatch > WireMaxWant:
		return fmt.Errorf("exchange: config: MaxWantBatch %d: want 1..%d", c.MaxWantBatch, WireMaxWant)
	case c.MaxInflightPerPeer < 0, c.MaxPeers < 0, c.ServeConcurrency < 0, c.MaxPeerStreams < 0, c.MaxStrikes < 0, c.MaxWantCopies < 0:
		return fmt.Errorf("exchange: config: negative limit: %+v", *c)
	case c.RequestTimeout < 0 || c.Backoff < 0 || c.HedgeAfter < 0:
		return fmt.Errorf("exchange: config: negative duration: timeout %v, backoff %v, hedge after %v", c.RequestTimeout, c.Backoff, c.HedgeAfter)
	}
	return nil
}

// Where says where to look for blocks: first the nodes that host the data
// (Hosts, blocktree node paths, resolved and connected with p2p Connect)
// and Peers, in that order; then, only for what they could not supply,
// the peers that announced Root in the DHT (if Root is defined).
type Where struct {
	Hosts []paths.Path
	Peers []peer.ID
	Root  cid.Cid
}

// PeerStat is what an Exchange knows of one peer, as a client (blocks it
// sent us, have-nots, strikes) and as a server (blocks we sent it).
type PeerStat struct {
	Peer         peer.ID    `json:"peer"`
	Path         paths.Path `json:"path,omitzero"` // its verified node path, when known
	Blocks       int64      `json:"blocks"`        // verified blocks received from it
	Bytes        int64      `json:"bytes"`         // their bytes
	HaveNots     int64      `json:"have_nots"`     // wants it answered with have-not
	Served       int64      `json:"served"`        // blocks we sent it
	Strikes      int        `json:"strikes"`       // current strikes (reset after a back-off)
	TotalStrikes int64      `json:"total_strikes"` // strikes ever
	LastStrike   string     `json:"last_strike"`   // why it got its last strike
	BackoffUntil time.Time  `json:"backoff_until"` // ignored until then, if in the future
	Failures     int64      `json:"failures"`      // sessions that ended early without a strike (unreachable, busy, refused)
}

// Exchange fetches blocks from peers and serves the blocks of its store.
// Create it with New; stop it with Close. All methods are safe for
// concurrent use.
type Exchange struct {
	node  *p2p.Node
	store blocks.PinStore
	cfg   Config
	log   *slog.Logger

	serveSlots chan struct{} // a token per stream served: ServeConcurrency

	// liar, when set (tests; the bt_liar build with BT_LIE), replaces the
	// server's answer to each wanted CID. Set before traffic starts.
	liar liar

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	// smu guards stats, answers and peerStreams.
	smu         sync.Mutex
	stats       map[peer.ID]*PeerStat
	answers     map[peer.ID]*answerTimes
	peerStreams map[peer.ID]int

	life lifecycle.Group // every operation, stream handler and goroutine
}

// New makes an Exchange for node over store and registers Protocol's
// stream handler on node's host (one Exchange per node). It checks cfg
// (Config.Validate) first. node and store stay the caller's: close the
// Exchange before them.
func New(node *p2p.Node, store blocks.PinStore, cfg Config) (*Exchange, error) {
	if node == nil || store == nil {
		return nil, errors.New("exchange: new: nil node or store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	x := &Exchange{
		node: node, store: store, cfg: cfg, log: cfg.Log.With("subsystem", "exchange"),
		serveSlots:  make(chan struct{}, cfg.ServeConcurrency),
		stats:       make(map[peer.ID]*PeerStat),
		answers:     make(map[peer.ID]*answerTimes),
		peerStreams: make(map[peer.ID]int),
	}
	x.ctx, x.cancel = context.WithCancel(context.Background())
	if l := liarFromEnv(); l != nil {
		x.liar = l
		x.log.Warn("this node LIES when serving blocks (bt_liar build, BT_LIE set): for tests only")
	}
	node.Host().SetStreamHandler(Protocol, x.handleStream)
	return x, nil
}

// Close stops the Exchange: it removes the stream handler, cancels the
// fetches, replications and streams in progress (they fail with
// ErrClosed), and waits for every goroutine it started. It is idempotent
// and safe to call concurrently; it always returns nil.
func (x *Exchange) Close() error {
	x.life.Close(func() {
		x.node.Host().RemoveStreamHandler(Protocol)
		x.cancel()
	})
	return nil
}

// spawn runs f on a goroutine that Close waits for, unless closed.
func (x *Exchange) spawn(f func()) bool { return x.life.Go(f) }

// opContext returns a context that ends with ctx or when the Exchange
// closes.
func (x *Exchange) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(x.ctx, func() { cancel(ErrClosed) })
	return ctx, func() { stop(); cancel(nil) }
}

// Provide announces root in the DHT (p2p Node.Provide), so that Fetches
// whose Where names root find this node when the hosts fail.
func (x *Exchange) Provide(ctx context.Context, root cid.Cid) error {
	if !x.life.Enter() {
		return fmt.Errorf("exchange: provide %s: %w", root, ErrClosed)
	}
	defer x.life.Leave()
	ctx, cancel := x.opContext(ctx)
	defer cancel()
	if err := x.node.Provide(ctx, root); err != nil {
		return fmt.Errorf("exchange: %w", err)
	}
	return nil
}

// PeerStats reports the per-peer counters and penalties, sorted by peer
// ID. Safe for concurrent use.
func (x *Exchange) PeerStats() []PeerStat {
	x.smu.Lock()
	defer x.smu.Unlock()
	out := make([]PeerStat, 0, len(x.stats))
	for _, s := range x.stats {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b PeerStat) int {
		switch {
		case a.Peer < b.Peer:
			return -1
		case a.Peer > b.Peer:
			return 1
		}
		return 0
	})
	return out
}

// stat returns p's entry, creating it; x.smu must be held.
func (x *Exchange) stat(p peer.ID) *PeerStat {
	s := x.stats[p]
	if s == nil {
		s = &PeerStat{Peer: p}
		if path, ok := x.node.VerifiedPath(p); ok {
			s.Path = path
		}
		x.stats[p] = s
	}
	if s.Path.IsZero() {
		if path, ok := x.node.VerifiedPath(p); ok {
			s.Path = path
		}
	}
	return s
}

// strike penalises p for why.
func (x *Exchange) strike(p peer.ID, why error) {
	x.smu.Lock()
	defer x.smu.Unlock()
	s := x.stat(p)
	s.Strikes++
	s.TotalStrikes++
	s.LastStrike = why.Error()
	if s.Strikes >= x.cfg.MaxStrikes {
		s.BackoffUntil = time.Now().Add(x.cfg.Backoff)
		s.Strikes = 0
	}
	x.log.Warn("peer penalised", "peer", p, "strikes", s.Strikes, "total", s.TotalStrikes, "backoff_until", s.BackoffUntil, "why", why)
}

// count updates p's counters.
func (x *Exchange) count(p peer.ID, f func(*PeerStat)) {
	x.smu.Lock()
	f(x.stat(p))
	x.smu.Unlock()
}

// standing returns p's current strikes and whether it is in back-off.
func (x *Exchange) standing(p peer.ID) (strikes int, banned bool) {
	x.smu.Lock()
	defer x.smu.Unlock()
	s := x.stats[p]
	if s == nil {
		return 0, false
	}
	if time.Now().Before(s.BackoffUntil) {
		return s.Strikes, true
	}
	return s.Strikes, false
}

// isTimeout reports whether err is a deadline on a stream.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return !errors.Is(err, network.ErrReset) && errors.As(err, &t) && t.Timeout()
}
