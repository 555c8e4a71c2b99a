// Package remote puts fsys volumes on the network: a libp2p protocol
// (/blocktree/fs/1.0.0) by which a node serves the volumes it hosts
// (Server) and reaches volumes hosted elsewhere (Client, an fsys.Host),
// and the discovery that finds the host of the volume holding a path
// (Locator). docs/fs.md, "Remote hosts", specifies the wire format.
//
// # Model
//
// One request per stream: the client opens a stream, writes a request
// frame (for Commit, then the Tx's records in frames), half-closes, and
// reads response frames until one says no more follow. Watch keeps its
// stream open and receives one frame per committed change. Frames are a
// uvarint length and canonical CBOR (internal/canon), at most MaxFrame;
// counts and sizes are bounded by the constants of this package. Errors
// travel as kinds that map back to the fsys sentinels, so errors.Is works
// across the network.
//
// # Trust
//
// The server answers peers whose path p2p has verified: every node of its
// domain, and nodes of other domains only for what they hold a readcap
// for (reads) or a writecap held by their node (commits); the host checks
// every Tx's signature and writecap anyway. The client trusts a host only
// after the hosting proof: the Info answer carries the writecap by which
// the host's node key may host the volume path, and that key must be the
// node key the connection verified. Blocks are verified by CID wherever
// they come from, so a lying host can delay reads but not corrupt them.
//
// # Discovery
//
// A host announces itself as a DHT provider of VolumeCID(volume path) and
// re-announces every ServerConfig.Reprovide. Locator.Locate(p) looks at
// the volumes this node hosts, then asks, for every prefix of p at once,
// the domain's root host (for /<root>, from the repo) and the providers of
// the prefix's VolumeCID; the longest prefix whose host passes the
// hosting proof wins. Results are cached.
//
// # Commit's blocks
//
// A writer puts a Tx's blocks in its own store (its exchange serves them)
// before it commits; the host's HaveBlocks (HaveBlocks here) fetches the
// missing ones from the committing peer (Committer(ctx)) before the host
// acknowledges.
//
// # Limits and concurrency
//
// A Server bounds its streams (MaxStreams), each peer's (MaxPeerStreams)
// and each peer's watches (MaxPeerWatches); beyond them a stream is
// refused as busy. Every client call is bounded by its context (and by
// DefaultCallTimeout or DefaultCommitTimeout when it has no deadline).
// All exported methods are safe for concurrent use.
package remote
