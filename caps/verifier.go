package caps

import (
	"crypto/sha256"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"blocktree.dev/bt/paths"
)

// Verifier checks writecaps and remembers the chains it has verified, so a
// warm verification costs a hash lookup and a few comparisons instead of a
// signature check per link. Only what cannot change is cached (signatures,
// chaining, attenuation, root); the clock and the target path are checked
// on every call. A Verifier is safe for concurrent use; the zero value is
// not usable, call NewVerifier.
type Verifier struct {
	now   func() time.Time
	cache *lru.Cache[[sha256.Size]byte, *Writecap]
}

// VerifierOption configures a Verifier.
type VerifierOption func(*Verifier)

// WithClock makes the Verifier read time from now (tests).
func WithClock(now func() time.Time) VerifierOption { return func(v *Verifier) { v.now = now } }

// WithCacheSize sets how many verified chains are remembered (default
// 4096); 0 turns the cache off.
func WithCacheSize(n int) VerifierOption {
	return func(v *Verifier) {
		v.cache = nil
		if n > 0 {
			v.cache, _ = lru.New[[sha256.Size]byte, *Writecap](n) // fails only for n <= 0
		}
	}
}

// DefaultCacheSize is the number of chains a Verifier remembers by default.
const DefaultCacheSize = 4096

// NewVerifier returns a Verifier.
func NewVerifier(opts ...VerifierOption) *Verifier {
	v := &Verifier{now: time.Now}
	WithCacheSize(DefaultCacheSize)(v)
	for _, o := range opts {
		o(v)
	}
	return v
}

// Verify checks that w lets its holder write target now. It returns nil or
// an error wrapping exactly one of ErrBadSignature, ErrNotChained,
// ErrPathNotCovered, ErrRootMismatch, ErrChainTooLong, ErrExpired or
// ErrNotYetValid, with the link at fault.
func (v *Verifier) Verify(w *Writecap, target paths.Path) error {
	if err := v.checkCached(w); err != nil {
		return err
	}
	return w.checkUse(target, v.now())
}

// VerifyHolder is Verify plus a check that holder is the writecap's holder
// (ErrWrongHolder otherwise): what a service asks of a principal that
// presents a writecap.
func (v *Verifier) VerifyHolder(w *Writecap, holder paths.ID, target paths.Path) error {
	if w.Holder() != holder {
		return fmt.Errorf("caps: writecap held by %s presented by %s: %w", w.Holder(), holder, ErrWrongHolder)
	}
	return v.Verify(w, target)
}

// VerifyBytes decodes and verifies an encoded writecap, skipping the decode
// too when the same bytes were verified before. It returns the writecap for
// its holder and prefix.
func (v *Verifier) VerifyBytes(data []byte, target paths.Path) (*Writecap, error) {
	if v.cache != nil && len(data) <= MaxEncodedSize {
		if w, ok := v.cache.Get(sha256.Sum256(data)); ok {
			return w, w.checkUse(target, v.now())
		}
	}
	w, err := Decode(data)
	if err != nil {
		return nil, err
	}
	return w, v.Verify(w, target)
}

func (v *Verifier) checkCached(w *Writecap) error {
	if w == nil || len(w.links) == 0 {
		return fmt.Errorf("caps: no writecap: %w", ErrMalformed)
	}
	if v.cache != nil {
		if _, ok := v.cache.Get(w.digest); ok {
			return nil
		}
	}
	if err := w.check(); err != nil {
		return err
	}
	if v.cache != nil {
		v.cache.Add(w.digest, w)
	}
	return nil
}
