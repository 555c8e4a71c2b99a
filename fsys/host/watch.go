package host

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/fsys"
)

type watcher struct {
	ch     chan fsys.Change
	closed bool
}

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
