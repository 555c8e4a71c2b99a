package client

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// Config configures a Client.
type Config struct {
	Node     paths.Path     // this node's path
	NodeID   paths.ID       // its node principal: readcaps are wrapped to its key
	HostKey  crypto.PrivKey // signs Txs (the daemon's short-lived host key)
	HostCert *caps.HostCert // certifies HostKey by the node key
	Writecap *caps.Writecap // the node's writecap chain (more: AddWritecap)
	// Decapsulate is the node key's ECDH, for readcaps.
	Decapsulate func(ctx context.Context, eph *ecdh.PublicKey) ([]byte, error)
	Store       blocks.PinStore // local block cache and staging area
	// Fetch brings blocks into Store from the volume's host (and
	// elsewhere); nil: blocks must already be in Store.
	Fetch func(ctx context.Context, cids []cid.Cid, host paths.Path) error
	// Locate returns the host of the volume that holds p, and the
	// volume's path.
	Locate func(ctx context.Context, p paths.Path) (fsys.Host, paths.Path, error)
	Log    *slog.Logger

	// Issuer, if set, is the node key: Grant(RightWrite) issues a writecap
	// with it under Writecap, and hands it to Issued. Without it granting
	// write is ErrNotSupported.
	Issuer caps.Signer
	Issued func(ctx context.Context, w *caps.Writecap) error

	// MaxDirty bounds the file data buffered and not yet sealed or being
	// sealed (default 64 MiB).
	MaxDirty int64
	// CacheChunks is how many decrypted chunks are kept for reads
	// (default 64: 16 MiB).
	CacheChunks int
	// MaxRetries bounds the re-applications of a change refused with
	// ErrConflict (default 32).
	MaxRetries int
	// Clock stamps times (default time.Now).
	Clock func() time.Time
}

// Defaults.
const (
	DefaultMaxDirty    = 64 << 20
	DefaultCacheChunks = 64
	DefaultMaxRetries  = 32
	// readAhead is how many chunks sequential reads decrypt ahead (2 MiB:
	// a sequential reader of 128 KiB blocks finds the next chunks
	// decrypted); aheadWorkers of them at once.
	readAhead    = 8
	aheadWorkers = 4
	// sealers bounds the chunks sealed concurrently in the background.
	sealers = 4
	// maxCachedRecords bounds a volume's record cache; past it the cache
	// is emptied.
	maxCachedRecords = 1 << 20
)

// Client is the file system as one node sees it: it implements FS,
// Versioned and Sharer over the volumes' Hosts. It is safe for concurrent
// use. See docs/fs.md.
type Client struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	log    *slog.Logger

	sealSem  chan struct{}
	aheadSem chan struct{}
	dirty    atomic.Int64 // bytes of dirty and in-flight chunk buffers

	notifyCh chan []fsys.Invalidation

	// mu guards everything below.
	mu        sync.Mutex
	closed    bool
	writecaps []*caps.Writecap
	vols      map[paths.Path]*volume
	inos      map[fsys.Ino]*inoInfo
	files     map[fsys.Ino]*fileState
	notify    []func(fsys.Invalidation)
	chunks    *chunkCache
}

// volume is what the client knows of one volume; guarded by Client.mu.
type volume struct {
	path     paths.Path
	host     fsys.Host
	hostNode paths.Path
	root     fsys.Ino
	seen     uint64 // the newest Change the watcher processed
	gen      uint64 // incremented per processed Change
	watching bool
	own      map[uint64]bool // versions this client committed, not yet seen by the watcher
	// committed is the newest version this client committed; durable the
	// newest it knows durable at the host (every version ≤ it is). Fsync
	// syncs the host up to committed when durable is behind it.
	committed uint64
	durable   uint64
	recs      map[fsys.RecordKey]*cached
	names     map[fsys.RecordKey]string // entry key → name, for invalidations
	lists     map[fsys.Ino]*listing
	// grants are inodes this node holds readcaps for (besides the root).
	grants []grantRoot
	// readcapsAt is when the readcaps were last loaded (zero: never).
	// They are loaded again, at most every readcapReload, while the
	// client lacks the volume root's key: a grant made after the first
	// look is then seen without a restart.
	readcapsAt time.Time
}

// readcapReload bounds how often a client without the root key asks the
// host for its readcaps again.
const readcapReload = 2 * time.Second

type grantRoot struct {
	ino   fsys.Ino
	depth int
	name  string
}

// cached is a record as last read or written (rec nil: absent).
type cached struct {
	rec *fsys.Record
	n   *inode // decoded inode (set once)
	e   *entry // decoded entry (set once)
}

func (c *cached) version() uint64 {
	if c == nil || c.rec == nil {
		return 0
	}
	return c.rec.Version
}

type listing struct {
	dirVer uint64
	ents   []fsys.DirEntry
}

// inoInfo is what the client knows of an inode: its volume and key.
type inoInfo struct {
	vol *volume
	key []byte
	nk  []byte // name key (directories), derived lazily
	// unlinked: the version before this client deleted it; reads then
	// use that version.
	unlinked uint64
}

// New returns a Client; it starts no goroutine until a volume is
// used. Close it to stop its watchers and read-ahead.
func New(cfg Config) (*Client, error) {
	if cfg.HostKey == nil || cfg.HostCert == nil || cfg.Store == nil || cfg.NodeID == "" {
		return nil, fmt.Errorf("fsys: new client: HostKey, HostCert, NodeID and Store are required: %w", fsys.ErrInvalid)
	}
	if cfg.HostCert.NodeID != cfg.NodeID {
		return nil, fmt.Errorf("fsys: new client: host certificate is for node %s, not %s: %w", cfg.HostCert.NodeID, cfg.NodeID, fsys.ErrInvalid)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.MaxDirty <= 0 {
		cfg.MaxDirty = DefaultMaxDirty
	}
	if cfg.CacheChunks <= 0 {
		cfg.CacheChunks = DefaultCacheChunks
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, ctx: ctx, cancel: cancel, log: cfg.Log,
		sealSem: make(chan struct{}, sealers), aheadSem: make(chan struct{}, aheadWorkers),
		notifyCh: make(chan []fsys.Invalidation, 1024),
		vols:     map[paths.Path]*volume{}, inos: map[fsys.Ino]*inoInfo{}, files: map[fsys.Ino]*fileState{},
		chunks: newChunkCache(cfg.CacheChunks)}
	if cfg.Writecap != nil {
		c.writecaps = append(c.writecaps, cfg.Writecap)
	}
	c.wg.Add(1)
	go c.notifier()
	return c, nil
}

// Close stops the client's watchers and background work. Pending writes
// that were not Fsynced are dropped. Idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// AddWritecap adds a writecap the client may present in Txs.
func (c *Client) AddWritecap(w *caps.Writecap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writecaps = append(c.writecaps, w)
}

// Notify registers fn for invalidations caused by other nodes.
func (c *Client) Notify(fn func(fsys.Invalidation)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.notify = append(c.notify, fn)
}

func (c *Client) notifier() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case invs := <-c.notifyCh:
			c.mu.Lock()
			fns := c.notify
			c.mu.Unlock()
			for _, inv := range invs {
				for _, fn := range fns {
					fn(inv)
				}
			}
		}
	}
}

func (c *Client) now() time.Time { return c.cfg.Clock() }

// ---- volumes ----

// addVolume registers a volume on h (c.mu not held).
func (c *Client) addVolume(ctx context.Context, h fsys.Host, want paths.Path) (*volume, error) {
	info, err := h.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("fsys: volume %s: %w", want, err)
	}
	if info.Root == 0 || info.Path.IsZero() {
		return nil, fmt.Errorf("fsys: volume %s: bad info: %w", want, fsys.ErrInvalid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("fsys: client closed: %w", fsys.ErrUnavailable)
	}
	if v := c.vols[info.Path]; v != nil {
		v.host = h
		return v, nil
	}
	v := &volume{path: info.Path, host: h, hostNode: info.Host, root: info.Root, seen: info.Version,
		own: map[uint64]bool{}, recs: map[fsys.RecordKey]*cached{}, names: map[fsys.RecordKey]string{}, lists: map[fsys.Ino]*listing{}}
	c.vols[info.Path] = v
	if c.inos[v.root] == nil {
		c.inos[v.root] = &inoInfo{vol: v}
	}
	c.wg.Add(1)
	go c.watch(v)
	return v, nil
}

// volumeOf returns the volume holding p: a known one whose path is the
// longest prefix of p, else the one Locate names.
func (c *Client) volumeOf(ctx context.Context, p paths.Path) (*volume, error) {
	c.mu.Lock()
	var best *volume
	for vp, v := range c.vols {
		if p.HasPrefix(vp) && (best == nil || vp.Depth() > best.path.Depth()) {
			best = v
		}
	}
	c.mu.Unlock()
	if best != nil {
		return best, nil
	}
	if c.cfg.Locate == nil {
		return nil, fmt.Errorf("fsys: no volume holds %s: %w", p, fsys.ErrNotExist)
	}
	h, vp, err := c.cfg.Locate(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("fsys: locate %s: %w", p, err)
	}
	return c.addVolume(ctx, h, vp)
}

// watch follows a volume's changes, invalidating the cache and notifying,
// and re-watches (from the last seen version) when the stream ends.
func (c *Client) watch(v *volume) {
	defer c.wg.Done()
	backoff := 50 * time.Millisecond
	for c.ctx.Err() == nil {
		c.mu.Lock()
		h, after := v.host, v.seen
		c.mu.Unlock()
		ch, err := h.Watch(c.ctx, after)
		if err == nil {
			backoff = 50 * time.Millisecond
			// The replay is already buffered: apply it before trusting
			// the cache.
			open := true
		drain:
			for open {
				select {
				case chg, ok := <-ch:
					if !ok {
						open = false
						break drain
					}
					c.apply(v, chg)
				default:
					break drain
				}
			}
			if open {
				c.setWatching(v, true)
				for chg := range ch {
					c.apply(v, chg)
				}
			}
			c.setWatching(v, false)
		}
		t := time.NewTimer(backoff + time.Duration(mrand.Int64N(int64(backoff))))
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

func (c *Client) setWatching(v *volume, on bool) {
	c.mu.Lock()
	v.watching = on
	c.mu.Unlock()
}

// apply processes one Change from the host.
func (c *Client) apply(v *volume, chg fsys.Change) {
	var invs []fsys.Invalidation
	c.mu.Lock()
	if chg.Version <= v.seen {
		c.mu.Unlock()
		return
	}
	own := v.own[chg.Version]
	delete(v.own, chg.Version)
	for _, k := range chg.Keys {
		if ce := v.recs[k]; ce != nil && ce.version() >= chg.Version {
			continue
		}
		delete(v.recs, k)
		if k.IsEntry() {
			delete(v.lists, k.Ino)
			if !own {
				if name, ok := v.names[k]; ok {
					invs = append(invs, fsys.Invalidation{Dir: k.Ino, Name: name})
				} else {
					invs = append(invs, fsys.Invalidation{Ino: k.Ino})
				}
			}
		} else {
			if f := c.files[k.Ino]; f != nil {
				f.stale.Store(true)
			}
			if !own {
				invs = append(invs, fsys.Invalidation{Ino: k.Ino})
			}
		}
	}
	if chg.Version > v.seen {
		v.seen = chg.Version
	}
	v.gen++
	c.mu.Unlock()
	if len(invs) > 0 {
		select {
		case c.notifyCh <- invs:
		case <-c.ctx.Done():
		}
	}
}

// ---- record cache ----

// get returns record k of v, from the cache while the volume is watched,
// else from the host, falling back to the cache when the host is
// unavailable.
func (c *Client) get(ctx context.Context, v *volume, k fsys.RecordKey) (*cached, error) {
	c.mu.Lock()
	ce, watching, gen := v.recs[k], v.watching, v.gen
	c.mu.Unlock()
	if ce != nil && watching {
		return ce, nil
	}
	recs, err := v.host.Get(ctx, 0, k)
	if err != nil {
		if errors.Is(err, fsys.ErrUnavailable) && ce != nil {
			return ce, nil
		}
		return nil, err
	}
	ce = &cached{}
	for i := range recs {
		if recs[i].Key == k {
			ce.rec = &recs[i]
		}
	}
	c.mu.Lock()
	if v.gen == gen || (ce.rec != nil && ce.rec.Version >= v.seen) {
		c.cacheLocked(v, k, ce)
	}
	c.mu.Unlock()
	return ce, nil
}

func (c *Client) cacheLocked(v *volume, k fsys.RecordKey, ce *cached) {
	if len(v.recs) >= maxCachedRecords {
		v.recs = map[fsys.RecordKey]*cached{}
		v.names = map[fsys.RecordKey]string{}
	}
	v.recs[k] = ce
}

func (c *Client) invalidate(v *volume, keys ...fsys.RecordKey) {
	c.mu.Lock()
	for _, k := range keys {
		delete(v.recs, k)
		if k.IsEntry() {
			delete(v.lists, k.Ino)
		}
	}
	c.mu.Unlock()
}

// info returns what the client knows of ino (ErrNotExist: nothing).
func (c *Client) info(ino fsys.Ino) (*inoInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("fsys: client closed: %w", fsys.ErrUnavailable)
	}
	in := c.inos[ino]
	if in == nil {
		return nil, fmt.Errorf("fsys: inode %016x unknown to this client: %w", uint64(ino), fsys.ErrNotExist)
	}
	return in, nil
}

func (c *Client) keyOf(in *inoInfo, ino fsys.Ino) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if in.key == nil {
		return nil, fmt.Errorf("fsys: inode %016x: no key (no readcap): %w", uint64(ino), fsys.ErrPermission)
	}
	return in.key, nil
}

func (c *Client) nameKeyOf(in *inoInfo, ino fsys.Ino) ([]byte, []byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if in.key == nil {
		return nil, nil, fmt.Errorf("fsys: directory %016x: no key (no readcap): %w", uint64(ino), fsys.ErrPermission)
	}
	if in.nk == nil {
		in.nk = nameKey(in.key)
	}
	return in.key, in.nk, nil
}

// learn records a child's key and volume.
func (c *Client) learn(v *volume, ino fsys.Ino, key []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := c.inos[ino]
	if in == nil {
		in = &inoInfo{vol: v}
		c.inos[ino] = in
	}
	if in.key == nil || string(in.key) != string(key) {
		in.key, in.nk = key, nil
	}
}

// inodeOf reads and opens ino's inode record.
func (c *Client) inodeOf(ctx context.Context, ino fsys.Ino) (*inoInfo, *cached, error) {
	in, err := c.info(ino)
	if err != nil {
		return nil, nil, err
	}
	if in.unlinked != 0 {
		return c.inodeAt(ctx, in, ino, in.unlinked)
	}
	ce, err := c.get(ctx, in.vol, fsys.RecordKey{Ino: ino})
	if err != nil {
		return nil, nil, err
	}
	if err := c.openInodeRec(in, ino, ce); err != nil {
		return nil, nil, err
	}
	return in, ce, nil
}

func (c *Client) inodeAt(ctx context.Context, in *inoInfo, ino fsys.Ino, at uint64) (*inoInfo, *cached, error) {
	recs, err := in.vol.host.Get(ctx, at, fsys.RecordKey{Ino: ino})
	if err != nil {
		return nil, nil, err
	}
	ce := &cached{}
	if len(recs) == 1 {
		ce.rec = &recs[0]
	}
	if err := c.openInodeRec(in, ino, ce); err != nil {
		return nil, nil, err
	}
	return in, ce, nil
}

func (c *Client) openInodeRec(in *inoInfo, ino fsys.Ino, ce *cached) error {
	if ce.rec == nil {
		return fmt.Errorf("fsys: inode %016x: %w", uint64(ino), fsys.ErrNotExist)
	}
	c.mu.Lock()
	n := ce.n
	c.mu.Unlock()
	if n != nil {
		return nil
	}
	key, err := c.keyOf(in, ino)
	if err != nil {
		return err
	}
	n, err = openInode(key, ino, ce.rec.Sealed)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if ce.n == nil {
		ce.n = n
	}
	c.mu.Unlock()
	return nil
}

// entryOf reads and opens the entry name of directory dir (ce.rec nil:
// absent).
func (c *Client) entryOf(ctx context.Context, in *inoInfo, dir fsys.Ino, name string) (fsys.RecordKey, *cached, error) {
	key, nk, err := c.nameKeyOf(in, dir)
	if err != nil {
		return fsys.RecordKey{}, nil, err
	}
	k := fsys.RecordKey{Ino: dir, Name: nameMAC(nk, name)}
	ce, err := c.get(ctx, in.vol, k)
	if err != nil {
		return k, nil, err
	}
	if err := c.openEntryRec(in.vol, key, k, ce, name); err != nil {
		return k, nil, err
	}
	return k, ce, nil
}

func (c *Client) openEntryRec(v *volume, dirKey []byte, k fsys.RecordKey, ce *cached, name string) error {
	if ce.rec == nil {
		return nil
	}
	c.mu.Lock()
	e := ce.e
	c.mu.Unlock()
	if e == nil {
		var err error
		if e, err = openEntry(dirKey, k, ce.rec.Sealed); err != nil {
			return err
		}
		if name != "" && e.Name != name {
			return fmt.Errorf("fsys: entry %q holds name %q: %w", name, e.Name, fsys.ErrIntegrity)
		}
		c.mu.Lock()
		if ce.e == nil {
			ce.e = e
		}
		v.names[k] = e.Name
		c.mu.Unlock()
	}
	c.learn(v, e.Ino, e.Key)
	return nil
}

func attrOf(ino fsys.Ino, n *inode, ver uint64) fsys.Attr {
	a := fsys.Attr{Ino: ino, Kind: n.Kind, Mode: n.Mode, Size: n.Size, Nlink: n.Nlink,
		Mtime: time.Unix(0, n.Mtime), Ctime: time.Unix(0, n.Ctime), Atime: time.Unix(0, n.Atime),
		Owner: paths.ID(n.Owner), Version: ver}
	return a
}

// ---- roots, readcaps, walking ----

// rootKey makes sure the client has the keys its readcaps give in v.
func (c *Client) loadReadcaps(ctx context.Context, v *volume) error {
	c.mu.Lock()
	last := v.readcapsAt
	c.mu.Unlock()
	if !last.IsZero() && c.now().Sub(last) < readcapReload {
		return nil
	}
	rcs, err := v.host.Readcaps(ctx, c.cfg.NodeID)
	if err != nil {
		return err
	}
	var grants []grantRoot
	for _, rc := range rcs {
		key, err := c.unwrap(ctx, rc)
		if err != nil {
			c.log.Warn("unusable readcap", "ino", fmt.Sprintf("%016x", uint64(rc.Ino)), "err", err)
			continue
		}
		c.learn(v, rc.Ino, key)
		if rc.Ino == v.root {
			continue
		}
		// Where is it? Its depth through Parent, and its name.
		_, ce, err := c.inodeOf(ctx, rc.Ino)
		if err != nil {
			continue
		}
		depth, ino := 0, rc.Ino
		for p := ce.rec.Parent; ino != v.root && depth < 1024; depth++ {
			ino = p
			if ino == v.root {
				depth++
				break
			}
			recs, err := v.host.Get(ctx, 0, fsys.RecordKey{Ino: ino})
			if err != nil || len(recs) == 0 {
				depth = -1
				break
			}
			p = recs[0].Parent
		}
		if depth > 0 {
			grants = append(grants, grantRoot{ino: rc.Ino, depth: depth, name: ce.n.Name})
		}
	}
	sort.Slice(grants, func(i, j int) bool { return grants[i].depth > grants[j].depth })
	c.mu.Lock()
	v.grants, v.readcapsAt = grants, c.now()
	c.mu.Unlock()
	return nil
}

func (c *Client) unwrap(ctx context.Context, rc fsys.Readcap) ([]byte, error) {
	if c.cfg.Decapsulate == nil {
		return nil, fmt.Errorf("fsys: no key agreement: %w", fsys.ErrPermission)
	}
	r, err := caps.DecodeReadcap(rc.Cap)
	if err != nil {
		return nil, fmt.Errorf("fsys: readcap: %w: %v", fsys.ErrIntegrity, err)
	}
	key, err := r.Unwrap(ctx, c.cfg.Decapsulate, fsys.ReadcapPurpose(rc.Ino))
	if err != nil {
		return nil, fmt.Errorf("fsys: readcap: %w: %v", fsys.ErrPermission, err)
	}
	if len(key) != fsys.KeySize {
		return nil, fmt.Errorf("fsys: readcap: key of %d bytes: %w", len(key), fsys.ErrIntegrity)
	}
	return key, nil
}

// Root returns the root directory of the volume hosted at /<root>.
func (c *Client) Root(ctx context.Context, root paths.ID) (fsys.Attr, error) {
	p, err := paths.New(root)
	if err != nil {
		return fsys.Attr{}, fmt.Errorf("fsys: root %s: %w", root, fsys.ErrInvalid)
	}
	return c.Walk(ctx, p)
}

// Walk resolves an absolute path (symlinks are not followed).
func (c *Client) Walk(ctx context.Context, p paths.Path) (fsys.Attr, error) {
	ino, err := c.walk(ctx, p)
	if err != nil {
		return fsys.Attr{}, err
	}
	return c.Getattr(ctx, ino)
}

func (c *Client) walk(ctx context.Context, p paths.Path) (fsys.Ino, error) {
	v, err := c.volumeOf(ctx, p)
	if err != nil {
		return 0, err
	}
	rel, err := v.path.Rel(p)
	if err != nil {
		return 0, fmt.Errorf("fsys: walk %s: %w", p, fsys.ErrNotExist)
	}
	in, err := c.info(v.root)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	haveRoot := in.key != nil
	c.mu.Unlock()
	if !haveRoot {
		if err := c.loadReadcaps(ctx, v); err != nil && !errors.Is(err, fsys.ErrUnavailable) {
			return 0, err
		}
	}
	c.mu.Lock()
	haveRoot = in.key != nil
	grants := v.grants
	c.mu.Unlock()
	if haveRoot {
		return c.walkFrom(ctx, v.root, rel)
	}
	var lastErr error = fmt.Errorf("fsys: walk %s: no readcap: %w", p, fsys.ErrPermission)
	for _, g := range grants {
		if g.depth > len(rel) || rel[g.depth-1] != g.name {
			continue
		}
		ino, err := c.walkFrom(ctx, g.ino, rel[g.depth:])
		if err == nil {
			return ino, nil
		}
		lastErr = err
	}
	return 0, lastErr
}

func (c *Client) walkFrom(ctx context.Context, ino fsys.Ino, comps []string) (fsys.Ino, error) {
	for _, name := range comps {
		a, err := c.Lookup(ctx, ino, name)
		if err != nil {
			return 0, err
		}
		ino = a.Ino
	}
	return ino, nil
}

// ---- transactions ----

// txb builds one Tx; every record read through it becomes a Base.
type txb struct {
	c    *Client
	v    *volume
	base map[fsys.RecordKey]uint64
	put  map[fsys.RecordKey]*fsys.Record
	del  map[fsys.RecordKey]bool
	keys []fsys.RecordKey
	rc   []fsys.Readcap
	rr   []fsys.Readcap
	// after the commit: records to cache (decoded) and keys to learn
	newInodes  map[fsys.Ino]*inode
	newEntries map[fsys.RecordKey]*entry
	learnKeys  map[fsys.Ino][]byte
	parents    map[fsys.Ino]fsys.Ino   // Parent of the inodes read or written
	grants     map[fsys.Ino]paths.Path // Grant of the inodes read or written
	// durable: commit with Host.Commit (durable before it returns) even
	// when the host is a Syncer.
	durable bool
}

func (b *txb) touch(k fsys.RecordKey, ver uint64) {
	if _, ok := b.base[k]; !ok {
		b.base[k] = ver
	}
}

// inode reads ino's current inode through the cache and bases the Tx on
// it.
func (b *txb) inode(ctx context.Context, ino fsys.Ino) (*inoInfo, *inode, uint64, error) {
	if n, ok := b.newInodes[ino]; ok {
		in, err := b.c.info(ino)
		return in, n, b.base[fsys.RecordKey{Ino: ino}], err
	}
	in, ce, err := b.c.inodeOf(ctx, ino)
	if err != nil {
		return nil, nil, 0, err
	}
	if in.vol != b.v {
		return nil, nil, 0, fmt.Errorf("fsys: inode %016x is in volume %s: %w", uint64(ino), in.vol.path, fsys.ErrCrossVolume)
	}
	b.touch(fsys.RecordKey{Ino: ino}, ce.rec.Version)
	b.c.mu.Lock()
	parent := ce.rec.Parent
	b.c.mu.Unlock()
	b.parents[ino] = parent
	b.grants[ino] = ce.rec.Grant
	return in, ce.n.clone(), ce.rec.Version, nil
}

func (b *txb) dir(ctx context.Context, ino fsys.Ino) (*inoInfo, *inode, error) {
	in, n, _, err := b.inode(ctx, ino)
	if err != nil {
		return nil, nil, err
	}
	if n.Kind != fsys.KindDir {
		return nil, nil, fmt.Errorf("fsys: %016x: %w", uint64(ino), fsys.ErrNotDir)
	}
	return in, n, nil
}

// entry reads the entry name of dir (nil: absent) and bases the Tx on it.
func (b *txb) entry(ctx context.Context, in *inoInfo, dir fsys.Ino, name string) (fsys.RecordKey, *entry, error) {
	if err := validName(name); err != nil {
		return fsys.RecordKey{}, nil, fmt.Errorf("fsys: name %q: %w", name, err)
	}
	k, ce, err := b.c.entryOf(ctx, in, dir, name)
	if err != nil {
		return k, nil, err
	}
	b.touch(k, ce.version())
	if ce.rec == nil {
		return k, nil, nil
	}
	return k, ce.e, nil
}

func (b *txb) putInode(ino, parent fsys.Ino, grant paths.Path, n *inode, key []byte) error {
	sealed, err := sealInode(key, ino, n)
	if err != nil {
		return err
	}
	k := fsys.RecordKey{Ino: ino}
	var bl []cid.Cid
	for _, r := range n.refs {
		bl = append(bl, r.CID)
	}
	if _, ok := b.put[k]; !ok {
		b.keys = append(b.keys, k)
	}
	delete(b.del, k)
	b.put[k] = &fsys.Record{Key: k, Parent: parent, Sealed: sealed, Blocks: bl, Grant: grant}
	b.newInodes[ino] = n
	b.parents[ino] = parent
	b.grants[ino] = grant
	if _, ok := b.base[k]; !ok {
		b.base[k] = 0
	}
	return nil
}

func (b *txb) putEntry(dirKey []byte, k fsys.RecordKey, e *entry) error {
	sealed, err := sealEntry(dirKey, k, e)
	if err != nil {
		return err
	}
	if _, ok := b.put[k]; !ok {
		b.keys = append(b.keys, k)
	}
	delete(b.del, k)
	b.put[k] = &fsys.Record{Key: k, Sealed: sealed}
	b.newEntries[k] = e
	if _, ok := b.base[k]; !ok {
		b.base[k] = 0
	}
	return nil
}

func (b *txb) delete(k fsys.RecordKey) {
	if _, ok := b.put[k]; ok {
		delete(b.put, k)
	} else {
		b.keys = append(b.keys, k)
	}
	b.del[k] = true
	delete(b.newEntries, k)
	if !k.IsEntry() {
		delete(b.newInodes, k.Ino)
	}
}

func (b *txb) empty() bool {
	return len(b.put) == 0 && len(b.del) == 0 && len(b.rc) == 0 && len(b.rr) == 0
}

// update runs fn to build a Tx and commits it, re-running fn on fresh
// records after ErrConflict (bounded). It returns the committed version
// (0 if fn changed nothing). The commit is write-back: ordered and
// visible at the host when update returns, durable after the next Fsync
// (Syncer); updateDurable waits for durability.
func (c *Client) update(ctx context.Context, v *volume, op string, fn func(b *txb) error) (uint64, error) {
	return c.updateOpt(ctx, v, op, false, fn)
}

// updateDurable is update with a commit that is durable when it returns
// (grants, revocations, the volume's root: rare changes other nodes act
// on).
func (c *Client) updateDurable(ctx context.Context, v *volume, op string, fn func(b *txb) error) (uint64, error) {
	return c.updateOpt(ctx, v, op, true, fn)
}

func (c *Client) updateOpt(ctx context.Context, v *volume, op string, durable bool, fn func(b *txb) error) (uint64, error) {
	for attempt := 0; ; attempt++ {
		b := &txb{c: c, v: v, base: map[fsys.RecordKey]uint64{}, put: map[fsys.RecordKey]*fsys.Record{}, del: map[fsys.RecordKey]bool{},
			newInodes: map[fsys.Ino]*inode{}, newEntries: map[fsys.RecordKey]*entry{}, learnKeys: map[fsys.Ino][]byte{},
			parents: map[fsys.Ino]fsys.Ino{}, grants: map[fsys.Ino]paths.Path{}, durable: durable}
		if err := fn(b); err != nil {
			return 0, err
		}
		if b.empty() {
			return 0, nil
		}
		ver, err := c.commit(ctx, v, b, op)
		if err == nil {
			return ver, nil
		}
		if !errors.Is(err, fsys.ErrConflict) || attempt >= c.cfg.MaxRetries {
			return 0, err
		}
		keys := make([]fsys.RecordKey, 0, len(b.base))
		for k := range b.base {
			keys = append(keys, k)
		}
		c.invalidate(v, keys...)
		d := time.Duration(1+mrand.IntN(1<<min(attempt, 6))) * time.Millisecond
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(d):
		}
	}
}

// writecapFor picks the writecap to present for a Tx on v: one rooted at
// v's root whose prefix covers the volume, else the broadest one.
func (c *Client) writecapsFor(v *volume) []*caps.Writecap {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*caps.Writecap
	for _, w := range c.writecaps {
		if w.Root() == v.path.Root() {
			out = append(out, w)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Prefix().Depth() < out[j].Prefix().Depth() })
	return out
}

func (c *Client) commit(ctx context.Context, v *volume, b *txb, op string) (uint64, error) {
	tx := &fsys.Tx{Volume: v.path, Op: op, Time: c.now(), HostCert: c.cfg.HostCert,
		Readcaps: b.rc, RevokeReaders: b.rr}
	touched := map[fsys.RecordKey]bool{}
	for _, k := range b.keys {
		if r, ok := b.put[k]; ok && !touched[k] {
			tx.Put = append(tx.Put, *r)
			touched[k] = true
		} else if b.del[k] && !touched[k] {
			tx.Delete = append(tx.Delete, k)
			touched[k] = true
		}
	}
	for k, ver := range b.base {
		tx.Base = append(tx.Base, fsys.Base{Key: k, Version: ver})
	}
	sort.Slice(tx.Base, func(i, j int) bool {
		a, b := tx.Base[i].Key, tx.Base[j].Key
		if a.Ino != b.Ino {
			return a.Ino < b.Ino
		}
		return string(a.Name[:]) < string(b.Name[:])
	})
	wcs := c.writecapsFor(v)
	if len(wcs) == 0 {
		return 0, fmt.Errorf("fsys: %s: no writecap for %s: %w", op, v.path, fsys.ErrPermission)
	}
	var ver uint64
	var err error
	c.mu.Lock()
	h := v.host
	c.mu.Unlock()
	syncer, noSync := h.(fsys.Syncer)
	noSync = noSync && !b.durable
	for _, w := range wcs {
		tx.Writecap = w
		if err = fsys.SignTx(tx, c.cfg.HostKey); err != nil {
			return 0, err
		}
		if noSync {
			ver, err = syncer.CommitNoSync(ctx, tx)
		} else {
			ver, err = h.Commit(ctx, tx)
		}
		if !errors.Is(err, fsys.ErrPermission) {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("fsys: %s: %w", op, err)
	}
	// Cache what we wrote.
	c.mu.Lock()
	v.own[ver] = true
	v.committed = max(v.committed, ver)
	if !noSync {
		// A synced batch makes every earlier version durable too.
		v.durable = max(v.durable, ver)
	}
	cacheOK := ver >= v.seen
	for k := range b.del {
		delete(v.recs, k)
		if k.IsEntry() {
			delete(v.lists, k.Ino)
		}
	}
	for k, r := range b.put {
		rec := *r
		rec.Version = ver
		ce := &cached{rec: &rec}
		if k.IsEntry() {
			ce.e = b.newEntries[k]
			delete(v.lists, k.Ino)
			if ce.e != nil {
				v.names[k] = ce.e.Name
			}
		} else {
			ce.n = b.newInodes[k.Ino]
		}
		if cacheOK {
			c.cacheLocked(v, k, ce)
		} else {
			delete(v.recs, k)
		}
	}
	for ino, key := range b.learnKeys {
		in := c.inos[ino]
		if in == nil {
			in = &inoInfo{vol: v}
			c.inos[ino] = in
		}
		in.key, in.nk = key, nil
	}
	c.mu.Unlock()
	return ver, nil
}

// syncVolume makes every version this client committed to v durable at
// its host (Syncer.Sync), unless it knows them durable already.
func (c *Client) syncVolume(ctx context.Context, v *volume) error {
	c.mu.Lock()
	want, have, h := v.committed, v.durable, v.host
	c.mu.Unlock()
	if want <= have {
		return nil
	}
	if s, ok := h.(fsys.Syncer); ok {
		if err := s.Sync(ctx, want); err != nil {
			return fmt.Errorf("fsys: fsync %s: %w", v.path, err)
		}
	}
	c.mu.Lock()
	v.durable = max(v.durable, want)
	c.mu.Unlock()
	return nil
}

// ---- helpers ----

func newIno() fsys.Ino {
	var b [8]byte
	for {
		rand.Read(b[:])
		if i := fsys.Ino(binary.BigEndian.Uint64(b[:])); i != 0 {
			return i
		}
	}
}

func newKey() []byte {
	k := make([]byte, fsys.KeySize)
	rand.Read(k)
	return k
}

// publicKeyOf returns a principal's public key from its ID: possible for
// IDs that embed the key (Ed25519, identity multihash).
func publicKeyOf(id paths.ID) (crypto.PubKey, error) {
	pid, err := peer.Decode(string(id))
	if err != nil {
		return nil, fmt.Errorf("fsys: principal %s: %w", id, fsys.ErrInvalid)
	}
	pk, err := pid.ExtractPublicKey()
	if err != nil || pk == nil {
		return nil, fmt.Errorf("fsys: principal %s does not embed its public key: %w", id, fsys.ErrNotSupported)
	}
	return pk, nil
}
