package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
)

// Errors callers branch on with errors.Is. Every error this package returns
// wraps one of them with the operation, the path or peer, and what to do.
var (
	// ErrNotFound: no valid record for the path was found in the DHT.
	ErrNotFound = errors.New("no valid record for the path")
	// ErrExpired: the path's record (or the certificate or writecap in it)
	// has expired and was not republished.
	ErrExpired = errors.New("record expired")
	// ErrUnreachable: the peer could not be connected to or talked to.
	ErrUnreachable = errors.New("peer unreachable")
	// ErrNotAuthenticated: the peer did not prove the expected path; the
	// caps error that refused its proof is wrapped too.
	ErrNotAuthenticated = errors.New("peer did not prove its path")
	// ErrBadRecord: a path record is invalid; a caps error or ErrExpired
	// says why.
	ErrBadRecord = errors.New("invalid path record")
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("node closed")
)

// Node is this machine's libp2p side: a host whose identity is certified by
// the node key, the private DHT that maps paths to peers, the auth protocol
// that gives every connection a verified path, and the ping protocol.
//
// Create it with New, run Serve, stop it with Close. All methods are safe
// for concurrent use.
type Node struct {
	id        *Identity
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	h         host.Host
	dht       *dht.IpfsDHT
	store     ds.Batching // the DHT's record store
	verifier  *caps.Verifier
	validator *Validator
	proof     []byte // our encoded proof, sent on every connection
	auth      *authTable
	cache     *resolveCache
	notifee   network.Notifiee
	mdnsSlots chan struct{} // bounds concurrent mDNS-triggered dials

	republish chan struct{} // nudges the publisher; buffered 1

	// pubMu guards pub and seq.
	pubMu sync.Mutex
	pub   Publication
	seq   uint64

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	// mu guards closed and serving, and orders wg.Add against Close's Wait.
	mu      sync.Mutex
	closed  bool
	serving bool
	wg      sync.WaitGroup // Serve and every goroutine the node starts

	closeOnce sync.Once
	closeErr  error
}

// New builds the node's host, DHT and protocols and starts listening; it
// does not contact any peer and does not block (ctx is checked, not kept).
// It checks id (see Identity.Check) and cfg (Config.Validate) first.
func New(ctx context.Context, id *Identity, cfg Config) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("p2p: new node: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if id == nil || id.HostKey == nil || id.Cert == nil || id.Writecap == nil {
		return nil, fmt.Errorf("p2p: new node: identity is incomplete: %w", caps.ErrMalformed)
	}
	verifier := caps.NewVerifier(caps.WithClock(cfg.Clock))
	if !cfg.allowInvalidIdentity {
		if err := id.Check(verifier, cfg.Clock()); err != nil {
			return nil, err
		}
	}
	proof, err := encodeProof(id)
	if err != nil {
		return nil, err
	}
	rm, err := cfg.Limits.resourceManager()
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.Limits.LowWater, cfg.Limits.HighWater, connmgr.WithGracePeriod(cfg.Limits.GracePeriod))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	// TCP port reuse (dialling from the listen port) is what TCP hole
	// punching and consistent NAT mappings need; without NAT traversal it
	// only adds accidental simultaneous opens when two peers dial each
	// other at once (both sides then act as the initiator, the handshake
	// fails and both back off), which loopback clusters hit often.
	var tcpOpts []any
	if !cfg.NAT {
		tcpOpts = append(tcpOpts, tcp.DisableReuseport())
	}
	opts := []libp2p.Option{
		libp2p.Identity(id.HostKey),
		libp2p.ListenAddrs(cfg.Listen...),
		libp2p.Transport(tcp.NewTCPTransport, tcpOpts...),
		libp2p.Transport(libp2pquic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.UserAgent("blocktree"),
		libp2p.Ping(false), // ours answers verified peers only
		libp2p.DisableMetrics(),
	}
	if cfg.NAT {
		opts = append(opts, libp2p.NATPortMap(), libp2p.EnableHolePunching(), libp2p.EnableAutoNATv2(),
			libp2p.EnableNATService(), libp2p.EnableRelay())
		if len(cfg.Relays) > 0 {
			opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(cfg.Relays))
		}
	} else {
		opts = append(opts, libp2p.DisableRelay())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: new host: %w", err)
	}
	n := &Node{
		id: id, cfg: cfg, log: cfg.Log.With("subsystem", "p2p"), now: cfg.Clock, h: h,
		verifier: verifier, validator: NewValidator(verifier, cfg.Clock), proof: proof,
		auth: newAuthTable(), mdnsSlots: make(chan struct{}, 4), republish: make(chan struct{}, 1),
	}
	n.cache = newResolveCache()
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.store = dssync.MutexWrap(ds.NewMapDatastore())
	var v record.Validator = n.validator
	if cfg.acceptAllRecords {
		v = acceptAll{}
	}
	dopts := []dht.Option{
		dht.ProtocolPrefix(DHTPrefix),
		// Every daemon is a DHT server: a personal domain has few nodes,
		// each one long-lived and reachable (directly, by hole punching or
		// through a relay), and a client-only node would neither store
		// records nor route. ModeAuto would also keep a node that AutoNAT
		// has not yet judged public out of every routing table.
		dht.Mode(dht.ModeServer),
		dht.Validator(record.NamespacedValidator{RecordNamespace: v}),
		dht.Datastore(n.store),
		dht.MaxRecordAge(MaxRecordTTL),
		dht.ValueGCInterval(time.Hour),
		dht.BootstrapPeers(cfg.Bootstrap...),
	}
	if !cfg.Loopback {
		dopts = append(dopts,
			dht.RoutingTablePeerDiversityFilter(newIPDiversityFilter(h)),
			dht.AddressFilter(withoutLoopback))
	}
	n.dht, err = dht.New(h, dopts...)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("p2p: new DHT: %w", err)
	}
	h.SetStreamHandler(AuthProtocol, n.handleAuth)
	h.SetStreamHandler(PingProtocol, n.handlePing)
	n.notifee = &network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { n.connected(c) },
		DisconnectedF: func(_ network.Network, c network.Conn) { n.disconnected(c) },
	}
	h.Network().Notify(n.notifee)
	// A connection accepted before Notify would have gone unnoticed.
	for _, c := range h.Network().Conns() {
		n.connected(c)
	}
	n.log.Info("p2p node up", "path", id.Path, "peer", h.ID(), "addrs", h.Addrs(), "nat", cfg.NAT, "mdns", cfg.MDNS, "loopback", cfg.Loopback)
	return n, nil
}

// acceptAll is a validator that accepts any record: a test hook that lets
// a malicious in-process node push records to honest ones.
type acceptAll struct{}

func (acceptAll) Validate(string, []byte) error        { return nil }
func (acceptAll) Select(string, [][]byte) (int, error) { return 0, nil }

// spawn runs f on a goroutine that Close waits for, unless the node is
// closed.
func (n *Node) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Go(f)
	return true
}

// Serve joins the DHT through the bootstrap peers, publishes this node's
// record and keeps it fresh (every RecordTTL/2 and whenever the node's
// addresses change), keeps recently used resolutions fresh, and, with
// cfg.MDNS, discovers peers on the LAN. It returns ctx's error when ctx
// ends, nil when the node is closed, and ErrClosed if it was closed before.
// Call it once.
func (n *Node) Serve(ctx context.Context) error {
	n.mu.Lock()
	switch {
	case n.closed:
		n.mu.Unlock()
		return fmt.Errorf("p2p: serve: %w", ErrClosed)
	case n.serving:
		n.mu.Unlock()
		return errors.New("p2p: serve: already serving")
	}
	n.serving = true
	n.wg.Add(1)
	n.mu.Unlock()
	defer n.wg.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(n.ctx, cancel)()

	if n.cfg.MDNS {
		stop, err := n.startMDNS()
		if err != nil {
			n.log.Warn("mDNS discovery unavailable", "err", err)
		} else {
			defer stop()
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		n.bootstrap(ctx)
		n.publishLoop(ctx)
	})
	wg.Go(func() { n.refreshLoop(ctx) })
	wg.Wait()
	if n.ctx.Err() != nil {
		return nil
	}
	return ctx.Err()
}

// Close stops the node: it cancels Serve and every goroutine the node
// started, waits for them, then closes the DHT and the host. It is
// idempotent and safe to call concurrently; later calls return the first
// call's result.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		n.cancel()
		n.h.Network().StopNotify(n.notifee)
		n.wg.Wait()
		n.closeErr = errors.Join(n.dht.Close(), n.h.Close())
		if n.closeErr != nil {
			n.closeErr = fmt.Errorf("p2p: close: %w", n.closeErr)
		}
		n.log.Info("p2p node closed", "path", n.id.Path)
	})
	return n.closeErr
}

// Host returns the libp2p host, for protocols layered above this package.
func (n *Node) Host() host.Host { return n.h }

// Path returns the node's own path.
func (n *Node) Path() paths.Path { return n.id.Path }

// NodeID returns the principal of the node key: the holder of the node's
// writecap, whom writecaps for this node are issued to.
func (n *Node) NodeID() paths.ID { return n.id.Writecap.Holder() }

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.h.ID() }

// Addrs returns the node's full addresses, each ending in /p2p/<peer ID>.
func (n *Node) Addrs() []ma.Multiaddr {
	as, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()})
	if err != nil {
		return nil
	}
	return as
}

// AddrInfo returns the node's peer ID and addresses, for bootstrapping
// others.
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()}
}

// RoutingTableSize is the number of peers in the DHT routing table.
func (n *Node) RoutingTableSize() int { return n.dht.RoutingTable().Size() }

// PeerInfo describes a connected peer.
type PeerInfo struct {
	ID    peer.ID
	Addrs []ma.Multiaddr // remote addresses of the live connections
	// Path is the path the peer proved; the zero Path (String "") when it
	// has not, and then Unverified says why.
	Path       paths.Path
	Unverified string
}

// Peers lists the connected peers, sorted by peer ID.
func (n *Node) Peers() []PeerInfo {
	now := n.now()
	var out []PeerInfo
	for _, p := range n.h.Network().Peers() {
		pi := PeerInfo{ID: p}
		for _, c := range n.h.Network().ConnsToPeer(p) {
			pi.Addrs = append(pi.Addrs, c.RemoteMultiaddr())
		}
		if path, ok := n.VerifiedPath(p); ok {
			pi.Path = path
		} else {
			pi.Unverified = n.auth.reason(p, now)
		}
		out = append(out, pi)
	}
	slices.SortFunc(out, func(a, b PeerInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// tagPeer tells the connection manager what a verified peer is worth:
// members of this domain are protected from trimming, others are tagged.
func (n *Node) tagPeer(p peer.ID, path paths.Path) {
	cm := n.h.ConnManager()
	if path.Root() == n.id.Path.Root() {
		cm.Protect(p, "bt-domain")
	} else {
		cm.TagPeer(p, "bt-verified", 10)
	}
}

// recordAddrs returns the addresses to publish: the host's, less loopback
// ones unless cfg.Loopback.
func (n *Node) recordAddrs() []ma.Multiaddr {
	if n.cfg.Loopback {
		return n.h.Addrs()
	}
	return withoutLoopback(n.h.Addrs())
}

// withoutLoopback drops loopback addresses: on another machine they lead
// to that machine's own daemon.
func withoutLoopback(as []ma.Multiaddr) []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(as))
	for _, a := range as {
		if !manet.IsIPLoopback(a) {
			out = append(out, a)
		}
	}
	return out
}
