package host

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

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
