package leveldb_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/leveldb"
)

func Example() {
	dir, _ := os.MkdirTemp("", "blocks")
	defer os.RemoveAll(dir)
	s, err := leveldb.Open(dir, leveldb.WithQuota(1<<30))
	if err != nil {
		panic(err)
	}
	defer s.Close()

	ctx := context.Background()
	data := []byte("ciphertext")
	c, _ := cid.V1Builder{Codec: cid.Raw, MhType: multihash.SHA2_256}.Sum(data)
	if err := s.Put(ctx, blocks.Block{CID: c, Data: data}); err != nil {
		panic(err)
	}
	got, err := s.Get(ctx, c)
	fmt.Println(string(got), err)
	n, size, _ := s.Size(ctx)
	fmt.Println(n, size)
	// Output:
	// ciphertext <nil>
	// 1 10
}
