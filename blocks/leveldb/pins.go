package leveldb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"os"
	"time"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/blocks"
)

// Pins live in the index (docs/blockstore.md, "Pins"):
//
//	n/<name>             → uint64be: CIDs in the pin (the pin exists)
//	p/<name> 0x00 <cid>  → empty: one member of the pin
//	r/<cid>              → uvarint ≥ 1: how many pins name cid
//	m/pins, m/pinned     → uint64be: pins, r/ keys
//
// Pin and Unpin change all of these in one synced goleveldb batch, so a
// pin is replaced atomically; goleveldb commits a batch larger than its
// write buffer as a transaction (tables plus one manifest record), which
// is atomic too.

// validName applies the pin naming rule: 1..255 bytes of valid UTF-8
// without NUL.
func validName(name string) bool {
	return len(name) >= 1 && len(name) <= 255 && utf8.ValidString(name) && !bytes.Contains([]byte(name), []byte{0})
}

func headKey(name string) []byte { return append(bytes.Clone(prefixHead), name...) }

// pinPrefix is p/<name>\x00: names hold no NUL, so one pin's prefix never
// covers another's keys.
func pinPrefix(name string) []byte {
	return append(append(bytes.Clone(prefixPin), name...), 0)
}

func refKey(ck string) []byte { return append(bytes.Clone(prefixRef), ck...) }

// splitPinKey decodes p/<name>\x00<cid>.
func splitPinKey(k []byte) (name string, c cid.Cid, err error) {
	rest, ok := bytes.CutPrefix(k, prefixPin)
	if !ok {
		return "", cid.Undef, errors.New("not a pin key")
	}
	n, cb, ok := bytes.Cut(rest, []byte{0})
	if !ok || !validName(string(n)) {
		return "", cid.Undef, errors.New("bad pin name in key")
	}
	c, err = cid.Cast(cb)
	if err != nil {
		return "", cid.Undef, fmt.Errorf("bad CID in pin key: %w", err)
	}
	return string(n), c, nil
}

// parseRef decodes an r/ value: a uvarint ≥ 1 and nothing else.
func parseRef(v []byte) (uint64, error) {
	n, k := binary.Uvarint(v)
	if k <= 0 || k != len(v) || n == 0 {
		return 0, errors.New("bad reference count")
	}
	return n, nil
}

// Pin makes the pin name hold exactly the distinct CIDs of cids (creating
// or replacing it) in one synced batch: after a crash the pin is either
// the old set or the new one. CIDs need not be stored. Outcomes: nil,
// ErrBadPin (name breaks the rule), ErrIntegrity (an undefined CID),
// ErrNoSpace, ErrClosed, ctx's error. Memory and batch size grow with the
// number of CIDs that change. Safe for concurrent use.
func (s *Store) Pin(ctx context.Context, name string, cids []cid.Cid) error {
	err := s.pin(ctx, name, cids, false)
	if errors.Is(err, errIndexFull) {
		s.reopenIndex()
	}
	return err
}

// Unpin removes the pin in one synced batch; removing an absent pin is a
// no-op. Blocks stay until GC. Outcomes: nil, ErrBadPin, ErrNoSpace,
// ErrClosed, ctx's error. Safe for concurrent use.
func (s *Store) Unpin(ctx context.Context, name string) error {
	err := s.pin(ctx, name, nil, true)
	if errors.Is(err, errIndexFull) {
		s.reopenIndex()
	}
	return err
}

func (s *Store) pin(ctx context.Context, name string, cids []cid.Cid, remove bool) error {
	op := "pin"
	if remove {
		op = "unpin"
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blocks/leveldb: %s %q: %w", op, name, err)
	}
	if !validName(name) {
		return fmt.Errorf("blocks/leveldb: %s %q: %w", op, name, blocks.ErrBadPin)
	}
	want := make(map[string]struct{}, len(cids))
	for _, c := range cids {
		if !c.Defined() {
			return fmt.Errorf("blocks/leveldb: pin %q: undefined CID: %w", name, blocks.ErrIntegrity)
		}
		want[c.KeyString()] = struct{}{}
	}
	done, err := s.enter()
	if err != nil {
		return fmt.Errorf("blocks/leveldb: %s %q: %w", op, name, err)
	}
	defer done()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	fail := func(err error) error { return fmt.Errorf("blocks/leveldb: %s %q: %w", op, name, err) }

	head := headKey(name)
	_, err = s.db.Get(head, nil)
	exists := err == nil
	if err != nil && !errors.Is(err, leveldb.ErrNotFound) {
		return fail(mapErr(err))
	}
	if remove && !exists {
		return nil
	}
	prefix := pinPrefix(name)
	old := map[string]struct{}{}
	if exists {
		it := s.db.NewIterator(util.BytesPrefix(prefix), nil)
		for it.Next() {
			old[string(it.Key()[len(prefix):])] = struct{}{}
		}
		it.Release()
		if err := it.Error(); err != nil {
			return fail(mapErr(err))
		}
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	pins, pinned, err := readCounters(s.db, keyPins, keyPinned)
	if err != nil {
		return fail(err)
	}
	batch := new(leveldb.Batch)
	changed := false
	for k := range want {
		if _, ok := old[k]; ok {
			continue
		}
		changed = true
		batch.Put(append(bytes.Clone(prefix), k...), nil)
		d, err := s.addRef(batch, k, +1)
		if err != nil {
			return fail(err)
		}
		pinned += d
	}
	for k := range old {
		if _, ok := want[k]; ok {
			continue
		}
		changed = true
		batch.Delete(append(bytes.Clone(prefix), k...))
		d, err := s.addRef(batch, k, -1)
		if err != nil {
			return fail(err)
		}
		pinned += d
	}
	switch {
	case remove:
		batch.Delete(head)
		pins--
	case !exists:
		pins++
		batch.Put(head, u64(int64(len(want))))
	case !changed:
		return nil // the same set: already durable
	default:
		batch.Put(head, u64(int64(len(want))))
	}
	batch.Put(keyPins, u64(max(pins, 0)))
	batch.Put(keyPinned, u64(max(pinned, 0)))
	if err := s.db.Write(batch, &opt.WriteOptions{Sync: true}); err != nil {
		return fail(indexErr(err))
	}
	return nil
}

// addRef adds d (±1) to the reference count of the CID whose key string is
// ck, in batch; writeMu is held and each CID is changed at most once per
// batch. It returns the change in the number of pinned CIDs.
func (s *Store) addRef(batch *leveldb.Batch, ck string, d int) (int64, error) {
	key := refKey(ck)
	var n uint64
	v, err := s.db.Get(key, nil)
	switch {
	case err == nil:
		if n, err = parseRef(v); err != nil {
			return 0, fmt.Errorf("%s: %v: %w", key, err, blocks.ErrIntegrity)
		}
	case !errors.Is(err, leveldb.ErrNotFound):
		return 0, mapErr(err)
	}
	switch {
	case d > 0:
		batch.Put(key, binary.AppendUvarint(nil, n+1))
		if n == 0 {
			return 1, nil
		}
	case n <= 1:
		batch.Delete(key)
		if n == 1 {
			return -1, nil
		}
	default:
		batch.Put(key, binary.AppendUvarint(nil, n-1))
	}
	return 0, nil
}

// snapshot starts a read from a consistent view of the index; the caller
// releases it. It does not hold off Close: reads from a snapshot of a
// closed index fail.
func (s *Store) snapshot() (*leveldb.Snapshot, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	snap, err := s.db.GetSnapshot()
	return snap, mapErr(err)
}

// Pins lists the pins, in name order, from a snapshot of the index. A
// damaged entry yields an error wrapping ErrIntegrity and the listing goes
// on. Safe for concurrent use.
func (s *Store) Pins(ctx context.Context) iter.Seq2[blocks.PinInfo, error] {
	return func(yield func(blocks.PinInfo, error) bool) {
		snap, err := s.snapshot()
		if err != nil {
			yield(blocks.PinInfo{}, fmt.Errorf("blocks/leveldb: pins: %w", err))
			return
		}
		defer snap.Release()
		it := snap.NewIterator(util.BytesPrefix(prefixHead), nil)
		defer it.Release()
		for it.Next() {
			if err := ctx.Err(); err != nil {
				yield(blocks.PinInfo{}, fmt.Errorf("blocks/leveldb: pins: %w", err))
				return
			}
			name, v := string(it.Key()[len(prefixHead):]), it.Value()
			if !validName(name) || len(v) != 8 {
				if !yield(blocks.PinInfo{}, fmt.Errorf("blocks/leveldb: pins: bad entry %x: %w", it.Key(), blocks.ErrIntegrity)) {
					return
				}
				continue
			}
			if !yield(blocks.PinInfo{Name: name, Blocks: int64(binary.BigEndian.Uint64(v))}, nil) {
				return
			}
		}
		if err := it.Error(); err != nil {
			yield(blocks.PinInfo{}, fmt.Errorf("blocks/leveldb: pins: %w", mapErr(err)))
		}
	}
}

// Pinned lists the CIDs of the pin name, in key order, from a snapshot of
// the index. It yields one error wrapping ErrNotFound if there is no such
// pin (ErrBadPin for a bad name, ErrClosed); a damaged entry yields an
// error wrapping ErrIntegrity and the listing goes on. Safe for concurrent
// use.
func (s *Store) Pinned(ctx context.Context, name string) iter.Seq2[cid.Cid, error] {
	return func(yield func(cid.Cid, error) bool) {
		fail := func(err error) bool {
			return yield(cid.Undef, fmt.Errorf("blocks/leveldb: pinned %q: %w", name, err))
		}
		if !validName(name) {
			fail(blocks.ErrBadPin)
			return
		}
		snap, err := s.snapshot()
		if err != nil {
			fail(err)
			return
		}
		defer snap.Release()
		if _, err := snap.Get(headKey(name), nil); errors.Is(err, leveldb.ErrNotFound) {
			fail(blocks.ErrNotFound)
			return
		} else if err != nil {
			fail(mapErr(err))
			return
		}
		it := snap.NewIterator(util.BytesPrefix(pinPrefix(name)), nil)
		defer it.Release()
		for it.Next() {
			if err := ctx.Err(); err != nil {
				fail(err)
				return
			}
			n, c, err := splitPinKey(it.Key())
			if err != nil || n != name {
				if !fail(fmt.Errorf("bad entry %x: %w", it.Key(), blocks.ErrIntegrity)) {
					return
				}
				continue
			}
			if !yield(c, nil) {
				return
			}
		}
		if err := it.Error(); err != nil {
			fail(mapErr(err))
		}
	}
}

// IsPinned reports whether any pin names c. Outcomes: the answer,
// ErrClosed. Safe for concurrent use.
func (s *Store) IsPinned(ctx context.Context, c cid.Cid) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	done, err := s.enter()
	if err != nil {
		return false, fmt.Errorf("blocks/leveldb: is pinned %s: %w", c, err)
	}
	defer done()
	ok, err := s.db.Has(refKey(c.KeyString()), nil)
	if err != nil {
		return false, fmt.Errorf("blocks/leveldb: is pinned %s: %w", c, mapErr(err))
	}
	return ok, nil
}

// Stat returns the store's counters, read from one snapshot of the index,
// and its quota. Outcomes: the figures, ErrIntegrity (damaged counters),
// ErrClosed. Safe for concurrent use.
func (s *Store) Stat(ctx context.Context) (blocks.Stat, error) {
	if err := ctx.Err(); err != nil {
		return blocks.Stat{}, err
	}
	snap, err := s.snapshot()
	if err != nil {
		return blocks.Stat{}, fmt.Errorf("blocks/leveldb: stat: %w", err)
	}
	defer snap.Release()
	st := blocks.Stat{Quota: s.cfg.quota}
	if st.Blocks, st.Bytes, err = readCounters(snap, keyCount, keyBytes); err != nil {
		return blocks.Stat{}, fmt.Errorf("blocks/leveldb: stat: %w", err)
	}
	if st.Pins, st.PinnedBlocks, err = readCounters(snap, keyPins, keyPinned); err != nil {
		return blocks.Stat{}, fmt.Errorf("blocks/leveldb: stat: %w", err)
	}
	return st, nil
}

// gcPage is how many block records GC reads per scan step, and so the
// most one sweep batch (one hold of writeMu, one synced write) deletes.
const gcPage = 512

// GC deletes every block that no pin names and whose last Put is before
// now − grace, where now is read once when GC starts (a version-1 record
// counts as put when the store was upgraded). It pages through the index;
// for each page it picks the candidates without a lock, then, holding
// writeMu, re-reads each candidate's record and reference count and
// deletes those still unpinned and still old in one synced batch, then
// removes their files (or punches their pack entries). Puts, Pins, Gets
// and Deletes go on between pages. At the end it compacts the packs that
// are more than half dead (compactPacks).
// progress, if not nil, is called after each page. Damaged records are
// skipped (counted as scanned). Outcomes: the result, or what was done
// with ctx's error, ErrNoSpace or ErrClosed. Safe for concurrent use.
func (s *Store) GC(ctx context.Context, grace time.Duration, progress func(blocks.GCProgress)) (blocks.GCResult, error) {
	var res blocks.GCResult
	cutoff := s.cfg.now().Add(-grace).UnixNano()
	start := prefixBlock
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("blocks/leveldb: gc: %w", err)
		}
		cands, next, err := s.gcScan(start, cutoff, &res)
		if err == nil && len(cands) > 0 {
			err = s.gcSweep(cands, cutoff, &res)
		}
		if errors.Is(err, errIndexFull) {
			s.reopenIndex()
		}
		if err != nil {
			return res, fmt.Errorf("blocks/leveldb: gc: %w", err)
		}
		if progress != nil {
			progress(blocks.GCProgress{Scanned: res.Scanned, Deleted: res.Deleted, Freed: res.Freed})
		}
		if next == nil {
			// Give back the space of dead pack entries.
			if _, err := s.compactPacks(ctx); err != nil {
				if errors.Is(err, errIndexFull) {
					s.reopenIndex()
				}
				return res, fmt.Errorf("blocks/leveldb: gc: %w", err)
			}
			return res, nil
		}
		start = next
	}
}

// collectable reports whether a record is older than cutoff.
func (s *Store) collectable(r record, cutoff int64) bool {
	t := r.putAt
	if r.version == recordV1 {
		t = s.upgraded
	}
	return t < cutoff
}

// gcScan reads up to gcPage block records from start and returns the keys
// of those that look collectable, and the key to go on from (nil at the
// end). It counts scanned and young blocks into res.
func (s *Store) gcScan(start []byte, cutoff int64, res *blocks.GCResult) (cands [][]byte, next []byte, err error) {
	done, err := s.enter()
	if err != nil {
		return nil, nil, err
	}
	defer done()
	it := s.db.NewIterator(&util.Range{Start: start, Limit: util.BytesPrefix(prefixBlock).Limit}, nil)
	defer it.Release()
	n := 0
	for it.Next() {
		if n == gcPage {
			return cands, bytes.Clone(it.Key()), nil
		}
		n++
		res.Scanned++
		r, err := parseRecord(it.Value())
		if err != nil {
			continue // damaged: never collected; scrub's business
		}
		pinned, err := s.db.Has(refKey(string(it.Key()[len(prefixBlock):])), nil)
		if err != nil {
			return nil, nil, mapErr(err)
		}
		switch {
		case pinned:
		case !s.collectable(r, cutoff):
			res.Kept++
		default:
			cands = append(cands, bytes.Clone(it.Key()))
		}
	}
	return cands, nil, mapErr(it.Error())
}

// gcSweep deletes the candidates that are, under writeMu, still stored,
// unpinned and older than cutoff: one synced batch with the counters, then
// the files.
func (s *Store) gcSweep(cands [][]byte, cutoff int64, res *blocks.GCResult) error {
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	s.writeMu.Lock()
	var (
		files   []string
		punches []record
	)
	deleted, freed, err := s.gcSweepLocked(cands, cutoff, res, &files, &punches)
	// Block files go while writeMu is still held: a Put of the same CID
	// right after the lock is released writes a new file under the same
	// name, which a later removal would take away (a pinned block lost).
	if err == nil {
		for _, f := range files {
			os.Remove(f) // a leftover file is removed by the next Open
		}
	}
	s.writeMu.Unlock()
	if err != nil {
		return err
	}
	res.Deleted += deleted
	res.Freed += freed
	for _, r := range punches {
		s.punch(r) // dead below its pack's checkpoint; see Delete
	}
	return nil
}

func (s *Store) gcSweepLocked(cands [][]byte, cutoff int64, res *blocks.GCResult, files *[]string, punches *[]record) (deleted, freed int64, err error) {
	count, total, err := s.counters()
	if err != nil {
		return 0, 0, err
	}
	batch := new(leveldb.Batch)
	for _, key := range cands {
		rec, err := s.db.Get(key, nil)
		if errors.Is(err, leveldb.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return 0, 0, mapErr(err)
		}
		r, err := parseRecord(rec)
		if err != nil {
			continue
		}
		ck := key[len(prefixBlock):]
		if pinned, err := s.db.Has(refKey(string(ck)), nil); err != nil {
			return 0, 0, mapErr(err)
		} else if pinned {
			continue // pinned since the scan
		}
		if !s.collectable(r, cutoff) {
			res.Kept++ // put again since the scan
			continue
		}
		batch.Delete(key)
		if s.needsTomb(r) {
			batch.Put(tombKey(r.pack, r.off), nil)
		}
		deleted++
		freed += int64(r.size)
		switch r.kind {
		case recordFile:
			if c, err := cid.Cast(ck); err == nil {
				*files = append(*files, s.blobPath(c))
			}
		case recordPack:
			*punches = append(*punches, r)
		}
	}
	if deleted == 0 {
		return 0, 0, nil
	}
	batch.Put(keyCount, u64(max(count-deleted, 0)))
	batch.Put(keyBytes, u64(max(total-freed, 0)))
	if err := s.db.Write(batch, &opt.WriteOptions{Sync: true}); err != nil {
		return 0, 0, indexErr(err)
	}
	return deleted, freed, nil
}
