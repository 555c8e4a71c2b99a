// Package memstore is an in-memory blocks.Store: a map guarded by a mutex.
// It verifies every block on Put and Get like a durable store would, and
// copies bytes in and out, so callers cannot change what it holds. It is
// meant for unit tests of the layers above blocks; nothing survives the
// process. Safe for concurrent use.
package memstore

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
)

// Store is an in-memory blocks.Store. The zero value is not usable; call New.
type Store struct {
	// mu guards blocks, bytes and closed.
	mu     sync.RWMutex
	blocks map[cid.Cid][]byte
	bytes  int64
	closed bool
}

var _ blocks.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{blocks: make(map[cid.Cid][]byte)}
}

// Put verifies b and stores a copy of its bytes. It returns ErrIntegrity
// or ErrTooLarge (from blocks.Verify) or ErrClosed; storing a present block
// is a no-op.
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
	if _, ok := s.blocks[b.CID]; ok {
		return nil
	}
	s.blocks[b.CID] = slices.Clone(b.Data)
	s.bytes += int64(len(b.Data))
	return nil
}

// Get returns a copy of the block's bytes, verified again against c, or an
// error wrapping ErrNotFound, ErrIntegrity or ErrClosed.
func (s *Store) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: get %s: %w", c, err)
	}
	s.mu.RLock()
	data, ok := s.blocks[c]
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, fmt.Errorf("memstore: get %s: %w", c, blocks.ErrClosed)
	}
	if !ok {
		return nil, fmt.Errorf("memstore: get %s: %w", c, blocks.ErrNotFound)
	}
	if err := blocks.Verify(c, data); err != nil {
		return nil, fmt.Errorf("memstore: get: %w", err)
	}
	return slices.Clone(data), nil
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

// Delete removes the block; deleting an absent block is a no-op.
func (s *Store) Delete(ctx context.Context, c cid.Cid) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: delete %s: %w", c, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("memstore: delete %s: %w", c, blocks.ErrClosed)
	}
	if data, ok := s.blocks[c]; ok {
		s.bytes -= int64(len(data))
		delete(s.blocks, c)
	}
	return nil
}

// All iterates over a snapshot of the stored CIDs taken when iteration
// starts. On a closed store or cancelled context it yields one error.
func (s *Store) All(ctx context.Context) iter.Seq2[cid.Cid, error] {
	return func(yield func(cid.Cid, error) bool) {
		s.mu.RLock()
		if s.closed {
			s.mu.RUnlock()
			yield(cid.Undef, fmt.Errorf("memstore: all: %w", blocks.ErrClosed))
			return
		}
		keys := make([]cid.Cid, 0, len(s.blocks))
		for c := range s.blocks {
			keys = append(keys, c)
		}
		s.mu.RUnlock()
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

// Close drops the blocks; later calls fail with ErrClosed. Idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.blocks = nil
	s.bytes = 0
	return nil
}
