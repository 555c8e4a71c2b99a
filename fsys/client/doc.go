// Package client is the file-system client of package fsys: Client
// implements fsys.FS, fsys.Versioned, fsys.Sharer and the optional
// fsys.FileFlusher and fsys.FileCommitter over the volumes' fsys.Hosts,
// for one node. It holds the keys: it seals inodes, directory entries and
// file chunks before they reach a host (format.go: the sealed formats of
// docs/fs.md) and opens them after; a host (fsys/host, fsys/remote) only
// orders and stores the sealed records.
//
// # Lifecycle
//
// New makes a Client from a Config (the node's identity, writecap, block
// store and how to find a volume's host); Client.InitVolume writes the
// root directory of a new volume; Close stops its background work (seals,
// read-ahead, background commits) and waits for it.
//
// # Writes and durability
//
// Writes are buffered per file and sealed in the background; Flush starts
// committing a file's writes (close(2)), CommitFile commits them without
// durability, and Fsync returns when they are durable at the host. A
// change refused with fsys.ErrConflict is re-applied on fresh records up
// to Config.MaxRetries times.
//
// # Concurrency
//
// Every method of Client is safe for concurrent use.
package client
