// Package msg carries messages between paths: Send (fire and forget),
// SendConfirmed and Call (request and response, with a deadline) address a
// path such as /<root>/desktop/inbox, and the Handler registered at
// exactly that path (Handle), or for a subtree holding it (HandleTree), on
// the node that hosts it receives the message. The wire format is
// specified in docs/msg.md.
//
// # Model
//
// A path's node is its first two components, /<root>/<node>. A Router on
// a p2p.Node delivers a message for a path of its own node in process:
// the handler is called with the caller's io.Reader itself, nothing is
// encoded or copied. Any other path is resolved and connected to through
// p2p.Node.Connect, which waits until the peer has proven that it hosts
// the node path. Messages of at most SessionMax (64 KiB) travel on the
// session to that node: one long-lived stream of SessionProtocol per pair
// of nodes, requests pipelined and answers matched by ID, with credit per
// session and per target path (docs/msg.md, "Sessions"). A larger message
// gets a new libp2p stream of ProtocolID of its own, so it never holds up
// the small ones (the muxer interleaves the streams):
//
//	request  = uvarint(len) || header{v, to, call, size, dl, [wc]} || size payload bytes
//	response = uvarint(len) || header{v, kind, [msg], size}        || size reply bytes
//
// Headers are canonical CBOR with a version; the payload is streamed in
// bounded chunks and never held whole, by either side. A receiver answers
// as soon as it can: a refusal before it reads the payload, a Send's
// acceptance before its handler runs, a Call's reply when its handler
// returns.
//
// Every Message carries From, the sender's verified node path: the path
// its node proved on the connection (p2p's auth protocol), or this node's
// path in process. A path a sender merely claims is never used.
//
// # Authorisation
//
// A receiver checks a message before its handler sees anything of it:
//
//   - the stream's peer must have proven a path (ErrDenied otherwise);
//   - a sender of the target's own domain (same root) is allowed;
//   - a sender of another domain must attach a writecap issued under the
//     target's root, covering the target, held by the sender's node
//     principal (the node key of its host certificate), and valid now
//     (ErrDenied otherwise, with what is missing). AddGrant gives a Router
//     the writecaps to attach; the receiver verifies them with a
//     caps.Verifier, whose cache makes a repeated writecap cheap.
//
// This is Blocktree's "execute permission": who may write a path may
// message it.
//
// # Delivery
//
// On a session, Send returns once its frame is queued with credit, without
// a round trip; frames queued meanwhile go out in one write. Sends from
// one Router to one path are handled one at a time, in order, and a slow
// handler holds its path's credit, so its senders wait (until their
// deadline) while other paths go on. A send refused after Send returned,
// or lost with a failed session, is logged and reported by the next Send
// to that path (an *UndeliveredError, ErrUndelivered). SendConfirmed
// returns once the receiver has accepted the message (authorised it,
// found the handler, started it), with its own refusal. On a stream of
// its own, a message's Send returns once the receiver has accepted it and
// the payload is written. Neither waits for the handler. Call returns the handler's reply, or its
// error as a *RemoteError. A handler may return without reading the whole
// payload: the receiver then closes its side and the sender stops
// writing. At most once: a message whose stream fails is not resent,
// except one that a receiver refused for its libp2p stream limits before
// any handler saw it.
//
// The caller's deadline travels with a message: the handler's ctx carries
// it, the receiver gives up at it, and the sender's stream expires at it.
// A Call to a dead or unreachable node fails by its deadline with an
// error that names the node; without a deadline a Call waits as long as
// its handler takes, while the connection lives.
//
// # Lifecycle
//
//	r, err := msg.New(node, msg.Config{})     // registers ProtocolID on node's host
//	remove, err := r.Handle(path, handler)    // path: node.Path() or under it
//	remove, err = r.HandleTree(prefix, h)     // every path under prefix
//	remove, err = r.HandleTreeAsync(prefix, ah) // answered later, by done
//	remove, err = r.HandleGroup(p, name, wc, h)  // a queue group's member
//	reply, err := r.Call(ctx, to, body, size)
//	r.Close()                                 // before node.Close()
//
// Close refuses new messages, cancels the contexts of running handlers,
// resets streams in flight and waits for every handler and goroutine of
// the Router.
//
// # Errors
//
// Errors wrap one sentinel, with the operation, the path, the node that
// did not answer, and what to do; branch with errors.Is:
//
//   - ErrNoEndpoint: no handler at that exact path on its node;
//   - ErrTooLarge: a payload or reply over Config.MaxMessage, refused by
//     the sender before sending or by the receiver on the header;
//   - ErrDenied: the receiver refused the sender (see Authorisation);
//   - ErrUnreachable (p2p.ErrUnreachable): the node could not be
//     resolved, reached or talked to; p2p's error is wrapped too;
//   - ErrBusy: the receiver is at its limits, or a session's window
//     stayed full until the deadline; retry later;
//   - ErrUndelivered: an earlier Send to the path was not delivered
//     (*UndeliveredError);
//   - ErrNotOwnPath, ErrExists: from Handle;
//   - ErrClosed: the Router is closed;
//   - ErrBadMessage, ErrUnknownVersion: the peers disagree on the wire
//     format;
//   - context.DeadlineExceeded or context.Canceled: ctx ended first;
//   - *RemoteError: the handler's own error (errors.As); in process it
//     also wraps the handler's error value.
//
// # Concurrency and limits
//
// A Router is safe for concurrent use. An inbound message on a stream of
// its own runs its handler on the goroutine libp2p starts for the stream;
// a session's calls each run on a goroutine, its sends on one goroutine
// per target path while it has any; at most MaxInbound
// handlers run at once, and more wait, each on its stream, for up to 10 s,
// then get ErrBusy. A Router sends at most MaxPeerStreams messages at once
// to one peer and queues the rest, which keeps it within the peer's libp2p
// stream limits. Payloads up to 64 KiB go out with their header in one
// write; larger ones stream in 128 KiB chunks while a second goroutine
// reads the answer. Headers are bounded (MaxRequestHeader,
// MaxResponseHeader), a receiver waits at most 10 s for a header, and
// reads and writes of messages without a deadline time out after a minute
// of silence.
package msg
