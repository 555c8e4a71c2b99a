// Package memstore is an in-memory blocks.PinStore: maps guarded by a
// mutex. It verifies every block on Put and Get like a durable store would,
// and copies bytes in and out, so callers cannot change what it holds. It
// keeps pins and collects garbage by the same rules as blocks/leveldb. It
// is meant for unit tests of the layers above blocks; nothing survives the
// process. Safe for concurrent use.
package memstore

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
)

// Option configures New.
type Option func(*Store)

// WithClock sets the clock that stamps each Put and that GC measures the
// grace period against (default time.Now). It must be safe for concurrent
// use.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Store is an in-memory blocks.PinStore. The zero value is not usable; call
// New.
type Store struct {
	now func() time.Time

	// mu guards everything below.
	mu     sync.RWMutex
	blocks map[cid.Cid]entry
	bytes  int64
	pins   map[string]map[cid.Cid]struct{}
	refs   map[cid.Cid]int // number of pins naming each CID; absent = 0
	closed bool
}

// entry is a stored block and the time of its last Put.
type entry struct {
	data  []byte
	putAt time.Time
}

var _ blocks.PinStore = (*Store)(nil)

// New returns an empty store.
func New(opts ...Option) *Store {
	s := &Store{
		now:    time.Now,
		blocks: make(map[cid.Cid]entry),
		pins:   make(map[string]map[cid.Cid]struct{}),
		refs:   make(map[cid.Cid]int),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Put verifies b and stores a copy of its bytes, stamped with the clock's
// time. It returns ErrIntegrity or ErrTooLarge (from blocks.Verify) or
// ErrClosed; storing a present block only renews its time.
func (s *Store) Put(ctx context.Context, b blocks.Block) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: put %s: %w", b.CID, err)
	}
	if err := blocks.Verify(b.CID, b.Data); err != nil {
		return fmt.Errorf("memstore: put: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("memstore: put %s: %w", b.CID, blocks.ErrClosed)
	}
	now := s.now() // under mu, so no GC decision can fall between
	if e, ok := s.blocks[b.CID]; ok {
		e.putAt = now
		s.blocks[b.CID] = e
		return nil
	}
	s.blocks[b.CID] = entry{data: slices.Clone(b.Data), putAt: now}
	s.bytes += int64(len(b.Data))
	return nil
}

// PutMany verifies every block of bs and then stores copies of them as Put
// does, all at once under the lock: either every block is stored (present
// ones renewed) or, if one fails verification, none. Outcomes as Put.
func (s *Store) PutMany(ctx context.Context, bs []blocks.Block) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: put many: %w", err)
	}
	for _, b := range bs {
		if err := blocks.Verify(b.CID, b.Data); err != nil {
			return fmt.Errorf("memstore: put many: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("memstore: put many: %w", blocks.ErrClosed)
	}
	now := s.now()
	for _, b := range bs {
		if e, ok := s.blocks[b.CID]; ok {
			e.putAt = now
			s.blocks[b.CID] = e
			continue
		}
		s.blocks[b.CID] = entry{data: slices.Clone(b.Data), putAt: now}
		s.bytes += int64(len(b.Data))
	}
	return nil
}

var _ blocks.BatchPutter = (*Store)(nil)

// Get returns a copy of the block's bytes, verified again against c, or an
// error wrapping ErrNotFound, ErrIntegrity or ErrClosed.
func (s *Store) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: get %s: %w", c, err)
	}
	s.mu.RLock()
	e, ok := s.blocks[c]
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, fmt.Errorf("memstore: get %s: %w", c, blocks.ErrClosed)
	}
	if !ok {
		return nil, fmt.Errorf("memstore: get %s: %w", c, blocks.ErrNotFound)
	}
	if err := blocks.Verify(c, e.data); err != nil {
		return nil, fmt.Errorf("memstore: get: %w", err)
	}
	return slices.Clone(e.data), nil
}

// Has reports whether the block is stored, or ErrClosed.
func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("memstore: has %s: %w", c, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, fmt.Errorf("memstore: has %s: %w", c, blocks.ErrClosed)
	}
	_, ok := s.blocks[c]
	return ok, nil
}

// Delete removes the block, pinned or not; deleting an absent block is a
// no-op.
func (s *Store) Delete(ctx context.Context, c cid.Cid) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: delete %s: %w", c, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("memstore: delete %s: %w", c, blocks.ErrClosed)
	}
	s.deleteLocked(c)
	return nil
}

// deleteLocked removes c if present and returns its size; s.mu is held.
func (s *Store) deleteLocked(c cid.Cid) int64 {
	e, ok := s.blocks[c]
	if !ok {
		return 0
	}
	s.bytes -= int64(len(e.data))
	delete(s.blocks, c)
	return int64(len(e.data))
}

// All iterates over a snapshot of the stored CIDs taken when iteration
// starts. On a closed store or cancelled context it yields one error.
func (s *Store) All(ctx context.Context) iter.Seq2[cid.Cid, error] {
	return func(yield func(cid.Cid, error) bool) {
		keys, err := s.keys()
		if err != nil {
			yield(cid.Undef, fmt.Errorf("memstore: all: %w", err))
			return
		}
		for _, c := range keys {
			if err := ctx.Err(); err != nil {
				yield(cid.Undef, fmt.Errorf("memstore: all: %w", err))
				return
			}
			if !yield(c, nil) {
				return
			}
		}
	}
}

func (s *Store) keys() ([]cid.Cid, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, blocks.ErrClosed
	}
	keys := make([]cid.Cid, 0, len(s.blocks))
	for c := range s.blocks {
		keys = append(keys, c)
	}
	return keys, nil
}

// Size returns the number of blocks and their total bytes.
func (s *Store) Size(ctx context.Context) (int64, int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("memstore: size: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, 0, fmt.Errorf("memstore: size: %w", blocks.ErrClosed)
	}
	return int64(len(s.blocks)), s.bytes, nil
}

// validName applies the pin naming rule: 1..255 bytes of valid UTF-8
// without NUL.
func validName(name string) bool {
	if len(name) == 0 || len(name) > 255 || !utf8.ValidString(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return false
		}
	}
	return true
}

// Pin makes the pin name hold exactly the distinct CIDs of cids, creating
// or replacing it atomically. Outcomes: nil, ErrBadPin (name breaks the
// rule), ErrIntegrity (an undefined CID), ErrClosed, ctx's error.
func (s *Store) Pin(ctx context.Context, name string, cids []cid.Cid) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: pin %q: %w", name, err)
	}
	if !validName(name) {
		return fmt.Errorf("memstore: pin %q: %w", name, blocks.ErrBadPin)
	}
	set := make(map[cid.Cid]struct{}, len(cids))
	for _, c := range cids {
		if !c.Defined() {
			return fmt.Errorf("memstore: pin %q: undefined CID: %w", name, blocks.ErrIntegrity)
		}
		set[c] = struct{}{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("memstore: pin %q: %w", name, blocks.ErrClosed)
	}
	s.unpinLocked(name)
	for c := range set {
		s.refs[c]++
	}
	s.pins[name] = set
	return nil
}

// Unpin removes the pin; removing an absent pin is a no-op. Outcomes: nil,
// ErrBadPin, ErrClosed, ctx's error.
func (s *Store) Unpin(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: unpin %q: %w", name, err)
	}
	if !validName(name) {
		return fmt.Errorf("memstore: unpin %q: %w", name, blocks.ErrBadPin)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("memstore: unpin %q: %w", name, blocks.ErrClosed)
	}
	s.unpinLocked(name)
	return nil
}

func (s *Store) unpinLocked(name string) {
	for c := range s.pins[name] {
		if s.refs[c]--; s.refs[c] <= 0 {
			delete(s.refs, c)
		}
	}
	delete(s.pins, name)
}

// Pins lists the pins from a snapshot taken when iteration starts. On a
// closed store or cancelled context it yields one error.
func (s *Store) Pins(ctx context.Context) iter.Seq2[blocks.PinInfo, error] {
	return func(yield func(blocks.PinInfo, error) bool) {
		s.mu.RLock()
		if s.closed {
			s.mu.RUnlock()
			yield(blocks.PinInfo{}, fmt.Errorf("memstore: pins: %w", blocks.ErrClosed))
			return
		}
		infos := make([]blocks.PinInfo, 0, len(s.pins))
		for name, set := range s.pins {
			infos = append(infos, blocks.PinInfo{Name: name, Blocks: int64(len(set))})
		}
		s.mu.RUnlock()
		for _, pi := range infos {
			if err := ctx.Err(); err != nil {
				yield(blocks.PinInfo{}, fmt.Errorf("memstore: pins: %w", err))
				return
			}
			if !yield(pi, nil) {
				return
			}
		}
	}
}

// Pinned lists the CIDs of the pin name from a snapshot taken when
// iteration starts; it yields one error wrapping ErrNotFound if there is
// no such pin, ErrBadPin for a bad name, or ErrClosed.
func (s *Store) Pinned(ctx context.Context, name string) iter.Seq2[cid.Cid, error] {
	return func(yield func(cid.Cid, error) bool) {
		if !validName(name) {
			yield(cid.Undef, fmt.Errorf("memstore: pinned %q: %w", name, blocks.ErrBadPin))
			return
		}
		s.mu.RLock()
		set, ok := s.pins[name]
		closed := s.closed
		var list []cid.Cid
		for c := range set {
			list = append(list, c)
		}
		s.mu.RUnlock()
		switch {
		case closed:
			yield(cid.Undef, fmt.Errorf("memstore: pinned %q: %w", name, blocks.ErrClosed))
			return
		case !ok:
			yield(cid.Undef, fmt.Errorf("memstore: pinned %q: %w", name, blocks.ErrNotFound))
			return
		}
		for _, c := range list {
			if err := ctx.Err(); err != nil {
				yield(cid.Undef, fmt.Errorf("memstore: pinned %q: %w", name, err))
				return
			}
			if !yield(c, nil) {
				return
			}
		}
	}
}

// IsPinned reports whether any pin names c, or ErrClosed.
func (s *Store) IsPinned(ctx context.Context, c cid.Cid) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("memstore: is pinned %s: %w", c, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, fmt.Errorf("memstore: is pinned %s: %w", c, blocks.ErrClosed)
	}
	return s.refs[c] > 0, nil
}

// gcBatch is how many blocks GC examines per hold of the lock.
const gcBatch = 256

// GC deletes every block that no pin names and whose last Put is before
// now − grace (now read once when GC starts). It works in batches of
// gcBatch blocks, each decided and deleted under the lock, so Puts, Pins
// and Gets continue between batches; progress, if not nil, is called after
// each batch. On cancellation it returns what it did with ctx's error; on a
// closed store, ErrClosed. Safe for concurrent use.
func (s *Store) GC(ctx context.Context, grace time.Duration, progress func(blocks.GCProgress)) (blocks.GCResult, error) {
	var res blocks.GCResult
	keys, err := s.keys()
	if err != nil {
		return res, fmt.Errorf("memstore: gc: %w", err)
	}
	cutoff := s.now().Add(-grace)
	for len(keys) > 0 {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("memstore: gc: %w", err)
		}
		batch := keys[:min(gcBatch, len(keys))]
		keys = keys[len(batch):]
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return res, fmt.Errorf("memstore: gc: %w", blocks.ErrClosed)
		}
		for _, c := range batch {
			e, ok := s.blocks[c]
			if !ok {
				continue // deleted since the snapshot
			}
			res.Scanned++
			switch {
			case s.refs[c] > 0:
			case !e.putAt.Before(cutoff):
				res.Kept++
			default:
				res.Freed += s.deleteLocked(c)
				res.Deleted++
			}
		}
		s.mu.Unlock()
		if progress != nil {
			progress(blocks.GCProgress{Scanned: res.Scanned, Deleted: res.Deleted, Freed: res.Freed})
		}
	}
	return res, nil
}

// Stat returns the store's figures (Quota is always 0), or ErrClosed.
func (s *Store) Stat(ctx context.Context) (blocks.Stat, error) {
	if err := ctx.Err(); err != nil {
		return blocks.Stat{}, fmt.Errorf("memstore: stat: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return blocks.Stat{}, fmt.Errorf("memstore: stat: %w", blocks.ErrClosed)
	}
	return blocks.Stat{
		Blocks:       int64(len(s.blocks)),
		Bytes:        s.bytes,
		Pins:         int64(len(s.pins)),
		PinnedBlocks: int64(len(s.refs)),
	}, nil
}

// Close drops the blocks and pins; later calls fail with ErrClosed.
// Idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.blocks = nil
	s.bytes = 0
	s.pins = nil
	s.refs = nil
	return nil
}
