package fsys

import (
	"fmt"
	"strconv"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
)

func cidOf(b []byte) (cid.Cid, error) {
	bl, err := blocks.NewBlock(b)
	return bl.CID, err
}

func quoteBytes(b []byte) string { return strconv.Quote(string(b)) }

var _ = fmt.Sprint
