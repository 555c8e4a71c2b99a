// Package canon encodes and decodes Blocktree's signed and stored formats
// as deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding, via
// fxamacker/cbor).
//
// Decode is strict: it refuses unknown fields, duplicate map keys,
// indefinite lengths, trailing bytes, and any input that does not re-encode
// to the very same bytes. So every value has exactly one encoding, and a
// signature over an encoding is a signature over the value.
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

var (
	enc, encErr = cbor.CoreDetEncOptions().EncMode()
	dec, decErr = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   16,
		MaxArrayElements:  4096,
		MaxMapPairs:       256,
		TagsMd:            cbor.TagsForbidden,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	// initErr is non-nil only if the fixed options above are invalid, which
	// the tests rule out; it is reported by every call rather than panicking.
	initErr = errors.Join(encErr, decErr)
)

// Marshal returns the canonical encoding of v.
func Marshal(v any) ([]byte, error) {
	if initErr != nil {
		return nil, initErr
	}
	return enc.Marshal(v)
}

// Unmarshal decodes data into v and checks that data is the canonical
// encoding of the result. Errors wrap ErrNotCanonical or the decoder's error.
func Unmarshal(data []byte, v any) error {
	if len(data) > MaxSize {
		return fmt.Errorf("encoding of %d bytes exceeds %d", len(data), MaxSize)
	}
	if initErr != nil {
		return initErr
	}
	if err := dec.Unmarshal(data, v); err != nil {
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
