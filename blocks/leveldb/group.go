package leveldb

import (
	"errors"
	"fmt"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/groupcommit"
)

// Group commit (docs/blockstore.md, "Durability and recovery";
// internal/groupcommit): Put and PutMany calls that arrive while another
// one is syncing wait in a queue; when the sync is over, the first of them
// becomes the leader, takes everything queued by the time it holds
// writeMu, and makes it durable together: every pack entry appended and one fdatasync, then one index
// batch (synced if it holds an inline block). Each caller still gets its
// own answer, and only once its own blocks are durable. A caller that
// finds no leader leads at once, so a lone Put waits for nothing.

// putReq is one Put or PutMany waiting for a group commit.
type putReq struct {
	bs []blocks.Block
	// verified waits for the blocks' verification (done already for a
	// request of inline blocks only).
	verified func() error
	// err is the request's outcome, set by commitGroup.
	err error
}

// newGroup returns the Store's group-commit queue: the leader holds
// writeMu while it takes a group and commits it.
func (s *Store) newGroup() *groupcommit.Group[*putReq] {
	return groupcommit.New(func(group []*putReq) []*putReq {
		_, deferred := s.commitGroup(group)
		return deferred
	}, groupcommit.WithLock(&s.writeMu))
}

// commit makes r's blocks durable with the next group commit and returns
// its outcome.
func (s *Store) commit(r *putReq) error {
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	s.group.Do(r)
	return r.err
}

// kv is a key and value for an index batch.
type kv struct{ k, v []byte }

// groupItem is what a group commit does for one request.
type groupItem struct {
	r              *putReq
	recs           []kv // renewals, then the records of new blocks
	inline, packed []blocks.Block
	newBytes       int64
	diskBytes      int
	failed         bool
}

func (it *groupItem) fail(err error) {
	if !it.failed {
		it.failed, it.r.err = true, err
	}
}

func (it *groupItem) isNew() bool { return len(it.inline)+len(it.packed) > 0 }

// commitGroup stores the blocks of group, with one pack sync and one
// index batch for all, and sets each request's err. A request naming a
// block that an earlier request of the group stores anew is deferred to
// the next group (its outcome depends on the earlier one's). writeMu is
// held.
func (s *Store) commitGroup(group []*putReq) (finished, deferred []*putReq) {
	// The time is read under writeMu: a GC sweep decides under it too, so
	// it sees either no block or this group's time.
	now := s.cfg.now().UnixNano()
	items := make([]*groupItem, 0, len(group))
	claimed := map[string]bool{} // blocks stored anew by this group
	anyNew := false
	for _, r := range group {
		it := &groupItem{r: r}
		var seen map[string]bool
		if len(r.bs) > 1 {
			seen = make(map[string]bool, len(r.bs))
		}
		conflict := false
		for _, b := range r.bs {
			if claimed[string(blockKey(b.CID))] {
				conflict = true
				break
			}
		}
		if conflict {
			deferred = append(deferred, r)
			continue
		}
		finished = append(finished, r)
		items = append(items, it)
		for _, b := range r.bs {
			key := blockKey(b.CID)
			if seen != nil {
				if seen[string(key)] {
					continue
				}
				seen[string(key)] = true
			}
			if old, err := s.db.Get(key, nil); err == nil {
				if rec := renewed(old, now); rec != nil {
					it.recs = append(it.recs, kv{key, rec})
				}
				continue
			} else if !errors.Is(err, leveldb.ErrNotFound) {
				it.fail(mapErr(err))
				break
			}
			it.newBytes += int64(len(b.Data))
			if len(b.Data) <= s.cfg.inline {
				it.inline = append(it.inline, b)
				it.diskBytes += len(b.Data)
			} else {
				it.packed = append(it.packed, b)
				it.diskBytes += entryHeaderLen(b.CID) + len(b.Data)
			}
		}
		if !it.failed && it.isNew() {
			anyNew = true
			for _, b := range r.bs {
				claimed[string(blockKey(b.CID))] = true
			}
		}
	}
	if anyNew {
		s.admit(items)
	}
	// Inline records; the pack entries of every request that has any, with
	// one sync.
	var packed []*groupItem
	for _, it := range items {
		if it.failed || !it.isNew() {
			continue
		}
		for _, b := range it.inline {
			it.recs = append(it.recs, kv{blockKey(b.CID), appendRecord(nil, record{kind: recordInline, putAt: now, size: uint64(len(b.Data)), inline: b.Data})})
		}
		if len(it.packed) > 0 {
			packed = append(packed, it)
		}
	}
	if len(packed) > 0 {
		s.appendGroup(packed, now)
	}
	// Every request's verdict, then one index batch for those that stand.
	batch := new(leveldb.Batch)
	var added, addedBytes int64
	syncIndex := false
	var ok []*groupItem
	for _, it := range items {
		if it.failed {
			continue
		}
		if err := it.r.verified(); err != nil {
			it.fail(err)
			continue
		}
		for _, e := range it.recs {
			batch.Put(e.k, e.v)
		}
		added += int64(len(it.inline) + len(it.packed))
		addedBytes += it.newBytes
		syncIndex = syncIndex || len(it.inline) > 0
		ok = append(ok, it)
	}
	if added > 0 {
		count, total, err := s.counters()
		if err != nil {
			for _, it := range ok {
				it.fail(err)
			}
			return finished, deferred
		}
		batch.Put(keyCount, u64(count+added))
		batch.Put(keyBytes, u64(total+addedBytes))
	}
	if batch.Len() > 0 {
		// Packed blocks are durable already (synced pack, and recovery);
		// only inline blocks need the index synced. Renewals alone are
		// not synced (see renewed).
		if err := s.db.Write(batch, &opt.WriteOptions{Sync: syncIndex}); err != nil {
			// The pack entries stay: the batch may have reached the
			// journal before the failure; if it did not, they are dead
			// space (or indexed by the next Open's recovery).
			err = indexErr(err)
			for _, it := range ok {
				it.fail(err)
			}
			return finished, deferred
		}
	}
	if len(packed) > 0 && s.tail-s.durable[s.active] >= s.ckEvery {
		s.advanceCheckpoints() // best effort: bounds the scan after a crash
	}
	return finished, deferred
}

// admit checks the space for the new blocks of items, in order: the
// reserve file, the free space (after one goleveldb compaction if it is
// short) and the quota. A request that does not fit fails with
// ErrNoSpace; the ones before it keep their place. writeMu is held.
func (s *Store) admit(items []*groupItem) {
	failNew := func(err error) {
		for _, it := range items {
			if it.isNew() {
				it.fail(err)
			}
		}
	}
	compacted := false
	if err := s.ensureReserve(); err != nil {
		// The disk filled up and freed the reserve; deleted inline blocks
		// hold their space until goleveldb compacts them away, which the
		// freed reserve leaves room for: compact once and try again.
		if errors.Is(err, blocks.ErrNoSpace) {
			compacted = true
			if cerr := s.db.CompactRange(util.Range{}); cerr == nil {
				err = s.ensureReserve()
			}
		}
		if err != nil {
			failNew(fmt.Errorf("restore index reserve: %w", err))
			return
		}
	}
	_, total, err := s.counters()
	if err != nil {
		failNew(err)
		return
	}
	disk := 0
	for _, it := range items {
		if it.failed || !it.isNew() {
			continue
		}
		err := s.checkFree(disk + it.diskBytes)
		if err != nil && !compacted {
			// Deleted inline blocks hold space until goleveldb compacts
			// them away; do that now, once, and look again.
			compacted = true
			if cerr := s.db.CompactRange(util.Range{}); cerr != nil {
				err = fmt.Errorf("%w (compact: %v)", err, cerr)
			} else {
				err = s.checkFree(disk + it.diskBytes)
			}
		}
		if err == nil && s.cfg.quota > 0 && total+it.newBytes > s.cfg.quota {
			err = fmt.Errorf("quota %d bytes: %w", s.cfg.quota, blocks.ErrNoSpace)
		}
		if err != nil {
			it.fail(err)
			continue
		}
		disk += it.diskBytes
		total += it.newBytes
	}
}

// appendGroup appends the pack entries of items with one fdatasync and
// adds their records. The blocks may still be hashing: appendEntries
// waits for every verdict after the sync. If one fails, nothing is
// appended (the pack is truncated back), the requests whose blocks do not
// verify fail, and the others are appended again with a second sync (a
// rare path: a block that does not match its CID). A failed write or sync
// fails them all. writeMu is held.
func (s *Store) appendGroup(items []*groupItem, now int64) {
	for attempt := 0; ; attempt++ {
		var bs []blocks.Block
		for _, it := range items {
			bs = append(bs, it.packed...)
		}
		if len(bs) == 0 {
			return
		}
		verified := func() error {
			for _, it := range items {
				if err := it.r.verified(); err != nil {
					return err
				}
			}
			return nil
		}
		pack, offs, err := s.appendEntries(bs, verified)
		if err == nil {
			i := 0
			for _, it := range items {
				for _, b := range it.packed {
					it.recs = append(it.recs, kv{blockKey(b.CID), appendRecord(nil, record{kind: recordPack, putAt: now, size: uint64(len(b.Data)), pack: pack, off: offs[i]})})
					i++
				}
			}
			return
		}
		var good []*groupItem
		for _, it := range items {
			if verr := it.r.verified(); verr != nil {
				it.fail(verr)
			} else {
				good = append(good, it)
			}
		}
		if len(good) == len(items) || attempt > 0 {
			// Not a verdict: the write or the sync failed.
			for _, it := range good {
				it.fail(err)
			}
			return
		}
		items = good
	}
}

// renewed returns the record old of a present block with the time now, or
// nil if there is nothing to write (damaged, or stamped now already).
// The write is not synced: losing it in a crash loses only the renewal,
// and the writer's following synced Pin syncs it too (goleveldb's journal
// is one ordered log).
func renewed(old []byte, now int64) []byte {
	r, err := parseRecord(old)
	if err != nil || (r.version == recordV2 && r.putAt == now) {
		return nil
	}
	r.putAt = now
	return appendRecord(nil, r)
}
