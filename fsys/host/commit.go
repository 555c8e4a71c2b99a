package host

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/order"
)

// Commits: the rules (fsys/order) decide each Tx; this file stores what
// they decide, with one goleveldb batch per group commit
// (internal/groupcommit).

// pendingTx is one Commit (or, tx nil, one Sync) waiting in the group
// commit's queue.
type pendingTx struct {
	ctx  context.Context
	tx   *fsys.Tx
	sync bool // the batch holding it must be synced
	cids []cid.Cid
	ver  uint64
	err  error
}

// records is the stored state as the rules see it: the records of snap
// (nil: the current state) through the leader's cache cur (nil: none).
type records struct {
	db   *leveldb.DB
	snap *leveldb.Snapshot
	cur  map[fsys.RecordKey]*fsys.Record
}

// Record implements order.Records.
func (s *records) Record(k fsys.RecordKey) (*fsys.Record, error) {
	if r, ok := s.cur[k]; ok {
		return r, nil
	}
	r, ok, err := getAt(s.db, s.snap, k, 0)
	if err != nil {
		return nil, err
	}
	var rp *fsys.Record
	if ok {
		rp = order.Trim(&r)
	}
	if s.cur != nil && len(s.cur) < maxCur {
		s.cur[k] = rp
	}
	return rp, nil
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
// ErrInvalid, ErrNoSpace or ErrUnavailable (closed); a refusal by the
// rules is an *order.Refusal. Concurrent Commits share one synced batch
// (see the package comment). Safe for concurrent use.
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
	p := &pendingTx{ctx: ctx, sync: true}
	h.group.Do(p)
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
	if err := h.rules.Admit(tx, h.cfg.Clock()); err != nil {
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
			if err := h.precheck(tx); err != nil {
				return fail(err)
			}
			if err := h.haveBlocks(ctx, tx, missing); err != nil {
				return fail(err)
			}
		}
	}
	p := &pendingTx{ctx: ctx, tx: tx, sync: sync, cids: cids}
	h.group.Do(p)
	if p.err != nil {
		return fail(p.err)
	}
	return p.ver, nil
}

// precheck applies tx to a snapshot of the current state, outside the
// group commit, and returns the rules' verdict.
func (h *Host) precheck(tx *fsys.Tx) error {
	snap, err := h.db.GetSnapshot()
	if err != nil {
		return err
	}
	defer snap.Release()
	_, err = h.rules.Apply(order.State{Records: &records{db: h.db, snap: snap}}, tx)
	return err
}

// commitGroup applies each Tx of group in order to the state the earlier
// ones leave, writes the accepted ones in one batch (synced if one of
// them or a Sync of the group asks for it), and sets every request's
// outcome. Only the group commit's leader calls it; it defers nothing.
func (h *Host) commitGroup(group []*pendingTx) []*pendingTx {
	h.mu.Lock()
	ver, synced := h.version, h.synced
	h.mu.Unlock()
	if h.cur == nil || len(h.cur) >= maxCur {
		h.cur = map[fsys.RecordKey]*fsys.Record{}
	}
	ov := order.NewOverlay(&records{db: h.db, cur: h.cur})
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
		eff, err := h.rules.Apply(order.State{Version: ver, Records: ov}, p.tx)
		if err != nil {
			p.err = err
			continue
		}
		if err := h.stage(b, &eff); err != nil {
			p.err = err
			continue
		}
		ov.Add(&eff)
		ver = eff.Version
		p.ver = ver
		ok = append(ok, p)
		sync = sync || p.sync
		changes = append(changes, eff.Change())
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
		for k, r := range ov.Changed() {
			if r != nil {
				r = order.Trim(r)
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
	return nil
}

// stage adds the effects of a Tx to batch b.
func (h *Host) stage(b *leveldb.Batch, e *order.Effects) error {
	encs := make([][]byte, len(e.Put))
	for i := range e.Put {
		enc, err := fsys.MarshalRecord(&e.Put[i])
		if err != nil {
			return err
		}
		encs[i] = enc
	}
	for i := range e.Put {
		k := e.Put[i].Key
		b.Put(recKey(k, e.Version), encs[i])
		b.Put(keyLogKey(k, e.Version), nil)
	}
	for _, k := range e.Delete {
		b.Put(recKey(k, e.Version), nil)
		b.Put(keyLogKey(k, e.Version), nil)
	}
	for _, rc := range e.RevokeReaders {
		b.Delete(readcapKey(rc.Reader, rc.Ino))
	}
	for _, rc := range e.Readcaps {
		b.Put(readcapKey(rc.Reader, rc.Ino), rc.Cap)
	}
	t := e.Time
	if t.IsZero() {
		t = h.cfg.Clock()
	}
	b.Put(logKey(e.Version), encodeLog(&logEntry{time: t.UnixNano(), writer: e.Writer.String(), op: e.Op, keys: e.Keys}))
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
