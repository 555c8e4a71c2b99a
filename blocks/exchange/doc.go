// Package exchange is the libp2p protocol by which Blocktree nodes fetch
// encrypted, content-addressed blocks from each other
// (/blocktree/blocks/1.0.0), and ask each other to hold replicas.
//
// # Model
//
// A block is ciphertext named by its CID (package blocks), so a node can
// take a block from anyone: it verifies every received block against the
// CID it asked for before it does anything else with it. A peer can
// therefore delay a read but never corrupt it. Peers that lie (wrong
// bytes, another block's bytes, an oversized frame) or stay silent for
// Config.RequestTimeout while they owe answers get a strike; their wants
// move to other peers; peers with strikes are asked after clean ones, and
// a peer with Config.MaxStrikes strikes is ignored for Config.Backoff.
// PeerStats reports all of it.
//
// Where to look is the caller's knowledge (Where): first the nodes that
// host the path being read (Hosts, resolved through the DHT's path
// records) and any Peers given, up to Config.MaxPeers at once; then, only
// for what they could not supply, the DHT providers of Where.Root.
//
// # Lifecycle
//
// New registers the stream handler on a p2p.Node and serves the blocks of
// a blocks.PinStore to verified peers of the same domain (others are
// refused with a clear reason); Close stops serving, cancels what is in
// progress and waits for every goroutine. Close the Exchange before the
// node and the store.
//
// # Fetching
//
// Fetch gets a list of CIDs: from the local store when present, else from
// peers, on one stream per peer that carries successive want lists
// (Config.MaxWantBatch CIDs each) while the answers stream back, in order,
// with at most Config.MaxInflightPerPeer blocks unanswered. A peer answers
// each CID with the block or with "have-not", so the fetch moves on at
// once. A want that one peer holds for longer than its hedge delay
// (Config.HedgeAfter, adapted to the peer's median answer time) is also
// asked of another peer that was not asked for it, up to
// Config.MaxWantCopies peers at once; the first verified answer wins and
// the others are dropped without penalty. Received blocks are checked and
// stored (durably, unpinned: a cache) while the next ones are read, and
// passed to the caller's function. Get fetches one block.
//
// # Replication
//
// Replicate asks a peer to pin a set of CIDs under "replica:"+name, fetch
// what it lacks (from the asking node first) and announce the root in the
// DHT; it returns nil only once the peer has acknowledged that every block
// is durably stored and pinned. So a write acknowledged at factor N has
// been acknowledged by N-1 such peers besides the writer. Unreplicate
// drops the pin.
//
// # Errors
//
// Fetch fails with an error wrapping blocks.ErrNotFound that says how
// many blocks (and which first few) could not be fetched and why: no
// peers, every peer lacked or failed them, or the context ended (whose
// error is wrapped too). Other sentinels: ErrClosed, ErrDenied, ErrBusy,
// ErrProtocol, ErrReplicate, blocks.ErrIntegrity for a CID that cannot
// name a block, blocks.ErrBadPin, p2p.ErrUnreachable.
//
// # Limits
//
// Every frame is bounded by type (a block frame by blocks.MaxBlockSize and
// a CID), every wait by the caller's context and RequestTimeout, inbound
// streams by Config.ServeConcurrency and Config.MaxPeerStreams (beyond
// them a stream is refused at once as busy), and the memory of a fetch by
// MaxPeers × MaxInflightPerPeer blocks in flight.
//
// # Concurrency
//
// All methods of Exchange are safe for concurrent use. Fetch calls its
// function from one goroutine at a time and never after it returned.
// Every goroutine it started has ended by then, but one kind: after a
// successful Fetch, a session that still owes answers for blocks that
// arrived from another peer (hedged wants) lingers on the Exchange,
// dropping them, until it owes nothing, its peer is struck for
// RequestTimeout of silence, or the Exchange closes.
//
// # Testing lies
//
// A binary built with the bt_liar tag serves lies when the environment
// variable BT_LIE is "wrong", "other", "oversize" or "silent" (lie.go);
// other builds cannot lie. The wire format is in docs/exchange.md.
package exchange
