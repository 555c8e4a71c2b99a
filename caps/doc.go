// Package caps holds Blocktree's capabilities: writecaps, which say who may
// write where; readcaps, symmetric keys wrapped to one reader's public key
// (docs/readcap.md); and host certificates, which bind a node's libp2p
// identity to its key in custody.
//
// # Model
//
// A writecap is a chain of signed links. Each link says: issuer lets
// subject write under prefix from not-before until expiry. The first link
// names the holder; each next link grants the previous link's issuer; the
// last link's issuer must be the root principal, the key whose ID is the
// first component of every path under it. Verification needs nothing but
// the writecap and the path:
//
//	/<root>/laptop/docs/x  is covered by
//	link 0: node-key  → app-key   /<root>/laptop/docs   (issued by the node)
//	link 1: root-key  → node-key  /<root>/laptop        (issued by the root)
//
// A link may only narrow what it was given: its prefix must lie under the
// prefix of the link that granted its issuer. A chain is valid at an
// instant that falls inside every link's window.
//
// # Errors
//
// Verify returns an error wrapping exactly one sentinel: ErrBadSignature,
// ErrExpired, ErrNotYetValid, ErrNotChained, ErrPathNotCovered,
// ErrRootMismatch or ErrChainTooLong; Decode returns ErrMalformed,
// ErrUnknownVersion or ErrChainTooLong. Messages name the link at fault.
//
// # Encoding
//
// Everything signed is deterministic CBOR (package internal/canon) with a
// version field, signed under a context string so that no signature can be
// replayed for another purpose; decoders refuse non-canonical input. The
// formats are specified in docs/writecap.md, and frozen examples under
// testdata/ are verified by every build.
//
// # Concurrency and cost
//
// Writecaps and host certificates are immutable and safe to share. A
// Verifier is safe for concurrent use and caches the signature checks of
// chains it has verified, keyed by the SHA-256 of their encoding, so a warm
// verification does no public-key operation; the clock and the target path
// are still checked on every call.
package caps
