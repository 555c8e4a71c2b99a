package host

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/fsys"
)

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
