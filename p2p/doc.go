// Package p2p is a node's libp2p side: the host, Blocktree's private
// Kademlia DHT that maps paths to peers, the auth protocol that gives every
// connection a verified path, and a small ping protocol. The wire formats
// and timings are specified in docs/p2p.md.
//
// # Model
//
// A node is a principal placed at a path /<root>/<name>. Its Identity ties
// three keys together:
//
//	peer ID = ID(host key) ─host cert→ node key ─writecap→ … → root key = first path component
//
// The host key is a short-lived Ed25519 key held in memory: it is the
// libp2p identity and signs everything on hot paths. The node key, in a
// TPM or a software key store, signs only the host certificate, once per
// Identity (NewIdentity). Anyone can check the chain with nothing but the
// keys in it.
//
// Authenticated connections. On every new connection each side opens a
// stream of AuthProtocol and sends its proof: its path, host certificate
// and writecap. The receiver accepts the proof only if the certificate is
// valid now and certifies exactly the key the connection's secure channel
// authenticated (so a proof cannot be replayed by another peer), and the
// writecap is held by the certificate's node principal and covers the
// path, a node path. From then on the connection's peer carries that
// verified path (VerifiedPath, Peers); a peer whose proof was refused stays
// unverified, with the caps error as the reason. A path a peer merely
// claims is never used. Members of different domains authenticate each
// other, each to its own root.
//
// Path records. Each node publishes a record signed by its host key —
// path, peer ID, addresses, host certificate, writecap, sequence number,
// expiry — under the DHT key /bt/<root>/<name>. Every DHT server runs the
// Validator before storing a record and every lookup runs it on what it
// receives, so a record whose chain does not cover its path is stored
// nowhere. Between two valid records of a path the higher sequence number
// wins, then the later expiry; a server refuses a record that is not
// better than the one it holds. Resolve looks records up and caches them;
// a warm lookup never touches the network.
//
// # Lifecycle
//
//	id, err := p2p.NewIdentity(ctx, nodeKey, writecap, path, 24*time.Hour)
//	n, err := p2p.New(ctx, id, p2p.DaemonConfig())  // host, DHT, protocols; no I/O yet
//	go n.Serve(ctx)   // bootstrap, publish and republish, refresh the cache, mDNS
//	pid, err := n.Connect(ctx, otherPath)           // resolve, dial, wait for its proof
//	rtt, err := n.Ping(ctx, otherPath)
//	n.Close()         // cancels Serve, waits for every goroutine, closes DHT and host
//
// Serve publishes the record on start, every RecordTTL/2, whenever the
// host's addresses change, and, after a failure (say, no DHT peer yet),
// again with a doubling backoff or as soon as a peer proves its path. A
// node that stops publishing disappears when its record expires: Resolve
// then fails with ErrExpired. A restarted node has a new host key and so a
// new peer ID; its record's higher sequence number supersedes the old one.
//
// The host certificate bounds the Identity's life: when it (or the
// writecap) expires, the node can neither authenticate nor publish. The
// daemon makes a new Identity and a new Node before then.
//
// # Errors
//
// Errors wrap one of the sentinels below, with the operation, the path or
// peer, and what the user can do; branch with errors.Is:
//
//   - ErrNotFound: no valid record for the path (also when the lookup ran
//     out of time: ctx's error is wrapped too);
//   - ErrExpired: the path's record, or its certificate or writecap,
//     expired and was not republished;
//   - ErrUnreachable: the peer could not be dialled or talked to;
//   - ErrNotAuthenticated: the peer did not prove the expected path; the
//     caps error that refused its proof (caps.ErrRootMismatch,
//     caps.ErrExpired, caps.ErrPathNotCovered, caps.ErrWrongHolder, …) is
//     wrapped too;
//   - ErrBadRecord: the Validator refused a record, with the caps error or
//     ErrExpired that says why;
//   - ErrClosed: the node was closed.
//
// # Concurrency
//
// Every method of Node is safe for concurrent use. Connection
// notifications are handled off the notifier's goroutine; every goroutine
// the node starts is bounded in number (by the resource manager's
// connection and stream limits, or a semaphore) and in time (by a
// deadline), and Close waits for them. Everything that waits takes a
// context; Connect, Ping and Resolve apply a default deadline when the
// context has none. The Validator, Record and Identity are safe to share.
//
// # Limits
//
// The resource manager is libp2p's scaling defaults scaled to
// Limits.Memory and Limits.FDs, with system-wide caps on connections and
// streams and small per-peer limits on AuthProtocol and PingProtocol; the
// connection manager trims between low and high water, protecting this
// domain's verified nodes. Proofs and records are bounded (MaxProofSize,
// MaxRecordSize, MaxRecordAddrs) and read with deadlines.
package p2p
