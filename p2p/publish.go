package p2p

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/paths"
)

// Publication is what the node last published, for status displays.
type Publication struct {
	Path   paths.Path
	Peer   peer.ID
	Addrs  []ma.Multiaddr
	Seq    uint64
	Expiry time.Time
	// At is when the attempt was made; zero before the first.
	At time.Time
	// Err is why the attempt failed, nil when the record reached the DHT.
	Err error
}

// Published returns the node's last publication attempt. Safe for
// concurrent use.
func (n *Node) Published() Publication {
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	p := n.pub
	p.Addrs = slices.Clone(p.Addrs)
	return p
}

// Publishing timing.
const (
	publishTimeout    = 30 * time.Second
	minPublishGap     = 100 * time.Millisecond // between two publications
	firstRetry        = 250 * time.Millisecond // after a failed one, doubling
	bootstrapTimeout  = 15 * time.Second
	bootstrapParallel = 8
)

// bootstrap connects to the configured bootstrap peers and refreshes the
// routing table, within bootstrapTimeout. Failures are logged: the DHT keeps
// retrying the bootstrap peers while its table is low.
func (n *Node) bootstrap(ctx context.Context) {
	if len(n.cfg.Bootstrap) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
	defer cancel()
	sem := make(chan struct{}, bootstrapParallel)
	var wg sync.WaitGroup
	for _, pi := range n.cfg.Bootstrap {
		if pi.ID == n.h.ID() {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := n.h.Connect(ctx, pi); err != nil {
				n.log.Warn("bootstrap peer unreachable", "peer", pi.ID, "err", err)
			}
		})
	}
	wg.Wait()
	select {
	case err := <-n.dht.RefreshRoutingTable():
		if err != nil {
			n.log.Debug("routing table refresh", "err", err)
		}
	case <-ctx.Done():
	}
	n.log.Debug("bootstrapped", "routing_table", n.RoutingTableSize())
}

// publishLoop publishes the record now, every RecordTTL/2, when the host's
// addresses change, and, after a failure, again with a doubling backoff (or
// at once when a peer proves its path, which usually means the DHT has
// become reachable).
func (n *Node) publishLoop(ctx context.Context) {
	sub, err := n.h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		n.log.Warn("cannot watch address changes", "err", err)
	} else {
		defer sub.Close()
	}
	var addrEvents <-chan any
	if sub != nil {
		addrEvents = sub.Out()
	}
	retry := firstRetry
	var last time.Time
	for {
		if gap := time.Since(last); gap < minPublishGap {
			select {
			case <-time.After(minPublishGap - gap):
			case <-ctx.Done():
				return
			}
		}
		last = time.Now()
		// The record takes the current addresses: changes announced so
		// far (the first event is the initial set) are covered.
		for drained := false; !drained; {
			select {
			case <-addrEvents:
			default:
				drained = true
			}
		}
		wait := n.cfg.RecordTTL / 2
		if err := n.publish(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrExpired) {
				n.log.Warn("cannot publish: identity expired", "err", err)
			} else {
				n.log.Debug("publish failed; will retry", "in", retry, "err", err)
			}
			wait = retry
			retry = min(2*retry, max(n.cfg.RecordTTL/4, firstRetry))
		} else {
			retry = firstRetry
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-addrEvents:
			n.log.Debug("addresses changed; republishing")
		case <-n.republish:
		case <-ctx.Done():
			t.Stop()
			return
		}
		t.Stop()
	}
}

// nudgePublisher asks the publisher to publish again soon if its last
// attempt failed.
func (n *Node) nudgePublisher() {
	n.pubMu.Lock()
	failed := n.pub.Err != nil
	n.pubMu.Unlock()
	if failed {
		select {
		case n.republish <- struct{}{}:
		default:
		}
	}
}

// publish signs a fresh record (new seq, expiry RecordTTL from now, capped
// by the identity's expiry) and puts it into the DHT.
func (n *Node) publish(ctx context.Context) error {
	now := n.now()
	n.pubMu.Lock()
	seq := max(n.seq+1, uint64(now.UnixNano()))
	n.seq = seq
	n.pubMu.Unlock()
	exp := now.Add(n.cfg.RecordTTL)
	if exp.Truncate(time.Second).Before(exp) {
		exp = exp.Truncate(time.Second).Add(time.Second) // round up to whole seconds
	}
	if ie := n.id.Expiry(); ie.Before(exp) {
		exp = ie
	}
	addrs := n.recordAddrs()
	pub := Publication{Path: n.id.Path, Peer: n.h.ID(), Addrs: addrs, Seq: seq, Expiry: exp, At: now}
	err := n.putRecord(ctx, addrs, seq, exp, now)
	pub.Err = err
	n.pubMu.Lock()
	// Publishes may overlap (the loop and an explicit call); Published
	// reports the newest, never an older one that finished later.
	if pub.Seq >= n.pub.Seq {
		n.pub = pub
	}
	n.pubMu.Unlock()
	if err == nil {
		n.log.Debug("published record", "path", n.id.Path, "seq", seq, "expiry", exp, "addrs", addrs)
	}
	return err
}

func (n *Node) putRecord(ctx context.Context, addrs []ma.Multiaddr, seq uint64, exp, now time.Time) error {
	if !exp.After(now) {
		return fmt.Errorf("p2p: publish %s: the host certificate or writecap expired at %s (restart with a new identity, or renew the writecap): %w",
			n.id.Path, exp.UTC().Format(time.RFC3339), ErrExpired)
	}
	rec, err := signRecord(n.id, addrs, seq, exp)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := n.dht.PutValue(ctx, RecordKey(n.id.Path), rec.Marshal()); err != nil {
		return fmt.Errorf("p2p: publish %s: %w (is the node bootstrapped to a domain member?)", n.id.Path, err)
	}
	return nil
}
