// Package p2ptest starts real p2p nodes for the tests of the packages
// built on p2p (msg, actors, pubsub, blocks/exchange, fsys/remote, wasm):
// a member of a nettest.Domain with its identity, a p2p.Node listening on
// 127.0.0.1 only (NAT traversal and mDNS off), serving until the test
// ends. It is for tests only.
//
// It lives beside p2p and not in internal/nettest because it imports p2p,
// whose own in-package tests use nettest; p2p's tests keep their own
// helpers for the same reason.
//
// # Lifecycle
//
// Start builds and serves a node and registers its Close with t.Cleanup.
// A test that runs services on the node (a msg.Router, an Exchange) closes
// them first and then calls Close, which is idempotent: it closes the
// node, waits up to ten seconds for Serve to return and fails the test if
// Serve failed. Cleanups run last-registered first, so services whose
// Close is registered after Start also close before the node.
//
// Every helper fails the test through t on error. Set BT_TEST_LOG=1 to see
// the nodes' debug logs; BT_TEST_TRANSPORT=quic makes them listen on QUIC
// instead of TCP.
package p2ptest
