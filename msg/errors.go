package msg

import (
	"errors"
	"fmt"

	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// Errors callers branch on with errors.Is. Every error the Router returns
// wraps one of them (or context.DeadlineExceeded, context.Canceled, or is
// a *RemoteError) with the operation, the path, and what to do.
var (
	// ErrNoEndpoint: no handler is registered at the target path on the
	// node that hosts it (or that node does not speak ProtocolID).
	ErrNoEndpoint = errors.New("no endpoint at the path")
	// ErrTooLarge: the payload (or a reply, or a header) exceeds the
	// sender's or the receiver's Config.MaxMessage.
	ErrTooLarge = errors.New("message too large")
	// ErrDenied: the receiver refused the sender: it has not proven a
	// path, or it is in another domain and presented no writecap from the
	// target's root that covers the target and is held by its node.
	ErrDenied = errors.New("not authorised")
	// ErrUnreachable is p2p.ErrUnreachable: the target's node could not be
	// resolved, connected to or talked to. The p2p error is wrapped too.
	ErrUnreachable = p2p.ErrUnreachable
	// ErrNotOwnPath: Handle was given a path that is not this node's path
	// or under it.
	ErrNotOwnPath = errors.New("path is not this node's")
	// ErrExists: Handle was given a path that already has a handler.
	ErrExists = errors.New("a handler is already registered at the path")
	// ErrClosed: the Router was closed, or the receiver is shutting down.
	ErrClosed = errors.New("router closed")
	// ErrBusy: the receiver (or this node) is at its limit of concurrent
	// messages and the message waited too long for a turn; retry later.
	ErrBusy = errors.New("receiver busy")
	// ErrBadMessage: a header was malformed; the sender and the receiver
	// disagree about the protocol.
	ErrBadMessage = errors.New("malformed message header")
	// ErrUndelivered: an earlier Send to the same path, which had
	// returned, was refused by its receiver or lost with its session; the
	// earlier error is wrapped too. The message of the Send that reports
	// it was not sent.
	ErrUndelivered = errors.New("an earlier send was not delivered")
	// ErrUnknownVersion: a header's version is not Version.
	ErrUnknownVersion = errors.New("unknown message format version")
)

// RemoteError is the error a handler returned, as its caller sees it. Over
// the network only the text crosses (at most MaxErrorMessage bytes); in
// process the handler's error itself is kept too, so errors.Is and
// errors.As see through a RemoteError to it.
type RemoteError struct {
	Path paths.Path // the endpoint whose handler failed
	Msg  string     // the handler's error text

	err error // the handler's error, in process only
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("msg: handler at %s: %s", e.Path, e.Msg)
}

// Unwrap returns the handler's own error for an in-process call, nil for a
// remote one.
func (e *RemoteError) Unwrap() error { return e.err }

// UndeliveredError reports sends to Path that Send had returned for and
// that were refused by their receiver, or lost with their session (those
// may or may not have been handled). The next Send to Path returns it,
// without sending its own message; errors.Is(err, ErrUndelivered) holds,
// and Err, the first failure's error, is wrapped too.
type UndeliveredError struct {
	Path paths.Path
	N    int   // sends that failed or may have been lost
	Err  error // the first one's error
}

func (e *UndeliveredError) Error() string {
	return fmt.Sprintf("msg: send %s: %d earlier sends there, which had returned, were not delivered (this message was not sent; use SendConfirmed to learn each one's fate): %v", e.Path, e.N, e.Err)
}

// Is reports ErrUndelivered.
func (e *UndeliveredError) Is(target error) bool { return target == ErrUndelivered }

// Unwrap returns the first failure's error.
func (e *UndeliveredError) Unwrap() error { return e.Err }
