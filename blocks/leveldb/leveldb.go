// Package leveldb is a durable blocks.PinStore on local disk: a goleveldb
// index (CID → location, size and last-Put time; pins; counters) with small
// blocks kept inline in goleveldb and large blocks appended to pack files.
// See docs/blockstore.md for the layout, the record and pack entry
// formats, the durability and recovery protocol, pins, GC and compaction,
// and the measurements behind InlineThreshold.
//
// Put is durable when it returns: an inline block's index entry is written
// with a synced goleveldb batch; a large block is appended to the active
// pack as a self-describing entry (CID, length, header CRC) and the pack
// fdatasynced, then indexed without a sync, and Open re-indexes every
// complete, verified entry past the pack's checkpoint, so after a crash
// every acknowledged block is found and no half-written one is visible.
// PutMany does the same for many blocks with one sync, and concurrent
// Puts and PutManys share syncs by group commit (group.go). Get verifies every
// block against its CID. Pin and Unpin are one synced batch each; GC
// re-checks every block under the write lock before it deletes it, so it
// may run while Puts and Pins continue, and then compacts packs that are
// mostly dead. Block files of format 2 stay readable. A Store is safe for
// concurrent use.
package leveldb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	ldberrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/groupcommit"
)

// DefaultInlineThreshold is the largest block kept inline in goleveldb;
// larger blocks are files. See docs/blockstore.md for the measurements.
const DefaultInlineThreshold = 16 << 10

// formatVersion is the on-disk format; Open refuses other versions, except
// that it upgrades a version-1 or version-2 store in place (see init).
// Version 3 added pack records and pack files, which a version-2 build
// would take for damage.
const formatVersion = 3

// Index keys.
var (
	keyVersion  = []byte("m/version")
	keyCount    = []byte("m/count")
	keyBytes    = []byte("m/bytes")
	keyPins     = []byte("m/pins")     // number of pins
	keyPinned   = []byte("m/pinned")   // number of r/ keys: distinct pinned CIDs
	keyUpgraded = []byte("m/upgraded") // when a version-1 store was upgraded
	prefixBlock = []byte("b/")         // b/<cid> → block record
	prefixHead  = []byte("n/")         // n/<name> → pin header: CIDs in the pin
	prefixPin   = []byte("p/")         // p/<name>\x00<cid> → empty
	prefixRef   = []byte("r/")         // r/<cid> → uvarint: pins naming cid (≥ 1)
)

// Block records.
const (
	recordV1     = byte(1) // version | kind | size | [data]
	recordV2     = byte(2) // version | kind | put time (8, unix ns) | size | [data]
	recordInline = byte(0)
	recordFile   = byte(1)
	recordPack   = byte(2) // format 3: ... | size | uvarint pack | uvarint data offset
)

// Directory names under the store's root.
const (
	dirIndex = "index"
	dirBlobs = "blobs"
	dirTmp   = "tmp"
	// fileReserve holds space for the index: when the disk is full, Delete
	// frees it so that goleveldb can log the deletion, and Put restores it
	// before storing anything. It is as large as goleveldb's memtable plus
	// a margin, so that reopening goleveldb after an ENOSPC (which flushes
	// the replayed journal to a table) always has room.
	fileReserve = "reserve"
	reserveSize = indexWriteBuffer + 512<<10
)

// Option configures Open.
type Option func(*config)

type config struct {
	quota    int64
	inline   int
	now      func() time.Time
	packSize int64
}

// WithQuota bounds the total bytes of stored blocks; a Put that would pass
// it fails with an error wrapping blocks.ErrNoSpace. Zero means no quota.
func WithQuota(bytes int64) Option { return func(c *config) { c.quota = bytes } }

// WithInlineThreshold sets the largest block kept inline in goleveldb
// (default DefaultInlineThreshold). Changing it between opens is safe:
// each index record says where its block lives.
func WithInlineThreshold(n int) Option { return func(c *config) { c.inline = n } }

// WithClock sets the clock that stamps each Put and that GC measures its
// grace period against (default time.Now). It must be safe for concurrent
// use. Tests use it; a daemon has no reason to.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// withPackSize sets the size at which packs are sealed (tests).
func withPackSize(n int64) Option { return func(c *config) { c.packSize = n } }

// Store is a durable blocks.Store. It is safe for concurrent use.
type Store struct {
	dir string
	cfg config
	db  *leveldb.DB

	// closeMu guards closed; operations hold it for reading while they
	// run so Close waits for them.
	closeMu sync.RWMutex
	closed  bool

	// headroom is indexHeadroom; tests set 0 (no free-space check) to
	// reach the OS's ENOSPC.
	headroom uint64
	// packSize is where the active pack is sealed; ckEvery is
	// checkpointEvery (tests make it small).
	packSize int64
	ckEvery  int64

	// upgraded is the time (unix ns) a version-1 store was upgraded; its
	// version-1 records count as put then. Set by Open.
	upgraded int64

	// group queues the Puts waiting for the next group commit (see
	// commit).
	group *groupcommit.Group[*putReq]

	// writeMu serialises group commits, Delete, Pin, Unpin, GC's sweeps
	// and compaction's moves so the counters, the file/index pairs, the
	// pin reference counts, GC's decisions and the pack appends stay
	// consistent. It also guards the active pack below.
	writeMu sync.Mutex
	// active is the newest pack number (0: none yet); activeFile is it,
	// open for appending at tail, or nil until the first append.
	active     uint32
	activeFile *os.File
	tail       int64
	// sealed: append no more to the active pack (compaction took it, or a
	// failed append could not be truncated away); the next append starts
	// a new one.
	sealed bool
	// reserveOK: the reserve file was found or made since the index was
	// last (re)opened.
	reserveOK bool

	// durable is each pack's durable checkpoint (as in k/), sealedEnd the
	// end of each sealed pack whose checkpoint has not reached it; both
	// guarded by writeMu.
	durable   map[uint32]int64
	sealedEnd map[uint32]int64

	// packs caches open pack files for reads.
	packs *packFiles
	// compactMu serialises compactions.
	compactMu sync.Mutex

	// testHook, if set, is called at named points of appends and
	// compaction; an error from it fails the operation there (tests
	// simulate crashes with it).
	testHook func(point string) error
}

func (s *Store) hook(point string) error {
	if s.testHook == nil {
		return nil
	}
	return s.testHook(point)
}

var _ blocks.PinStore = (*Store)(nil)

// Open opens (creating if needed) the store in dir, removes temporary
// files and block files that no index entry names, upgrades a format
// version 1 index in place, and refuses an index of an unknown format
// version.
func Open(dir string, opts ...Option) (*Store, error) {
	cfg := config{inline: DefaultInlineThreshold, now: time.Now, packSize: defaultPackSize}
	for _, o := range opts {
		o(&cfg)
	}
	for _, d := range []string{dir, filepath.Join(dir, dirBlobs), filepath.Join(dir, dirTmp)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("blocks/leveldb: open: %w", mapErr(err))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, dirPacks)); errors.Is(err, fs.ErrNotExist) {
		// The packs directory must itself be durable before a pack in it.
		if err := os.Mkdir(filepath.Join(dir, dirPacks), 0o700); err != nil {
			return nil, fmt.Errorf("blocks/leveldb: open: %w", mapErr(err))
		}
		if err := syncDir(dir); err != nil {
			return nil, fmt.Errorf("blocks/leveldb: open: %w", mapErr(err))
		}
	}
	db, err := openIndex(filepath.Join(dir, dirIndex))
	if err != nil {
		return nil, fmt.Errorf("blocks/leveldb: open index: %w", mapErr(err))
	}
	s := &Store{dir: dir, cfg: cfg, db: db, headroom: indexHeadroom, packSize: cfg.packSize,
		packs:   newPackFiles(filepath.Join(dir, dirPacks)),
		durable: map[uint32]int64{}, sealedEnd: map[uint32]int64{}, ckEvery: checkpointEvery}
	s.group = s.newGroup()
	if err := s.init(); err != nil {
		if s.activeFile != nil {
			s.activeFile.Close()
		}
		db.Close()
		return nil, err
	}
	s.ensureReserve() // best effort; Put retries
	return s, nil
}

func (s *Store) init() error {
	v, err := s.db.Get(keyVersion, nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
		b := new(leveldb.Batch)
		b.Put(keyVersion, []byte{formatVersion})
		b.Put(keyCount, u64(0))
		b.Put(keyBytes, u64(0))
		b.Put(keyPins, u64(0))
		b.Put(keyPinned, u64(0))
		if err := s.db.Write(b, &opt.WriteOptions{Sync: true}); err != nil {
			return fmt.Errorf("blocks/leveldb: init index: %w", mapErr(err))
		}
	case err != nil:
		return fmt.Errorf("blocks/leveldb: read version: %w", mapErr(err))
	case len(v) == 1 && v[0] == 2:
		// Version 2 had no packs: its records and files stay as they are.
		if err := s.db.Put(keyVersion, []byte{formatVersion}, &opt.WriteOptions{Sync: true}); err != nil {
			return fmt.Errorf("blocks/leveldb: upgrade index: %w", mapErr(err))
		}
	case len(v) == 1 && v[0] == 1:
		// Version 1 had no pins and only version-1 records, which stay
		// readable. Its blocks count as put now, so that GC does not take
		// them before their owners had a grace period to pin them.
		b := new(leveldb.Batch)
		b.Put(keyVersion, []byte{formatVersion})
		b.Put(keyPins, u64(0))
		b.Put(keyPinned, u64(0))
		b.Put(keyUpgraded, u64(s.cfg.now().UnixNano()))
		if err := s.db.Write(b, &opt.WriteOptions{Sync: true}); err != nil {
			return fmt.Errorf("blocks/leveldb: upgrade index: %w", mapErr(err))
		}
	case len(v) != 1 || v[0] != formatVersion:
		return fmt.Errorf("blocks/leveldb: unsupported format version %x", v)
	}
	if u, err := s.db.Get(keyUpgraded, nil); err == nil && len(u) == 8 {
		s.upgraded = int64(binary.BigEndian.Uint64(u))
	}
	return s.recover()
}

// recover removes temporary files and block files with no index entry:
// leftovers of a crash during Put (before the index entry) or Delete
// (after the index entry was removed).
func (s *Store) recover() error {
	tmp := filepath.Join(s.dir, dirTmp)
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("blocks/leveldb: recover: %w", err)
	}
	for _, e := range ents {
		os.Remove(filepath.Join(tmp, e.Name()))
	}
	if err := s.openPacks(); err != nil {
		return err
	}
	return filepath.WalkDir(filepath.Join(s.dir, dirBlobs), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		c, err := cid.Decode(d.Name())
		if err != nil {
			return nil // not ours; leave it
		}
		rec, err := s.db.Get(blockKey(c), nil)
		if err == nil && len(rec) >= 2 && rec[1] == recordFile {
			return nil
		}
		if err != nil && !errors.Is(err, leveldb.ErrNotFound) {
			return fmt.Errorf("blocks/leveldb: recover: %w", err)
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("blocks/leveldb: recover: %w", err)
		}
		return nil
	})
}

// enter starts an operation; the returned func ends it.
func (s *Store) enter() (func(), error) {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, blocks.ErrClosed
	}
	return s.closeMu.RUnlock, nil
}

// Put stores b after verifying its bytes against its CID, stamped with the
// clock's time. Outcomes: nil (stored durably; or already present, and
// then its time is renewed, without a sync: a crash may lose only the
// renewal), ErrIntegrity, ErrTooLarge, ErrNoSpace (disk or quota full;
// nothing stored), ErrClosed. Safe for concurrent use.
func (s *Store) Put(ctx context.Context, b blocks.Block) error {
	err := s.put(ctx, []blocks.Block{b})
	if err != nil {
		err = fmt.Errorf("blocks/leveldb: put %s: %w", b.CID, err)
	}
	if errors.Is(err, errIndexFull) {
		s.reopenIndex()
	}
	return err
}

// PutMany stores bs as Put does, with one fdatasync of the active pack for
// all the large blocks and one index batch for all (synced if it holds
// inline blocks): it returns when every block is durable. It checks every
// block first and stores none if one fails the checks (ErrIntegrity,
// ErrTooLarge) or would pass the quota or the free space (ErrNoSpace); on
// a later failure nothing is acknowledged, and blocks already appended may
// be found after a reopen, whole and verified. Safe for concurrent use.
func (s *Store) PutMany(ctx context.Context, bs []blocks.Block) error {
	err := s.put(ctx, bs)
	if err != nil {
		err = fmt.Errorf("blocks/leveldb: put many (%d blocks): %w", len(bs), err)
	}
	if errors.Is(err, errIndexFull) {
		s.reopenIndex()
	}
	return err
}

var _ blocks.BatchPutter = (*Store)(nil)

func (s *Store) put(ctx context.Context, bs []blocks.Block) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	large := false
	for _, b := range bs {
		if len(b.Data) > blocks.MaxBlockSize {
			return fmt.Errorf("%s%w", which(bs, b), blocks.ErrTooLarge)
		}
		large = large || len(b.Data) > s.cfg.inline
	}
	if len(bs) == 0 {
		return nil
	}
	verified := verifyAll(bs, large)
	if !large {
		if err := verified(); err != nil {
			return err
		}
	}
	err := s.commit(&putReq{bs: bs, verified: verified})
	// Whatever happened, the hashing is over before the caller gets its
	// blocks back; a block that does not match its CID is the answer.
	if verr := verified(); verr != nil {
		return verr
	}
	return err
}

// which names b in an error about bs, if bs has more than b (Put's error
// names its block already).
func which(bs []blocks.Block, b blocks.Block) string {
	if len(bs) == 1 {
		return ""
	}
	return b.CID.String() + ": "
}

// verifyAll checks bs against their CIDs: at once, or, if async, on another
// goroutine while the caller writes and syncs the pack (the hash of a large
// block costs about as much as the sync, and they overlap). The returned
// func waits for the result; it may be called any number of times.
func verifyAll(bs []blocks.Block, async bool) func() error {
	check := func() error {
		for _, b := range bs {
			if !verify(b.CID, b.Data) {
				return fmt.Errorf("%s%w", which(bs, b), blocks.ErrIntegrity)
			}
		}
		return nil
	}
	if !async {
		err := check()
		return func() error { return err }
	}
	ch := make(chan error, 1)
	go func() { ch <- check() }()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = <-ch })
		return err
	}
}

// ensureReserve creates the reserve file if it is missing; ENOSPC from it
// means the disk is too full to take a block.
func (s *Store) ensureReserve() error {
	if s.reserveOK {
		return nil
	}
	p := filepath.Join(s.dir, fileReserve)
	if fi, err := os.Stat(p); err == nil && fi.Size() == reserveSize {
		s.reserveOK = true
		return nil
	}
	tmp := filepath.Join(s.dir, dirTmp, fileReserve)
	err := os.WriteFile(tmp, make([]byte, reserveSize), 0o600)
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return mapErr(err)
	}
	s.reserveOK = true
	return nil
}

// indexHeadroom is the free space Put leaves on the disk beyond the block,
// so goleveldb's journal, flushes and compactions (and Deletes) do not hit
// ENOSPC, which leaves goleveldb's journal failed until reopened.
// Replaying a full journal on Open writes a table as large as the write
// buffer, and a compaction may briefly hold a second copy.
const indexHeadroom = 2*indexWriteBuffer + 512<<10

// indexWriteBuffer is goleveldb's memtable (and journal) size. Large blocks
// never reach goleveldb; a small buffer keeps indexHeadroom small.
const indexWriteBuffer = 4 << 20

// checkFree refuses a Put of n bytes that would leave less than
// indexHeadroom free on the store's file system.
func (s *Store) checkFree(n int) error {
	if s.headroom == 0 {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return nil // unknown; let the writes find out
	}
	free := uint64(st.Bavail) * uint64(st.Bsize)
	if free < uint64(n)+s.headroom {
		return fmt.Errorf("%d bytes free, need %d plus %d headroom: %w", free, n, s.headroom, blocks.ErrNoSpace)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Get returns the block's bytes, verified against c. Outcomes: the bytes,
// ErrNotFound, ErrIntegrity (stored bytes do not match c, or the record,
// file or pack entry is damaged or missing), ErrClosed. Safe for
// concurrent use.
func (s *Store) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	done, err := s.enter()
	if err != nil {
		return nil, fmt.Errorf("blocks/leveldb: get %s: %w", c, err)
	}
	defer done()
	key := blockKey(c)
	rec, err := s.db.Get(key, nil)
	for attempt := 0; ; attempt++ {
		if errors.Is(err, leveldb.ErrNotFound) {
			return nil, fmt.Errorf("blocks/leveldb: get %s: %w", c, blocks.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("blocks/leveldb: get %s: %w", c, mapErr(err))
		}
		data, gerr := s.read(c, rec)
		if gerr == nil || attempt == 3 {
			return data, gerr
		}
		// A block being deleted, or moved by compaction, may vanish
		// under the read: look again, and fail only if the record is
		// unchanged.
		again, err2 := s.db.Get(key, nil)
		if err2 == nil && bytes.Equal(again, rec) {
			return nil, gerr
		}
		rec, err = again, err2
	}
}

// read returns the verified bytes of c, whose record is rec.
func (s *Store) read(c cid.Cid, rec []byte) ([]byte, error) {
	r, err := parseRecord(rec)
	if err != nil {
		return nil, fmt.Errorf("blocks/leveldb: get %s: %v: %w", c, err, blocks.ErrIntegrity)
	}
	data := r.inline
	switch r.kind {
	case recordFile:
		data, err = os.ReadFile(s.blobPath(c))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("blocks/leveldb: get %s: block file missing: %w", c, blocks.ErrIntegrity)
		}
	case recordPack:
		data, err = s.readPacked(r)
	}
	if err != nil {
		return nil, fmt.Errorf("blocks/leveldb: get %s: %w", c, err)
	}
	if uint64(len(data)) != r.size || !verify(c, data) {
		return nil, fmt.Errorf("blocks/leveldb: get %s: %w", c, blocks.ErrIntegrity)
	}
	return data, nil
}

// Has reports whether the block is stored (without reading or verifying
// it). Safe for concurrent use.
func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	done, err := s.enter()
	if err != nil {
		return false, fmt.Errorf("blocks/leveldb: has %s: %w", c, err)
	}
	defer done()
	ok, err := s.db.Has(blockKey(c), nil)
	if err != nil {
		return false, fmt.Errorf("blocks/leveldb: has %s: %w", c, mapErr(err))
	}
	return ok, nil
}

// Delete removes the block, pinned or not: the index entry and counters
// first (synced), then the file. Deleting an absent block is a no-op.
// Outcomes: nil, ErrNoSpace, ErrClosed. Safe for concurrent use.
func (s *Store) Delete(ctx context.Context, c cid.Cid) error {
	err := s.delete(ctx, c)
	if errors.Is(err, errIndexFull) {
		// Give the index the reserved space, reopen it and try once more.
		if rerr := s.reopenIndex(); rerr != nil {
			return err
		}
		err = s.delete(ctx, c)
		if errors.Is(err, errIndexFull) {
			s.reopenIndex()
		}
	}
	return err
}

func (s *Store) delete(ctx context.Context, c cid.Cid) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done, err := s.enter()
	if err != nil {
		return fmt.Errorf("blocks/leveldb: delete %s: %w", c, err)
	}
	defer done()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	key := blockKey(c)
	rec, err := s.db.Get(key, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("blocks/leveldb: delete %s: %w", c, mapErr(err))
	}
	r, perr := parseRecord(rec)
	count, total, err := s.counters()
	if err != nil {
		return fmt.Errorf("blocks/leveldb: delete %s: %w", c, err)
	}
	batch := new(leveldb.Batch)
	batch.Delete(key)
	if perr == nil {
		batch.Put(keyCount, u64(max(count-1, 0)))
		batch.Put(keyBytes, u64(max(total-int64(r.size), 0)))
		if s.needsTomb(r) {
			batch.Put(tombKey(r.pack, r.off), nil)
		}
	}
	if err := s.db.Write(batch, &opt.WriteOptions{Sync: true}); err != nil {
		return fmt.Errorf("blocks/leveldb: delete %s: %w", c, indexErr(err))
	}
	switch {
	case perr != nil || r.kind == recordFile:
		// A leftover file is removed by the next Open.
		os.Remove(s.blobPath(c))
	case r.kind == recordPack:
		// Below its pack's checkpoint recovery never reads the entry;
		// past it, the tombstone makes recovery skip it unread. Give its
		// data blocks back now.
		s.punch(r)
	}
	return nil
}

// All iterates over the stored CIDs from a snapshot of the index, in key
// order. A damaged key yields an error wrapping ErrIntegrity and the
// iteration goes on.
func (s *Store) All(ctx context.Context) iter.Seq2[cid.Cid, error] {
	return func(yield func(cid.Cid, error) bool) {
		done, err := s.enter()
		if err != nil {
			yield(cid.Undef, fmt.Errorf("blocks/leveldb: all: %w", err))
			return
		}
		snap, err := s.db.GetSnapshot()
		done()
		if err != nil {
			yield(cid.Undef, fmt.Errorf("blocks/leveldb: all: %w", mapErr(err)))
			return
		}
		defer snap.Release()
		it := snap.NewIterator(util.BytesPrefix(prefixBlock), nil)
		defer it.Release()
		for it.Next() {
			if err := ctx.Err(); err != nil {
				yield(cid.Undef, err)
				return
			}
			c, err := cid.Cast(it.Key()[len(prefixBlock):])
			if err != nil {
				if !yield(cid.Undef, fmt.Errorf("blocks/leveldb: all: bad key %x: %w", it.Key(), blocks.ErrIntegrity)) {
					return
				}
				continue
			}
			if !yield(c, nil) {
				return
			}
		}
		if err := it.Error(); err != nil {
			yield(cid.Undef, fmt.Errorf("blocks/leveldb: all: %w", mapErr(err)))
		}
	}
}

// Size returns the number of blocks and their total bytes, from counters
// kept in the index and updated in the same batch as each entry.
func (s *Store) Size(ctx context.Context) (int64, int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	done, err := s.enter()
	if err != nil {
		return 0, 0, fmt.Errorf("blocks/leveldb: size: %w", err)
	}
	defer done()
	return s.counters()
}

// Close waits for running operations, advances the packs' checkpoints to
// their ends (so that the next Open has nothing to scan), and
// closes the packs and the index. It is idempotent; afterwards every
// method fails with ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.advanceCheckpoints()
	s.closeFiles()
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blocks/leveldb: close: %w", err)
	}
	return nil
}

func (s *Store) closeFiles() {
	if s.activeFile != nil {
		s.activeFile.Close()
		s.activeFile = nil
	}
	s.packs.closeAll()
}

func (s *Store) counters() (int64, int64, error) {
	return readCounters(s.db, keyCount, keyBytes)
}

// reader is a *leveldb.DB or a *leveldb.Snapshot.
type reader interface {
	Get(key []byte, ro *opt.ReadOptions) ([]byte, error)
}

// readCounters reads two 8-byte counters.
func readCounters(r reader, k1, k2 []byte) (int64, int64, error) {
	a, err := r.Get(k1, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("counters: %w", mapErr(err))
	}
	b, err := r.Get(k2, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("counters: %w", mapErr(err))
	}
	if len(a) != 8 || len(b) != 8 {
		return 0, 0, fmt.Errorf("counters: bad record: %w", blocks.ErrIntegrity)
	}
	return int64(binary.BigEndian.Uint64(a)), int64(binary.BigEndian.Uint64(b)), nil
}

// blobPath is dir/blobs/<last two chars of the CID string>/<CID string>.
func (s *Store) blobPath(c cid.Cid) string {
	name := c.String()
	return filepath.Join(s.dir, dirBlobs, strings.ToLower(name[len(name)-2:]), name)
}

func blockKey(c cid.Cid) []byte {
	k := c.KeyString()
	return append(append(make([]byte, 0, len(prefixBlock)+len(k)), prefixBlock...), k...)
}

// record is a decoded block record.
type record struct {
	version byte   // recordV1 or recordV2
	kind    byte   // recordInline, recordFile or recordPack
	putAt   int64  // last Put, unix ns; 0 in a version-1 record
	size    uint64 // the block's bytes
	inline  []byte // the bytes of an inline record (aliases the input)
	pack    uint32 // a pack record's pack number
	off     int64  // a pack record's data offset in the pack
}

// parseRecord decodes a block record of either version:
//
//	v1: 1 | kind | uvarint size | [data]
//	v2: 2 | kind | uint64be put time (unix ns) | uvarint size | [data | pack, offset]
//
// An inline record's data must be exactly size bytes; a file record has
// nothing after the size; a pack record (version 2 only) has the pack
// number (uvarint ≤ 2^32−1) and the data offset (uvarint ≤ 2^63−1), and
// nothing after them.
func parseRecord(rec []byte) (record, error) {
	if len(rec) < 2 {
		return record{}, errors.New("short record")
	}
	r := record{version: rec[0], kind: rec[1]}
	rest := rec[2:]
	switch r.version {
	case recordV1:
	case recordV2:
		if len(rest) < 8 {
			return record{}, errors.New("short record")
		}
		r.putAt = int64(binary.BigEndian.Uint64(rest))
		rest = rest[8:]
	default:
		return record{}, errors.New("bad record version")
	}
	size, n := binary.Uvarint(rest)
	if n <= 0 {
		return record{}, errors.New("bad record size")
	}
	r.size, rest = size, rest[n:]
	switch r.kind {
	case recordInline:
		if uint64(len(rest)) != size {
			return record{}, errors.New("inline data does not match the size")
		}
		r.inline = rest
	case recordFile:
		if len(rest) != 0 {
			return record{}, errors.New("trailing bytes in file record")
		}
	case recordPack:
		if r.version != recordV2 {
			return record{}, errors.New("pack record of version 1")
		}
		p, n := binary.Uvarint(rest)
		if n <= 0 || p > math.MaxUint32 {
			return record{}, errors.New("bad pack number")
		}
		rest = rest[n:]
		off, n := binary.Uvarint(rest)
		if n <= 0 || off > math.MaxInt64 {
			return record{}, errors.New("bad pack offset")
		}
		if len(rest) != n {
			return record{}, errors.New("trailing bytes in pack record")
		}
		r.pack, r.off = uint32(p), int64(off)
	default:
		return record{}, errors.New("bad record kind")
	}
	return r, nil
}

// appendRecord encodes r as a version-2 record (whatever r.version says).
func appendRecord(dst []byte, r record) []byte {
	dst = append(dst, recordV2, r.kind)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.putAt))
	dst = binary.AppendUvarint(dst, r.size)
	switch r.kind {
	case recordInline:
		dst = append(dst, r.inline...)
	case recordPack:
		dst = binary.AppendUvarint(dst, uint64(r.pack))
		dst = binary.AppendUvarint(dst, uint64(r.off))
	}
	return dst
}

// verify reports whether c is a block CID (CIDv1 raw sha2-256) and data
// hashes to it.
func verify(c cid.Cid, data []byte) bool { return blocks.Verify(c, data) == nil }

func u64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

// errIndexFull marks a goleveldb write that failed for lack of space;
// goleveldb's journal stays failed after that, so the index is reopened.
var errIndexFull = errors.New("index write failed")

func indexErr(err error) error {
	err = mapErr(err)
	if errors.Is(err, blocks.ErrNoSpace) {
		return fmt.Errorf("%w: %w", errIndexFull, err)
	}
	return err
}

// reopenIndex closes and reopens goleveldb after a failed write, first
// removing the reserve file so that goleveldb has room for a new journal;
// the next Put restores the reserve (or fails with ErrNoSpace). It waits for running
// operations. The failed batch was never acknowledged, and goleveldb drops
// a torn journal record on recovery.
func (s *Store) reopenIndex() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return blocks.ErrClosed
	}
	os.Remove(filepath.Join(s.dir, fileReserve))
	s.reserveOK = false
	s.db.Close() // reports the journal's earlier write error
	db, err := openIndex(filepath.Join(s.dir, dirIndex))
	if err != nil {
		// Without an index the store cannot go on.
		s.closed = true
		return fmt.Errorf("blocks/leveldb: reopen index: %w", mapErr(err))
	}
	s.db = db
	return nil
}

func openIndex(path string) (*leveldb.DB, error) {
	// The bloom filter spares Put's look-up of a new (absent) block a
	// read of every level's table: at 10^6 blocks that look-up is most of
	// the difference to a bare synced goleveldb write. Tables written
	// without it stay readable.
	db, err := leveldb.OpenFile(path, &opt.Options{WriteBuffer: indexWriteBuffer, Filter: filter.NewBloomFilter(10)})
	if ldberrors.IsCorrupted(err) {
		db, err = leveldb.RecoverFile(path, nil)
	}
	return db, err
}

// mapErr wraps ENOSPC and EDQUOT so callers see blocks.ErrNoSpace.
func mapErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", blocks.ErrNoSpace, err)
	}
	return err
}
