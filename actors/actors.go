package actors

import (
	"errors"
	"fmt"
	"time"

	"blocktree.dev/bt/paths"
)

// Errors callers branch on with errors.Is. Every error the runtime returns
// wraps one of them (or a context error) with the operation and the path.
var (
	// ErrNoActor: no actor, provider or service is registered at the path
	// on the node that hosts it.
	ErrNoActor = errors.New("no actor at the path")
	// ErrExists: Spawn or RegisterService was given a path that is taken.
	ErrExists = errors.New("an actor is already registered at the path")
	// ErrMailboxFull: the target's mailbox stayed full until the sender's
	// deadline (or, without a deadline, the sender asked not to wait).
	ErrMailboxFull = errors.New("mailbox full")
	// ErrStopped: the actor stopped before it handled the message.
	ErrStopped = errors.New("actor stopped")
	// ErrProtocol: the message (or the actor's reply) breaks the actor's
	// declared protocol; the actor did not see a refused message.
	ErrProtocol = errors.New("protocol violation")
	// ErrUnregisteredType: a message or reply for another node has a Go
	// type that was not registered with WithTypes, or arrived with an
	// unknown type name.
	ErrUnregisteredType = errors.New("message type not registered")
	// ErrBadMessage: a remote envelope was malformed or of an unknown
	// version.
	ErrBadMessage = errors.New("malformed actor message")
	// ErrRemote: the target is on another node and this runtime has no
	// router (it was made with a nil *msg.Router).
	ErrRemote = errors.New("no router for a remote actor")
	// ErrClosed: the runtime is closed.
	ErrClosed = errors.New("actor runtime closed")
	// ErrRestartIntensity: a supervisor's children failed more often than
	// its restart intensity allows; the supervisor gave up and failed.
	ErrRestartIntensity = errors.New("restart intensity exceeded")
	// ErrBadName: an actor name is not a valid path component, or is
	// reserved (it starts with ".").
	ErrBadName = errors.New("bad actor name")
)

// ErrStop is returned by Receive (or Start) to stop the actor normally:
// any reply is still delivered, and the exit outcome is Normal.
var ErrStop = errors.New("actor stops")

// ActorError is the error a Call's caller gets when the actor failed or
// panicked while handling its message. In process it wraps the actor's
// error; across nodes only the text crosses.
type ActorError struct {
	Path    paths.Path // the actor
	Outcome Outcome    // Failed or Panicked
	Msg     string     // the actor's error text, or the panic value

	err error // in process only
}

func (e *ActorError) Error() string {
	return fmt.Sprintf("actors: actor %s %s: %s", e.Path, e.Outcome, e.Msg)
}

// Unwrap returns the actor's own error in process, nil across nodes.
func (e *ActorError) Unwrap() error { return e.err }

// Actor handles messages, one at a time, on its own goroutine.
//
// Receive gets each message m (a value sent by Send or Call, or a
// notice: Exit, Down, *pubsub.Message). For a Call, reply goes back to
// the caller; for a Send it is dropped. A non-nil err other than ErrStop
// fails the actor: the caller of a Call gets an *ActorError, the actor
// stops with outcome Failed and its owner gets an Exit. ErrStop (or
// Context.Stop) stops it normally after this message. A panic is
// contained: the actor stops with outcome Panicked.
type Actor interface {
	Receive(c *Context, m any) (reply any, err error)
}

// Starter is an Actor that wants to run code on its goroutine before its
// first message; a non-nil error (other than ErrStop) fails it.
type Starter interface {
	Start(c *Context) error
}

// Stopper is an Actor that wants to know when it stops; Stopped runs on
// the actor's goroutine after its last message, before its children are
// stopped and its owner is told.
type Stopper interface {
	Stopped(c *Context, e Exit)
}

// Func adapts a function to Actor.
type Func func(c *Context, m any) (reply any, err error)

// Receive calls f.
func (f Func) Receive(c *Context, m any) (any, error) { return f(c, m) }

// Outcome is how an actor stopped.
type Outcome int

const (
	// Normal: the actor stopped itself (ErrStop, Context.Stop).
	Normal Outcome = iota
	// Stopped: it was stopped from outside: Runtime.Stop, its owner
	// stopping, a supervisor, Close, or (for a provider) idleness.
	Stopped
	// Failed: Start or Receive returned an error.
	Failed
	// Panicked: Start or Receive panicked; the panic was contained.
	Panicked
	// NoActor: (monitors only) there was no such actor to watch, or it
	// is gone and its outcome is no longer remembered.
	NoActor
	// NodeDown: (monitors only) the node hosting the actor stopped
	// answering within the monitor bound.
	NodeDown
)

var outcomeNames = [...]string{"normal", "stopped", "failed", "panicked", "noactor", "nodedown"}

func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// MarshalText encodes the outcome's name.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText decodes an outcome's name.
func (o *Outcome) UnmarshalText(b []byte) error {
	for i, n := range outcomeNames {
		if n == string(b) {
			*o = Outcome(i)
			return nil
		}
	}
	return fmt.Errorf("actors: unknown outcome %q", b)
}

// Abnormal reports whether the outcome is a failure: Failed, Panicked or
// NodeDown.
func (o Outcome) Abnormal() bool { return o == Failed || o == Panicked || o == NodeDown }

// Exit is the notice an owner gets, exactly once, when an actor it owns
// stops. It arrives in the owner's mailbox (it does not count against
// the mailbox's capacity and is never refused by a protocol).
type Exit struct {
	Path    paths.Path // the actor that stopped
	Outcome Outcome
	Err     error // the error or panic; nil for Normal and Stopped

	inc uint64 // the incarnation: tells a restarted actor from the old one
}

func (e Exit) String() string {
	if e.Err != nil {
		return fmt.Sprintf("exit %s: %s: %v", e.Path, e.Outcome, e.Err)
	}
	return fmt.Sprintf("exit %s: %s", e.Path, e.Outcome)
}

// Down is the notice a monitor gets, once, when the actor it watches
// stops, is not there, or its node stops answering.
type Down struct {
	Path    paths.Path // the watched actor
	Outcome Outcome
	Err     error
	At      time.Time // when this node learnt of it
}

// Kind tells what an entry of List is.
type Kind string

// Kinds.
const (
	KindActor    Kind = "actor"
	KindService  Kind = "service"  // a registration: no goroutine, no mailbox
	KindProvider Kind = "provider" // an activation of a service
)

// Run states.
const (
	StateRunning  = "running"
	StateStopping = "stopping"
)

// ActorInfo describes one actor, service or provider, for List (and `bt
// actors --json`).
type ActorInfo struct {
	Path          paths.Path `json:"path"`
	Owner         paths.Path `json:"owner,omitzero"`
	Kind          Kind       `json:"kind"`
	State         string     `json:"state"`                    // running, stopping
	ProtocolState string     `json:"protocol_state,omitempty"` // the declared protocol's current state
	Protocol      string     `json:"protocol,omitempty"`       // the declared protocol's name
	MailboxDepth  int        `json:"mailbox_depth"`
	MailboxCap    int        `json:"mailbox_cap"`
	Started       time.Time  `json:"started,omitzero"`
}
