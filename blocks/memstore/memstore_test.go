package memstore_test

import (
	"testing"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/memstore"
	"blocktree.dev/bt/blocks/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blocks.Store { return memstore.New() })
}
