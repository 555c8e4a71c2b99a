// Package host is the in-process, durable host of one fsys volume: it
// stores the volume's records (every version, until collected), orders
// their changes, checks each Tx's signature and writecap against the write
// points it touches, keeps the volume's log and readcaps, pins the blocks
// the records reference, and tells watchers what changed. It never sees a
// key, a name or a byte of plaintext. docs/fs.md describes the formats.
//
// # Lifecycle
//
// Open creates the volume (a random root Ino, version 0, no records) on
// first open and reopens it after; a client writes the root directory
// (fsys/client: Client.InitVolume). Close is idempotent; after it every method
// fails with fsys.ErrUnavailable.
//
// # Durability and crash safety
//
// Every commit is ordered and applied at once: its blocks are in the block
// store (checked with Store.Has; the missing ones brought by
// Config.HaveBlocks; the block store syncs its puts), and the records, the
// log entry, the readcap changes and the new version are written in one
// goleveldb batch (group commit: Txs that arrive while a batch is being
// written share the next batch). What differs is when it returns:
//
//   - Commit returns when the batch is synced (fsync of the journal): the
//     Tx survives a power loss.
//   - CommitNoSync returns when the batch has been written to goleveldb's
//     journal file with write(2), without fsync: the Tx is visible to every
//     reader and watcher, and it survives a crash or kill -9 of this
//     process (the kernel holds the write), but a power loss or kernel
//     crash before the next sync may lose it, and with it every later
//     version (the journal is replayed as a prefix).
//   - Sync(v) returns when every version up to v is durable: at once if a
//     synced batch already covered v, else after the next batch, which it
//     makes synced (one fsync shared by every Commit and Sync waiting).
//
// A synced batch also fsyncs a journal file goleveldb retired since the
// last sync (a memtable rotation), so that a sync covers every earlier
// version and not only the current journal's. Open makes what it recovers
// durable (goleveldb flushes the replayed journal to synced tables).
//
// Pins follow the commits: a background pinner pins the blocks of the
// versions committed since the last pin under "fs:<root-ino>:<version>"
// (the newest of them) at most Config.PinDelay after a commit, and then
// records in the index that the versions up to it are pinned. Until then
// the blocks are protected by the block store's GC grace period (a writer
// puts its blocks just before it commits). Close pins what is left; after a
// crash, Open pins the blocks of every version after the last recorded pin
// before it returns (from the stored records), so every acknowledged
// version's blocks are present and pinned again.
//
// # Concurrency
//
// All methods are safe for concurrent use. Commits are ordered one at a
// time (each checked against the state its predecessors in the same batch
// leave); reads run concurrently with them and see whole batches only
// (goleveldb snapshots).
package host
