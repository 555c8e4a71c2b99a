package p2p

import (
	"context"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Provide announces in the DHT that this node can serve what c names (the
// block layer announces roots, not every block). Records expire after the
// DHT's provider validity (48 h), so holders re-announce periodically.
func (n *Node) Provide(ctx context.Context, c cid.Cid) error {
	if err := n.dht.Provide(ctx, c, true); err != nil {
		return fmt.Errorf("p2p: provide %s: %w", c, err)
	}
	return nil
}

// FindProviders returns up to limit peers that announced c, this node
// excluded. A provider record is a claim, not a proof: callers verify what
// providers send. It returns what it found when ctx ends.
func (n *Node) FindProviders(ctx context.Context, c cid.Cid, limit int) []peer.AddrInfo {
	ctx, cancel := context.WithCancel(ctx) // stops the lookup when we stop reading
	defer cancel()
	var out []peer.AddrInfo
	for ai := range n.dht.FindProvidersAsync(ctx, c, limit+1) {
		if ai.ID == n.h.ID() {
			continue
		}
		if len(ai.Addrs) > 0 {
			n.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, providerAddrTTL)
		}
		out = append(out, ai)
		if len(out) == limit {
			break
		}
	}
	return out
}

// providerAddrTTL is how long addresses learned from provider records stay
// in the peerstore.
const providerAddrTTL = 10 * time.Minute
