package blocks_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/memstore"
)

// Seal a stream into a store, keep the manifest, and read it back.
func ExampleSealer() {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()

	key := bytes.Repeat([]byte{7}, blocks.KeySize) // a real key comes from the readcap
	s, err := blocks.NewSealer(key, blocks.WithChunkSize(16))
	if err != nil {
		panic(err)
	}
	m, err := s.Seal(ctx, strings.NewReader("hello, content-addressed world"), func(b blocks.Block) error {
		return store.Put(ctx, b)
	})
	if err != nil {
		panic(err)
	}
	enc, _ := m.Encode() // store or send this
	m2, err := blocks.DecodeManifest(enc)
	if err != nil {
		panic(err)
	}
	var out bytes.Buffer
	if err := blocks.Unseal(ctx, m2, key, store.Get, &out); err != nil {
		panic(err)
	}
	fmt.Println(len(m2.Blocks), "blocks:", out.String())
	// Output: 2 blocks: hello, content-addressed world
}
