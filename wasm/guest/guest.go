package guest

import (
	"errors"
	"fmt"
	"time"

	"blocktree.dev/bt/paths"
)

// ABI is the name of the host module whose functions this library imports.
const ABI = "blocktree_v1"

// Kind is how a message reached the module.
type Kind uint32

// Kinds of message, as the host passes them to bt_handle.
const (
	// KindMessage: a Send or a Call (the runtime does not tell them
	// apart): the reply goes back to a caller, and is dropped for a Send.
	KindMessage Kind = 0
	// KindPublication: a publication on a subscribed topic: Target is
	// the topic, Sender the publishing node; the reply is dropped.
	KindPublication Kind = 1
)

func (k Kind) String() string {
	switch k {
	case KindMessage:
		return "message"
	case KindPublication:
		return "publication"
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// Message is one message handed to the module's Handler. It and its
// Payload are valid only until the Handler returns (the library reuses
// them for the next message, so that handling one allocates nothing):
// copy what you keep.
type Message struct {
	Kind    Kind
	Payload []byte

	sender, target []byte
	senderP        paths.Path
	targetP        paths.Path
	parsed         uint8 // bit 0: sender parsed, bit 1: target parsed
}

// Sender is the sending actor's path, or its node's path; zero when the
// sender did not say (a call from outside any actor). For a publication,
// the publisher's node path. It is parsed on first use.
func (m *Message) Sender() paths.Path {
	if m.parsed&1 == 0 {
		m.senderP, _ = paths.Parse(string(m.sender))
		m.parsed |= 1
	}
	return m.senderP
}

// Target is the path the message was sent to (the module's actor path),
// or for a publication the topic. It is parsed on first use.
func (m *Message) Target() paths.Path {
	if m.parsed&2 == 0 {
		m.targetP, _ = paths.Parse(string(m.target))
		m.parsed |= 2
	}
	return m.targetP
}

// Handler handles one message. For a Call, reply goes back to the caller
// (it may alias m.Payload: the host copies it before the module runs
// again).
// A non-nil error fails the actor (its restart policy applies) and the
// caller of a Call gets it as an actor error; to report an error to the
// caller and keep running, put it in the reply instead.
type Handler func(m *Message) (reply []byte, err error)

// Code is a host call's error code (the ABI's negative return values).
type Code int32

// Error codes (docs/wasm.md).
const (
	CodeDenied      Code = 1 // the manifest does not grant the path
	CodeNotFound    Code = 2 // no actor at the path, no such file
	CodeBadArgument Code = 3 // a malformed path, a buffer outside memory
	CodeTimeout     Code = 4 // the call's timeout or the message's deadline passed
	CodeTooLarge    Code = 5 // a payload or file over the host's limit
	CodeUnavailable Code = 6 // the node has no pub-sub; the module is stopping
	CodeFailed      Code = 7 // anything else (the text says what)
)

// Sentinel errors: every *Error Is the sentinel of its code.
var (
	ErrDenied      = errors.New("denied by the manifest")
	ErrNotFound    = errors.New("not found")
	ErrBadArgument = errors.New("bad argument")
	ErrTimeout     = errors.New("timed out")
	ErrTooLarge    = errors.New("too large")
	ErrUnavailable = errors.New("unavailable")
	ErrFailed      = errors.New("host call failed")
	// ErrNotWasm: the library was built for another target than wasip1.
	ErrNotWasm = errors.New("guest: not running under GOOS=wasip1 GOARCH=wasm")
)

// Error is a host call's failure: the operation, the path it named, the
// code and the host's text.
type Error struct {
	Op   string // "send", "call", "publish", "subscribe", "read_file", "write_file"
	Path string
	Code Code
	Msg  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Op, e.Path, e.Msg)
}

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool { return target == sentinel(e.Code) }

func sentinel(c Code) error {
	switch c {
	case CodeDenied:
		return ErrDenied
	case CodeNotFound:
		return ErrNotFound
	case CodeBadArgument:
		return ErrBadArgument
	case CodeTimeout:
		return ErrTimeout
	case CodeTooLarge:
		return ErrTooLarge
	case CodeUnavailable:
		return ErrUnavailable
	}
	return ErrFailed
}

// DefaultCallTimeout bounds Call when it is given no timeout.
const DefaultCallTimeout = 10 * time.Second

//lint:ignore U1000 read by the wasip1 build (guest_wasip1.go), which the host-side check does not see.
var handler Handler

// Handle registers h as the module's handler. Call it from an init
// function: a reactor module's main is never run (docs/wasm.md).
func Handle(h Handler) { handler = h }
