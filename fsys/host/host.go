// Package host is the in-process, durable host of one fsys volume: it
// stores the volume's records (every version, until collected), orders
// their changes, checks each Tx's signature and writecap against the write
// points it touches, keeps the volume's log and readcaps, pins the blocks
// the records reference, and tells watchers what changed. It never sees a
// key, a name or a byte of plaintext. docs/fs.md describes the formats.
//
// # Lifecycle
//
// Open creates the volume (a random root Ino, version 0, no records) on
// first open and reopens it after; a client writes the root directory
// (fsys.Client.InitVolume). Close is idempotent; after it every method
// fails with fsys.ErrUnavailable.
//
// # Durability and crash safety
//
// Every commit is ordered and applied at once: its blocks are in the block
// store (checked with Store.Has; the missing ones brought by
// Config.HaveBlocks; the block store syncs its puts), and the records, the
// log entry, the readcap changes and the new version are written in one
// goleveldb batch (group commit: Txs that arrive while a batch is being
// written share the next batch). What differs is when it returns:
//
//   - Commit returns when the batch is synced (fsync of the journal): the
//     Tx survives a power loss.
//   - CommitNoSync returns when the batch has been written to goleveldb's
//     journal file with write(2), without fsync: the Tx is visible to every
//     reader and watcher, and it survives a crash or kill -9 of this
//     process (the kernel holds the write), but a power loss or kernel
//     crash before the next sync may lose it, and with it every later
//     version (the journal is replayed as a prefix).
//   - Sync(v) returns when every version up to v is durable: at once if a
//     synced batch already covered v, else after the next batch, which it
//     makes synced (one fsync shared by every Commit and Sync waiting).
//
// A synced batch also fsyncs a journal file goleveldb retired since the
// last sync (a memtable rotation), so that a sync covers every earlier
// version and not only the current journal's. Open makes what it recovers
// durable (goleveldb flushes the replayed journal to synced tables).
//
// Pins follow the commits: a background pinner pins the blocks of the
// versions committed since the last pin under "fs:<root-ino>:<version>"
// (the newest of them) at most Config.PinDelay after a commit, and then
// records in the index that the versions up to it are pinned. Until then
// the blocks are protected by the block store's GC grace period (a writer
// puts its blocks just before it commits). Close pins what is left; after a
// crash, Open pins the blocks of every version after the last recorded pin
// before it returns (from the stored records), so every acknowledged
// version's blocks are present and pinned again.
//
// # Concurrency
//
// All methods are safe for concurrent use. Commits are ordered one at a
// time (each checked against the state its predecessors in the same batch
// leave); reads run concurrently with them and see whole batches only
// (goleveldb snapshots).
package host

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// Config configures a Host.
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
	MaxDepth = 1024
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

	// qmu guards queue and leading: the group commit's queue, and whether
	// a Commit is writing batches (the leader, the only writer of records).
	qmu     sync.Mutex
	queue   []*pendingTx
	leading bool

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

	// certMu guards certs: the host certificates (by their encoding)
	// whose node signature verified, so that a writer's Txs cost one
	// signature check each, not two.
	certMu sync.Mutex
	certs  map[string]bool

	// cur caches the current state of records the group commit checked
	// or wrote (nil: absent), trimmed to what check reads (Key, Parent,
	// Version, Grant), so that checking a Tx's bases and write points
	// does not seek the index for every key. Only the group commit's
	// leader touches it (one at a time: qmu hands the lead over); it is
	// updated after each batch is written and emptied past maxCur.
	cur map[fsys.RecordKey]*fsys.Record
}

// maxCur bounds the leader's record-state cache; past it, it is emptied.
const maxCur = 1 << 16

// maxCerts bounds the verified-certificate cache; past it, it is emptied.
const maxCerts = 1024

// pendingTx is one Commit (or, tx nil, one Sync) waiting in the group
// commit's queue.
type pendingTx struct {
	ctx  context.Context
	tx   *fsys.Tx
	sync bool // the batch holding it must be synced
	cids []cid.Cid
	ver  uint64
	err  error
	done chan struct{}
}

type watcher struct {
	ch     chan fsys.Change
	closed bool
}

var (
	_ fsys.Host   = (*Host)(nil)
	_ fsys.Syncer = (*Host)(nil)
)

// Index layout (docs/fs.md): one-byte prefixes.
var (
	keyMeta   = []byte("M")
	keyPinned = []byte("P") // uint64be: every version ≤ it has its blocks pinned
)

const (
	pfxRecord  = 'R' // R ino(8) name(32) ^version(8) → fsys.MarshalRecord, or empty: deleted
	pfxLog     = 'L' // L version(8) → log entry
	pfxKeyLog  = 'K' // K ino(8) name(32) ^version(8) → empty
	pfxReadcap = 'C' // C reader 0x00 ino(8) → caps.Readcap encoding
)

const metaVersion = 1

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
	if err := h.recoverPins(context.Background()); err != nil {
		db.Close()
		return nil, err
	}
	go h.pinner()
	return h, nil
}

// meta: version(1) ‖ root(8) ‖ volume version(8) ‖ volume path.
func encodeMeta(root fsys.Ino, version uint64, vol paths.Path) []byte {
	b := []byte{metaVersion}
	b = binary.BigEndian.AppendUint64(b, uint64(root))
	b = binary.BigEndian.AppendUint64(b, version)
	return append(b, vol.String()...)
}

// decodeMeta parses the volume's meta entry.
func decodeMeta(b []byte) (root fsys.Ino, version uint64, vol paths.Path, err error) {
	if len(b) < 17 || b[0] != metaVersion {
		return 0, 0, paths.Path{}, errors.New("bad volume meta")
	}
	root = fsys.Ino(binary.BigEndian.Uint64(b[1:]))
	version = binary.BigEndian.Uint64(b[9:])
	vol, err = paths.Parse(string(b[17:]))
	if err != nil || root == 0 {
		return 0, 0, paths.Path{}, errors.New("bad volume meta")
	}
	return root, version, vol, nil
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

// ---- keys ----

func recPrefix(k fsys.RecordKey) []byte {
	b := make([]byte, 0, 49)
	b = append(b, pfxRecord)
	b = binary.BigEndian.AppendUint64(b, uint64(k.Ino))
	return append(b, k.Name[:]...)
}

func recKey(k fsys.RecordKey, version uint64) []byte {
	return binary.BigEndian.AppendUint64(recPrefix(k), ^version)
}

// parseRecKey splits an R key.
func parseRecKey(b []byte) (fsys.RecordKey, uint64, bool) {
	if len(b) != 49 || b[0] != pfxRecord {
		return fsys.RecordKey{}, 0, false
	}
	var k fsys.RecordKey
	k.Ino = fsys.Ino(binary.BigEndian.Uint64(b[1:]))
	copy(k.Name[:], b[9:41])
	return k, ^binary.BigEndian.Uint64(b[41:]), true
}

func keyLogKey(k fsys.RecordKey, version uint64) []byte {
	b := make([]byte, 0, 49)
	b = append(b, pfxKeyLog)
	b = binary.BigEndian.AppendUint64(b, uint64(k.Ino))
	b = append(b, k.Name[:]...)
	return binary.BigEndian.AppendUint64(b, ^version)
}

func logKey(version uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pfxLog}, version)
}

func readcapKey(reader paths.ID, ino fsys.Ino) []byte {
	b := append([]byte{pfxReadcap}, reader...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(ino))
}

// log entry: version(1) ‖ time(8, unix ns) ‖ len(writer)(2) ‖ writer ‖
// len(op)(1) ‖ op ‖ keys (40 bytes each: ino ‖ name).
type logEntry struct {
	time   int64
	writer string
	op     string
	keys   []fsys.RecordKey
}

func encodeLog(e *logEntry) []byte {
	b := make([]byte, 0, 12+len(e.writer)+len(e.op)+40*len(e.keys))
	b = append(b, 1)
	b = binary.BigEndian.AppendUint64(b, uint64(e.time))
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.writer)))
	b = append(b, e.writer...)
	b = append(b, byte(len(e.op)))
	b = append(b, e.op...)
	for _, k := range e.keys {
		b = binary.BigEndian.AppendUint64(b, uint64(k.Ino))
		b = append(b, k.Name[:]...)
	}
	return b
}

func decodeLog(b []byte) (*logEntry, error) {
	bad := errors.New("bad log entry")
	if len(b) < 12 || b[0] != 1 {
		return nil, bad
	}
	e := &logEntry{time: int64(binary.BigEndian.Uint64(b[1:]))}
	n := int(binary.BigEndian.Uint16(b[9:]))
	b = b[11:]
	if len(b) < n+1 {
		return nil, bad
	}
	e.writer = string(b[:n])
	b = b[n:]
	n = int(b[0])
	b = b[1:]
	if len(b) < n || (len(b)-n)%40 != 0 {
		return nil, bad
	}
	e.op = string(b[:n])
	b = b[n:]
	for ; len(b) > 0; b = b[40:] {
		var k fsys.RecordKey
		k.Ino = fsys.Ino(binary.BigEndian.Uint64(b))
		copy(k.Name[:], b[8:40])
		e.keys = append(e.keys, k)
	}
	return e, nil
}

// ---- reads ----

type iteratorI = interface {
	Seek(key []byte) bool
	Next() bool
	Key() []byte
	Value() []byte
	Release()
	Error() error
}

// getAt returns the record k as of version at (0: newest), or ok=false.
func getAt(db *leveldb.DB, snap *leveldb.Snapshot, k fsys.RecordKey, at uint64) (fsys.Record, bool, error) {
	if at == 0 {
		at = ^uint64(0)
	}
	pfx := recPrefix(k)
	var it iteratorI
	rng := util.BytesPrefix(pfx)
	if snap != nil {
		it = snap.NewIterator(rng, nil)
	} else {
		it = db.NewIterator(rng, nil)
	}
	defer it.Release()
	if !it.Seek(recKey(k, at)) {
		return fsys.Record{}, false, it.Error()
	}
	if len(it.Value()) == 0 { // deleted
		return fsys.Record{}, false, nil
	}
	r, err := fsys.UnmarshalRecord(it.Value())
	if err != nil {
		return fsys.Record{}, false, fmt.Errorf("%w: stored record: %v", fsys.ErrIntegrity, err)
	}
	return r, true, nil
}

// Get returns the records as of version at (0: current).
func (h *Host) Get(ctx context.Context, at uint64, keys ...fsys.RecordKey) ([]fsys.Record, error) {
	done, err := h.enter("get")
	if err != nil {
		return nil, err
	}
	defer done()
	if len(keys) > fsys.MaxTxRecords {
		return nil, fmt.Errorf("fsys/host: get %d keys: %w", len(keys), fsys.ErrInvalid)
	}
	snap, err := h.db.GetSnapshot()
	if err != nil {
		return nil, fmt.Errorf("fsys/host: get: %w", err)
	}
	defer snap.Release()
	out := make([]fsys.Record, 0, len(keys))
	for _, k := range keys {
		r, ok, err := getAt(h.db, snap, k, at)
		if err != nil {
			return nil, fmt.Errorf("fsys/host: get: %w", err)
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// List returns a directory's entry records as of at (0: current).
func (h *Host) List(ctx context.Context, at uint64, dir fsys.Ino) ([]fsys.Record, error) {
	done, err := h.enter("list")
	if err != nil {
		return nil, err
	}
	defer done()
	if at == 0 {
		at = ^uint64(0)
	}
	pfx := binary.BigEndian.AppendUint64([]byte{pfxRecord}, uint64(dir))
	it := h.db.NewIterator(util.BytesPrefix(pfx), nil)
	defer it.Release()
	var out []fsys.Record
	var last [32]byte
	taken := false
	for it.Next() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k, v, ok := parseRecKey(it.Key())
		if !ok {
			return nil, fmt.Errorf("fsys/host: list: %w: bad index key", fsys.ErrIntegrity)
		}
		if !k.IsEntry() {
			continue
		}
		if k.Name != last {
			last, taken = k.Name, false
		}
		if taken || v > at {
			continue
		}
		taken = true
		if len(it.Value()) == 0 {
			continue
		}
		r, err := fsys.UnmarshalRecord(it.Value())
		if err != nil {
			return nil, fmt.Errorf("fsys/host: list: %w: %v", fsys.ErrIntegrity, err)
		}
		out = append(out, r)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("fsys/host: list: %w", err)
	}
	return out, nil
}

// Readcaps returns the readcaps held for reader.
func (h *Host) Readcaps(ctx context.Context, reader paths.ID) ([]fsys.Readcap, error) {
	done, err := h.enter("readcaps")
	if err != nil {
		return nil, err
	}
	defer done()
	pfx := append(append([]byte{pfxReadcap}, reader...), 0)
	it := h.db.NewIterator(util.BytesPrefix(pfx), nil)
	defer it.Release()
	var out []fsys.Readcap
	for it.Next() {
		k := it.Key()[len(pfx):]
		if len(k) != 8 {
			continue
		}
		out = append(out, fsys.Readcap{Ino: fsys.Ino(binary.BigEndian.Uint64(k)), Reader: reader, Cap: bytes.Clone(it.Value())})
	}
	return out, it.Error()
}

// Log lists the Txs that touched key, newest first.
func (h *Host) Log(ctx context.Context, key fsys.RecordKey, limit int) ([]fsys.LogEntry, error) {
	done, err := h.enter("log")
	if err != nil {
		return nil, err
	}
	defer done()
	if limit <= 0 {
		limit = 1 << 30
	}
	pfx := keyLogKey(key, 0)[:41]
	it := h.db.NewIterator(util.BytesPrefix(pfx), nil)
	defer it.Release()
	var out []fsys.LogEntry
	for len(out) < limit && it.Next() {
		k := it.Key()
		if len(k) != 49 {
			return nil, fmt.Errorf("fsys/host: log: %w", fsys.ErrIntegrity)
		}
		v := ^binary.BigEndian.Uint64(k[41:])
		b, err := h.db.Get(logKey(v), nil)
		if err != nil {
			return nil, fmt.Errorf("fsys/host: log %d: %w", v, err)
		}
		e, err := decodeLog(b)
		if err != nil {
			return nil, fmt.Errorf("fsys/host: log %d: %w: %v", v, fsys.ErrIntegrity, err)
		}
		w, _ := paths.Parse(e.writer)
		out = append(out, fsys.LogEntry{Version: v, Time: time.Unix(0, e.time), Writer: w, Op: e.op})
	}
	return out, it.Error()
}

// ---- commit ----

// state is the volume as a Tx would leave it: the Tx's puts and deletes
// over the stored records.
type state struct {
	db    *leveldb.DB
	snap  *leveldb.Snapshot // nil: the current state
	put   map[fsys.RecordKey]*fsys.Record
	del   map[fsys.RecordKey]bool
	cache map[fsys.RecordKey]*fsys.Record // stored records read so far (nil: absent)
	// ov is what the earlier Txs of the same group commit wrote (nil:
	// deleted); it stands over the stored records.
	ov map[fsys.RecordKey]*fsys.Record
	// cur is the leader's cache of stored records (Host.cur); nil when
	// reading a snapshot.
	cur map[fsys.RecordKey]*fsys.Record
}

func (s *state) stored(k fsys.RecordKey) (*fsys.Record, error) {
	if r, ok := s.ov[k]; ok {
		return r, nil
	}
	if r, ok := s.cache[k]; ok {
		return r, nil
	}
	if r, ok := s.cur[k]; ok {
		return r, nil
	}
	r, ok, err := getAt(s.db, s.snap, k, 0)
	if err != nil {
		return nil, err
	}
	var rp *fsys.Record
	if ok {
		rp = trim(&r)
	}
	s.cache[k] = rp
	if s.cur != nil && s.snap == nil && len(s.cur) < maxCur {
		s.cur[k] = rp
	}
	return rp, nil
}

// trim returns what check reads of a stored record.
func trim(r *fsys.Record) *fsys.Record {
	return &fsys.Record{Key: r.Key, Parent: r.Parent, Version: r.Version, Grant: r.Grant}
}

func (s *state) get(k fsys.RecordKey, after bool) (*fsys.Record, error) {
	if after {
		if r, ok := s.put[k]; ok {
			return r, nil
		}
		if s.del[k] {
			return nil, nil
		}
	}
	return s.stored(k)
}

// writePoint returns the Grant of the nearest inode, from ino upward, in
// the state before or after the Tx. skipSelf ignores ino's own Grant.
func (s *state) writePoint(ino fsys.Ino, after, skipSelf bool) (paths.Path, error) {
	for depth := 0; depth < MaxDepth; depth++ {
		r, err := s.get(fsys.RecordKey{Ino: ino}, after)
		if err != nil {
			return paths.Path{}, err
		}
		if r == nil {
			return paths.Path{}, fmt.Errorf("inode %016x does not exist: %w", uint64(ino), fsys.ErrInvalid)
		}
		if !r.Grant.IsZero() && !(skipSelf && depth == 0) {
			return r.Grant, nil
		}
		if r.Parent == 0 {
			return paths.Path{}, fmt.Errorf("inode %016x has no write point: %w", uint64(ino), fsys.ErrInvalid)
		}
		ino = r.Parent
	}
	return paths.Path{}, fmt.Errorf("parent chain deeper than %d: %w", MaxDepth, fsys.ErrInvalid)
}

// validate checks tx's shape (no state needed).
func (h *Host) validate(tx *fsys.Tx) error {
	if tx.Volume != h.cfg.Volume {
		return fmt.Errorf("tx for volume %s sent to %s: %w", tx.Volume, h.cfg.Volume, fsys.ErrInvalid)
	}
	n := len(tx.Put) + len(tx.Delete) + len(tx.Readcaps) + len(tx.RevokeReaders)
	if n == 0 || n > fsys.MaxTxRecords || len(tx.Base) > fsys.MaxTxRecords || len(tx.Op) > 64 {
		return fmt.Errorf("tx with %d changes: %w", n, fsys.ErrInvalid)
	}
	touched := map[fsys.RecordKey]bool{}
	for i := range tx.Put {
		r := &tx.Put[i]
		if r.Key.Ino == 0 || touched[r.Key] {
			return fmt.Errorf("put %v twice or with Ino 0: %w", r.Key, fsys.ErrInvalid)
		}
		touched[r.Key] = true
		if r.Key.IsEntry() {
			if r.Parent != 0 || !r.Grant.IsZero() || len(r.Blocks) > 0 {
				return fmt.Errorf("entry record with parent, grant or blocks: %w", fsys.ErrInvalid)
			}
		} else {
			if (r.Parent == 0) != (r.Key.Ino == h.root) || r.Parent == r.Key.Ino {
				return fmt.Errorf("inode %016x with parent %016x: %w", uint64(r.Key.Ino), uint64(r.Parent), fsys.ErrInvalid)
			}
			if r.Key.Ino == h.root && r.Grant != h.cfg.Volume {
				return fmt.Errorf("volume root's grant must be %s: %w", h.cfg.Volume, fsys.ErrInvalid)
			}
			if !r.Grant.IsZero() && !r.Grant.HasPrefix(h.cfg.Volume) {
				return fmt.Errorf("grant %s outside the volume: %w", r.Grant, fsys.ErrInvalid)
			}
		}
		if len(r.Sealed) == 0 || len(r.Sealed) > fsys.MaxTxSize {
			return fmt.Errorf("record %v without content: %w", r.Key, fsys.ErrInvalid)
		}
	}
	for _, k := range tx.Delete {
		if k.Ino == 0 || touched[k] || k == (fsys.RecordKey{Ino: h.root}) {
			return fmt.Errorf("delete of %v: %w", k, fsys.ErrInvalid)
		}
		touched[k] = true
	}
	based := map[fsys.RecordKey]bool{}
	for _, b := range tx.Base {
		if based[b.Key] {
			return fmt.Errorf("base %v twice: %w", b.Key, fsys.ErrInvalid)
		}
		based[b.Key] = true
	}
	for k := range touched {
		if !based[k] {
			return fmt.Errorf("record %v changed without a base: %w", k, fsys.ErrInvalid)
		}
	}
	return nil
}

// check verifies tx against the stored state (snap, or the current one)
// with ov (the records the
// earlier Txs of its group wrote; nil: none) over it: bases, then write
// points. It returns ErrConflict, ErrPermission or ErrInvalid. Only the
// group commit's leader writes records, so its checks see a stable state.
func (h *Host) check(tx *fsys.Tx, ov map[fsys.RecordKey]*fsys.Record, snap *leveldb.Snapshot) error {
	s := &state{db: h.db, snap: snap, put: map[fsys.RecordKey]*fsys.Record{}, del: map[fsys.RecordKey]bool{}, cache: map[fsys.RecordKey]*fsys.Record{}, ov: ov}
	if snap == nil && ov != nil {
		s.cur = h.cur // the leader's check (ov is the group's)
	}
	for _, b := range tx.Base {
		r, err := s.stored(b.Key)
		if err != nil {
			return err
		}
		var cur uint64
		if r != nil {
			cur = r.Version
		}
		if cur != b.Version {
			return fmt.Errorf("record %016x/%x is at version %d, not %d: %w", uint64(b.Key.Ino), b.Key.Name[:4], cur, b.Version, fsys.ErrConflict)
		}
	}
	for i := range tx.Put {
		s.put[tx.Put[i].Key] = &tx.Put[i]
	}
	for _, k := range tx.Delete {
		s.del[k] = true
	}
	need := map[paths.Path]bool{}
	add := func(ino fsys.Ino, after, skipSelf bool) error {
		wp, err := s.writePoint(ino, after, skipSelf)
		if err != nil {
			return err
		}
		need[wp] = true
		return nil
	}
	for k := range s.put {
		old, err := s.stored(k)
		if err != nil {
			return err
		}
		if old != nil {
			if err := add(k.Ino, false, false); err != nil {
				return err
			}
		}
		if err := add(k.Ino, true, false); err != nil {
			return err
		}
		r := s.put[k]
		if !k.IsEntry() && !r.Grant.IsZero() && (old == nil || old.Grant != r.Grant) && r.Parent != 0 {
			// Setting a grant needs the write point above it too.
			need[r.Grant] = true
			if err := add(k.Ino, true, true); err != nil {
				return err
			}
		}
	}
	for k := range s.del {
		old, err := s.stored(k)
		if err != nil {
			return err
		}
		if old != nil {
			if err := add(k.Ino, false, false); err != nil {
				return err
			}
		}
	}
	for _, rc := range append(append([]fsys.Readcap(nil), tx.Readcaps...), tx.RevokeReaders...) {
		if err := add(rc.Ino, true, false); err != nil {
			return err
		}
	}
	for wp := range need {
		if err := h.cfg.Verifier.VerifyHolder(tx.Writecap, tx.HostCert.NodeID, wp); err != nil {
			return fmt.Errorf("write point %s: %w: %v", wp, fsys.ErrPermission, err)
		}
	}
	for _, rc := range tx.Readcaps {
		if _, err := caps.DecodeReadcap(rc.Cap); err != nil {
			return fmt.Errorf("readcap: %w: %v", fsys.ErrInvalid, err)
		}
	}
	return nil
}

func txCIDs(tx *fsys.Tx) []cid.Cid {
	seen := map[cid.Cid]bool{}
	var out []cid.Cid
	for i := range tx.Put {
		for _, c := range tx.Put[i].Blocks {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// PinName is the pin under which the host holds the blocks of the volume
// versions after the previous pin up to version.
func (h *Host) PinName(version uint64) string {
	return "fs:" + hex.EncodeToString(binary.BigEndian.AppendUint64(nil, uint64(h.root))) + ":" + strconv.FormatUint(version, 10)
}

// Commit verifies and applies tx atomically and durably and returns the
// new volume version. Errors wrap fsys.ErrConflict, ErrPermission,
// ErrInvalid, ErrNoSpace or ErrUnavailable (closed). Concurrent Commits
// share one synced batch (see the package comment). Safe for concurrent
// use.
func (h *Host) Commit(ctx context.Context, tx *fsys.Tx) (uint64, error) {
	return h.commit(ctx, tx, true)
}

// CommitNoSync is Commit that returns once the Tx is applied and written
// to the journal, before it is synced: visible to every reader and
// watcher, and surviving a kill of this process but not a power loss
// until a Sync covers it (see the package comment). Errors are Commit's.
// Safe for concurrent use.
func (h *Host) CommitNoSync(ctx context.Context, tx *fsys.Tx) (uint64, error) {
	return h.commit(ctx, tx, false)
}

// Sync returns when every version up to version is durable, issuing a
// synced batch (shared with concurrent Commits and Syncs) if none covered
// it yet. Errors: fsys.ErrIntegrity (version is beyond the current one:
// versions acknowledged before a power loss were lost), ErrUnavailable
// (closed), or the batch's write error. Safe for concurrent use.
func (h *Host) Sync(ctx context.Context, version uint64) error {
	done, err := h.enter("sync")
	if err != nil {
		return err
	}
	defer done()
	h.mu.Lock()
	cur, synced := h.version, h.synced
	h.mu.Unlock()
	if version > cur {
		return fmt.Errorf("fsys/host: sync to version %d: the volume is at %d (unsynced versions lost in a crash of the machine): %w", version, cur, fsys.ErrIntegrity)
	}
	if version <= synced {
		return nil
	}
	p := &pendingTx{ctx: ctx, sync: true, done: make(chan struct{})}
	h.run(p)
	if p.err != nil {
		return fmt.Errorf("fsys/host: sync to version %d: %w", version, p.err)
	}
	return nil
}

func (h *Host) commit(ctx context.Context, tx *fsys.Tx, sync bool) (uint64, error) {
	done, err := h.enter("commit")
	if err != nil {
		return 0, err
	}
	defer done()
	fail := func(err error) (uint64, error) {
		op := ""
		if tx != nil {
			op = tx.Op
		}
		return 0, fmt.Errorf("fsys/host: commit %q: %w", op, err)
	}
	if tx == nil {
		return fail(fsys.ErrInvalid)
	}
	if err := h.validate(tx); err != nil {
		return fail(err)
	}
	if err := h.verifyTxSig(tx); err != nil {
		return fail(err)
	}
	cids := txCIDs(tx)
	if len(cids) > 0 {
		missing, err := h.missing(ctx, cids)
		if err != nil {
			return fail(err)
		}
		if len(missing) > 0 {
			// Check first, so a Tx that would be refused fetches nothing;
			// then fetch without holding up other commits.
			snap, err := h.db.GetSnapshot()
			if err != nil {
				return fail(err)
			}
			err = h.check(tx, nil, snap)
			snap.Release()
			if err != nil {
				return fail(err)
			}
			if err := h.haveBlocks(ctx, tx, missing); err != nil {
				return fail(err)
			}
		}
	}
	p := &pendingTx{ctx: ctx, tx: tx, sync: sync, cids: cids, done: make(chan struct{})}
	h.run(p)
	if p.err != nil {
		return fail(p.err)
	}
	return p.ver, nil
}

// run queues p for the group commit and returns when it is done, leading
// (writing batches until the queue is empty) if no Commit does.
func (h *Host) run(p *pendingTx) {
	h.qmu.Lock()
	h.queue = append(h.queue, p)
	if !h.leading {
		h.leading = true
		for len(h.queue) > 0 {
			group := h.queue
			h.queue = nil
			h.qmu.Unlock()
			h.commitGroup(group)
			h.qmu.Lock()
		}
		h.leading = false
	}
	h.qmu.Unlock()
	<-p.done
}

// commitGroup checks each Tx of group in order against the state the
// earlier ones leave, writes the accepted ones in one batch (synced if
// one of them or a Sync of the group asks for it), and completes every
// Tx. Only the leader calls it.
func (h *Host) commitGroup(group []*pendingTx) {
	h.mu.Lock()
	ver, synced := h.version, h.synced
	h.mu.Unlock()
	ov := map[fsys.RecordKey]*fsys.Record{}
	if h.cur == nil || len(h.cur) >= maxCur {
		h.cur = map[fsys.RecordKey]*fsys.Record{}
	}
	b := new(leveldb.Batch)
	var ok, syncs []*pendingTx
	var changes []fsys.Change
	var cids []cid.Cid
	sync := false
	for _, p := range group {
		if p.tx == nil { // a Sync
			syncs = append(syncs, p)
			sync = true
			continue
		}
		if err := p.ctx.Err(); err != nil {
			p.err = err
			continue
		}
		if err := h.check(p.tx, ov, nil); err != nil {
			p.err = err
			continue
		}
		keys, err := h.stage(b, p.tx, ver+1, ov)
		if err != nil {
			p.err = err
			continue
		}
		ver++
		p.ver = ver
		ok = append(ok, p)
		sync = sync || p.sync
		changes = append(changes, fsys.Change{Version: ver, Keys: keys})
		cids = append(cids, p.cids...)
	}
	if len(ok) > 0 || (sync && synced < ver) {
		// With no Tx, a Sync rewrites the meta entry to have a batch to
		// sync (goleveldb skips an empty one).
		b.Put(keyMeta, encodeMeta(h.root, ver, h.cfg.Volume))
		if err := h.db.Write(b, &opt.WriteOptions{Sync: sync}); err != nil {
			h.cur = nil // what the index holds is not known
			for _, p := range ok {
				p.err, p.ver = err, 0
			}
			for _, p := range syncs {
				p.err = err
			}
			ok, sync = nil, false
		} else if sync {
			if err := h.syncRetiredJournals(); err != nil {
				// The batch is written and its Txs committed; what is
				// not known durable is the versions before it.
				h.cfg.Log.Error("syncing a retired journal failed", "err", err)
				for _, p := range syncs {
					p.err = err
				}
				sync = false
			}
		}
	}
	if sync {
		h.mu.Lock()
		h.synced = ver
		h.mu.Unlock()
	}
	if len(ok) > 0 {
		for k, r := range ov {
			if r != nil {
				r = trim(r)
			}
			h.cur[k] = r
		}
		h.pinMu.Lock()
		h.unpinned = append(h.unpinned, cids...)
		h.unpinnedTo = ver
		h.pinMu.Unlock()
		select {
		case h.pinKick <- struct{}{}:
		default:
		}
		h.mu.Lock()
		h.version = ver
		for _, ch := range changes {
			for w := range h.watchers {
				select {
				case w.ch <- ch:
				default:
					h.cfg.Log.Warn("watcher too slow, dropped", "version", ch.Version)
					h.dropLocked(w)
				}
			}
		}
		h.mu.Unlock()
	}
	for _, p := range group {
		close(p.done)
	}
}

// verifyTxSig is fsys.VerifyTxSig with the host certificate's node
// signature checked once per certificate (its validity window every
// time).
func (h *Host) verifyTxSig(tx *fsys.Tx) error {
	now := h.cfg.Clock()
	cert := tx.HostCert
	if cert == nil || tx.Writecap == nil || len(tx.Sig) == 0 || len(tx.Sig) > 1024 || len(cert.Marshal()) == 0 {
		return fsys.VerifyTxSig(tx, now)
	}
	raw := string(cert.Marshal())
	h.certMu.Lock()
	known := h.certs[raw]
	h.certMu.Unlock()
	if !known || now.Before(cert.NotBefore) || !now.Before(cert.Expiry) {
		if err := fsys.VerifyTxSig(tx, now); err != nil {
			return err
		}
		h.certMu.Lock()
		if h.certs == nil || len(h.certs) >= maxCerts {
			h.certs = map[string]bool{}
		}
		h.certs[raw] = true
		h.certMu.Unlock()
		return nil
	}
	m, err := fsys.TxSigningBytes(tx)
	if err != nil {
		return err
	}
	if ok, err := cert.Host.Verify(m, tx.Sig); err != nil || !ok {
		return fmt.Errorf("fsys: tx: bad signature: %w", fsys.ErrPermission)
	}
	return nil
}

// syncRetiredJournals fsyncs the goleveldb journal files other than the
// current one (the newest): a memtable rotation since the last synced
// batch retires a journal that may hold unsynced batches, and goleveldb
// closes it without fsync. A file removed meanwhile was compacted into
// synced tables.
func (h *Host) syncRetiredJournals() error {
	ents, err := os.ReadDir(h.cfg.Dir)
	if err != nil {
		return err
	}
	var nums []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(name, 10, 64); err == nil {
			nums = append(nums, n)
		}
	}
	if len(nums) < 2 {
		return nil
	}
	slices.Sort(nums)
	for _, n := range nums[:len(nums)-1] {
		f, err := os.Open(filepath.Join(h.cfg.Dir, fmt.Sprintf("%06d.log", n)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("fsync journal %06d: %w", n, err)
		}
	}
	return nil
}

// stage adds tx, committed as version ver, to batch b and its records to
// ov, and returns the keys it changed.
func (h *Host) stage(b *leveldb.Batch, tx *fsys.Tx, ver uint64, ov map[fsys.RecordKey]*fsys.Record) ([]fsys.RecordKey, error) {
	encs := make([][]byte, len(tx.Put))
	for i := range tx.Put {
		r := tx.Put[i]
		r.Version = ver
		enc, err := fsys.MarshalRecord(&r)
		if err != nil {
			return nil, err
		}
		encs[i] = enc
	}
	keys := make([]fsys.RecordKey, 0, len(tx.Put)+len(tx.Delete))
	for i := range tx.Put {
		r := tx.Put[i]
		r.Version = ver
		b.Put(recKey(r.Key, ver), encs[i])
		b.Put(keyLogKey(r.Key, ver), nil)
		keys = append(keys, r.Key)
		ov[r.Key] = &r
	}
	for _, k := range tx.Delete {
		b.Put(recKey(k, ver), nil)
		b.Put(keyLogKey(k, ver), nil)
		keys = append(keys, k)
		ov[k] = nil
	}
	for _, rc := range tx.RevokeReaders {
		b.Delete(readcapKey(rc.Reader, rc.Ino))
	}
	for _, rc := range tx.Readcaps {
		b.Put(readcapKey(rc.Reader, rc.Ino), rc.Cap)
	}
	t := tx.Time
	if t.IsZero() {
		t = h.cfg.Clock()
	}
	b.Put(logKey(ver), encodeLog(&logEntry{time: t.UnixNano(), writer: tx.Writecap.Prefix().String(), op: tx.Op, keys: keys}))
	return keys, nil
}

// missing returns the CIDs the block store does not hold.
func (h *Host) missing(ctx context.Context, cids []cid.Cid) ([]cid.Cid, error) {
	var out []cid.Cid
	for _, c := range cids {
		ok, err := h.cfg.Store.Has(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("blocks: %w", err)
		}
		if !ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// haveBlocks brings the missing CIDs into the store (Config.HaveBlocks).
func (h *Host) haveBlocks(ctx context.Context, tx *fsys.Tx, missing []cid.Cid) error {
	if h.cfg.HaveBlocks == nil {
		return fmt.Errorf("block %s is not held: %w", missing[0], fsys.ErrInvalid)
	}
	if err := h.cfg.HaveBlocks(ctx, tx, missing); err != nil {
		if errors.Is(err, blocks.ErrNoSpace) {
			return fmt.Errorf("%w: %v", fsys.ErrNoSpace, err)
		}
		return fmt.Errorf("blocks: %w", err)
	}
	return nil
}

// ---- pins ----

// pinner pins the committed blocks PinDelay after a commit, until Close.
func (h *Host) pinner() {
	defer close(h.pinDone)
	for {
		select {
		case <-h.quit:
			return
		case <-h.pinKick:
		}
		h.pinMu.Lock()
		n := len(h.unpinned)
		h.pinMu.Unlock()
		if n < maxUnpinned {
			t := time.NewTimer(h.cfg.PinDelay)
			select {
			case <-h.quit:
				t.Stop()
				return
			case <-t.C:
			}
		}
		if err := h.pinPending(context.Background()); err != nil {
			h.cfg.Log.Warn("pinning committed blocks failed; retrying", "err", err)
			select { // retry after the next delay
			case h.pinKick <- struct{}{}:
			default:
			}
		}
	}
}

// pinPending pins the blocks of the versions committed since the last pin
// (one synced Pin), then records that they are pinned (unsynced: a lost
// mark only makes the next Open pin them again).
func (h *Host) pinPending(ctx context.Context) error {
	h.pinRun.Lock()
	defer h.pinRun.Unlock()
	h.pinMu.Lock()
	cids, to, from := h.unpinned, h.unpinnedTo, h.pinnedThrough
	h.pinMu.Unlock()
	if to <= from {
		return nil
	}
	if len(cids) > 0 {
		if err := h.cfg.Store.Pin(ctx, h.PinName(to), cids); err != nil {
			return fmt.Errorf("pin versions %d..%d: %w", from+1, to, err)
		}
	}
	if err := h.db.Put(keyPinned, binary.BigEndian.AppendUint64(nil, to), nil); err != nil {
		return fmt.Errorf("pin mark: %w", err)
	}
	h.pinMu.Lock()
	h.unpinned = h.unpinned[len(cids):]
	if len(h.unpinned) == 0 {
		h.unpinned = nil
	}
	h.pinnedThrough = to
	h.pinMu.Unlock()
	return nil
}

// SyncPins pins the blocks of every committed version now, without
// waiting for PinDelay. Safe for concurrent use.
func (h *Host) SyncPins(ctx context.Context) error {
	done, err := h.enter("sync pins")
	if err != nil {
		return err
	}
	defer done()
	if err := h.pinPending(ctx); err != nil {
		return fmt.Errorf("fsys/host: %w", err)
	}
	return nil
}

// recoverPins, at Open, pins the blocks of the versions committed after
// the last recorded pin (a crash came before the pinner), read from the
// log and the stored records.
func (h *Host) recoverPins(ctx context.Context) error {
	if h.pinnedThrough >= h.version {
		return nil
	}
	var cids []cid.Cid
	seen := map[cid.Cid]bool{}
	it := h.db.NewIterator(&util.Range{Start: logKey(h.pinnedThrough + 1), Limit: logKey(h.version + 1)}, nil)
	for it.Next() {
		v := binary.BigEndian.Uint64(it.Key()[1:])
		e, err := decodeLog(it.Value())
		if err != nil {
			it.Release()
			return fmt.Errorf("fsys/host: open: log %d: %w: %v", v, fsys.ErrIntegrity, err)
		}
		for _, k := range e.keys {
			b, err := h.db.Get(recKey(k, v), nil)
			if err != nil {
				it.Release()
				return fmt.Errorf("fsys/host: open: record of version %d: %w", v, err)
			}
			if len(b) == 0 {
				continue
			}
			r, err := fsys.UnmarshalRecord(b)
			if err != nil {
				it.Release()
				return fmt.Errorf("fsys/host: open: record of version %d: %w: %v", v, fsys.ErrIntegrity, err)
			}
			for _, c := range r.Blocks {
				if !seen[c] {
					seen[c] = true
					cids = append(cids, c)
				}
			}
		}
	}
	it.Release()
	if err := it.Error(); err != nil {
		return fmt.Errorf("fsys/host: open: %w", err)
	}
	h.unpinned, h.unpinnedTo = cids, h.version
	if err := h.pinPending(ctx); err != nil {
		return fmt.Errorf("fsys/host: open: %w", err)
	}
	h.cfg.Log.Info("pinned the blocks of versions committed before a crash", "blocks", len(cids), "through", h.version)
	return nil
}

// ---- watch ----

func (h *Host) dropLocked(w *watcher) {
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
	delete(h.watchers, w)
}

// Watch delivers every Change after version after, in order, until ctx
// ends or the host closes; a watcher more than WatchBuffer Changes behind
// is dropped (its channel closed) rather than slowing commits.
func (h *Host) Watch(ctx context.Context, after uint64) (<-chan fsys.Change, error) {
	done, err := h.enter("watch")
	if err != nil {
		return nil, err
	}
	defer done()
	h.mu.Lock()
	defer h.mu.Unlock()
	if after > h.version {
		after = h.version
	}
	var replay []fsys.Change
	if after < h.version {
		it := h.db.NewIterator(&util.Range{Start: logKey(after + 1), Limit: logKey(h.version + 1)}, nil)
		for it.Next() {
			e, err := decodeLog(it.Value())
			if err != nil {
				it.Release()
				return nil, fmt.Errorf("fsys/host: watch: %w: %v", fsys.ErrIntegrity, err)
			}
			replay = append(replay, fsys.Change{Version: binary.BigEndian.Uint64(it.Key()[1:]), Keys: e.keys})
		}
		it.Release()
	}
	w := &watcher{ch: make(chan fsys.Change, len(replay)+h.cfg.WatchBuffer)}
	for _, c := range replay {
		w.ch <- c
	}
	h.watchers[w] = struct{}{}
	go func() {
		select {
		case <-ctx.Done():
		case <-h.quit:
		}
		h.mu.Lock()
		h.dropLocked(w)
		h.mu.Unlock()
	}()
	return w.ch, nil
}
