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
	"time"

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

// PinStore is a Store that keeps roots: named pins, each a set of CIDs that
// the garbage collector never deletes, and a collector that is safe while
// Puts continue. Both stores in this module implement it.
//
// Safety rule for writers: a block becomes collectable only when no pin
// names it AND its last Put (a Put of a present block counts, and renews
// it) is older than the grace period given to GC. A writer therefore puts
// its blocks and then pins them within the grace period; GC never deletes
// a block that a Pin call has named by the time the sweep reaches it.
type PinStore interface {
	Store
	// Pin makes the set of CIDs stored under name exactly cids (creating
	// or replacing it) atomically and durably. CIDs need not be present:
	// a pinned but missing block is what scrub repairs. Names are 1..255
	// bytes of valid UTF-8 without NUL (ErrBadPin otherwise).
	Pin(ctx context.Context, name string, cids []cid.Cid) error
	// Unpin removes the pin; removing an absent pin is a no-op.
	Unpin(ctx context.Context, name string) error
	// Pins lists the pins, by name, in no particular order.
	Pins(ctx context.Context) iter.Seq2[PinInfo, error]
	// Pinned lists the CIDs of one pin (ErrNotFound if there is no such pin).
	Pinned(ctx context.Context, name string) iter.Seq2[cid.Cid, error]
	// IsPinned reports whether any pin names c.
	IsPinned(ctx context.Context, c cid.Cid) (bool, error)
	// GC deletes every stored block that no pin names and whose last Put
	// is older than grace. It may run while Puts, Pins and Gets continue.
	// progress, if not nil, is called now and then from GC's goroutine.
	GC(ctx context.Context, grace time.Duration, progress func(GCProgress)) (GCResult, error)
	// Stat summarises the store.
	Stat(ctx context.Context) (Stat, error)
}

// ErrBadPin: a pin name that breaks the naming rule.
var ErrBadPin = errors.New("bad pin name")

// PinInfo describes one pin.
type PinInfo struct {
	Name   string `json:"name"`
	Blocks int64  `json:"blocks"` // CIDs in the pin
}

// Stat is what `bt repo stat` reports of a store.
type Stat struct {
	Blocks       int64 `json:"blocks"`        // stored blocks
	Bytes        int64 `json:"bytes"`         // their total size
	Pins         int64 `json:"pins"`          // number of pins
	PinnedBlocks int64 `json:"pinned_blocks"` // distinct CIDs named by pins, stored or not
	Quota        int64 `json:"quota"`         // byte quota; 0 = none
}

// GCProgress is reported while GC runs.
type GCProgress struct {
	Scanned int64 `json:"scanned"` // blocks examined so far
	Deleted int64 `json:"deleted"` // blocks deleted so far
	Freed   int64 `json:"freed"`   // bytes freed so far
}

// GCResult is what a finished GC did.
type GCResult struct {
	Scanned int64 `json:"scanned"`
	Deleted int64 `json:"deleted"`
	Freed   int64 `json:"freed"`
	Kept    int64 `json:"kept"` // unpinned blocks kept because they are younger than grace
}

// BatchPutter is implemented by stores that make many blocks durable at
// once, cheaper than one Put each: PutMany returns when every block is
// stored and durable (or with the first error; blocks stored before it
// stay stored). The same checks as Put apply to every block.
type BatchPutter interface {
	PutMany(ctx context.Context, bs []Block) error
}
