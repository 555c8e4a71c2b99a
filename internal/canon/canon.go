// Package canon encodes and decodes Blocktree's signed and stored formats
// as deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding, via
// fxamacker/cbor).
//
// Decode is strict: it refuses unknown fields, duplicate map keys,
// indefinite lengths, trailing bytes, and any input that does not re-encode
// to the very same bytes. So every value has exactly one encoding, and a
// signature over an encoding is a signature over the value.
//
// Unmarshal decodes within fixed limits (MaxSize bytes, 16 levels of
// nesting, 4096 array elements, 256 map pairs) that suit small signed
// values; a format with larger values (a file's chunk list, a Tx of many
// records) makes its own Decoder with NewDecoder and options, equally
// strict.
//
// The encoder and decoder are safe for concurrent use.
package canon

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// ErrNotCanonical: the input decodes but is not the one canonical encoding
// of what it holds.
var ErrNotCanonical = errors.New("not canonical CBOR")

// MaxSize bounds every encoding this package decodes.
const MaxSize = 1 << 20

// Limits of the default decoder (Unmarshal).
const (
	defaultMaxNested   = 16
	defaultMaxArray    = 4096
	defaultMaxMapPairs = 256
)

var (
	enc, encErr = cbor.CoreDetEncOptions().EncMode()
	dec, decErr = NewDecoder()
	// initErr is non-nil only if the fixed options above are invalid, which
	// the tests rule out; it is reported by every call rather than panicking.
	initErr = errors.Join(encErr, decErr)
)

// Decoder is a strict decoder (see the package comment) with its own
// limits. Safe for concurrent use.
type Decoder struct {
	maxSize int
	dm      cbor.DecMode
}

// Option sets a Decoder's limit.
type Option func(*limits)

type limits struct {
	size, nested, array, pairs int
}

// WithMaxSize bounds the encodings the Decoder decodes (default MaxSize).
func WithMaxSize(n int) Option { return func(l *limits) { l.size = n } }

// WithMaxNested bounds the nesting of arrays and maps (default 16; at
// least 4).
func WithMaxNested(n int) Option { return func(l *limits) { l.nested = n } }

// WithMaxArrayElements bounds the elements of one array (default 4096; at
// least 16).
func WithMaxArrayElements(n int) Option { return func(l *limits) { l.array = n } }

// WithMaxMapPairs bounds the pairs of one map (default 256; at least 16).
func WithMaxMapPairs(n int) Option { return func(l *limits) { l.pairs = n } }

// NewDecoder returns a strict decoder with the default limits changed by
// opts. It fails only for limits out of range.
func NewDecoder(opts ...Option) (*Decoder, error) {
	l := limits{size: MaxSize, nested: defaultMaxNested, array: defaultMaxArray, pairs: defaultMaxMapPairs}
	for _, o := range opts {
		o(&l)
	}
	if l.size <= 0 {
		return nil, fmt.Errorf("canon: decoder: size limit %d", l.size)
	}
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   l.nested,
		MaxArrayElements:  l.array,
		MaxMapPairs:       l.pairs,
		TagsMd:            cbor.TagsForbidden,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		return nil, fmt.Errorf("canon: decoder: %w", err)
	}
	return &Decoder{maxSize: l.size, dm: dm}, nil
}

// Unmarshal decodes data into v and checks that data is the canonical
// encoding of the result. Errors wrap ErrNotCanonical or the decoder's
// error.
func (d *Decoder) Unmarshal(data []byte, v any) error {
	if len(data) > d.maxSize {
		return fmt.Errorf("encoding of %d bytes exceeds %d", len(data), d.maxSize)
	}
	if encErr != nil {
		return encErr
	}
	if err := d.dm.Unmarshal(data, v); err != nil {
		return err
	}
	again, err := enc.Marshal(v)
	if err != nil {
		return err
	}
	if !bytes.Equal(again, data) {
		return ErrNotCanonical
	}
	return nil
}

// Marshal returns the canonical encoding of v.
func Marshal(v any) ([]byte, error) {
	if initErr != nil {
		return nil, initErr
	}
	return enc.Marshal(v)
}

// Unmarshal decodes data into v with the default limits and checks that
// data is the canonical encoding of the result. Errors wrap
// ErrNotCanonical or the decoder's error.
func Unmarshal(data []byte, v any) error {
	if initErr != nil {
		return initErr
	}
	return dec.Unmarshal(data, v)
}

// lenient decodes only to read a format's version, ignoring other fields.
var lenient, lenientErr = cbor.DecOptions{
	IndefLength:     cbor.IndefLengthForbidden,
	MaxNestedLevels: 16,
	TagsMd:          cbor.TagsForbidden,
}.DecMode()

// Version returns the "v" field of an encoded map, the version every
// Blocktree format carries, without decoding the rest. Use it to give a
// precise "unknown version" error for input that Unmarshal refuses.
func Version(data []byte) (uint64, error) {
	if lenientErr != nil {
		return 0, lenientErr
	}
	var v struct {
		V uint64 `cbor:"v"`
	}
	if len(data) > MaxSize {
		return 0, fmt.Errorf("encoding of %d bytes exceeds %d", len(data), MaxSize)
	}
	if err := lenient.Unmarshal(data, &v); err != nil {
		return 0, err
	}
	return v.V, nil
}
