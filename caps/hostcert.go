package caps

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// HostCert binds a short-lived host key, the node's libp2p identity, to the
// node's long-term key in custody: the node key signs the host key and a
// validity window. With the node's writecap it traces a peer ID to a path:
// host key → (HostCert) → node principal → (Writecap) → root. Immutable and
// safe to share.
type HostCert struct {
	Node      crypto.PubKey
	NodeID    paths.ID
	Host      crypto.PubKey
	HostID    peer.ID
	NotBefore time.Time
	Expiry    time.Time

	body, sig []byte
	raw       []byte
}

type wireHostCert struct {
	V    uint   `cbor:"v"`
	Body []byte `cbor:"body"`
	Sig  []byte `cbor:"sig"`
}

type hostCertBody struct {
	V         uint   `cbor:"v"`
	Node      []byte `cbor:"node"` // libp2p encoding of the node's public key
	Host      []byte `cbor:"host"` // libp2p encoding of the host public key
	NotBefore int64  `cbor:"nbf"`
	Expiry    int64  `cbor:"exp"`
}

// IssueHostCert has node certify host for [notBefore, expiry).
func IssueHostCert(ctx context.Context, node Signer, host crypto.PubKey, notBefore, expiry time.Time) (*HostCert, error) {
	nb, err := crypto.MarshalPublicKey(node.PublicKey())
	if err != nil {
		return nil, fmt.Errorf("caps: host cert: %w", err)
	}
	hb, err := crypto.MarshalPublicKey(host)
	if err != nil {
		return nil, fmt.Errorf("caps: host cert: %w", err)
	}
	if !expiry.Truncate(time.Second).After(notBefore.Truncate(time.Second)) {
		return nil, fmt.Errorf("caps: host cert: expiry is not after not-before: %w", ErrExpired)
	}
	body, err := canon.Marshal(&hostCertBody{V: Version, Node: nb, Host: hb, NotBefore: notBefore.Unix(), Expiry: expiry.Unix()})
	if err != nil {
		return nil, fmt.Errorf("caps: host cert: %w", err)
	}
	sig, err := node.Sign(ctx, signedMessage(ctxHostCert, body))
	if err != nil {
		return nil, fmt.Errorf("caps: host cert: sign: %w", err)
	}
	raw, err := canon.Marshal(&wireHostCert{V: Version, Body: body, Sig: sig})
	if err != nil {
		return nil, fmt.Errorf("caps: host cert: %w", err)
	}
	return DecodeHostCert(raw)
}

// DecodeHostCert parses an encoded host certificate. It checks the encoding,
// not the signature or the time: see Verify. Errors wrap ErrMalformed or
// ErrUnknownVersion.
func DecodeHostCert(data []byte) (*HostCert, error) {
	if len(data) > MaxEncodedSize {
		return nil, fmt.Errorf("caps: host cert of %d bytes: %w", len(data), ErrMalformed)
	}
	var w wireHostCert
	if err := canon.Unmarshal(data, &w); err != nil {
		if v, verr := canon.Version(data); verr == nil && v != Version {
			return nil, fmt.Errorf("caps: host cert version %d: %w", v, ErrUnknownVersion)
		}
		return nil, fmt.Errorf("caps: host cert: %w: %v", ErrMalformed, err)
	}
	if w.V != Version {
		return nil, fmt.Errorf("caps: host cert version %d: %w", w.V, ErrUnknownVersion)
	}
	var b hostCertBody
	if err := canon.Unmarshal(w.Body, &b); err != nil {
		return nil, fmt.Errorf("caps: host cert body: %w: %v", ErrMalformed, err)
	}
	if b.V != Version {
		return nil, fmt.Errorf("caps: host cert body version %d: %w", b.V, ErrUnknownVersion)
	}
	node, nid, err := decodePrincipal(b.Node)
	if err != nil {
		return nil, fmt.Errorf("caps: host cert node key: %w", err)
	}
	host, err := crypto.UnmarshalPublicKey(b.Host)
	if err != nil {
		return nil, fmt.Errorf("caps: host cert host key: %w: %v", ErrMalformed, err)
	}
	hid, err := peer.IDFromPublicKey(host)
	if err != nil {
		return nil, fmt.Errorf("caps: host cert host key: %w: %v", ErrMalformed, err)
	}
	if b.Expiry <= b.NotBefore {
		return nil, fmt.Errorf("caps: host cert: expiry is not after not-before: %w", ErrMalformed)
	}
	if len(w.Sig) == 0 || len(w.Sig) > 256 {
		return nil, fmt.Errorf("caps: host cert: signature of %d bytes: %w", len(w.Sig), ErrMalformed)
	}
	return &HostCert{Node: node, NodeID: nid, Host: host, HostID: hid,
		NotBefore: time.Unix(b.NotBefore, 0), Expiry: time.Unix(b.Expiry, 0),
		body: w.Body, sig: w.Sig, raw: bytes.Clone(data)}, nil
}

// Marshal returns the certificate's canonical encoding.
func (c *HostCert) Marshal() []byte { return c.raw }

// Verify checks the node's signature and that now is within the
// certificate's window. Errors wrap ErrBadSignature, ErrExpired or
// ErrNotYetValid.
func (c *HostCert) Verify(now time.Time) error {
	ok, err := c.Node.Verify(signedMessage(ctxHostCert, c.body), c.sig)
	if err != nil || !ok {
		return fmt.Errorf("caps: host cert for %s by node %s: %w", c.HostID, c.NodeID, ErrBadSignature)
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("caps: host cert valid from %s: %w", c.NotBefore.UTC().Format(time.RFC3339), ErrNotYetValid)
	}
	if !now.Before(c.Expiry) {
		return fmt.Errorf("caps: host cert expired at %s: %w", c.Expiry.UTC().Format(time.RFC3339), ErrExpired)
	}
	return nil
}
