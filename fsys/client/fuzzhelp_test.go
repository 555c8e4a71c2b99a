package client

import (
	"fmt"
	"strconv"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/canon"
)

func cidOf(b []byte) (cid.Cid, error) {
	bl, err := blocks.NewBlock(b)
	return bl.CID, err
}

func canonMarshal(v any) ([]byte, error) { return canon.Marshal(v) }

func quoteBytes(b []byte) string { return strconv.Quote(string(b)) }

var _ = fmt.Sprint
