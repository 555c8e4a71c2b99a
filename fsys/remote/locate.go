package remote

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// VolumeCIDPrefix is hashed before a volume's path to name it in the DHT.
const VolumeCIDPrefix = "blocktree fs volume v1 "

// VolumeCID is the DHT key under which the hosts of the volume at p
// announce themselves: the raw CIDv1 of sha2-256(VolumeCIDPrefix + p).
func VolumeCID(p paths.Path) cid.Cid {
	sum := sha256.Sum256([]byte(VolumeCIDPrefix + p.String()))
	h, err := mh.Encode(sum[:], mh.SHA2_256)
	if err != nil { // cannot happen: the digest has the right length
		return cid.Undef
	}
	return cid.NewCidV1(cid.Raw, h)
}

// Locator defaults.
const (
	DefaultLookupTimeout = 10 * time.Second
	positiveTTL          = 10 * time.Minute
	negativeTTL          = 30 * time.Second
	providersPerVolume   = 4
)

// LocatorConfig configures a Locator.
type LocatorConfig struct {
	// Local finds a volume this node hosts itself (nil: none).
	Local func(vol paths.Path) (fsys.Host, bool)
	// RootHost returns the node path that hosts the domain root volume
	// /<root> by default (the node that created the domain), or the zero
	// path when unknown: tried before the DHT for the root volume.
	RootHost func(root paths.ID) paths.Path
	// LookupTimeout bounds one Locate's network lookups (default 10 s).
	LookupTimeout time.Duration
	Verifier      *caps.Verifier
	Log           *slog.Logger
}

// Locator finds the volume that holds a path and returns its host: a
// local one, or a Client for a remote one whose hosting proof checked.
// Results are cached (found volumes for 10 minutes; misses for 30 s, and
// only when some shorter prefix is a volume).
// Safe for concurrent use.
type Locator struct {
	node *p2p.Node
	cfg  LocatorConfig
	log  *slog.Logger

	// mu guards cache.
	mu    sync.Mutex
	cache map[paths.Path]locEntry
}

type locEntry struct {
	client *Client // nil: no host found
	until  time.Time
}

// Volume is a located volume.
type Volume struct {
	Path  paths.Path
	Host  fsys.Host
	Local bool
}

// NewLocator makes a Locator over node.
func NewLocator(node *p2p.Node, cfg LocatorConfig) *Locator {
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	if cfg.Verifier == nil {
		cfg.Verifier = caps.NewVerifier()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Locator{node: node, cfg: cfg, log: cfg.Log.With("subsystem", "fs-locate"), cache: make(map[paths.Path]locEntry)}
}

// Locate returns the volume holding p: the hosted volume whose path is
// the longest prefix of p. It looks at the volumes this node hosts, then
// (for every longer prefix) at the cache, then asks the network for all
// uncached prefixes at once: the domain's root host first for /<root>,
// the DHT providers of each prefix's VolumeCID otherwise. Every remote
// host must pass the hosting proof (Dial). Errors: fsys.ErrUnavailable
// when no host of any prefix answers (wrapping ctx's error if it ended).
func (l *Locator) Locate(ctx context.Context, p paths.Path) (Volume, error) {
	var prefixes []paths.Path // longest first
	for q, ok := p, true; ok; q, ok = q.Parent() {
		prefixes = append(prefixes, q)
	}
	best := -1 // index in prefixes of the best match so far
	var found Volume
	if l.cfg.Local != nil {
		for i, q := range prefixes {
			if h, ok := l.cfg.Local(q); ok {
				best, found = i, Volume{Path: q, Host: h, Local: true}
				break
			}
		}
	}
	limit := len(prefixes)
	if best >= 0 {
		limit = best
	}
	now := time.Now()
	var ask []paths.Path
	l.mu.Lock()
	for i := 0; i < limit; i++ {
		e, ok := l.cache[prefixes[i]]
		if ok && now.Before(e.until) {
			if e.client != nil {
				best, found = i, Volume{Path: prefixes[i], Host: e.client}
				break
			}
			continue
		}
		ask = append(ask, prefixes[i])
	}
	l.mu.Unlock()
	// Only prefixes longer than the best match are asked.
	want := ask
	if len(want) > 0 {
		lctx, cancel := context.WithTimeout(ctx, l.cfg.LookupTimeout)
		res := l.lookupAll(lctx, want)
		cancel()
		for _, q := range want {
			c := res[q]
			if c != nil {
				l.remember(q, c)
			}
			if c != nil && (best < 0 || q.Depth() > prefixes[best].Depth()) {
				for i := range prefixes {
					if prefixes[i] == q {
						best, found = i, Volume{Path: q, Host: c}
					}
				}
			}
		}
		// Misses are remembered only when some volume holds p: then they
		// say "no nested volume here". When nothing answered at all (the
		// host is down, or this node has just started and its DHT is
		// still empty) the next call asks again.
		if best >= 0 {
			for _, q := range want {
				if res[q] == nil {
					l.remember(q, nil)
				}
			}
		}
	}
	if best < 0 {
		err := fmt.Errorf("fs: no reachable node hosts a volume holding %s (is its host's daemon running? `bt host PATH` makes a node host one): %w", p, fsys.ErrUnavailable)
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
		return Volume{}, err
	}
	return found, nil
}

// Forget drops what the cache knows of vol.
func (l *Locator) Forget(vol paths.Path) {
	l.mu.Lock()
	delete(l.cache, vol)
	l.mu.Unlock()
}

func (l *Locator) remember(vol paths.Path, c *Client) {
	ttl := negativeTTL
	if c != nil {
		ttl = positiveTTL
	}
	l.mu.Lock()
	l.cache[vol] = locEntry{client: c, until: time.Now().Add(ttl)}
	l.mu.Unlock()
}

// lookupAll looks every volume path up at once.
func (l *Locator) lookupAll(ctx context.Context, vols []paths.Path) map[paths.Path]*Client {
	var (
		mu  sync.Mutex
		out = make(map[paths.Path]*Client, len(vols))
		wg  sync.WaitGroup
	)
	for _, vol := range vols {
		wg.Go(func() {
			c, err := l.lookup(ctx, vol)
			if err != nil {
				l.log.Debug("volume not found", "volume", vol, "err", err)
				return
			}
			mu.Lock()
			out[vol] = c
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// lookup finds a verified host of vol: the root host for a root volume,
// then the DHT providers of VolumeCID(vol).
func (l *Locator) lookup(ctx context.Context, vol paths.Path) (*Client, error) {
	id, err := l.find(ctx, vol)
	if err != nil {
		return nil, err
	}
	c := &Client{node: l.node, vol: vol, verifier: l.cfg.Verifier, peer: id}
	c.relocate = func(ctx context.Context) (peer.ID, error) {
		lctx, cancel := context.WithTimeout(ctx, l.cfg.LookupTimeout)
		defer cancel()
		return l.find(lctx, vol)
	}
	return c, nil
}

// find returns the peer ID of a host of vol whose hosting proof checks.
func (l *Locator) find(ctx context.Context, vol paths.Path) (peer.ID, error) {
	var errs []error
	try := func(id peer.ID) bool {
		c := &Client{node: l.node, vol: vol, verifier: l.cfg.Verifier, peer: id}
		if _, err := c.Info(ctx); err != nil {
			errs = append(errs, err)
			return false
		}
		return true
	}
	if vol.Depth() == 0 && l.cfg.RootHost != nil {
		if hp := l.cfg.RootHost(vol.Root()); !hp.IsZero() && hp != l.node.Path() {
			id, err := l.node.Connect(ctx, hp)
			if err == nil && try(id) {
				return id, nil
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, ai := range l.node.FindProviders(ctx, VolumeCID(vol), providersPerVolume) {
		if len(ai.Addrs) > 0 {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := l.node.Host().Connect(cctx, ai)
			cancel()
			if err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if try(ai.ID) {
			return ai.ID, nil
		}
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no provider record"))
	}
	return "", fmt.Errorf("fs: locate %s: %w: %w", vol, errors.Join(errs...), fsys.ErrUnavailable)
}
