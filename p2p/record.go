package p2p

import (
	"bytes"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// RecordVersion is the path-record format version this build writes and the
// only one it reads (docs/p2p.md).
const RecordVersion = 1

// Limits on a path record.
const (
	// MaxRecordSize bounds an encoded record: two caps encodings of at most
	// caps.MaxEncodedSize each, a path of at most paths.MaxPathLen, and
	// MaxRecordAddrs addresses.
	MaxRecordSize = 2*caps.MaxEncodedSize + paths.MaxPathLen + MaxRecordAddrs*maxAddrLen + 512
	// MaxRecordAddrs bounds the addresses in one record.
	MaxRecordAddrs = 32
	maxAddrLen     = 256
	maxSigLen      = 256
)

// RecordNamespace is the DHT namespace of path records: a record for path p
// is stored under the key "/bt" + p, so /bt/<root>/<name>.
const RecordNamespace = "bt"

// ctxRecord is the signature context of a path record (see caps: every
// Blocktree signature is over a context string, so it cannot be replayed as
// another kind of statement).
const ctxRecord = "blocktree path record v1"

// RecordKey returns the DHT key under which p's record is stored.
func RecordKey(p paths.Path) string { return "/" + RecordNamespace + p.String() }

// pathFromKey parses a DHT key made by RecordKey.
func pathFromKey(key string) (paths.Path, error) {
	const pre = "/" + RecordNamespace + "/"
	if len(key) <= len(pre) || key[:len(pre)] != pre {
		return paths.Path{}, fmt.Errorf("key %q is not in the /%s namespace", truncate(key), RecordNamespace)
	}
	return paths.Parse(key[len(pre)-1:])
}

// Record is a signed path record: the statement "path is hosted by peer at
// addrs until expiry", signed by the peer's host key, with the host
// certificate and writecap that chain that key to the path's root. Records
// are immutable once made or decoded and safe to share.
type Record struct {
	Path     paths.Path
	Peer     peer.ID
	Addrs    []ma.Multiaddr
	HostCert *caps.HostCert
	Writecap *caps.Writecap
	// Seq orders the records of one path: higher supersedes lower. Nodes use
	// the Unix time in nanoseconds at publication (never less than their
	// previous seq plus one), so a restarted node with a new peer ID
	// supersedes its old record.
	Seq    uint64
	Expiry time.Time // whole seconds

	body, sig, raw []byte
}

// Wire format, version 1 (docs/p2p.md).
type wireRecord struct {
	V    uint   `cbor:"v"`
	Body []byte `cbor:"body"`
	Sig  []byte `cbor:"sig"`
}

type recordBody struct {
	V        uint     `cbor:"v"`
	Path     string   `cbor:"path"`
	Peer     string   `cbor:"peer"`
	Addrs    [][]byte `cbor:"addrs"`
	HostCert []byte   `cbor:"hostcert"`
	Writecap []byte   `cbor:"writecap"`
	Seq      uint64   `cbor:"seq"`
	Expiry   int64    `cbor:"exp"`
}

// Marshal returns the record's canonical encoding: the DHT value.
func (r *Record) Marshal() []byte { return r.raw }

// signRecord makes and signs the record of id's path. The host key signs;
// the node key in custody is not involved.
func signRecord(id *Identity, addrs []ma.Multiaddr, seq uint64, expiry time.Time) (*Record, error) {
	pid, err := peer.IDFromPrivateKey(id.HostKey)
	if err != nil {
		return nil, fmt.Errorf("p2p: sign record: %w", err)
	}
	if len(addrs) > MaxRecordAddrs {
		addrs = addrs[:MaxRecordAddrs]
	}
	b := recordBody{V: RecordVersion, Path: id.Path.String(), Peer: pid.String(),
		Addrs: make([][]byte, 0, len(addrs)), HostCert: id.Cert.Marshal(), Writecap: id.Writecap.Marshal(),
		Seq: seq, Expiry: expiry.Unix()}
	for _, a := range addrs {
		if ab := a.Bytes(); len(ab) <= maxAddrLen {
			b.Addrs = append(b.Addrs, ab)
		}
	}
	body, err := canon.Marshal(&b)
	if err != nil {
		return nil, fmt.Errorf("p2p: sign record: %w", err)
	}
	sig, err := id.HostKey.Sign(signedMessage(ctxRecord, body))
	if err != nil {
		return nil, fmt.Errorf("p2p: sign record: %w", err)
	}
	raw, err := canon.Marshal(&wireRecord{V: RecordVersion, Body: body, Sig: sig})
	if err != nil {
		return nil, fmt.Errorf("p2p: sign record: %w", err)
	}
	return DecodeRecord(raw)
}

func signedMessage(context string, body []byte) []byte {
	m := make([]byte, 0, len(context)+1+len(body))
	m = append(m, context...)
	m = append(m, 0)
	return append(m, body...)
}

// DecodeRecord parses an encoded record. It checks the encoding (canonical,
// known version, size, well-formed path, peer ID, addresses, host
// certificate and writecap), not signatures, times or the chain: that is
// the Validator's job. Errors wrap ErrBadRecord and one of caps.ErrMalformed
// or caps.ErrUnknownVersion.
func DecodeRecord(data []byte) (*Record, error) {
	if len(data) > MaxRecordSize {
		return nil, recordErr("record of %d bytes exceeds %d", caps.ErrMalformed, len(data), MaxRecordSize)
	}
	var w wireRecord
	if err := canon.Unmarshal(data, &w); err != nil {
		if v, verr := canon.Version(data); verr == nil && v != RecordVersion {
			return nil, recordErr("version %d", caps.ErrUnknownVersion, v)
		}
		return nil, recordErr("%v", caps.ErrMalformed, err)
	}
	if w.V != RecordVersion {
		return nil, recordErr("version %d", caps.ErrUnknownVersion, w.V)
	}
	if len(w.Sig) == 0 || len(w.Sig) > maxSigLen {
		return nil, recordErr("signature of %d bytes", caps.ErrMalformed, len(w.Sig))
	}
	var b recordBody
	if err := canon.Unmarshal(w.Body, &b); err != nil {
		if v, verr := canon.Version(w.Body); verr == nil && v != RecordVersion {
			return nil, recordErr("body version %d", caps.ErrUnknownVersion, v)
		}
		return nil, recordErr("body: %v", caps.ErrMalformed, err)
	}
	if b.V != RecordVersion {
		return nil, recordErr("body version %d", caps.ErrUnknownVersion, b.V)
	}
	p, err := paths.Parse(b.Path)
	if err != nil {
		return nil, recordErr("path: %v", caps.ErrMalformed, err)
	}
	pid, err := peer.Decode(b.Peer)
	if err != nil || pid.String() != b.Peer {
		return nil, recordErr("peer %q is not a canonical peer ID", caps.ErrMalformed, truncate(b.Peer))
	}
	if len(b.Addrs) > MaxRecordAddrs {
		return nil, recordErr("%d addresses, at most %d", caps.ErrMalformed, len(b.Addrs), MaxRecordAddrs)
	}
	addrs := make([]ma.Multiaddr, 0, len(b.Addrs))
	for i, ab := range b.Addrs {
		a, err := ma.NewMultiaddrBytes(ab)
		if err != nil || len(ab) > maxAddrLen || !bytes.Equal(a.Bytes(), ab) {
			return nil, recordErr("address %d is not a canonical multiaddr", caps.ErrMalformed, i)
		}
		addrs = append(addrs, a)
	}
	hc, err := caps.DecodeHostCert(b.HostCert)
	if err != nil {
		return nil, fmt.Errorf("p2p: record: host certificate: %w: %w", ErrBadRecord, err)
	}
	wc, err := caps.Decode(b.Writecap)
	if err != nil {
		return nil, fmt.Errorf("p2p: record: writecap: %w: %w", ErrBadRecord, err)
	}
	return &Record{Path: p, Peer: pid, Addrs: addrs, HostCert: hc, Writecap: wc, Seq: b.Seq,
		Expiry: time.Unix(b.Expiry, 0), body: w.Body, sig: w.Sig, raw: bytes.Clone(data)}, nil
}

func recordErr(format string, sentinel error, args ...any) error {
	return fmt.Errorf("p2p: record: %s: %w: %w", fmt.Sprintf(format, args...), ErrBadRecord, sentinel)
}

// checkSignature verifies the host key's signature over the body.
func (r *Record) checkSignature() error {
	ok, err := r.HostCert.Host.Verify(signedMessage(ctxRecord, r.body), r.sig)
	if err != nil || !ok {
		return fmt.Errorf("p2p: record for %s: not signed by host key %s: %w: %w", r.Path, r.HostCert.HostID, ErrBadRecord, caps.ErrBadSignature)
	}
	return nil
}

// effectiveExpiry is when the record stops being usable: its own expiry,
// or its certificate's or writecap's if earlier.
func (r *Record) effectiveExpiry() time.Time {
	t := r.Expiry
	if e := r.HostCert.Expiry; e.Before(t) {
		t = e
	}
	if e := r.Writecap.Expiry(); e.Before(t) {
		t = e
	}
	return t
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}
