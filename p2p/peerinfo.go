package p2p

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/paths"
)

// VerifiedPeer returns what peer id has proven on a live connection: its
// node path, and its node principal — the node key whose host certificate
// certifies the connection's key, which the auth protocol checked is the
// holder of the writecap for that path. Protocols above this package use
// the node principal to check writecaps a peer presents for other paths.
//
// It answers at once when id is verified; when id's proof is still in
// flight (a connection's first stream can arrive before it), it waits for
// the proof until ctx ends. Errors, as for Connect: ErrNotAuthenticated
// (with the caps error) when every proof was refused or none came before
// ctx ended (ctx's error is wrapped too), ErrUnreachable when id is not
// connected. It never returns a path a peer merely claims. Safe for
// concurrent use.
func (n *Node) VerifiedPeer(ctx context.Context, id peer.ID) (path paths.Path, node paths.ID, err error) {
	for {
		if p, nid, ok := n.auth.verifiedNode(id, n.now()); ok {
			return p, nid, nil
		}
		if err := ctx.Err(); err != nil {
			return paths.Path{}, "", fmt.Errorf("p2p: verified peer %s: %w: %w", id, ErrNotAuthenticated, err)
		}
		if _, err := n.waitVerified(ctx, id); err != nil {
			return paths.Path{}, "", fmt.Errorf("p2p: verified peer: %w", err)
		}
	}
}

// verifiedNode returns the path and node principal of one of p's live
// connections whose proof verified and has not expired.
func (t *authTable) verifiedNode(p peer.ID, now time.Time) (paths.Path, paths.ID, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.peers[p] {
		if st.done && st.err == nil && now.Before(st.expiry) {
			return st.path, st.node, true
		}
	}
	return paths.Path{}, "", false
}

// proofNode returns the node principal named by an encoded proof that
// verifyProof accepted (err == nil), for the auth table, and "" otherwise.
// It decodes the proof a second time, once per connection.
func proofNode(data []byte, err error) paths.ID {
	if err != nil {
		return ""
	}
	pr, derr := decodeProof(data)
	if derr != nil {
		return ""
	}
	return pr.HostCert.NodeID
}
