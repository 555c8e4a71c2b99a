package tpm

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// Kind names where a key's private half lives.
type Kind string

const (
	// KindSoftware is a key held in process memory and stored in a key file.
	KindSoftware Kind = "software"
	// KindTPM is a key whose private half never leaves a TPM.
	KindTPM Kind = "tpm"
)

// Info says where a key lives, for people and for `bt id`.
type Info struct {
	Kind Kind `json:"kind"`
	// Device is the TPM a KindTPM key lives in ("/dev/tpmrm0",
	// "tcp:127.0.0.1:2321"); empty for software keys.
	Device string `json:"device,omitempty"`
	// Algorithm is the key's signature algorithm: "ed25519" or "ecdsa-p256".
	Algorithm string `json:"algorithm"`
}

func (i Info) String() string {
	if i.Device == "" {
		return fmt.Sprintf("%s (%s)", i.Kind, i.Algorithm)
	}
	return fmt.Sprintf("%s %s (%s)", i.Kind, i.Device, i.Algorithm)
}

// Key is a principal's long-term key pair in custody: the private half is
// used, never exposed.
//
// Implementations are safe for concurrent use.
type Key interface {
	// PublicKey returns the key's public half as a libp2p key, from which the
	// principal ID (the libp2p peer ID) is derived. It never fails.
	PublicKey() crypto.PubKey

	// Sign signs msg. The signature verifies with PublicKey().Verify(msg, sig):
	// Ed25519 over msg, or ECDSA P-256 over SHA-256(msg) in ASN.1 DER form.
	// It fails when the custodian is unreachable (ErrUnavailable), when the
	// TPM no longer holds the key's parent (ErrKeyLost), or when ctx ends.
	Sign(ctx context.Context, msg []byte) ([]byte, error)

	// ECDHPublicKey returns the public half of the key agreement key that
	// ECDH uses: X25519 for software keys, P-256 for TPM keys. It never fails.
	ECDHPublicKey() *ecdh.PublicKey

	// ECDH returns the shared secret between this key and remote, which must
	// be on ECDHPublicKey's curve (else ErrCurveMismatch). It is the
	// decapsulation step of readcaps. Errors as for Sign.
	ECDH(ctx context.Context, remote *ecdh.PublicKey) ([]byte, error)

	// Info says where the key lives.
	Info() Info

	// Close releases the custodian's resources (a TPM connection, a loaded
	// object). It is idempotent; a closed key fails with ErrClosed.
	Close() error
}

// Errors callers branch on. Implementations wrap them with the operation.
var (
	// ErrUnavailable: the custodian (a TPM device or socket) cannot be reached.
	ErrUnavailable = errors.New("key custodian unavailable")
	// ErrKeyLost: the TPM no longer holds what the stored key blob needs (its
	// state was cleared or replaced), so the key cannot be loaded.
	ErrKeyLost = errors.New("TPM no longer holds this key (was the TPM cleared or replaced?)")
	// ErrWrongPassphrase: a sealed key file did not open with the passphrase.
	ErrWrongPassphrase = errors.New("wrong passphrase")
	// ErrNeedPassphrase: a sealed key file was opened without a passphrase.
	ErrNeedPassphrase = errors.New("key file is sealed: a passphrase is needed")
	// ErrUnknownVersion: a stored key file or blob has a version this build
	// does not know.
	ErrUnknownVersion = errors.New("unknown key file version")
	// ErrMalformed: a stored key file or blob does not decode.
	ErrMalformed = errors.New("malformed key file")
	// ErrCurveMismatch: ECDH was asked for a remote key on another curve.
	ErrCurveMismatch = errors.New("ECDH: remote key is on another curve")
	// ErrClosed: the key was used after Close.
	ErrClosed = errors.New("key is closed")
	// ErrNotExportable: the private half cannot leave its custodian.
	ErrNotExportable = errors.New("key cannot be exported: its private half never leaves the TPM")
)

// Device is a parsed --tpm choice.
type Device struct {
	// Auto: use DefaultDevice when it exists, software keys otherwise.
	Auto bool
	// None: software keys.
	None bool
	// Path is a TPM character device such as /dev/tpmrm0.
	Path string
	// Addr is host:port of a TPM simulator speaking raw TPM commands over
	// TCP (swtpm's --server type=tcp).
	Addr string
}

// DefaultDevice is the kernel's TPM resource manager device.
const DefaultDevice = "/dev/tpmrm0"

// ParseDevice parses a --tpm flag value: "auto", "none", an absolute
// device path, or "tcp:HOST:PORT".
func ParseDevice(s string) (Device, error) {
	switch {
	case s == "auto" || s == "":
		return Device{Auto: true}, nil
	case s == "none":
		return Device{None: true}, nil
	case strings.HasPrefix(s, "tcp:"):
		addr := strings.TrimPrefix(s, "tcp:")
		i := strings.LastIndexByte(addr, ':')
		if i <= 0 || i == len(addr)-1 {
			return Device{}, fmt.Errorf("tpm: %q: want tcp:HOST:PORT", s)
		}
		return Device{Addr: addr}, nil
	case strings.HasPrefix(s, "/"):
		return Device{Path: s}, nil
	}
	return Device{}, fmt.Errorf("tpm: %q: want auto, none, a device path such as /dev/tpmrm0, or tcp:HOST:PORT", s)
}

// String returns the canonical flag form of d.
func (d Device) String() string {
	switch {
	case d.Auto:
		return "auto"
	case d.None:
		return "none"
	case d.Addr != "":
		return "tcp:" + d.Addr
	}
	return d.Path
}
