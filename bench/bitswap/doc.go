// Package bitswapbench compares blocktree.dev/bt/blocks/exchange against
// boxo's bitswap (github.com/ipfs/boxo/bitswap behind a blockservice on an
// in-memory blockstore) fetching the same blocks between the same two
// in-process nodes, in the same run. It is a module of its own so that
// boxo stays out of the main module's dependencies; it has no non-test
// code. See README.md for how to run it and the figures measured.
package bitswapbench
