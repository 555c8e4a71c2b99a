package exchange

import "blocktree.dev/bt/blocks"

// NewTestStore gives the external examples the tests' in-memory PinStore.
func NewTestStore() blocks.PinStore { return newStore() }
