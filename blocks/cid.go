package blocks

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Sum returns the CID of data: CIDv1, raw codec, sha2-256. It never fails
// and does not look at MaxBlockSize; Verify and NewBlock do.
func Sum(data []byte) cid.Cid {
	d := sha256.Sum256(data)
	return cidOfDigest(d[:])
}

// cidOfDigest builds the CIDv1 raw sha2-256 CID of a 32-byte digest.
func cidOfDigest(d []byte) cid.Cid {
	h := make([]byte, 0, 2+sha256.Size)
	h = append(h, byte(mh.SHA2_256), sha256.Size)
	h = append(h, d...)
	return cid.NewCidV1(cid.Raw, mh.Multihash(h))
}

// Verify checks that data is what c names. It returns an error wrapping
// ErrTooLarge if data exceeds MaxBlockSize, and ErrIntegrity if c is not a
// CIDv1 raw sha2-256 CID or data does not hash to it. Safe for concurrent
// use.
func Verify(c cid.Cid, data []byte) error {
	if len(data) > MaxBlockSize {
		return fmt.Errorf("blocks: verify %s: %d bytes: %w", c, len(data), ErrTooLarge)
	}
	if !c.Defined() || c.Version() != 1 || c.Type() != cid.Raw {
		return fmt.Errorf("blocks: verify %s: not a CIDv1 raw CID: %w", c, ErrIntegrity)
	}
	dm, err := mh.Decode(c.Hash())
	if err != nil || dm.Code != mh.SHA2_256 || dm.Length != sha256.Size || len(dm.Digest) != sha256.Size {
		return fmt.Errorf("blocks: verify %s: not a sha2-256 CID: %w", c, ErrIntegrity)
	}
	d := sha256.Sum256(data)
	if !bytes.Equal(d[:], dm.Digest) {
		return fmt.Errorf("blocks: verify %s: bytes do not match: %w", c, ErrIntegrity)
	}
	return nil
}

// NewBlock names data by its CID. It fails with ErrTooLarge if data exceeds
// MaxBlockSize. The block keeps data; the caller must not modify it after.
func NewBlock(data []byte) (Block, error) {
	if len(data) > MaxBlockSize {
		return Block{}, fmt.Errorf("blocks: new block: %d bytes: %w", len(data), ErrTooLarge)
	}
	return Block{CID: Sum(data), Data: data}, nil
}
