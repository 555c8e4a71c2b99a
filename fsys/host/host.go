package host

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/order"
	"blocktree.dev/bt/internal/groupcommit"
	"blocktree.dev/bt/paths"
)

type Config struct {
	Dir      string          // goleveldb directory for records, versions, log, readcaps
	Volume   paths.Path      // the volume's root path
	Node     paths.Path      // the hosting node's path (VolumeInfo.Host)
	Store    blocks.PinStore // where the volume's blocks are held
	Verifier *caps.Verifier  // nil: a fresh one
	// HaveBlocks makes sure every CID is in Store before a Commit is
	// acknowledged (a remote host fetches them from the committer); nil:
	// they must already be there (ErrInvalid otherwise).
	HaveBlocks func(ctx context.Context, tx *fsys.Tx, cids []cid.Cid) error
	Clock      func() time.Time // nil: time.Now
	Log        *slog.Logger     // nil: discard
	// WatchBuffer is how many Changes a watcher may lag behind before it
	// is dropped (default 4096).
	WatchBuffer int
	// PinDelay is how long after a commit the host pins its blocks, so
	// that the commits of that time share one pin (default
	// DefaultPinDelay). It must stay well below the block store's GC grace
	// period.
	PinDelay time.Duration
}

// Limits.
const (
	// MaxDepth bounds the Parent chain of a write point.
	MaxDepth = order.MaxDepth
	// DefaultWatchBuffer is Config.WatchBuffer's default.
	DefaultWatchBuffer = 4096
	// DefaultPinDelay is Config.PinDelay's default.
	DefaultPinDelay = 100 * time.Millisecond
	// maxUnpinned starts a pin at once when this many CIDs wait for one.
	maxUnpinned = 1 << 14
)

// Host hosts one volume. See the package comment.
type Host struct {
	cfg  Config
	db   *leveldb.DB
	root fsys.Ino

	// closeMu guards closed; every method holds it for reading while it
	// runs, so Close waits for them.
	closeMu sync.RWMutex
	closed  bool

	// rules decide each Tx's fate (fsys/order); group is the group
	// commit's queue (its leader is the only writer of records).
	rules *order.Rules
	group *groupcommit.Group[*pendingTx]

	// mu guards version, synced and watchers; the leader changes version
	// and synced.
	mu       sync.Mutex
	version  uint64
	synced   uint64 // every version ≤ it is durable
	watchers map[*watcher]struct{}

	// pinMu guards unpinned, unpinnedTo and pinnedThrough: the CIDs of the
	// committed versions after pinnedThrough (up to unpinnedTo) that no
	// pin names yet.
	pinMu         sync.Mutex
	unpinned      []cid.Cid
	unpinnedTo    uint64
	pinnedThrough uint64
	// pinRun serialises pinning (the pinner, SyncPins, Close).
	pinRun  sync.Mutex
	pinKick chan struct{} // a commit happened (buffer 1)
	pinDone chan struct{} // closed when the pinner returns

	quit chan struct{} // closed by Close

	// cur caches the current state of records the group commit checked
	// or wrote (nil: absent), trimmed to what the rules read (order.Trim), so that checking a Tx's bases and write points
	// does not seek the index for every key. Only the group commit's
	// leader touches it (one at a time: the group commit hands the lead
	// over); it is updated after each batch is written and emptied past
	// maxCur.
	cur map[fsys.RecordKey]*fsys.Record
}

// maxCur bounds the leader's record-state cache; past it, it is emptied.
const maxCur = 1 << 16

var (
	_ fsys.Host   = (*Host)(nil)
	_ fsys.Syncer = (*Host)(nil)
)

// Open opens (creating on first use) the host of cfg.Volume in cfg.Dir.
func Open(cfg Config) (*Host, error) {
	if cfg.Dir == "" || cfg.Volume.IsZero() || cfg.Store == nil {
		return nil, fmt.Errorf("fsys/host: open: Dir, Volume and Store are required: %w", fsys.ErrInvalid)
	}
	if cfg.Verifier == nil {
		cfg.Verifier = caps.NewVerifier()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.WatchBuffer <= 0 {
		cfg.WatchBuffer = DefaultWatchBuffer
	}
	if cfg.PinDelay <= 0 {
		cfg.PinDelay = DefaultPinDelay
	}
	db, err := leveldb.OpenFile(cfg.Dir, &opt.Options{Compression: opt.NoCompression})
	if err != nil {
		return nil, fmt.Errorf("fsys/host: open %s: %w", cfg.Dir, err)
	}
	h := &Host{cfg: cfg, db: db, watchers: map[*watcher]struct{}{}, quit: make(chan struct{}),
		pinKick: make(chan struct{}, 1), pinDone: make(chan struct{})}
	if err := h.loadMeta(); err != nil {
		db.Close()
		return nil, err
	}
	h.rules = order.New(cfg.Volume, h.root, cfg.Verifier)
	h.group = groupcommit.New(h.commitGroup)
	if err := h.recoverPins(context.Background()); err != nil {
		db.Close()
		return nil, err
	}
	go h.pinner()
	return h, nil
}

func (h *Host) loadMeta() error {
	b, err := h.db.Get(keyMeta, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		var r [8]byte
		for binary.BigEndian.Uint64(r[:]) == 0 {
			rand.Read(r[:])
		}
		h.root = fsys.Ino(binary.BigEndian.Uint64(r[:]))
		b := new(leveldb.Batch)
		b.Put(keyMeta, encodeMeta(h.root, 0, h.cfg.Volume))
		b.Put(keyPinned, binary.BigEndian.AppendUint64(nil, 0))
		if err := h.db.Write(b, &opt.WriteOptions{Sync: true}); err != nil {
			return fmt.Errorf("fsys/host: create volume: %w", err)
		}
		h.cfg.Log.Info("volume created", "volume", h.cfg.Volume, "root", fmt.Sprintf("%016x", uint64(h.root)))
		return nil
	}
	if err != nil {
		return fmt.Errorf("fsys/host: open: %w", err)
	}
	root, ver, vol, err := decodeMeta(b)
	if err != nil {
		return fmt.Errorf("fsys/host: open: %w: %v", fsys.ErrIntegrity, err)
	}
	if vol != h.cfg.Volume {
		return fmt.Errorf("fsys/host: open: %s holds volume %s, not %s: %w", h.cfg.Dir, vol, h.cfg.Volume, fsys.ErrInvalid)
	}
	h.root, h.version, h.synced = root, ver, ver
	switch p, err := h.db.Get(keyPinned, nil); {
	case errors.Is(err, leveldb.ErrNotFound):
		// Written before pins were deferred: every version was pinned
		// before it was committed.
		h.pinnedThrough = ver
	case err != nil:
		return fmt.Errorf("fsys/host: open: %w", err)
	case len(p) != 8:
		return fmt.Errorf("fsys/host: open: %w: bad pin mark", fsys.ErrIntegrity)
	default:
		h.pinnedThrough = min(binary.BigEndian.Uint64(p), ver)
	}
	h.unpinnedTo = h.pinnedThrough
	return nil
}

// Close closes the host; watchers' channels are closed. Idempotent.
func (h *Host) Close() error {
	h.closeMu.Lock()
	defer h.closeMu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	close(h.quit)
	<-h.pinDone
	perr := h.pinPending(context.Background())
	h.mu.Lock()
	for w := range h.watchers {
		h.dropLocked(w)
	}
	h.mu.Unlock()
	if err := h.db.Close(); err != nil {
		return err
	}
	if perr != nil {
		return fmt.Errorf("fsys/host: close: pins left for the next Open: %w", perr)
	}
	return nil
}

func (h *Host) enter(op string) (func(), error) {
	h.closeMu.RLock()
	if h.closed {
		h.closeMu.RUnlock()
		return nil, fmt.Errorf("fsys/host: %s: host closed: %w", op, fsys.ErrUnavailable)
	}
	return h.closeMu.RUnlock, nil
}

// Info describes the volume.
func (h *Host) Info(ctx context.Context) (fsys.VolumeInfo, error) {
	done, err := h.enter("info")
	if err != nil {
		return fsys.VolumeInfo{}, err
	}
	defer done()
	h.mu.Lock()
	v := h.version
	h.mu.Unlock()
	return fsys.VolumeInfo{Path: h.cfg.Volume, Root: h.root, Version: v, Host: h.cfg.Node}, nil
}
