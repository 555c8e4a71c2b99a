package order

import (
	"errors"
	"fmt"
)

// Kind says which rule refused a Tx.
type Kind uint8

// Kinds of refusal, with the fsys error each wraps.
const (
	// Malformed: the Tx is for another volume or breaks a shape rule
	// (fsys.ErrInvalid).
	Malformed Kind = iota + 1
	// BadSignature: no valid host certificate or signature
	// (fsys.ErrPermission).
	BadSignature
	// Conflict: a Base is not the record's current version
	// (fsys.ErrConflict).
	Conflict
	// NoWritePoint: an inode the Tx touches does not exist, has no write
	// point above it, or sits too deep (fsys.ErrInvalid).
	NoWritePoint
	// NotAuthorized: the writecap does not cover a write point the Tx
	// needs (fsys.ErrPermission).
	NotAuthorized
	// BadReadcap: a readcap the Tx adds does not decode
	// (fsys.ErrInvalid).
	BadReadcap
)

var kindNames = [...]string{Malformed: "malformed", BadSignature: "bad signature", Conflict: "conflict",
	NoWritePoint: "no write point", NotAuthorized: "not authorized", BadReadcap: "bad readcap"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Refusal is the rules' refusal of a Tx. Its message is the rule's;
// errors.Is finds the fsys error it wraps (see Kind).
type Refusal struct {
	Kind Kind
	err  error
}

func (r *Refusal) Error() string { return r.err.Error() }

// Unwrap returns the wrapped error (an fsys sentinel inside).
func (r *Refusal) Unwrap() error { return r.err }

// KindOf returns the Kind of the Refusal in err's chain, or 0.
func KindOf(err error) Kind {
	if r, ok := errors.AsType[*Refusal](err); ok {
		return r.Kind
	}
	return 0
}

func refuse(k Kind, err error) *Refusal { return &Refusal{Kind: k, err: err} }

func refusef(k Kind, format string, args ...any) *Refusal {
	return &Refusal{Kind: k, err: fmt.Errorf(format, args...)}
}
