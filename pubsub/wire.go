package pubsub

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// WireVersion is the message format version this build writes and accepts
// (docs/pubsub.md#wire-format). Version 1 messages, which relied on
// gossipsub's per-message signature, are still decoded but refused.
const WireVersion = 2

// sigContext starts what a version 2 message's signature covers, so that
// no other signature by a host key can pass for one.
const sigContext = "blocktree pubsub message v2\x00"

// Format limits.
const (
	// KeyIDSize is the length of a confidential message's key ID.
	KeyIDSize = 16
	// MaxReaders bounds the readers of one confidential topic key, so that
	// the readcaps riding on each message stay small (about 230 bytes each).
	MaxReaders = 64
	// gcmTag is the AES-GCM authentication tag's length.
	gcmTag = 16
)

// wireSigned is one publication as it travels in a gossipsub message's
// data, version 2: a body (a wireMessage with V 2) and the publisher host
// key's signature over sigContext ‖ SHA-256(body). The signature is made
// once per publication, however many gossipsub topics carry it.
type wireSigned struct {
	V    uint   `cbor:"v"`
	Body []byte `cbor:"body"`
	Sig  []byte `cbor:"sig"`
}

// wireMessage is a publication's fields: the body of a version 2 message,
// or a whole version 1 message. Exactly one of Data and Sealed is set
// (Data may be empty: then neither is present on the wire, which reads as
// an empty plain payload).
type wireMessage struct {
	V        uint        `cbor:"v"`
	Topic    string      `cbor:"topic"`    // canonical path
	Seq      uint64      `cbor:"seq"`      // per publisher, increasing
	From     string      `cbor:"from"`     // the publisher's node path /<root>/<name>
	HostCert []byte      `cbor:"hostcert"` // certifies the signing host key (caps.HostCert)
	NodeCap  []byte      `cbor:"nodecap"`  // writecap: node key may host From
	Cap      []byte      `cbor:"cap,omitempty"`
	Data     []byte      `cbor:"data,omitempty"`
	Sealed   *wireSealed `cbor:"sealed,omitempty"`
}

// wireSealed is a confidential payload: AES-256-GCM under the topic key
// named by KeyID, which Readcaps hand out.
type wireSealed struct {
	KeyID    []byte   `cbor:"kid"`
	Readcaps [][]byte `cbor:"rcaps"`
	CT       []byte   `cbor:"ct"`
}

// envelope is a decoded message: checked for form, not yet for authority.
type envelope struct {
	version uint              // WireVersion, or 1 for a message read but not accepted
	sig     []byte            // version 2: the host key's signature of the body
	sigHash [sha256.Size]byte // version 2: SHA-256 of the body, as signed

	topic    paths.Path
	seq      uint64
	from     paths.Path
	hostCert []byte
	nodeCap  []byte
	cap      []byte // nil: NodeCap covers the topic too
	data     []byte
	sealed   *wireSealed
}

// decodeMessage parses an encoded message. It checks the encoding
// (canonical, version 2 or 1, bounded), the paths, and the shape of a
// sealed payload, but no certificate, writecap or signature: that is the
// validator's job. Errors wrap caps.ErrMalformed or caps.ErrUnknownVersion.
func decodeMessage(data []byte, maxSize int) (*envelope, error) {
	if len(data) > maxSize {
		return nil, fmt.Errorf("message of %d bytes exceeds %d: %w", len(data), maxSize, ErrTooLarge)
	}
	var outer wireSigned
	if err := canon.Unmarshal(data, &outer); err != nil {
		v, verr := canon.Version(data)
		switch {
		case verr == nil && v == 1:
			return decodeBody(data, 1)
		case verr == nil && v != WireVersion:
			return nil, versionError(v)
		}
		return nil, fmt.Errorf("message: %w: %v", caps.ErrMalformed, err)
	}
	if outer.V != WireVersion {
		return nil, versionError(uint64(outer.V))
	}
	if len(outer.Sig) == 0 || len(outer.Sig) > maxSig {
		return nil, fmt.Errorf("message signature of %d bytes: %w", len(outer.Sig), caps.ErrMalformed)
	}
	e, err := decodeBody(outer.Body, WireVersion)
	if err != nil {
		return nil, err
	}
	e.sig, e.sigHash = outer.Sig, sha256.Sum256(outer.Body)
	return e, nil
}

// maxSig bounds a message signature: an Ed25519 one is 64 bytes, an ECDSA
// one about 72, an RSA one up to 512.
const maxSig = 1024

// decodeBody parses a wireMessage of version v: a version 2 body or a
// whole version 1 message.
func decodeBody(data []byte, v uint) (*envelope, error) {
	var w wireMessage
	if err := canon.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("message: %w: %v", caps.ErrMalformed, err)
	}
	if w.V != v {
		return nil, fmt.Errorf("message body of version %d in a version %d message: %w", w.V, v, caps.ErrMalformed)
	}
	topic, err := paths.Parse(w.Topic)
	if err != nil {
		return nil, fmt.Errorf("message topic: %w: %v", caps.ErrMalformed, err)
	}
	from, err := paths.Parse(w.From)
	if err != nil {
		return nil, fmt.Errorf("message from: %w: %v", caps.ErrMalformed, err)
	}
	if from.Depth() != 1 {
		return nil, fmt.Errorf("message from %s, which is not a node path /<root>/<name>: %w", from, caps.ErrMalformed)
	}
	switch {
	case len(w.HostCert) == 0 || len(w.HostCert) > caps.MaxEncodedSize:
		return nil, fmt.Errorf("message hostcert of %d bytes: %w", len(w.HostCert), caps.ErrMalformed)
	case len(w.NodeCap) == 0 || len(w.NodeCap) > caps.MaxEncodedSize:
		return nil, fmt.Errorf("message nodecap of %d bytes: %w", len(w.NodeCap), caps.ErrMalformed)
	case len(w.Cap) > caps.MaxEncodedSize:
		return nil, fmt.Errorf("message cap of %d bytes: %w", len(w.Cap), caps.ErrMalformed)
	}
	if s := w.Sealed; s != nil {
		switch {
		case len(w.Data) != 0:
			return nil, fmt.Errorf("message has both data and a sealed payload: %w", caps.ErrMalformed)
		case len(s.KeyID) != KeyIDSize:
			return nil, fmt.Errorf("message key ID of %d bytes: %w", len(s.KeyID), caps.ErrMalformed)
		case len(s.CT) < gcmTag:
			return nil, fmt.Errorf("message ciphertext of %d bytes: %w", len(s.CT), caps.ErrMalformed)
		case len(s.Readcaps) > MaxReaders:
			return nil, fmt.Errorf("message has %d readcaps, at most %d allowed: %w", len(s.Readcaps), MaxReaders, caps.ErrMalformed)
		}
		for i, rc := range s.Readcaps {
			if len(rc) == 0 || len(rc) > caps.MaxReadcapSize {
				return nil, fmt.Errorf("message readcap %d of %d bytes: %w", i, len(rc), caps.ErrMalformed)
			}
		}
	}
	return &envelope{version: v, topic: topic, seq: w.Seq, from: from, hostCert: w.HostCert, nodeCap: w.NodeCap, cap: w.Cap,
		data: w.Data, sealed: w.Sealed}, nil
}

// errNewer marks a message of a later format version than this build's:
// dropped, but its sender (a newer peer) is not penalised.
var errNewer = errors.New("newer format")

func versionError(v uint64) error {
	if v > WireVersion {
		return fmt.Errorf("message version %d: %w (%w)", v, caps.ErrUnknownVersion, errNewer)
	}
	return fmt.Errorf("message version %d: %w", v, caps.ErrUnknownVersion)
}

// body returns the canonical encoding of e's fields as a message of
// version v.
func (e *envelope) body(v uint) ([]byte, error) {
	return canon.Marshal(&wireMessage{V: v, Topic: e.topic.String(), Seq: e.seq, From: e.from.String(),
		HostCert: e.hostCert, NodeCap: e.nodeCap, Cap: e.cap, Data: e.data, Sealed: e.sealed})
}

// sign makes e a version 2 message signed by host and returns its
// encoding.
func (e *envelope) sign(host crypto.PrivKey) ([]byte, error) {
	body, err := e.body(WireVersion)
	if err != nil {
		return nil, err
	}
	e.version, e.sigHash = WireVersion, sha256.Sum256(body)
	if e.sig, err = host.Sign(signedBytes(e.sigHash)); err != nil {
		return nil, fmt.Errorf("sign message: %w", err)
	}
	return canon.Marshal(&wireSigned{V: WireVersion, Body: body, Sig: e.sig})
}

// signedBytes is what a version 2 signature covers.
func signedBytes(h [sha256.Size]byte) []byte {
	return append([]byte(sigContext), h[:]...)
}

// encode returns the canonical encoding of e as decoded (its version and,
// for version 2, its signature): decoding it gives e again.
func (e *envelope) encode() ([]byte, error) {
	if e.version == 1 {
		return e.body(1)
	}
	body, err := e.body(WireVersion)
	if err != nil {
		return nil, err
	}
	return canon.Marshal(&wireSigned{V: WireVersion, Body: body, Sig: e.sig})
}
