package leveldb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/blocks"
)

// Compaction (docs/blockstore.md, "Compaction") gives back the space of
// deleted pack entries: a pack whose live entries fill less than half of it
// is walked entry by entry; the entries that the index still names there
// are copied, a chunk at a time, to the active pack (one fdatasync) and
// their records switched in one synced batch; then the pack file is
// removed, the packs directory synced, and last its checkpoint deleted.
// A crash at any step leaves every block readable: before the switch the
// copies are unindexed entries past the active pack's checkpoint, whose
// CIDs the index names elsewhere, so recovery skips them; after it, the
// old pack holds only dead entries below its checkpoint.

// compactChunk bounds the bytes moved per hold of writeMu.
const compactChunk = 8 << 20

// compactMinSeal is the smallest active pack that compaction seals (to
// compact it) when most of it is dead.
const compactMinSeal = 1 << 20

// compactPacks compacts every pack that is more than half dead. The active
// pack is sealed first if it qualifies and is at least compactMinSeal
// long. It returns the pack bytes given back.
func (s *Store) compactPacks(ctx context.Context) (int64, error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if ns, err := s.listPacks(); err != nil || len(ns) == 0 {
		return 0, err // no packs: no index scan either
	}
	done, err := s.enter()
	if err != nil {
		return 0, err
	}
	s.writeMu.Lock()
	s.advanceCheckpoints() // best effort: fewer tombstones, a shorter scan
	active, tail, hasActive := s.active, s.tail, s.activeFile != nil && !s.sealed
	snap, err := s.db.GetSnapshot()
	s.writeMu.Unlock()
	done()
	if err != nil {
		return 0, mapErr(err)
	}
	live := map[uint32]int64{}
	it := snap.NewIterator(util.BytesPrefix(prefixBlock), nil)
	for it.Next() {
		r, err := parseRecord(it.Value())
		if err != nil || r.kind != recordPack {
			continue
		}
		live[r.pack] += int64(packHeaderFixed + len(it.Key()) - len(prefixBlock) + int(r.size))
	}
	it.Release()
	snap.Release()
	if err := it.Error(); err != nil {
		return 0, mapErr(err)
	}
	ns, err := s.listPacks()
	if err != nil {
		return 0, err
	}
	var cands []uint32
	for _, n := range ns {
		size := tail
		if n != active || !hasActive {
			fi, err := os.Stat(s.packPath(n))
			if err != nil {
				continue
			}
			size = fi.Size()
		}
		if 2*live[n] >= size {
			continue
		}
		if n == active && hasActive {
			if size < compactMinSeal {
				continue
			}
			done, err := s.enter()
			if err != nil {
				return 0, err
			}
			s.writeMu.Lock()
			if s.active == n && !s.sealed {
				s.sealed = true // the next append starts a new pack
				s.sealedEnd[n] = s.tail
			}
			s.writeMu.Unlock()
			done()
		}
		cands = append(cands, n)
	}
	var freed int64
	for _, n := range cands {
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		f, err := s.compactPack(n)
		freed += f
		switch {
		case errors.Is(err, blocks.ErrIntegrity):
			// A damaged pack is kept as it is (its sound blocks stay
			// readable); scrub's business.
		case errors.Is(err, blocks.ErrNoSpace) && !errors.Is(err, errIndexFull):
			// No room to copy into; the space deleted blocks held is
			// mostly back already where the file system punches holes.
			return freed, nil
		case err != nil:
			return freed, fmt.Errorf("compact pack %d: %w", n, err)
		}
	}
	return freed, nil
}

// packEntry is one entry found by walking a pack.
type packEntry struct {
	c    cid.Cid
	off  int64 // data offset
	size uint32
}

// compactPack moves pack n's live entries to the active pack and removes
// it (n is sealed: nothing is appended to it, and only Open's recovery
// adds records naming it). It returns the bytes given back.
func (s *Store) compactPack(n uint32) (int64, error) {
	f, err := os.Open(s.packPath(n))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	var ents []packEntry
	hdr := make([]byte, maxPackHeader)
	for off := int64(0); off < size; {
		k, _ := f.ReadAt(hdr[:min(int64(maxPackHeader), size-off)], off)
		c, sz, hl, err := parseEntryHeader(hdr[:k])
		if err != nil || off+int64(hl)+int64(sz) > size {
			// Damaged: keep the pack; its readable blocks stay readable.
			return 0, fmt.Errorf("entry at %d: %v: %w", off, err, blocks.ErrIntegrity)
		}
		ents = append(ents, packEntry{c, off + int64(hl), sz})
		off += int64(hl) + int64(sz)
	}
	for len(ents) > 0 {
		chunk, bytes := 0, int64(0)
		for chunk < len(ents) && (chunk == 0 || bytes+int64(ents[chunk].size) <= compactChunk) {
			bytes += int64(ents[chunk].size)
			chunk++
		}
		if err := s.moveEntries(f, n, ents[:chunk]); err != nil {
			return 0, err
		}
		ents = ents[chunk:]
	}
	// No record names pack n now. Remove the file, make that durable, and
	// only then drop its checkpoint: a pack file never exists without its
	// checkpoint, so recovery never scans (and revives) its dead entries.
	s.packs.drop(n)
	if err := os.Remove(s.packPath(n)); err != nil {
		return 0, err
	}
	if err := s.hook("compact-removed"); err != nil {
		return 0, err
	}
	if err := syncDir(filepath.Join(s.dir, dirPacks)); err != nil {
		return 0, err
	}
	done, err := s.enter()
	if err != nil {
		return size, err
	}
	defer done()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	delete(s.durable, n)
	delete(s.sealedEnd, n)
	batch := new(leveldb.Batch)
	batch.Delete(checkpointKey(n))
	if err := s.dropTombs(batch, n, math.MaxInt64); err != nil {
		return size, err
	}
	if err := s.db.Write(batch, nil); err != nil {
		return size, indexErr(err)
	}
	return size, nil
}

// moveEntries copies those of ents that the index still names in pack n
// (read from f and verified) to the active pack and switches their records
// in one synced batch, under writeMu. An entry that fails verification
// stays where it is, and so does the pack.
func (s *Store) moveEntries(f *os.File, n uint32, ents []packEntry) error {
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var (
		move []blocks.Block
		recs []record
	)
	for _, e := range ents {
		rec, err := s.db.Get(blockKey(e.c), nil)
		if errors.Is(err, leveldb.ErrNotFound) {
			continue
		}
		if err != nil {
			return mapErr(err)
		}
		r, err := parseRecord(rec)
		if err != nil || r.kind != recordPack || r.pack != n || r.off != e.off {
			continue // deleted, moved, or named elsewhere: dead here
		}
		data := make([]byte, e.size)
		if m, _ := f.ReadAt(data, e.off); m != len(data) || uint64(m) != r.size || !verify(e.c, data) {
			return fmt.Errorf("block %s at %d: %w", e.c, e.off, blocks.ErrIntegrity)
		}
		move = append(move, blocks.Block{CID: e.c, Data: data})
		recs = append(recs, r)
	}
	if len(move) == 0 {
		return nil
	}
	if err := s.checkFree(0); err != nil {
		return err
	}
	to, offs, err := s.appendEntries(move, nil) // verified above
	if err != nil {
		return err
	}
	if err := s.hook("compact-appended"); err != nil {
		return err
	}
	batch := new(leveldb.Batch)
	for i, b := range move {
		r := recs[i]
		r.pack, r.off = to, offs[i]
		batch.Put(blockKey(b.CID), appendRecord(nil, r))
	}
	if err := s.db.Write(batch, &opt.WriteOptions{Sync: true}); err != nil {
		return indexErr(err)
	}
	return s.hook("compact-switched")
}
