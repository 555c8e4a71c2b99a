// Package actors is Blocktree's actor runtime: goroutines with bounded
// mailboxes, addressed by paths, that talk the same way whether they run
// on this node or another. Remote wire format: docs/actors.md.
//
// # Model
//
// An actor is a value implementing Actor, run on its own goroutine by a
// Runtime, one message at a time. It lives at a path under its node:
// /<root>/<node>/<name>, and an actor spawned with an owner
// (WithOwner, or Context.Spawn) lives under its owner's path:
// /<root>/<node>/<owner>/<name>. Send (fire and forget) and Call
// (request and reply, bounded by the ctx's deadline) take a path: for
// an actor of this node the Go value itself is queued, nothing is
// encoded; for another node's actor the value is encoded (its type
// registered with WithTypes/TypeOf) and carried by msg, the runtime's
// only transport: a tell is one msg Send and a call one msg Call to the
// actor's path under its node's endpoint (/<root>/<node>/a/b is reached
// at /<root>/<node>/.actors/a/b), and a monitor's question one msg Call
// to the endpoint itself. So msg's connection, its authorisation and
// its flow control, which is per target path, serve the actors too, per
// actor (docs/actors.md).
//
// # Remote flow control
//
// A remote Send returns once msg has taken the tell (msg.Router.Send:
// queued with credit on the peer's connection). The receiving runtime's
// handler queues it in the mailbox, waiting for room as a local Send
// does, until the tell's deadline (the sender's ctx deadline, or
// WithSendWait without one, travels with it); msg gives the actor's
// path its credit back when the handler returns. A full remote mailbox
// so pushes back on the senders to that actor only: once its credit is
// used up, Send waits until ctx's deadline and fails with
// ErrMailboxFull, naming the node, while tells to the node's other
// actors go on. msg hands one sender's messages to one path to the
// handler one at a time, in order, so tells from one node to one actor
// keep their order. A tell that fails at the receiving runtime after
// Send returned (its deadline passed waiting for room, no actor at the
// path, its protocol refused it) is logged there; a refusal by the
// receiving router (not authorised, no runtime) surfaces as the error
// of a later Send or Call to that actor; Call reports every outcome.
// Another domain's node needs a writecap covering this node's path
// (AddGrant, which hands it to the router).
//
// Mailboxes are bounded (WithMailbox, WithMailboxSize). A full mailbox
// pushes back: Send and Call wait for room until ctx's deadline (or
// WithSendWait when ctx has none) and then fail with ErrMailboxFull.
// Nothing is dropped silently.
//
// # Lifecycle, owners and exit notices
//
//	rt, err := actors.New(n.Path(), router) // router may be nil: local only
//	go rt.Serve(ctx)                           // optional: ties the runtime to ctx
//	p, err := rt.Spawn(ctx, "inbox", actor, actors.WithOwner(owner))
//	reply, err := rt.Call(ctx, p, Ping{})
//	rt.Close()                                 // stops every actor, waits
//
// An actor stops when Receive (or Start) returns ErrStop or calls
// Context.Stop (outcome Normal), returns another error (Failed), panics
// (Panicked: the panic is contained and logged, never crashes the
// process), or is stopped from outside (Stopped: Runtime.Stop, its owner
// stopping, a supervisor, Close, idleness of a provider). Its owner then
// gets exactly one Exit notice in its mailbox, with the path and the
// outcome; the actors it owned are stopped first. Messages still queued
// are dropped and their callers get ErrStopped.
//
// # Supervision
//
// Supervisor(spec) is an actor that starts its children and restarts
// them by strategy: OneForOne (the child alone), OneForAll (all of them)
// or RestForOne (the child and those started after it); each child is
// Permanent, Transient (restarted after Failed or Panicked only) or
// Temporary. More than MaxRestarts restarts within Within make the
// supervisor stop its children and fail with ErrRestartIntensity, which
// its own owner sees in an Exit.
//
// # Monitors
//
// Monitor (or Context.Monitor, or MonitorFunc) watches an actor here or
// on another node: the watcher gets one Down notice when it stops (with
// its outcome), is not there (NoActor), or its node stops answering
// (NodeDown). For remote actors the runtime polls each watched node
// every WithMonitorBound/3, each question bounded by the same, and two
// failures in a row mean NodeDown, so a dead node is noticed within the
// bound and a stopped actor within about a third of it.
//
// # Services
//
// RegisterService registers a virtual actor at /<root>/<node>/<name>: a
// message to that path or any path under it activates a provider for
// that exact path (Service.New), one at a time per path, and a provider
// idle for Service.Idle is deactivated. A message to a path with neither
// an actor nor a service fails with ErrNoActor.
//
// # Timers
//
// Context.After and Context.Every deliver a message to the actor itself
// later; Runtime.SendAfter to any path. A timer never fires early;
// Every skips ticks it missed (when the actor was busy or the mailbox
// full) and keeps to multiples of its period. Timers end with their
// actor. The tests run them under testing/synctest.
//
// # Protocols
//
// WithProtocol (or Service.Protocol) declares an actor's protocol, a
// small DSL in plain Go values: states, and per state the message types
// accepted (On[M, R](next) replies an R, OnTell[M](next) replies nothing)
// and the state each leads to. The runtime checks each message when it is
// queued, against the state the actor will be in when it handles it, and
// refuses one the protocol does not accept with ErrProtocol, to the
// sender, before the actor sees it. A reply of another type is
// ErrProtocol to the caller and fails the actor. See the Example.
//
// # Pub-sub
//
// With WithPubSub, Context.Subscribe subscribes an actor to a path
// pattern: each publication arrives in its mailbox as a *pubsub.Message.
//
// # Listing
//
// List returns an ActorInfo for every actor, provider and service: path,
// owner, kind, run state, protocol state, mailbox depth and capacity,
// with JSON tags for `bt actors --json`.
//
// # Errors
//
// Errors wrap one sentinel (ErrNoActor, ErrExists, ErrMailboxFull,
// ErrStopped, ErrProtocol, ErrUnregisteredType, ErrBadMessage, ErrRemote,
// ErrClosed, ErrRestartIntensity, ErrBadName), msg's errors for the
// network (msg.ErrUnreachable, naming the node; msg.ErrDenied when a
// node refuses this one's messages), a context error, or are
// an *ActorError (the actor failed or panicked on a Call's message).
//
// # Concurrency
//
// Every method of Runtime is safe for concurrent use. A Context belongs
// to its actor's goroutine. Each actor costs one goroutine and a mailbox
// that grows with its queue (up to its capacity) and shrinks back.
package actors
