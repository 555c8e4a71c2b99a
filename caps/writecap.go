package caps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// Version is the writecap and host-certificate format version this build
// writes and the only one it reads.
const Version = 1

// MaxChainLen bounds the links in one writecap.
const MaxChainLen = 8

// MaxEncodedSize bounds an encoded writecap or host certificate.
const MaxEncodedSize = 16 << 10

// Errors, one for each way a writecap or certificate is refused. Verify and
// Decode wrap them with the link index and details; branch with errors.Is.
var (
	ErrBadSignature   = errors.New("bad signature")
	ErrExpired        = errors.New("expired")
	ErrNotYetValid    = errors.New("not yet valid")
	ErrNotChained     = errors.New("not chained: issuer is not the subject of the next link")
	ErrPathNotCovered = errors.New("path not covered")
	ErrRootMismatch   = errors.New("root mismatch: chain does not end at the path's root principal")
	ErrChainTooLong   = errors.New("chain too long")
	ErrUnknownVersion = errors.New("unknown format version")
	ErrMalformed      = errors.New("malformed encoding")
	ErrWrongHolder    = errors.New("writecap is held by another principal")
)

// Signature contexts: every signature Blocktree makes is over a context
// string, a zero byte and a canonical encoding, so a signature made for one
// purpose can never be replayed as another.
const (
	ctxWritecap = "blocktree writecap v1"
	ctxHostCert = "blocktree host certificate v1"
)

func signedMessage(context string, body []byte) []byte {
	m := make([]byte, 0, len(context)+1+len(body))
	m = append(m, context...)
	m = append(m, 0)
	return append(m, body...)
}

// Signer is what issuing needs of a key; every tpm.Key is one.
type Signer interface {
	PublicKey() crypto.PubKey
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

// PrincipalID returns the principal ID of a public key: its libp2p peer ID.
func PrincipalID(pk crypto.PubKey) (paths.ID, error) {
	pid, err := peer.IDFromPublicKey(pk)
	if err != nil {
		return "", fmt.Errorf("caps: principal ID: %w", err)
	}
	return paths.ParseID(pid.String())
}

// Link is one certificate of a writecap: Issuer lets Subject write under
// Prefix from NotBefore until Expiry. Links are immutable once decoded or
// issued.
type Link struct {
	Issuer    crypto.PubKey
	IssuerID  paths.ID
	Subject   paths.ID
	Prefix    paths.Path
	NotBefore time.Time
	Expiry    time.Time

	body []byte // canonical encoding of linkBody: what Sig signs
	sig  []byte
}

// Writecap is a certificate chain that lets its holder write under a path.
// Links[0] names the holder as subject; each Links[i+1] grants Links[i]'s
// issuer; the last link is issued by the root principal of the path. A
// Writecap is immutable and safe to share between goroutines.
type Writecap struct {
	links []Link // never empty; not modified after construction

	raw    []byte
	digest [sha256.Size]byte
}

// Links returns a copy of the chain, holder's link first.
func (w *Writecap) Links() []Link { return append([]Link(nil), w.links...) }

// Holder is the principal the writecap authorises.
func (w *Writecap) Holder() paths.ID { return w.links[0].Subject }

// Prefix is the path under which the holder may write.
func (w *Writecap) Prefix() paths.Path { return w.links[0].Prefix }

// Root is the root principal the chain claims to end at.
func (w *Writecap) Root() paths.ID { return w.links[len(w.links)-1].IssuerID }

// NotBefore is the latest NotBefore of the chain's links.
func (w *Writecap) NotBefore() time.Time {
	t := w.links[0].NotBefore
	for _, l := range w.links[1:] {
		if l.NotBefore.After(t) {
			t = l.NotBefore
		}
	}
	return t
}

// Expiry is the earliest Expiry of the chain's links: when the writecap
// stops working.
func (w *Writecap) Expiry() time.Time {
	t := w.links[0].Expiry
	for _, l := range w.links[1:] {
		if l.Expiry.Before(t) {
			t = l.Expiry
		}
	}
	return t
}

// Marshal returns the writecap's canonical encoding (docs/writecap.md).
func (w *Writecap) Marshal() []byte { return w.raw }

// Digest is the SHA-256 of the encoding; the verification cache's key.
func (w *Writecap) Digest() [sha256.Size]byte { return w.digest }

// Wire format, version 1. See docs/writecap.md.
type wireWritecap struct {
	V     uint       `cbor:"v"`
	Links []wireLink `cbor:"links"`
}

type wireLink struct {
	Body []byte `cbor:"body"`
	Sig  []byte `cbor:"sig"`
}

type linkBody struct {
	V         uint   `cbor:"v"`
	Issuer    []byte `cbor:"iss"` // libp2p protobuf encoding of the issuer's public key
	Subject   string `cbor:"sub"`
	Prefix    string `cbor:"pfx"`
	NotBefore int64  `cbor:"nbf"` // Unix seconds
	Expiry    int64  `cbor:"exp"` // Unix seconds
}

// Issue makes a writecap that lets subject write under prefix from
// notBefore until expiry. With parent nil, issuer must be the root principal
// of prefix; otherwise parent must be held by issuer and cover prefix, and
// the new writecap extends it by one link. Expiry is clamped to the parent's
// expiry, since the chain cannot outlive any of its links. Issue does not
// check times against the clock: a writecap may be issued for the future.
func Issue(ctx context.Context, issuer Signer, parent *Writecap, subject paths.ID, prefix paths.Path, notBefore, expiry time.Time) (*Writecap, error) {
	iid, err := PrincipalID(issuer.PublicKey())
	if err != nil {
		return nil, err
	}
	if _, err := paths.ParseID(string(subject)); err != nil {
		return nil, fmt.Errorf("caps: issue: subject: %w", err)
	}
	if prefix.IsZero() {
		return nil, fmt.Errorf("caps: issue: empty prefix: %w", ErrPathNotCovered)
	}
	links := []Link(nil)
	if parent == nil {
		if prefix.Root() != iid {
			return nil, fmt.Errorf("caps: issue: %s is not the root of %s: %w", iid, prefix, ErrRootMismatch)
		}
	} else {
		if parent.Holder() != iid {
			return nil, fmt.Errorf("caps: issue: parent writecap is held by %s, not the issuer %s: %w", parent.Holder(), iid, ErrNotChained)
		}
		if !prefix.HasPrefix(parent.Prefix()) {
			return nil, fmt.Errorf("caps: issue: %s is outside the parent's %s: %w", prefix, parent.Prefix(), ErrPathNotCovered)
		}
		if len(parent.links) >= MaxChainLen {
			return nil, fmt.Errorf("caps: issue: %w (%d links)", ErrChainTooLong, MaxChainLen)
		}
		if pe := parent.Expiry(); expiry.After(pe) {
			expiry = pe
		}
		links = parent.links
	}
	notBefore, expiry = notBefore.Truncate(time.Second), expiry.Truncate(time.Second)
	if !expiry.After(notBefore) {
		return nil, fmt.Errorf("caps: issue: expiry %v is not after not-before %v: %w", expiry, notBefore, ErrExpired)
	}
	pkb, err := crypto.MarshalPublicKey(issuer.PublicKey())
	if err != nil {
		return nil, fmt.Errorf("caps: issue: %w", err)
	}
	body, err := canon.Marshal(&linkBody{V: Version, Issuer: pkb, Subject: string(subject), Prefix: prefix.String(),
		NotBefore: notBefore.Unix(), Expiry: expiry.Unix()})
	if err != nil {
		return nil, fmt.Errorf("caps: issue: %w", err)
	}
	sig, err := issuer.Sign(ctx, signedMessage(ctxWritecap, body))
	if err != nil {
		return nil, fmt.Errorf("caps: issue: sign: %w", err)
	}
	l := Link{Issuer: issuer.PublicKey(), IssuerID: iid, Subject: subject, Prefix: prefix,
		NotBefore: time.Unix(notBefore.Unix(), 0), Expiry: time.Unix(expiry.Unix(), 0), body: body, sig: sig}
	w := &Writecap{links: append([]Link{l}, links...)}
	wire := wireWritecap{V: Version, Links: make([]wireLink, len(w.links))}
	for i, l := range w.links {
		wire.Links[i] = wireLink{Body: l.body, Sig: l.sig}
	}
	if w.raw, err = canon.Marshal(&wire); err != nil {
		return nil, fmt.Errorf("caps: issue: %w", err)
	}
	w.digest = sha256.Sum256(w.raw)
	return w, nil
}

// Decode parses an encoded writecap. It checks the encoding (canonical,
// known version, well-formed keys, IDs and paths, chain length) but no
// signature or time: that is Verify's job. Errors wrap ErrMalformed,
// ErrUnknownVersion or ErrChainTooLong.
func Decode(data []byte) (*Writecap, error) {
	if len(data) > MaxEncodedSize {
		return nil, fmt.Errorf("caps: writecap of %d bytes exceeds %d: %w", len(data), MaxEncodedSize, ErrMalformed)
	}
	var wire wireWritecap
	if err := canon.Unmarshal(data, &wire); err != nil {
		if v, verr := canon.Version(data); verr == nil && v != Version {
			return nil, fmt.Errorf("caps: writecap version %d: %w", v, ErrUnknownVersion)
		}
		return nil, fmt.Errorf("caps: writecap: %w: %v", ErrMalformed, err)
	}
	if wire.V != Version {
		return nil, fmt.Errorf("caps: writecap version %d: %w", wire.V, ErrUnknownVersion)
	}
	switch n := len(wire.Links); {
	case n == 0:
		return nil, fmt.Errorf("caps: writecap has no links: %w", ErrMalformed)
	case n > MaxChainLen:
		return nil, fmt.Errorf("caps: writecap has %d links, at most %d allowed: %w", n, MaxChainLen, ErrChainTooLong)
	}
	w := &Writecap{links: make([]Link, len(wire.Links)), raw: bytes.Clone(data), digest: sha256.Sum256(data)}
	for i, wl := range wire.Links {
		l, err := decodeLink(wl)
		if err != nil {
			return nil, fmt.Errorf("caps: writecap link %d: %w", i, err)
		}
		w.links[i] = l
	}
	return w, nil
}

func decodeLink(wl wireLink) (Link, error) {
	var b linkBody
	if err := canon.Unmarshal(wl.Body, &b); err != nil {
		if v, verr := canon.Version(wl.Body); verr == nil && v != Version {
			return Link{}, fmt.Errorf("version %d: %w", v, ErrUnknownVersion)
		}
		return Link{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if b.V != Version {
		return Link{}, fmt.Errorf("version %d: %w", b.V, ErrUnknownVersion)
	}
	pk, iid, err := decodePrincipal(b.Issuer)
	if err != nil {
		return Link{}, fmt.Errorf("issuer key: %w", err)
	}
	sub, err := paths.ParseID(b.Subject)
	if err != nil {
		return Link{}, fmt.Errorf("subject: %w: %v", ErrMalformed, err)
	}
	pfx, err := paths.Parse(b.Prefix)
	if err != nil {
		return Link{}, fmt.Errorf("prefix: %w: %v", ErrMalformed, err)
	}
	if b.Expiry <= b.NotBefore {
		return Link{}, fmt.Errorf("expiry %d is not after not-before %d: %w", b.Expiry, b.NotBefore, ErrMalformed)
	}
	if len(wl.Sig) == 0 || len(wl.Sig) > 256 {
		return Link{}, fmt.Errorf("signature of %d bytes: %w", len(wl.Sig), ErrMalformed)
	}
	return Link{Issuer: pk, IssuerID: iid, Subject: sub, Prefix: pfx,
		NotBefore: time.Unix(b.NotBefore, 0), Expiry: time.Unix(b.Expiry, 0), body: wl.Body, sig: wl.Sig}, nil
}

type principal struct {
	pk crypto.PubKey
	id paths.ID
}

// principals remembers decoded principal keys and their IDs: a domain has
// few principals and every chain repeats them, while decoding a key and
// deriving its ID (a base58 encoding) costs as much as a third of a
// signature check.
var principals, _ = lru.New[string, principal](1024)

// decodePrincipal decodes a principal's public key and derives its ID.
func decodePrincipal(b []byte) (crypto.PubKey, paths.ID, error) {
	if p, ok := principals.Get(string(b)); ok {
		return p.pk, p.id, nil
	}
	pk, err := decodePrincipalKey(b)
	if err != nil {
		return nil, "", err
	}
	id, err := PrincipalID(pk)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	principals.Add(string(b), principal{pk, id})
	return pk, id, nil
}

// decodePrincipalKey accepts the key types principals use: Ed25519
// (software custody) and ECDSA P-256 (TPM custody).
func decodePrincipalKey(b []byte) (crypto.PubKey, error) {
	pk, err := crypto.UnmarshalPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch pk.Type() {
	case crypto.Ed25519, crypto.ECDSA:
		return pk, nil
	}
	return nil, fmt.Errorf("key type %v is not a principal key type (Ed25519, ECDSA P-256): %w", pk.Type(), ErrMalformed)
}

// check verifies everything about w that does not depend on the clock or on
// the target path: signatures, chaining, attenuation and the root. Its
// outcome is what the Verifier caches.
func (w *Writecap) check() error {
	n := len(w.links)
	if n == 0 {
		return fmt.Errorf("caps: writecap has no links: %w", ErrMalformed)
	}
	if n > MaxChainLen {
		return fmt.Errorf("caps: %w (%d links)", ErrChainTooLong, n)
	}
	for i := range w.links {
		l := &w.links[i]
		ok, err := l.Issuer.Verify(signedMessage(ctxWritecap, l.body), l.sig)
		if err != nil || !ok {
			return fmt.Errorf("caps: writecap link %d (issuer %s): %w", i, l.IssuerID, ErrBadSignature)
		}
		if i+1 < n {
			next := &w.links[i+1]
			if next.Subject != l.IssuerID {
				return fmt.Errorf("caps: writecap link %d: issued by %s but link %d grants %s: %w", i, l.IssuerID, i+1, next.Subject, ErrNotChained)
			}
			if !l.Prefix.HasPrefix(next.Prefix) {
				return fmt.Errorf("caps: writecap link %d: %s is outside %s granted by link %d: %w", i, l.Prefix, next.Prefix, i+1, ErrPathNotCovered)
			}
		}
	}
	last := &w.links[n-1]
	if last.Prefix.Root() != last.IssuerID {
		return fmt.Errorf("caps: writecap link %d: issuer %s is not the root of %s: %w", n-1, last.IssuerID, last.Prefix, ErrRootMismatch)
	}
	return nil
}

// checkUse verifies what depends on the moment and the target, given that
// check passed.
func (w *Writecap) checkUse(target paths.Path, now time.Time) error {
	if target.Root() != w.Root() {
		return fmt.Errorf("caps: writecap rooted at %s cannot cover %s: %w", w.Root(), target, ErrRootMismatch)
	}
	for i := range w.links {
		l := &w.links[i]
		if now.Before(l.NotBefore) {
			return fmt.Errorf("caps: writecap link %d valid from %s: %w", i, l.NotBefore.UTC().Format(time.RFC3339), ErrNotYetValid)
		}
		if !now.Before(l.Expiry) {
			return fmt.Errorf("caps: writecap link %d expired at %s: %w", i, l.Expiry.UTC().Format(time.RFC3339), ErrExpired)
		}
	}
	if !target.HasPrefix(w.Prefix()) {
		return fmt.Errorf("caps: writecap for %s does not cover %s: %w", w.Prefix(), target, ErrPathNotCovered)
	}
	return nil
}
