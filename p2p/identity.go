package p2p

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
)

// Identity is what this node proves to peers: its libp2p identity (the
// host key), the certificate by which the node key vouches for it, and the
// writecap by which the root lets the node key host its path.
//
//	peer ID = ID(HostKey) ─Cert→ node key ─Writecap→ … → root = Path.Root()
//
// An Identity is immutable once made; share it freely.
type Identity struct {
	HostKey  crypto.PrivKey // short-lived Ed25519 key: the libp2p identity
	Cert     *caps.HostCert // the node key certifies HostKey's public key
	Writecap *caps.Writecap // root → … → node key, covers Path
	Path     paths.Path     // the node's path, /<root>/<name>
}

// ClockSkew is how far back a new host certificate's validity starts, so
// that peers whose clocks run somewhat behind ours accept it.
const ClockSkew = 5 * time.Minute

// NewIdentity makes a fresh Ed25519 host key and has node (the node key in
// custody, the writecap's holder) certify it from now (less ClockSkew) for
// ttl. It checks that the result is usable now: w is held by node, chains
// to path's root and covers path, which must be a node path /<root>/<name>.
// Errors wrap the caps sentinel at fault. This is the one place the node key
// signs; nothing on a hot path does.
func NewIdentity(ctx context.Context, node caps.Signer, w *caps.Writecap, path paths.Path, ttl time.Duration) (*Identity, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("p2p: new identity: host certificate lifetime %v is not positive", ttl)
	}
	hk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("p2p: new identity: %w", err)
	}
	now := time.Now()
	cert, err := caps.IssueHostCert(ctx, node, hk.GetPublic(), now.Add(-ClockSkew), now.Add(ttl))
	if err != nil {
		return nil, fmt.Errorf("p2p: new identity: %w", err)
	}
	id := &Identity{HostKey: hk, Cert: cert, Writecap: w, Path: path}
	if err := id.Check(caps.NewVerifier(caps.WithCacheSize(0)), now); err != nil {
		return nil, err
	}
	return id, nil
}

// Check verifies that id is what a peer would accept at now: the host key
// is Ed25519 and is what Cert certifies, Cert verifies, Path is a node path
// covered by Writecap, held by Cert's node principal. Errors wrap the caps
// sentinel at fault and say what to do.
func (id *Identity) Check(v *caps.Verifier, now time.Time) error {
	switch {
	case id == nil || id.HostKey == nil || id.Cert == nil || id.Writecap == nil:
		return fmt.Errorf("p2p: identity is incomplete: %w", caps.ErrMalformed)
	case id.HostKey.Type() != crypto.Ed25519:
		return fmt.Errorf("p2p: identity: host key is %v, want Ed25519: %w", id.HostKey.Type(), caps.ErrMalformed)
	case !id.Cert.Host.Equals(id.HostKey.GetPublic()):
		return fmt.Errorf("p2p: identity: host certificate is for %s, not this host key: %w", id.Cert.HostID, caps.ErrWrongHolder)
	case !isNodePath(id.Path):
		return fmt.Errorf("p2p: identity: %q is not a node path /<root>/<name>: %w", id.Path, caps.ErrPathNotCovered)
	}
	if err := id.Cert.Verify(now); err != nil {
		return fmt.Errorf("p2p: identity: %w (make a new identity)", err)
	}
	if err := v.VerifyHolder(id.Writecap, id.Cert.NodeID, id.Path); err != nil {
		return fmt.Errorf("p2p: identity: the node's writecap cannot host %s: %w (renew it with the root key)", id.Path, err)
	}
	return nil
}

// Expiry is when the identity stops being accepted: the earlier of the
// certificate's and the writecap's expiry.
func (id *Identity) Expiry() time.Time {
	e := id.Cert.Expiry
	if we := id.Writecap.Expiry(); we.Before(e) {
		e = we
	}
	return e
}
