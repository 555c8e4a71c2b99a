package leveldb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/blocks"
)

// Pack files (docs/blockstore.md, "Pack files"): large blocks are appended
// to dir/packs/NNNNNNNN.pack, each as one self-describing entry
//
//	magic "BTpk" | version 1 | CID length (1 byte) | data length (4, BE)
//	| CID bytes | CRC32C of all the header bytes before it (4, BE) | data
//
// and indexed by a pack record (pack number, data offset, size). A Put
// appends and fdatasyncs the pack, then writes its index batch without a
// sync. A pack's durable checkpoint (k/<pack>) is moved only once every
// index write below it is known durable (advanceCheckpoints); a Delete of
// an entry past it leaves a tombstone (x/<pack><offset>). Open scans every
// pack past its checkpoint and indexes again the complete entries whose
// bytes hash to their CID, unless a record or a tombstone names them
// (recoverPack).

const (
	dirPacks         = "packs"
	packMagic        = "BTpk"
	packEntryVersion = 1
	// packHeaderFixed is the header without the CID bytes: magic,
	// version, CID length, data length, CRC.
	packHeaderFixed = 4 + 1 + 1 + 4 + 4
	// maxPackCID bounds the CID bytes in a header (a block CID has 36).
	maxPackCID    = 128
	maxPackHeader = packHeaderFixed + maxPackCID
	// defaultPackSize is where the active pack is sealed and a new one
	// started.
	defaultPackSize = 256 << 20
)

// prefixCheckpoint: k/<pack, uint32be> → uint64be: the pack's entries
// below that offset are all reflected in the durable index.
// prefixTomb: x/<pack, uint32be><data offset, uint64be> → empty: the entry
// there was deleted (written only for entries past the checkpoint).
var (
	prefixCheckpoint = []byte("k/")
	prefixTomb       = []byte("x/")
)

// checkpointEvery is how far the active pack may grow past its durable
// checkpoint before a Put advances it (two synced index writes): it bounds
// the scan after a crash.
const checkpointEvery = 64 << 20

func tombKey(n uint32, off int64) []byte {
	k := binary.BigEndian.AppendUint32(bytes.Clone(prefixTomb), n)
	return binary.BigEndian.AppendUint64(k, uint64(off))
}

func tombPrefix(n uint32) []byte {
	return binary.BigEndian.AppendUint32(bytes.Clone(prefixTomb), n)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func packName(n uint32) string { return fmt.Sprintf("%08d.pack", n) }

// parsePackName decodes NNNNNNNN.pack (eight or more decimal digits).
func parsePackName(name string) (uint32, bool) {
	digits, ok := strings.CutSuffix(name, ".pack")
	if !ok || len(digits) < 8 {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 32)
	if err != nil || packName(uint32(n)) != name {
		return 0, false
	}
	return uint32(n), true
}

func checkpointKey(n uint32) []byte {
	return binary.BigEndian.AppendUint32(bytes.Clone(prefixCheckpoint), n)
}

// entryHeaderLen is the header length of c's entry.
func entryHeaderLen(c cid.Cid) int { return packHeaderFixed + len(c.KeyString()) }

// appendEntryHeader encodes the header of an entry holding size bytes of
// block c.
func appendEntryHeader(dst []byte, c cid.Cid, size int) []byte {
	k := c.KeyString()
	start := len(dst)
	dst = append(dst, packMagic...)
	dst = append(dst, packEntryVersion, byte(len(k)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(size))
	dst = append(dst, k...)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// errShortHeader: the bytes end before the header does (a torn tail, or
// the end of the pack).
var errShortHeader = errors.New("short pack entry header")

// parseEntryHeader decodes the entry header at the start of b: the block's
// CID, its data length and the header's length. It checks the magic, the
// version, the bounds, the CRC and that the CID is canonical; the data is
// checked by hashing it against the CID.
func parseEntryHeader(b []byte) (c cid.Cid, size uint32, hdrLen int, err error) {
	if len(b) < packHeaderFixed-4 {
		return cid.Undef, 0, 0, errShortHeader
	}
	if string(b[:4]) != packMagic {
		return cid.Undef, 0, 0, errors.New("bad pack entry magic")
	}
	if b[4] != packEntryVersion {
		return cid.Undef, 0, 0, fmt.Errorf("unknown pack entry version %d", b[4])
	}
	cl := int(b[5])
	if cl == 0 || cl > maxPackCID {
		return cid.Undef, 0, 0, errors.New("bad CID length in pack entry")
	}
	size = binary.BigEndian.Uint32(b[6:10])
	if size > blocks.MaxBlockSize {
		return cid.Undef, 0, 0, errors.New("pack entry larger than a block")
	}
	hdrLen = packHeaderFixed + cl
	if len(b) < hdrLen {
		return cid.Undef, 0, 0, errShortHeader
	}
	if crc32.Checksum(b[:hdrLen-4], castagnoli) != binary.BigEndian.Uint32(b[hdrLen-4:]) {
		return cid.Undef, 0, 0, errors.New("pack entry header CRC mismatch")
	}
	c, err = cid.Cast(b[10 : 10+cl])
	if err != nil || c.KeyString() != string(b[10:10+cl]) {
		return cid.Undef, 0, 0, errors.New("bad CID in pack entry")
	}
	return c, size, hdrLen, nil
}

// packFiles caches open pack files for reads (ReadAt, safe for concurrent
// use; a Close racing with a read makes it fail, and Get then looks again).
// Files are opened read-write so that Delete can punch holes in them.
type packFiles struct {
	dir string
	// mu guards open and order.
	mu    sync.Mutex
	open  map[uint32]*os.File
	order []uint32 // oldest first, for eviction
}

// maxOpenPacks bounds the cached pack files.
const maxOpenPacks = 64

func newPackFiles(dir string) *packFiles {
	return &packFiles{dir: dir, open: map[uint32]*os.File{}}
}

func (p *packFiles) get(n uint32) (*os.File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.open[n]; ok {
		return f, nil
	}
	f, err := os.OpenFile(filepath.Join(p.dir, packName(n)), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if len(p.order) >= maxOpenPacks {
		old := p.order[0]
		p.order = p.order[1:]
		p.open[old].Close()
		delete(p.open, old)
	}
	p.open[n] = f
	p.order = append(p.order, n)
	return f, nil
}

// drop closes and forgets pack n.
func (p *packFiles) drop(n uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.open[n]; ok {
		f.Close()
		delete(p.open, n)
		p.order = slices.DeleteFunc(p.order, func(m uint32) bool { return m == n })
	}
}

func (p *packFiles) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.open {
		f.Close()
	}
	p.open, p.order = map[uint32]*os.File{}, nil
}

// packPath is dir/packs/NNNNNNNN.pack.
func (s *Store) packPath(n uint32) string { return filepath.Join(s.dir, dirPacks, packName(n)) }

// listPacks returns the pack numbers in dir/packs, ascending.
func (s *Store) listPacks() ([]uint32, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, dirPacks))
	if err != nil {
		return nil, err
	}
	var ns []uint32
	for _, e := range ents {
		if n, ok := parsePackName(e.Name()); ok && e.Type().IsRegular() {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	return ns, nil
}

// readCheckpoint returns pack n's checkpoint (0 if it has none).
func (s *Store) readCheckpoint(n uint32) (int64, error) {
	v, err := s.db.Get(checkpointKey(n), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, mapErr(err)
	}
	if len(v) != 8 || binary.BigEndian.Uint64(v) > math.MaxInt64 {
		return 0, fmt.Errorf("checkpoint of pack %d: bad record: %w", n, blocks.ErrIntegrity)
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// rotate seals the active pack and starts the next one: the new file and
// its directory entry are made durable before anything is appended, so a
// synced append is never lost with its file. writeMu is held.
func (s *Store) rotate() error {
	n := s.active + 1
	f, err := os.OpenFile(s.packPath(n), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return mapErr(err)
	}
	if err := syncDir(filepath.Join(s.dir, dirPacks)); err != nil {
		f.Close()
		os.Remove(s.packPath(n))
		return mapErr(err)
	}
	if s.activeFile != nil {
		s.activeFile.Close()
		s.sealedEnd[s.active] = s.tail
	}
	s.active, s.activeFile, s.tail, s.sealed = n, f, 0, false
	s.advanceCheckpoints() // best effort; the sealed pack's end is noted
	return nil
}

// appendEntries appends bs to the active pack (sealing it first if they
// would take it past packSize) and fdatasyncs it: one sync for all. Then it
// waits for verified (if not nil): the blocks may be hashed while they are
// written and synced, since nothing names the new entries before
// appendEntries returns, and recovery indexes only entries that verify. It
// returns each block's data offset. On failure (of a write, the sync or
// the verification) the pack is truncated back (and, if that fails too,
// sealed) and nothing was appended. writeMu is held.
func (s *Store) appendEntries(bs []blocks.Block, verified func() error) (uint32, []int64, error) {
	need := int64(0)
	for _, b := range bs {
		need += int64(entryHeaderLen(b.CID) + len(b.Data))
	}
	if s.activeFile == nil || s.sealed || (s.tail > 0 && s.tail+need > s.packSize) {
		if err := s.rotate(); err != nil {
			return 0, nil, err
		}
	}
	f, start := s.activeFile, s.tail
	offs := make([]int64, len(bs))
	err := func() error {
		off := start
		var hdr [maxPackHeader]byte
		for i, b := range bs {
			h := appendEntryHeader(hdr[:0], b.CID, len(b.Data))
			if _, err := f.WriteAt(h, off); err != nil {
				return err
			}
			off += int64(len(h))
			if _, err := f.WriteAt(b.Data, off); err != nil {
				return err
			}
			offs[i] = off
			off += int64(len(b.Data))
		}
		if err := s.hook("append"); err != nil {
			return err
		}
		if err := datasync(f); err != nil {
			return err
		}
		if verified != nil {
			return verified()
		}
		return nil
	}()
	if err != nil {
		if terr := f.Truncate(start); terr != nil {
			s.sealed = true // never append after bytes we could not remove
			s.sealedEnd[s.active] = start
		}
		return 0, nil, mapErr(err)
	}
	s.tail = start + need
	return s.active, offs, nil
}

// advanceCheckpoints moves the checkpoints of the active pack and of sealed
// packs not yet covered to their ends, if every index write so far is
// durable; writeMu is held. goleveldb's journal is one ordered log per
// file, but when its memtable fills it starts a new journal file without
// syncing the old one, so a synced write makes earlier unsynced writes
// durable only if they are in the same file or already flushed to a table.
// Hence: a synced write, then a look that index/ holds one journal file
// (no frozen memtable whose journal might still lose its tail), then the
// checkpoints, with the removal of the tombstones below them, in a synced
// batch. If a frozen journal is still there it tries again next time.
func (s *Store) advanceCheckpoints() error {
	targets := map[uint32]int64{}
	if s.activeFile != nil && !s.sealed && s.tail > s.durable[s.active] {
		targets[s.active] = s.tail
	}
	for n, end := range s.sealedEnd {
		if end > s.durable[n] {
			targets[n] = end
		} else {
			delete(s.sealedEnd, n)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	mark := new(leveldb.Batch)
	mark.Put(keyVersion, []byte{formatVersion})
	if err := s.db.Write(mark, &opt.WriteOptions{Sync: true}); err != nil {
		return indexErr(err)
	}
	if n, err := s.journalFiles(); err != nil || n != 1 {
		return err
	}
	batch := new(leveldb.Batch)
	for n, end := range targets {
		batch.Put(checkpointKey(n), u64(end))
		if err := s.dropTombs(batch, n, end); err != nil {
			return err
		}
	}
	if err := s.db.Write(batch, &opt.WriteOptions{Sync: true}); err != nil {
		return indexErr(err)
	}
	for n, end := range targets {
		s.durable[n] = end
		if s.sealedEnd[n] <= end {
			delete(s.sealedEnd, n)
		}
	}
	return nil
}

// journalFiles counts goleveldb's journal files (*.log) in index/.
func (s *Store) journalFiles() (int, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, dirIndex))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".log") {
			n++
		}
	}
	return n, nil
}

// dropTombs adds to batch the removal of pack n's tombstones below end.
func (s *Store) dropTombs(batch *leveldb.Batch, n uint32, end int64) error {
	p := tombPrefix(n)
	it := s.db.NewIterator(&util.Range{Start: p, Limit: tombKey(n, end)}, nil)
	defer it.Release()
	for it.Next() {
		batch.Delete(bytes.Clone(it.Key()))
	}
	return mapErr(it.Error())
}

// needsTomb reports whether deleting r (a pack record) needs a tombstone:
// its entry is past its pack's durable checkpoint, where recovery looks.
// writeMu is held.
func (s *Store) needsTomb(r record) bool {
	return r.kind == recordPack && r.off >= s.durable[r.pack]
}

// readPacked reads a pack record's bytes (unverified).
func (s *Store) readPacked(r record) ([]byte, error) {
	if r.size > blocks.MaxBlockSize {
		return nil, fmt.Errorf("record of %d bytes: %w", r.size, blocks.ErrIntegrity)
	}
	f, err := s.packs.get(r.pack)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pack %d missing: %w", r.pack, blocks.ErrIntegrity)
	}
	if err != nil {
		return nil, err
	}
	data := make([]byte, r.size)
	n, err := f.ReadAt(data, r.off)
	if n == len(data) {
		return data, nil
	}
	if err == io.EOF || err == nil {
		return nil, fmt.Errorf("pack %d ends inside the block: %w", r.pack, blocks.ErrIntegrity)
	}
	return nil, err
}

// punch gives a deleted pack entry's data blocks back to the file system,
// best effort (the header stays, so the pack can still be walked).
func (s *Store) punch(r record) {
	if f, err := s.packs.get(r.pack); err == nil {
		punchHole(f, r.off, int64(r.size))
	}
}

// openPacks finds the packs, recovers each one past its checkpoint, drops
// the checkpoints of packs that no longer exist, and picks the active pack:
// the newest, if it is below packSize and was not found damaged.
func (s *Store) openPacks() error {
	ns, err := s.listPacks()
	if err != nil {
		return fmt.Errorf("blocks/leveldb: recover packs: %w", err)
	}
	present := map[uint32]bool{}
	for _, n := range ns {
		present[n] = true
		if n > s.active {
			s.active = n
		}
	}
	// Checkpoints of removed packs (compaction removes the file before
	// its checkpoint, so that a pack never exists without one).
	var stale [][]byte
	it := s.db.NewIterator(util.BytesPrefix(prefixCheckpoint), nil)
	for it.Next() {
		k := it.Key()
		if len(k) != len(prefixCheckpoint)+4 {
			continue
		}
		n := binary.BigEndian.Uint32(k[len(prefixCheckpoint):])
		if n > s.active {
			s.active = n // never reuse a pack number
		}
		if !present[n] {
			stale = append(stale, bytes.Clone(k))
		}
	}
	it.Release()
	if err := it.Error(); err != nil {
		return fmt.Errorf("blocks/leveldb: recover packs: %w", mapErr(err))
	}
	if len(stale) > 0 {
		if err := syncDir(filepath.Join(s.dir, dirPacks)); err != nil {
			return fmt.Errorf("blocks/leveldb: recover packs: %w", mapErr(err))
		}
		b := new(leveldb.Batch)
		for _, k := range stale {
			b.Delete(k)
			n := binary.BigEndian.Uint32(k[len(prefixCheckpoint):])
			if err := s.dropTombs(b, n, math.MaxInt64); err != nil {
				return fmt.Errorf("blocks/leveldb: recover packs: %w", err)
			}
		}
		if err := s.db.Write(b, nil); err != nil {
			return fmt.Errorf("blocks/leveldb: recover packs: %w", mapErr(err))
		}
	}
	recovered := false
	for _, n := range ns {
		end, ok, found, err := s.recoverPack(n)
		if err != nil {
			return fmt.Errorf("blocks/leveldb: recover pack %d: %w", n, err)
		}
		recovered = recovered || found
		if n == s.active && ok && end < s.packSize {
			f, err := os.OpenFile(s.packPath(n), os.O_RDWR, 0)
			if err != nil {
				return fmt.Errorf("blocks/leveldb: open pack %d: %w", n, mapErr(err))
			}
			s.activeFile, s.tail = f, end
		}
	}
	if recovered {
		if err := s.recount(); err != nil {
			return fmt.Errorf("blocks/leveldb: recover packs: %w", err)
		}
	}
	return nil
}

// recount sets m/count and m/bytes from the block records (synced). Open
// calls it when recovery indexed blocks again: the counters written with
// the lost batches were lost with them, but a later batch (in a newer
// journal file) may have kept counters that include them, so they are
// derived afresh rather than adjusted.
func (s *Store) recount() error {
	var count, total int64
	it := s.db.NewIterator(util.BytesPrefix(prefixBlock), nil)
	for it.Next() {
		count++
		if r, err := parseRecord(it.Value()); err == nil {
			total += int64(r.size)
		}
	}
	it.Release()
	if err := it.Error(); err != nil {
		return mapErr(err)
	}
	b := new(leveldb.Batch)
	b.Put(keyCount, u64(count))
	b.Put(keyBytes, u64(total))
	return mapErr(s.db.Write(b, &opt.WriteOptions{Sync: true}))
}

// recoverPack scans pack n from its durable checkpoint: each complete
// entry with a valid header whose bytes hash to its CID is indexed, as put
// now, unless a record names its CID (indexed here, or elsewhere and this
// copy is dead) or a tombstone its place (deleted); the first entry that
// is not all of that ends the pack, which is truncated there. Then the
// checkpoint moves to the end and the tombstones below it go, in synced
// batches. It returns the pack's end, ok = false if the pack is shorter
// than its checkpoint (damaged; it is left alone and never appended to),
// and found = true if it indexed anything (then the counters are recounted).
func (s *Store) recoverPack(n uint32) (end int64, ok, found bool, err error) {
	cp, err := s.readCheckpoint(n)
	if err != nil {
		return 0, false, false, err
	}
	s.durable[n] = cp
	f, err := os.OpenFile(s.packPath(n), os.O_RDWR, 0)
	if err != nil {
		return 0, false, false, mapErr(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, false, false, err
	}
	size := fi.Size()
	if size < cp {
		return size, false, false, nil
	}
	if size == cp {
		return size, true, false, nil
	}
	now := s.cfg.now().UnixNano()
	batch := new(leveldb.Batch)
	flush := func(off int64) error {
		batch.Put(checkpointKey(n), u64(off))
		if err := s.dropTombs(batch, n, off); err != nil {
			return err
		}
		err := s.db.Write(batch, &opt.WriteOptions{Sync: true})
		batch.Reset()
		s.durable[n] = off
		return mapErr(err)
	}
	off := cp
	hdr := make([]byte, maxPackHeader)
	added := map[string]bool{} // CIDs indexed by this scan (a CID may recur)
	for off < size {
		k, _ := f.ReadAt(hdr[:min(int64(maxPackHeader), size-off)], off)
		c, sz, hl, err := parseEntryHeader(hdr[:k])
		if err != nil || off+int64(hl)+int64(sz) > size {
			break
		}
		key, at := blockKey(c), off+int64(hl)
		// A deleted entry (its data may be punched out) is skipped
		// unread: its header is whole, and it was whole when indexed.
		dead, terr := s.db.Has(tombKey(n, at), nil)
		if terr != nil {
			return 0, false, false, mapErr(terr)
		}
		rec, rerr := s.db.Get(key, nil)
		if !dead && !namesHere(rec, rerr, n, at) {
			// An entry the index already names here was whole when
			// indexed; any other is read and verified.
			data := make([]byte, sz)
			if m, _ := f.ReadAt(data, at); m != len(data) || !verify(c, data) {
				break
			}
		}
		switch {
		case rerr != nil && !errors.Is(rerr, leveldb.ErrNotFound):
			return 0, false, false, mapErr(rerr)
		case rerr == nil, dead, added[string(key)]:
		default:
			added[string(key)] = true
			found = true
			batch.Put(key, appendRecord(nil, record{kind: recordPack, putAt: now, size: uint64(sz), pack: n, off: at}))
		}
		off = at + int64(sz)
		if batch.Len() >= 1000 {
			if err := flush(off); err != nil {
				return 0, false, false, err
			}
		}
	}
	if off < size {
		// A torn or unverifiable tail: never acknowledged (a Put returns
		// only after its entry is synced, and every entry before it).
		if err := f.Truncate(off); err != nil {
			return 0, false, false, mapErr(err)
		}
		if err := datasync(f); err != nil {
			return 0, false, false, mapErr(err)
		}
	}
	if err := flush(off); err != nil {
		return 0, false, false, err
	}
	return off, true, found, nil
}

// namesHere reports whether rec (read with error err) is a pack record of
// pack n at data offset off.
func namesHere(rec []byte, err error, n uint32, off int64) bool {
	if err != nil {
		return false
	}
	r, err := parseRecord(rec)
	return err == nil && r.kind == recordPack && r.pack == n && r.off == off
}
