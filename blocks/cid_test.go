package blocks_test

import (
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"blocktree.dev/bt/blocks"
)

func TestSum(t *testing.T) {
	data := []byte("hello")
	c := blocks.Sum(data)
	want, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Equals(want) {
		t.Fatalf("Sum = %s, want %s", c, want)
	}
	// Known answer: the CIDv1 raw sha2-256 of "hello".
	if got := c.String(); got != "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq" {
		t.Fatalf("Sum(hello) = %s", got)
	}
}

func TestVerify(t *testing.T) {
	data := []byte("some block")
	c := blocks.Sum(data)
	if err := blocks.Verify(c, data); err != nil {
		t.Fatalf("Verify good: %v", err)
	}
	d := sha256.Sum256(data)
	h, _ := mh.Encode(d[:], mh.SHA2_256)
	h512, _ := mh.Sum(data, mh.SHA2_512, -1)
	bad := map[string]struct {
		c    cid.Cid
		data []byte
	}{
		"other bytes": {c, []byte("some blocK")},
		"empty bytes": {c, nil},
		"undefined":   {cid.Undef, data},
		"v0":          {cid.NewCidV0(h), data},
		"dag-pb":      {cid.NewCidV1(cid.DagProtobuf, h), data},
		"sha2-512":    {cid.NewCidV1(cid.Raw, h512), data},
	}
	for name, tc := range bad {
		if err := blocks.Verify(tc.c, tc.data); !errors.Is(err, blocks.ErrIntegrity) {
			t.Errorf("%s: Verify = %v, want ErrIntegrity", name, err)
		}
	}
	big := make([]byte, blocks.MaxBlockSize+1)
	if err := blocks.Verify(blocks.Sum(big), big); !errors.Is(err, blocks.ErrTooLarge) {
		t.Errorf("oversized: Verify = %v, want ErrTooLarge", err)
	}
}

func TestNewBlock(t *testing.T) {
	b, err := blocks.NewBlock([]byte("x"))
	if err != nil || !b.CID.Equals(blocks.Sum([]byte("x"))) {
		t.Fatalf("NewBlock = %v, %v", b.CID, err)
	}
	if _, err := blocks.NewBlock(make([]byte, blocks.MaxBlockSize)); err != nil {
		t.Fatalf("NewBlock(MaxBlockSize): %v", err)
	}
	if _, err := blocks.NewBlock(make([]byte, blocks.MaxBlockSize+1)); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("NewBlock(MaxBlockSize+1) = %v, want ErrTooLarge", err)
	}
}
