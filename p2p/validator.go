package p2p

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	record "github.com/libp2p/go-libp2p-record"

	"blocktree.dev/bt/caps"
)

// Validator checks path records. It is the DHT's record.Validator for the
// "bt" namespace: every DHT server runs it before storing a record and every
// lookup runs it on what it receives. A Validator is safe for concurrent use.
//
// It remembers records whose signatures it has checked, keyed by the SHA-256
// of their encoding, so the same record arriving from twenty peers costs one
// set of signature checks; the key, the clock and the writecap's coverage
// are checked on every call.
type Validator struct {
	verifier *caps.Verifier
	now      func() time.Time
	certs    *certCache
	checked  *lru.Cache[[sha256.Size]byte, *Record]
	// expired remembers, per key, the expiry of the last authentic record
	// refused only because it had expired, so Resolve can say "expired"
	// rather than "not found".
	expired *lru.Cache[string, expiredNote]
}

type expiredNote struct {
	expiry, seen time.Time
}

var _ record.Validator = (*Validator)(nil)

// validatorCacheSize bounds each of the Validator's caches.
const validatorCacheSize = 4096

// NewValidator returns a Validator that checks writecaps with v (share one
// per process, so warm checks are cheap) and reads time from now (nil:
// time.Now).
func NewValidator(v *caps.Verifier, now func() time.Time) *Validator {
	if now == nil {
		now = time.Now
	}
	checked, _ := lru.New[[sha256.Size]byte, *Record](validatorCacheSize)
	expired, _ := lru.New[string, expiredNote](validatorCacheSize)
	return &Validator{verifier: v, now: now, certs: newCertCache(), checked: checked, expired: expired}
}

// Validate implements record.Validator. It returns nil when value is a
// record for the path that key names, valid now: see Check.
func (v *Validator) Validate(key string, value []byte) error {
	_, err := v.Check(key, value)
	return err
}

// Check validates value as the record under key and returns it. In order,
// the first failure being the error:
//
//   - key is /bt/<path>, and value decodes canonically with a known version
//     (ErrBadRecord with caps.ErrMalformed or caps.ErrUnknownVersion);
//   - the host certificate's signature verifies (caps.ErrBadSignature) and
//     it certifies the record's peer ID (caps.ErrWrongHolder);
//   - the record's signature by that host key verifies (caps.ErrBadSignature);
//   - the record is for key's path (ErrBadRecord);
//   - the record has not expired (ErrExpired);
//   - the host certificate is valid now (caps.ErrNotYetValid, caps.ErrExpired
//     with ErrExpired);
//   - the writecap is held by the certificate's node principal, chains to
//     the path's root and covers the path, now (caps errors; an expired
//     writecap also wraps ErrExpired).
//
// Every error wraps ErrBadRecord.
func (v *Validator) Check(key string, value []byte) (*Record, error) {
	kp, err := pathFromKey(key)
	if err != nil {
		return nil, fmt.Errorf("p2p: record: %w: %w", ErrBadRecord, err)
	}
	r, err := v.authentic(value)
	if err != nil {
		return nil, err
	}
	if r.Path != kp {
		return nil, fmt.Errorf("p2p: record for %s stored under key for %s: %w", r.Path, kp, ErrBadRecord)
	}
	now := v.now()
	if !now.Before(r.Expiry) {
		v.noteExpired(key, r.Expiry, now)
		return nil, fmt.Errorf("p2p: record for %s expired at %s: %w: %w", r.Path, r.Expiry.UTC().Format(time.RFC3339), ErrBadRecord, ErrExpired)
	}
	if err := certWindow(r.HostCert, now); err != nil {
		if errors.Is(err, caps.ErrExpired) {
			v.noteExpired(key, r.HostCert.Expiry, now)
			return nil, fmt.Errorf("p2p: record for %s: %w: %w: %w", r.Path, ErrBadRecord, ErrExpired, err)
		}
		return nil, fmt.Errorf("p2p: record for %s: %w: %w", r.Path, ErrBadRecord, err)
	}
	if err := v.verifier.VerifyHolder(r.Writecap, r.HostCert.NodeID, r.Path); err != nil {
		if errors.Is(err, caps.ErrExpired) {
			v.noteExpired(key, r.Writecap.Expiry(), now)
			return nil, fmt.Errorf("p2p: record for %s: %w: %w: %w", r.Path, ErrBadRecord, ErrExpired, err)
		}
		return nil, fmt.Errorf("p2p: record for %s: %w: %w", r.Path, ErrBadRecord, err)
	}
	return r, nil
}

// authentic decodes value and checks everything about it that does not
// depend on the clock or the key: the certificate's and the record's
// signatures and that the certificate certifies the record's peer.
func (v *Validator) authentic(value []byte) (*Record, error) {
	if len(value) > MaxRecordSize {
		return nil, recordErr("record of %d bytes exceeds %d", caps.ErrMalformed, len(value), MaxRecordSize)
	}
	d := sha256.Sum256(value)
	if r, ok := v.checked.Get(d); ok {
		return r, nil
	}
	r, err := DecodeRecord(value)
	if err != nil {
		return nil, err
	}
	if err := v.certs.checkSignature(r.HostCert, v.now()); err != nil {
		return nil, fmt.Errorf("p2p: record for %s: %w: %w", r.Path, ErrBadRecord, err)
	}
	if r.HostCert.HostID != r.Peer {
		return nil, fmt.Errorf("p2p: record for %s names peer %s but its host certificate is for %s: %w: %w",
			r.Path, r.Peer, r.HostCert.HostID, ErrBadRecord, caps.ErrWrongHolder)
	}
	if err := r.checkSignature(); err != nil {
		return nil, err
	}
	v.checked.Add(d, r)
	return r, nil
}

func (v *Validator) noteExpired(key string, expiry, now time.Time) {
	if old, ok := v.expired.Peek(key); ok && old.expiry.After(expiry) {
		expiry = old.expiry
	}
	v.expired.Add(key, expiredNote{expiry: expiry, seen: now})
}

// expiredSince reports the expiry of an authentic record for key that was
// refused as expired at or after t.
func (v *Validator) expiredSince(key string, t time.Time) (time.Time, bool) {
	n, ok := v.expired.Get(key)
	if !ok || n.seen.Before(t) {
		return time.Time{}, false
	}
	return n.expiry, true
}

// Select implements record.Validator: the record with the highest seq
// wins, then the one with the latest expiry, then the one whose encoding is
// bytewise greatest, so every node picks the same record whatever order
// they arrive in. Values that do not decode lose; if none decodes, Select
// fails.
func (v *Validator) Select(key string, values [][]byte) (int, error) {
	best := -1
	var br *Record
	for i, val := range values {
		r, err := v.parse(val)
		if err != nil {
			continue
		}
		if br == nil || better(r, br) {
			best, br = i, r
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("p2p: select %q: no value decodes: %w", truncate(key), ErrBadRecord)
	}
	return best, nil
}

// parse decodes val, from the cache of checked records when it is there.
func (v *Validator) parse(val []byte) (*Record, error) {
	if len(val) <= MaxRecordSize {
		if r, ok := v.checked.Get(sha256.Sum256(val)); ok {
			return r, nil
		}
	}
	return DecodeRecord(val)
}

// better reports whether a supersedes b.
func better(a, b *Record) bool {
	switch {
	case a.Seq != b.Seq:
		return a.Seq > b.Seq
	case !a.Expiry.Equal(b.Expiry):
		return a.Expiry.After(b.Expiry)
	}
	return bytes.Compare(a.raw, b.raw) > 0
}

// certCache remembers host certificates whose signature verified, keyed by
// the SHA-256 of their encoding; the validity window is checked on every
// use. Safe for concurrent use.
type certCache struct {
	ok *lru.Cache[[sha256.Size]byte, struct{}]
}

func newCertCache() *certCache {
	c, _ := lru.New[[sha256.Size]byte, struct{}](validatorCacheSize)
	return &certCache{ok: c}
}

// checkSignature verifies hc's signature by its node key, once per
// certificate.
func (c *certCache) checkSignature(hc *caps.HostCert, now time.Time) error {
	d := sha256.Sum256(hc.Marshal())
	if _, ok := c.ok.Get(d); ok {
		return nil
	}
	// Verify checks the signature first, then the window: a window error
	// means the signature is good.
	if err := hc.Verify(now); err != nil && !errors.Is(err, caps.ErrExpired) && !errors.Is(err, caps.ErrNotYetValid) {
		return err
	}
	c.ok.Add(d, struct{}{})
	return nil
}

// verify checks hc's signature (cached) and its window at now.
func (c *certCache) verify(hc *caps.HostCert, now time.Time) error {
	if err := c.checkSignature(hc, now); err != nil {
		return err
	}
	return certWindow(hc, now)
}

// certWindow checks that now is inside hc's validity window.
func certWindow(hc *caps.HostCert, now time.Time) error {
	if now.Before(hc.NotBefore) {
		return fmt.Errorf("host certificate for %s valid from %s: %w", hc.HostID, hc.NotBefore.UTC().Format(time.RFC3339), caps.ErrNotYetValid)
	}
	if !now.Before(hc.Expiry) {
		return fmt.Errorf("host certificate for %s expired at %s: %w", hc.HostID, hc.Expiry.UTC().Format(time.RFC3339), caps.ErrExpired)
	}
	return nil
}
