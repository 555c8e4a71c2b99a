package p2p

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/sync/singleflight"

	"blocktree.dev/bt/paths"
)

// Resolution is where a path is hosted, from a validated record.
type Resolution struct {
	Path  paths.Path
	Peer  peer.ID
	Addrs []ma.Multiaddr
	// Expiry is when the record stops being valid: its own expiry or its
	// certificate's or writecap's, whichever is first.
	Expiry time.Time
	Seq    uint64
	// FromCache says the answer came from the cache, without the network.
	FromCache bool
	// NodeKey is the public key of the node principal hosting the path,
	// from the record's host certificate: what readcaps for that node are
	// wrapped to.
	NodeKey crypto.PubKey
}

// Cache bounds.
const (
	maxCacheEntries   = 4096
	refreshPerTick    = 64
	refreshParallel   = 4
	idleRefreshFactor = 10 // entries unused for this many refresh intervals are dropped
)

// resolveCache holds resolutions by path. Safe for concurrent use.
type resolveCache struct {
	mu sync.RWMutex
	// entries is guarded by mu.
	entries map[paths.Path]*cacheEntry

	// lookups shares one DHT lookup among concurrent Resolves of a path,
	// keyed by the path's string.
	lookups singleflight.Group
}

type cacheEntry struct {
	res      Resolution // FromCache false; never modified after insertion
	fetched  time.Time
	lastUsed atomic.Int64 // Unix nanoseconds of the last Resolve served
}

func newResolveCache() *resolveCache {
	return &resolveCache{entries: make(map[paths.Path]*cacheEntry)}
}

// get returns a fresh cached resolution of p: unexpired and fetched less
// than refresh ago.
func (c *resolveCache) get(p paths.Path, now time.Time, refresh time.Duration) (Resolution, bool) {
	c.mu.RLock()
	e := c.entries[p]
	c.mu.RUnlock()
	if e == nil || !now.Before(e.res.Expiry) || now.Sub(e.fetched) >= refresh {
		return Resolution{}, false
	}
	e.lastUsed.Store(now.UnixNano())
	r := e.res
	r.Addrs = slices.Clone(r.Addrs)
	r.FromCache = true
	return r, true
}

func (c *resolveCache) put(r Resolution, now time.Time, used bool) {
	e := &cacheEntry{res: r, fetched: now}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries[r.Path]; old != nil {
		e.lastUsed.Store(old.lastUsed.Load())
	}
	if used {
		e.lastUsed.Store(now.UnixNano())
	}
	if _, ok := c.entries[r.Path]; !ok && len(c.entries) >= maxCacheEntries {
		c.evictLocked()
	}
	c.entries[r.Path] = e
}

// evictLocked drops the least recently used entry.
func (c *resolveCache) evictLocked() {
	var victim paths.Path
	oldest := int64(1<<63 - 1)
	for p, e := range c.entries {
		if u := e.lastUsed.Load(); u < oldest {
			victim, oldest = p, u
		}
	}
	delete(c.entries, victim)
}

// peek returns the cached entry for p, fresh or not.
func (c *resolveCache) peek(p paths.Path) *cacheEntry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.entries[p]
}

func (c *resolveCache) drop(p paths.Path) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, p)
}

// Resolve returns where p is hosted. It answers from the cache, without
// touching the network, when the cache holds an unexpired record fetched
// less than cfg.ResolveRefresh ago (FromCache is then true); otherwise it
// looks the record up in the DHT, validates it, caches it and adds its
// addresses to the peerstore until it expires. Concurrent cold lookups of
// one path share one DHT query. When ctx has no deadline, the lookup is
// bounded by cfg.ResolveTimeout.
//
// Errors: ErrNotFound when no valid record was found (also when ctx ended
// first: then ctx's error is wrapped too); ErrExpired when the only record
// found, or the last one cached, has expired; ErrClosed after Close. Safe
// for concurrent use.
func (n *Node) Resolve(ctx context.Context, p paths.Path) (Resolution, error) {
	if r, ok := n.cache.get(p, n.now(), n.cfg.ResolveRefresh); ok {
		return r, nil
	}
	return n.resolveNetwork(ctx, p, true)
}

// Invalidate drops p from the resolve cache, so the next Resolve asks the
// DHT. Safe for concurrent use.
func (n *Node) Invalidate(p paths.Path) { n.cache.drop(p) }

// resolveNetwork looks p up in the DHT, sharing the lookup with concurrent
// callers. used says a caller wants the answer (not the refresher).
func (n *Node) resolveNetwork(ctx context.Context, p paths.Path, used bool) (Resolution, error) {
	if p.IsZero() {
		return Resolution{}, fmt.Errorf("p2p: resolve: empty path: %w", ErrNotFound)
	}
	if n.ctx.Err() != nil {
		return Resolution{}, fmt.Errorf("p2p: resolve %s: %w", p, ErrClosed)
	}
	// The lookup runs on the node's context bounded by the first
	// caller's deadline; every caller waits for it or its own ctx.
	ch := n.cache.lookups.DoChan(p.String(), func() (any, error) {
		lctx, cancel := n.lookupContext(ctx)
		defer cancel()
		return n.lookup(lctx, p, used)
	})
	select {
	case r := <-ch:
		res, _ := r.Val.(Resolution)
		return res, r.Err
	case <-ctx.Done():
		return Resolution{}, fmt.Errorf("p2p: resolve %s: %w: %w", p, ErrNotFound, ctx.Err())
	}
}

// lookupContext derives a lookup's context from the caller's: cancelled
// by the caller or by Close, bounded by cfg.ResolveTimeout when the caller
// set no deadline.
func (n *Node) lookupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	var cancel context.CancelFunc
	if _, ok := ctx.Deadline(); ok {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ResolveTimeout)
	}
	stop := context.AfterFunc(n.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (n *Node) lookup(ctx context.Context, p paths.Path, used bool) (Resolution, error) {
	key := RecordKey(p)
	start := n.now()
	val, err := n.dht.GetValue(ctx, key)
	// A lookup cut short by ctx still returns the best value it had.
	if len(val) == 0 {
		if n.ctx.Err() != nil {
			return Resolution{}, fmt.Errorf("p2p: resolve %s: %w", p, ErrClosed)
		}
		if exp, ok := n.validator.expiredSince(key, start); ok {
			return Resolution{}, fmt.Errorf("p2p: resolve %s: its record expired at %s and was not republished (is the node running?): %w",
				p, exp.UTC().Format(time.RFC3339), ErrExpired)
		}
		if e := n.cache.peek(p); e != nil && !n.now().Before(e.res.Expiry) {
			return Resolution{}, fmt.Errorf("p2p: resolve %s: its record expired at %s and no newer one was found (is the node running?): %w",
				p, e.res.Expiry.UTC().Format(time.RFC3339), ErrExpired)
		}
		if err == nil || errors.Is(err, routing.ErrNotFound) {
			return Resolution{}, fmt.Errorf("p2p: resolve %s: no node has published it (check the path; is its node running and in this DHT?): %w", p, ErrNotFound)
		}
		if ctx.Err() != nil {
			return Resolution{}, fmt.Errorf("p2p: resolve %s: lookup timed out: %w: %w", p, ErrNotFound, ctx.Err())
		}
		return Resolution{}, fmt.Errorf("p2p: resolve %s: %w: %v (is this node bootstrapped to a domain member?)", p, ErrNotFound, err)
	}
	// GetValue validated val; Check returns the parsed record from the
	// validator's cache.
	rec, err := n.validator.Check(key, val)
	if err != nil {
		return Resolution{}, fmt.Errorf("p2p: resolve %s: %w", p, err)
	}
	now := n.now()
	res := Resolution{Path: p, Peer: rec.Peer, Addrs: slices.Clone(rec.Addrs), Expiry: rec.effectiveExpiry(), Seq: rec.Seq,
		NodeKey: rec.HostCert.Node}
	if res.Peer != n.h.ID() && len(res.Addrs) > 0 {
		n.h.Peerstore().AddAddrs(res.Peer, res.Addrs, res.Expiry.Sub(now))
	}
	n.cache.put(res, now, used)
	out := res
	out.Addrs = slices.Clone(res.Addrs)
	return out, nil
}

// refreshLoop keeps recently used cache entries fresh: every quarter of
// the refresh interval it drops expired and long-unused entries and
// re-resolves, in the background, those past half their freshness.
func (n *Node) refreshLoop(ctx context.Context) {
	tick := max(n.cfg.ResolveRefresh/4, 100*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	sem := make(chan struct{}, refreshParallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := n.now()
		idle := idleRefreshFactor * n.cfg.ResolveRefresh
		var stale []paths.Path
		n.cache.mu.Lock()
		for p, e := range n.cache.entries {
			switch {
			case !now.Before(e.res.Expiry), now.Sub(time.Unix(0, e.lastUsed.Load())) > idle:
				delete(n.cache.entries, p)
			case now.Sub(e.fetched) > n.cfg.ResolveRefresh/2 && len(stale) < refreshPerTick:
				stale = append(stale, p)
			}
		}
		n.cache.mu.Unlock()
		for _, p := range stale {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, err := n.resolveNetwork(ctx, p, false); err != nil {
					n.log.Debug("cache refresh failed", "path", p, "err", err)
				}
			})
		}
	}
}
