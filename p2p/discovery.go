package p2p

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p-kbucket/peerdiversity"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	ma "github.com/multiformats/go-multiaddr"
)

// MDNSService is the DNS-SD service name Blocktree nodes announce on the
// LAN.
const MDNSService = "_blocktree._udp"

const mdnsDialTimeout = 10 * time.Second

// startMDNS announces this node on the LAN and connects to the Blocktree
// nodes it hears of, at most cap(n.mdnsSlots) dials at a time (others are
// dropped: the next announcement brings them again).
func (n *Node) startMDNS() (stop func(), err error) {
	s := mdns.NewMdnsService(n.h, MDNSService, mdnsNotifee{n})
	if err := s.Start(); err != nil {
		return nil, err
	}
	return func() { _ = s.Close() }, nil
}

type mdnsNotifee struct{ n *Node }

func (m mdnsNotifee) HandlePeerFound(pi peer.AddrInfo) {
	n := m.n
	if pi.ID == n.h.ID() || n.h.Network().Connectedness(pi.ID) == network.Connected {
		return
	}
	select {
	case n.mdnsSlots <- struct{}{}:
	default:
		return
	}
	if !n.spawn(func() {
		defer func() { <-n.mdnsSlots }()
		ctx, cancel := context.WithTimeout(n.ctx, mdnsDialTimeout)
		defer cancel()
		if err := n.h.Connect(ctx, pi); err != nil {
			n.log.Debug("mDNS peer unreachable", "peer", pi.ID, "err", err)
		}
	}) {
		<-n.mdnsSlots
	}
}

// ipDiversityFilter limits how many routing-table peers may share one
// public IP group (a /16 or legacy /8 for IPv4, an ASN for IPv6), per
// common-prefix length and in the whole table, so that one network cannot
// fill the table. Peers on private, link-local, CGNAT or unrouted IPv6
// (unknown ASN) addresses are exempt: a personal domain's machines usually
// share one LAN. Loopback is not exempt: a cluster on one machine says so
// with Config.Loopback, which turns the filter off.
//
// kad-dht's own filter (NewRTPeerDiversityFilter) is not used because it
// also drops, from every lookup response, all peers of any group with more
// than its table limit, which would hide a LAN domain's nodes.
type ipDiversityFilter struct {
	h           host.Host
	maxPerCpl   int
	maxForTable int

	// mu guards the counts.
	mu    sync.Mutex
	cpl   map[int]map[peerdiversity.PeerIPGroupKey]int
	table map[peerdiversity.PeerIPGroupKey]int
}

// Diversity limits for public IP groups.
const (
	diversityMaxPerCpl   = 3
	diversityMaxForTable = 8
)

var _ peerdiversity.PeerIPGroupFilter = (*ipDiversityFilter)(nil)

func newIPDiversityFilter(h host.Host) *ipDiversityFilter {
	return &ipDiversityFilter{h: h, maxPerCpl: diversityMaxPerCpl, maxForTable: diversityMaxForTable,
		cpl: make(map[int]map[peerdiversity.PeerIPGroupKey]int), table: make(map[peerdiversity.PeerIPGroupKey]int)}
}

var cgnat = &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

// exempt reports whether a group is one of the local kinds the filter does
// not count.
func exempt(g peerdiversity.PeerIPGroupKey) bool {
	if strings.HasPrefix(string(g), "unknown ASN") {
		return true
	}
	ip := net.ParseIP(string(g))
	return ip != nil && (ip.IsPrivate() || ip.IsLinkLocalUnicast() || cgnat.Contains(ip))
}

func (f *ipDiversityFilter) Allow(g peerdiversity.PeerGroupInfo) bool {
	if exempt(g.IPGroupKey) {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.table[g.IPGroupKey] < f.maxForTable && f.cpl[g.Cpl][g.IPGroupKey] < f.maxPerCpl
}

func (f *ipDiversityFilter) Increment(g peerdiversity.PeerGroupInfo) {
	if exempt(g.IPGroupKey) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table[g.IPGroupKey]++
	if f.cpl[g.Cpl] == nil {
		f.cpl[g.Cpl] = make(map[peerdiversity.PeerIPGroupKey]int)
	}
	f.cpl[g.Cpl][g.IPGroupKey]++
}

func (f *ipDiversityFilter) Decrement(g peerdiversity.PeerGroupInfo) {
	if exempt(g.IPGroupKey) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.table[g.IPGroupKey]--; f.table[g.IPGroupKey] <= 0 {
		delete(f.table, g.IPGroupKey)
	}
	if m := f.cpl[g.Cpl]; m != nil {
		if m[g.IPGroupKey]--; m[g.IPGroupKey] <= 0 {
			delete(m, g.IPGroupKey)
		}
		if len(m) == 0 {
			delete(f.cpl, g.Cpl)
		}
	}
}

func (f *ipDiversityFilter) PeerAddresses(p peer.ID) []ma.Multiaddr {
	cs := f.h.Network().ConnsToPeer(p)
	out := make([]ma.Multiaddr, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.RemoteMultiaddr())
	}
	return out
}
