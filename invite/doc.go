// Package invite adds machines to a domain: invitation tokens, the
// inviter's registry of pending invites, and the join protocol.
//
// # Flow
//
//	bt invite NAME     opens the root key, makes a one-shot delegate key,
//	                   has the root grant it /<root>/NAME, and hands both to
//	                   the daemon, whose Registry returns a secret; the CLI
//	                   prints a Token: root, name, the daemon's addresses,
//	                   the secret.
//	bt join TOKEN      creates the new node's key, connects to the inviter,
//	                   sends the secret and the node's public key over
//	                   /blocktree/join/1.0.0, and receives the writecap
//	                   node ← delegate ← root for /<root>/NAME and peers to
//	                   bootstrap from.
//
// The root key never enters a daemon. A token works once and until its
// expiry; the registry tells a wrong token (ErrUnknown), an expired one
// (ErrExpired) and a used one (ErrUsed) apart, and refuses a name that has
// an invite already (ErrNameInUse). Invites live in the daemon's memory: a
// daemon restart voids pending tokens (ErrUnknown), never grants twice.
//
// The inviter's side is a Server: NewServer, then Serve(ctx) answers join
// requests until ctx ends or Close is called, and on the way out stops
// taking streams, ends the exchanges under way and waits for them.
//
// Formats are in docs/invite.md. Registry and Server are safe for
// concurrent use.
package invite
