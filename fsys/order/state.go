package order

import (
	"iter"
	"time"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// Records is a read-only view of a volume's current records.
type Records interface {
	// Record returns k's current record, or nil if k has none (never
	// written, or deleted). The rules read only its Key, Parent, Version
	// and Grant, so a view may return records trimmed to those (Trim).
	Record(k fsys.RecordKey) (*fsys.Record, error)
}

// State is a volume's state before a Tx: its version and its records.
type State struct {
	Version uint64
	Records Records
}

// Map is Records held in memory (nil: absent).
type Map map[fsys.RecordKey]*fsys.Record

// Record implements Records.
func (m Map) Record(k fsys.RecordKey) (*fsys.Record, error) { return m[k], nil }

// Trim returns what the rules read of a record (Key, Parent, Version and
// Grant), for a view that caches records.
func Trim(r *fsys.Record) *fsys.Record {
	return &fsys.Record{Key: r.Key, Parent: r.Parent, Version: r.Version, Grant: r.Grant}
}

// Effects is what committing an accepted Tx changes: the caller stores
// them atomically as version Version.
type Effects struct {
	Version uint64
	// Put are the Tx's records with Version set; Delete the keys it
	// deletes (a tombstone at Version).
	Put    []fsys.Record
	Delete []fsys.RecordKey
	// Readcaps are stored (replacing a reader's readcap of the same
	// inode); RevokeReaders are removed, before Readcaps.
	Readcaps      []fsys.Readcap
	RevokeReaders []fsys.Readcap
	// Keys are the record keys changed, puts then deletes: the log
	// entry's and the watchers' Change.
	Keys []fsys.RecordKey
	// Writer, Op and Time are the log entry's: the writecap's prefix, the
	// Tx's Op and Time (zero: the caller stamps the commit time).
	Writer paths.Path
	Op     string
	Time   time.Time
}

// Change is the watchers' news of e.
func (e *Effects) Change() fsys.Change { return fsys.Change{Version: e.Version, Keys: e.Keys} }

// Overlay is Records with the Effects of accepted Txs over them: the state
// a group of Txs leaves, before the caller has stored it. Not safe for
// concurrent use.
type Overlay struct {
	base Records
	recs map[fsys.RecordKey]*fsys.Record // nil: deleted
}

// NewOverlay returns an Overlay with nothing over base.
func NewOverlay(base Records) *Overlay {
	return &Overlay{base: base, recs: map[fsys.RecordKey]*fsys.Record{}}
}

// Record implements Records.
func (o *Overlay) Record(k fsys.RecordKey) (*fsys.Record, error) {
	if r, ok := o.recs[k]; ok {
		return r, nil
	}
	return o.base.Record(k)
}

// Add lays e over the records.
func (o *Overlay) Add(e *Effects) {
	for i := range e.Put {
		r := e.Put[i]
		o.recs[r.Key] = &r
	}
	for _, k := range e.Delete {
		o.recs[k] = nil
	}
}

// Changed yields every record the added Effects changed, as they leave it
// (nil: deleted).
func (o *Overlay) Changed() iter.Seq2[fsys.RecordKey, *fsys.Record] {
	return func(yield func(fsys.RecordKey, *fsys.Record) bool) {
		for k, r := range o.recs {
			if !yield(k, r) {
				return
			}
		}
	}
}

// Len returns how many records the added Effects changed.
func (o *Overlay) Len() int { return len(o.recs) }
