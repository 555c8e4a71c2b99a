// Package blocks is Blocktree's storage contract: content-addressed,
// encrypted blocks. A block is ciphertext named by the CID (CIDv1, raw
// codec, sha2-256) of its bytes, so any holder can verify a block without
// its key. Implementations of Store live in sub-packages (blocks/memstore,
// blocks/leveldb); the sealing pipeline is in this package.
package blocks

import (
	"context"
	"errors"
	"iter"

	"github.com/ipfs/go-cid"
)

// MaxBlockSize bounds one block's bytes (ciphertext).
const MaxBlockSize = 1 << 20

// Block is a CID and the bytes it names. Blocks are immutable once made.
type Block struct {
	CID  cid.Cid
	Data []byte
}

// Errors callers branch on; implementations wrap them with the operation
// and the CID.
var (
	// ErrNotFound: the store holds no block with that CID.
	ErrNotFound = errors.New("block not found")
	// ErrIntegrity: bytes do not match their CID, or ciphertext does not
	// authenticate (flipped, truncated, extended, swapped, replayed or
	// all-zero); no unverified byte is ever returned with it.
	ErrIntegrity = errors.New("block integrity check failed")
	// ErrTooLarge: a block over MaxBlockSize.
	ErrTooLarge = errors.New("block too large")
	// ErrNoSpace: the store's disk or quota is full; nothing was corrupted,
	// and writes work again once space is freed.
	ErrNoSpace = errors.New("no space left for blocks")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

// Store keeps blocks by CID. Put is durable when it returns (fsync before
// ack). Implementations are safe for concurrent use.
type Store interface {
	// Put stores b after checking that its bytes hash to its CID
	// (ErrIntegrity otherwise). Storing a block that is present is a no-op.
	Put(ctx context.Context, b Block) error
	// Get returns the block's bytes, verified against the CID, or
	// ErrNotFound / ErrIntegrity.
	Get(ctx context.Context, c cid.Cid) ([]byte, error)
	// Has reports whether the block is stored.
	Has(ctx context.Context, c cid.Cid) (bool, error)
	// Delete removes the block; deleting an absent block is a no-op.
	Delete(ctx context.Context, c cid.Cid) error
	// All iterates over the stored CIDs, in no particular order; blocks
	// put or deleted during the iteration may or may not be seen.
	All(ctx context.Context) iter.Seq2[cid.Cid, error]
	// Size returns the number of blocks and their total bytes.
	Size(ctx context.Context) (blocks int64, bytes int64, err error)
	// Close releases the store; it is idempotent.
	Close() error
}
