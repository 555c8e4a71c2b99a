package p2p

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"
)

// DefaultPort is the TCP and UDP (QUIC) port a daemon listens on by
// default, on every interface, IPv4 and IPv6.
const DefaultPort = 4737

// Defaults.
const (
	DefaultRecordTTL      = time.Hour
	DefaultResolveRefresh = time.Minute
	DefaultResolveTimeout = 15 * time.Second
	// MaxRecordTTL bounds RecordTTL: DHT servers forget records a day after
	// receiving them whatever their expiry.
	MaxRecordTTL = 24 * time.Hour
	// MinRecordTTL bounds RecordTTL from below, so republishing (at TTL/2)
	// stays a background task.
	MinRecordTTL = time.Second
)

// DefaultListen returns the default listen addresses: TCP and QUIC v1 on
// DefaultPort on all IPv4 and IPv6 interfaces.
func DefaultListen() []ma.Multiaddr {
	return []ma.Multiaddr{
		ma.StringCast(fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort)),
		ma.StringCast(fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort)),
		ma.StringCast(fmt.Sprintf("/ip6/::/tcp/%d", DefaultPort)),
		ma.StringCast(fmt.Sprintf("/ip6/::/udp/%d/quic-v1", DefaultPort)),
	}
}

// Config configures a Node. Validate fills in defaults for zero fields;
// the booleans are off when zero, so a daemon starts from DaemonConfig,
// which turns NAT traversal and mDNS on, and tests from the zero value.
type Config struct {
	// Listen addresses; default DefaultListen().
	Listen []ma.Multiaddr
	// Bootstrap peers: members of the DHT to join through. None are built
	// in: Blocktree never contacts the public IPFS DHT.
	Bootstrap []peer.AddrInfo
	// MDNS finds peers on the local network and connects to them.
	MDNS bool
	// NAT turns on AutoNAT (v2 client and v1 service), the circuit relay v2
	// client, hole punching and NAT port mapping (UPnP, NAT-PMP). With NAT
	// off the node uses direct connections only.
	NAT bool
	// Relays are static circuit relay v2 servers for auto relay, used only
	// with NAT on. None by default: no public relay is ever contacted.
	Relays []peer.AddrInfo
	// RecordTTL is the lifetime of this node's path record (default 1h,
	// at most MaxRecordTTL). It is republished every RecordTTL/2, when the
	// node's addresses change, and on start.
	RecordTTL time.Duration
	// ResolveRefresh is how old a cached resolution may be before Resolve
	// asks the DHT again (default 1m). Entries used within the last ten
	// intervals are refreshed in the background before they go stale.
	ResolveRefresh time.Duration
	// ResolveTimeout bounds a DHT lookup when the caller's context has no
	// deadline (default 15s).
	ResolveTimeout time.Duration
	// Loopback relaxes, explicitly, what a cluster on one machine needs
	// relaxed: the routing table's IP-diversity filter is off, and records
	// and DHT answers keep loopback addresses. Never set it for a daemon on
	// a network.
	Loopback bool
	// Limits bounds the libp2p stack; zero fields take defaults.
	Limits Limits
	// Clock returns the time for certificates, records and the cache
	// (default time.Now); timers still run on real time.
	Clock func() time.Time
	// Log receives the node's log; default: discarded.
	Log *slog.Logger

	// Test hooks, settable only from this package's tests.
	allowInvalidIdentity bool // skip Identity.Check in New
	acceptAllRecords     bool // local DHT validator accepts anything
}

// Limits bounds the libp2p stack of one node. The resource manager starts
// from libp2p's default scaling limits scaled to Memory and FDs, then caps
// system-wide connections and streams at the values below and gives
// Blocktree's own protocols small per-peer limits. The connection manager
// trims connections above HighWater down to LowWater, sparing peers in the
// routing table's closest buckets and this domain's verified nodes.
type Limits struct {
	Memory       int64         // bytes the stack may reserve; default 256 MiB
	FDs          int           // file descriptors; default 512
	Conns        int           // connections, total; default 256
	ConnsInbound int           // inbound connections; default 128
	Streams      int           // streams, total; default 4096
	LowWater     int           // connection manager low water; default 64
	HighWater    int           // connection manager high water; default 128
	GracePeriod  time.Duration // new connections spared by the manager; default 1m
}

// Default limits.
const (
	DefaultMemory       = 256 << 20
	DefaultFDs          = 512
	DefaultConns        = 256
	DefaultConnsInbound = 128
	DefaultStreams      = 4096
	DefaultLowWater     = 64
	DefaultHighWater    = 128
	DefaultGracePeriod  = time.Minute
)

// DaemonConfig returns a daemon's configuration: default listen addresses,
// NAT traversal and mDNS on, no bootstrap peers; New's Validate fills the
// default limits.
func DaemonConfig() Config {
	return Config{NAT: true, MDNS: true, Listen: DefaultListen()}
}

// Validate fills in defaults and checks the values. It is idempotent.
func (c *Config) Validate() error {
	if len(c.Listen) == 0 {
		c.Listen = DefaultListen()
	}
	if c.RecordTTL == 0 {
		c.RecordTTL = DefaultRecordTTL
	}
	if c.RecordTTL < MinRecordTTL || c.RecordTTL > MaxRecordTTL {
		return fmt.Errorf("p2p: config: record TTL %v is outside [%v, %v]", c.RecordTTL, MinRecordTTL, MaxRecordTTL)
	}
	if c.ResolveRefresh == 0 {
		c.ResolveRefresh = DefaultResolveRefresh
	}
	if c.ResolveRefresh < 0 {
		return fmt.Errorf("p2p: config: resolve refresh %v is negative", c.ResolveRefresh)
	}
	if c.ResolveTimeout == 0 {
		c.ResolveTimeout = DefaultResolveTimeout
	}
	if c.ResolveTimeout < 0 {
		return fmt.Errorf("p2p: config: resolve timeout %v is negative", c.ResolveTimeout)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c.Limits.validate()
}

func (l *Limits) validate() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if l.Memory == 0 {
		l.Memory = DefaultMemory
	}
	def(&l.FDs, DefaultFDs)
	def(&l.Conns, DefaultConns)
	def(&l.ConnsInbound, DefaultConnsInbound)
	def(&l.Streams, DefaultStreams)
	def(&l.LowWater, DefaultLowWater)
	def(&l.HighWater, DefaultHighWater)
	if l.GracePeriod == 0 {
		l.GracePeriod = DefaultGracePeriod
	}
	switch {
	case l.Memory < 0 || l.FDs < 0 || l.Conns < 0 || l.ConnsInbound < 0 || l.Streams < 0 || l.GracePeriod < 0:
		return fmt.Errorf("p2p: config: negative limit in %+v", *l)
	case l.LowWater < 0 || l.HighWater <= l.LowWater:
		return fmt.Errorf("p2p: config: connection manager low water %d must be below high water %d", l.LowWater, l.HighWater)
	case l.ConnsInbound > l.Conns:
		return fmt.Errorf("p2p: config: %d inbound connections exceed %d in total", l.ConnsInbound, l.Conns)
	}
	return nil
}

// Per-peer and per-protocol limits of Blocktree's own protocols: a proof
// is one stream each way per connection, a ping one stream per call.
var (
	authProtocolLimit     = rcmgr.BaseLimit{StreamsInbound: 256, StreamsOutbound: 256, Streams: 512, Memory: 32 * MaxProofSize}
	authProtocolPeerLimit = rcmgr.BaseLimit{StreamsInbound: 4, StreamsOutbound: 4, Streams: 8, Memory: 4 * MaxProofSize}
	pingProtocolLimit     = rcmgr.BaseLimit{StreamsInbound: 256, StreamsOutbound: 256, Streams: 512, Memory: 1 << 20}
	pingProtocolPeerLimit = rcmgr.BaseLimit{StreamsInbound: 8, StreamsOutbound: 8, Streams: 16, Memory: 64 << 10}
)

// resourceManager builds the node's libp2p resource manager from l.
func (l Limits) resourceManager() (network.ResourceManager, error) {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	scaling.AddProtocolLimit(AuthProtocol, authProtocolLimit, rcmgr.BaseLimitIncrease{})
	scaling.AddProtocolPeerLimit(AuthProtocol, authProtocolPeerLimit, rcmgr.BaseLimitIncrease{})
	scaling.AddProtocolLimit(PingProtocol, pingProtocolLimit, rcmgr.BaseLimitIncrease{})
	scaling.AddProtocolPeerLimit(PingProtocol, pingProtocolPeerLimit, rcmgr.BaseLimitIncrease{})
	concrete := scaling.Scale(l.Memory, l.FDs)
	system := rcmgr.PartialLimitConfig{System: rcmgr.ResourceLimits{
		Conns:        rcmgr.LimitVal(l.Conns),
		ConnsInbound: rcmgr.LimitVal(l.ConnsInbound),
		Streams:      rcmgr.LimitVal(l.Streams),
		Memory:       rcmgr.LimitVal64(l.Memory),
		FD:           rcmgr.LimitVal(l.FDs),
	}}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(system.Build(concrete)))
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	return rm, nil
}
