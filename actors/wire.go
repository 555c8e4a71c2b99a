package actors

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// WireVersion is the version of the remote message format this build
// writes and the only one it reads (docs/actors.md). Version 1 carried
// the target and the kind in the request, for the stream transport that
// msg has replaced; msg's header now carries them.
const WireVersion = 2

// Limits of the wire format.
const (
	// MaxEnvelope bounds an encoded request or reply.
	MaxEnvelope = canon.MaxSize
	// maxWatch bounds the paths of one watch request.
	maxWatch = 1024
)

// wireMsg is a request from one runtime to another, version 2: the
// payload of a msg Send (a tell) or Call (a call) to the target actor's
// path under its node's endpoint, or of a msg Call to the endpoint
// itself (a watch). msg's header carries the target, the sending node
// and the deadline, so the request carries only the rest.
type wireMsg struct {
	V    uint64   `cbor:"v"`
	From string   `cbor:"from,omitempty"` // tell, call: the sending actor's path below its node ("w/child"); absent: the node itself
	T    string   `cbor:"t,omitempty"`    // tell, call: the message's registered type name
	M    []byte   `cbor:"m,omitempty"`    // tell, call: the message, canonical CBOR of that type
	W    []string `cbor:"w,omitempty"`    // watch: the watched paths
}

// wireReply answers a call or a watch.
type wireReply struct {
	V uint64     `cbor:"v"`
	C uint64     `cbor:"c,omitempty"` // outcome code; 0: ok
	E string     `cbor:"e,omitempty"` // error text
	T string     `cbor:"t,omitempty"` // reply type name; absent: nil reply
	M []byte     `cbor:"m,omitempty"` // the reply value
	X []wireExit `cbor:"x,omitempty"` // watch: watched actors that are gone
}

// wireExit is a watched actor that is gone.
type wireExit struct {
	P string `cbor:"p"`           // its path
	O uint64 `cbor:"o"`           // its Outcome
	E string `cbor:"e,omitempty"` // its error text
}

// Reply codes.
const (
	codeOK          = 0
	codeNoActor     = 1
	codeMailboxFull = 2
	codeProtocol    = 3
	codeFailed      = 4
	codePanicked    = 5
	codeStopped     = 6
	codeType        = 7
	codeBad         = 8
	codeDeadline    = 9
	codeClosed      = 10
	codeOther       = 11
)

// maxErrText bounds an error text on the wire.
const maxErrText = 1024

// decoded is a checked request.
type decoded struct {
	from  []string // the sender's components below its node; nil: the node
	tname string
	data  []byte
	watch []paths.Path
}

// checkVersion explains why b, which the decoder refused, was refused
// when that is its size or its version; nil otherwise.
func checkVersion(b []byte) error {
	if len(b) > MaxEnvelope {
		return fmt.Errorf("%d bytes, over %d: %w", len(b), MaxEnvelope, ErrBadMessage)
	}
	v, err := canon.Version(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	if v != WireVersion {
		return fmt.Errorf("unknown format version %d (this build reads %d): %w", v, WireVersion, ErrBadMessage)
	}
	return nil
}

// decodeMsg parses and checks a request, a watch if watch is set, else
// a tell or call: canonical CBOR of version 2 (wirecodec.go), with the
// fields its kind needs and no others, a sender of valid components and
// canonical watched paths.
func decodeMsg(b []byte, watch bool) (*decoded, error) {
	var w wireMsg
	if err := unmarshalWire(b, func() (uint64, error) {
		err := unmarshalWireMsg(b, &w)
		return w.V, err
	}); err != nil {
		return nil, err
	}
	return w.check(watch)
}

// unmarshalWire runs dec on b, at most MaxEnvelope bytes, and checks
// the version it decoded.
func unmarshalWire(b []byte, dec func() (uint64, error)) error {
	if len(b) > MaxEnvelope {
		return checkVersion(b)
	}
	v, err := dec()
	if err == nil && v == WireVersion {
		return nil
	}
	if verr := checkVersion(b); verr != nil {
		return verr
	}
	return fmt.Errorf("%w: %w", ErrBadMessage, err)
}

// check checks a request's fields for its kind.
func (w *wireMsg) check(watch bool) (*decoded, error) {
	d := &decoded{tname: w.T, data: w.M}
	if watch {
		if w.From != "" || w.T != "" || len(w.M) > 0 || len(w.W) == 0 || len(w.W) > maxWatch {
			return nil, fmt.Errorf("a watch needs 1 to %d paths and nothing else: %w", maxWatch, ErrBadMessage)
		}
		d.watch = make([]paths.Path, 0, len(w.W))
		for _, s := range w.W {
			p, err := paths.Parse(s)
			if err != nil {
				return nil, fmt.Errorf("watched path: %w: %w", ErrBadMessage, err)
			}
			d.watch = append(d.watch, p)
		}
		return d, nil
	}
	if w.T == "" || len(w.T) > maxTypeName || len(w.M) == 0 || len(w.W) > 0 {
		return nil, fmt.Errorf("a tell or call needs a type name of 1 to %d bytes and a message, and no watch list: %w", maxTypeName, ErrBadMessage)
	}
	if w.From != "" {
		d.from = strings.Split(w.From, "/")
		for _, c := range d.from {
			if err := paths.ValidComponent(c); err != nil {
				return nil, fmt.Errorf("sender %q: %w: %w", w.From, ErrBadMessage, err)
			}
		}
	}
	return d, nil
}

// decodeReply parses and checks a reply.
func decodeReply(b []byte) (*wireReply, error) {
	var w wireReply
	if err := unmarshalWire(b, func() (uint64, error) {
		err := unmarshalWireReply(b, &w)
		return w.V, err
	}); err != nil {
		return nil, err
	}
	if w.C > codeOther {
		return nil, fmt.Errorf("unknown reply code %d: %w", w.C, ErrBadMessage)
	}
	if err := w.check(); err != nil {
		return nil, err
	}
	return &w, nil
}

// check checks a reply's fields (the caller has checked its code).
func (w *wireReply) check() error {
	switch {
	case w.C != codeOK && (w.T != "" || len(w.M) > 0 || len(w.X) > 0):
		return fmt.Errorf("an error reply with a value: %w", ErrBadMessage)
	case (w.T == "") != (len(w.M) == 0) || len(w.T) > maxTypeName:
		return fmt.Errorf("reply type and value must come together: %w", ErrBadMessage)
	case len(w.E) > maxErrText+3:
		return fmt.Errorf("error text over %d bytes: %w", maxErrText, ErrBadMessage)
	case len(w.X) > maxWatch:
		return fmt.Errorf("over %d exits: %w", maxWatch, ErrBadMessage)
	}
	for _, x := range w.X {
		if _, err := paths.Parse(x.P); err != nil {
			return fmt.Errorf("exit path: %w: %w", ErrBadMessage, err)
		}
		if x.O > uint64(NodeDown) {
			return fmt.Errorf("unknown outcome %d: %w", x.O, ErrBadMessage)
		}
	}
	return nil
}

// cut makes an error text fit the wire: valid UTF-8 (the decoder
// refuses anything else, and the caller would get ErrBadMessage instead
// of the error) of at most maxErrText bytes and a "…".
func cut(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxErrText {
		i := maxErrText
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		return s[:i] + "…"
	}
	return s
}

// errReply encodes err as a reply.
func errReply(err error) []byte {
	text := err.Error()
	var ae *ActorError
	if errors.As(err, &ae) {
		text = ae.Msg
	}
	return appendWireReply(nil, &wireReply{V: WireVersion, C: codeOf(err), E: cut(text)})
}

func codeOf(err error) uint64 {
	var ae *ActorError
	switch {
	case errors.As(err, &ae):
		if ae.Outcome == Panicked {
			return codePanicked
		}
		return codeFailed
	case errors.Is(err, ErrNoActor):
		return codeNoActor
	case errors.Is(err, ErrMailboxFull):
		return codeMailboxFull
	case errors.Is(err, ErrProtocol):
		return codeProtocol
	case errors.Is(err, ErrStopped):
		return codeStopped
	case errors.Is(err, ErrUnregisteredType):
		return codeType
	case errors.Is(err, ErrBadMessage):
		return codeBad
	case errors.Is(err, ErrClosed):
		return codeClosed
	case errors.Is(err, context.DeadlineExceeded):
		return codeDeadline
	}
	return codeOther
}

// errOf turns a reply's code into the caller's error.
func errOf(op string, to paths.Path, c uint64, text string) error {
	var sentinel error
	switch c {
	case codeFailed, codePanicked:
		o := Failed
		if c == codePanicked {
			o = Panicked
		}
		return &ActorError{Path: to, Outcome: o, Msg: text}
	case codeNoActor:
		sentinel = ErrNoActor
	case codeMailboxFull:
		sentinel = ErrMailboxFull
	case codeProtocol:
		sentinel = ErrProtocol
	case codeStopped:
		sentinel = ErrStopped
	case codeType:
		sentinel = ErrUnregisteredType
	case codeBad:
		sentinel = ErrBadMessage
	case codeClosed:
		sentinel = ErrClosed
	case codeDeadline:
		return fmt.Errorf("actors: %s %s: remote: %s: %w", op, to, text, context.DeadlineExceeded)
	default:
		return fmt.Errorf("actors: %s %s: remote error: %s", op, to, text)
	}
	return fmt.Errorf("actors: %s %s: remote: %s: %w", op, to, text, sentinel)
}
