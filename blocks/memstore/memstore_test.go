package memstore_test

import (
	"testing"
	"time"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/memstore"
	"blocktree.dev/bt/blocks/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blocks.Store { return memstore.New() })
}

func TestPinConformance(t *testing.T) {
	storetest.RunPinStore(t, func(t *testing.T, now func() time.Time) blocks.PinStore {
		return memstore.New(memstore.WithClock(now))
	})
}
