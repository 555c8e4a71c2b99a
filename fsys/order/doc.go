// Package order holds the rules that order a volume's changes: given the
// volume's state and a signed fsys.Tx, they decide the next version and
// what it changes, or refuse the Tx. It does no I/O: the state comes in
// through Records (a read-only view the caller backs with its index, or a
// Map in memory), and what to store comes out as Effects, which the caller
// writes. The single host (fsys/host) calls it for every commit; a
// replicated host's state machine (a Raft FSM's Apply) is meant to call
// the same functions, and the tests drive every refusal and acceptance
// through them without a store.
//
// # The rules
//
// A Tx is ordered in two steps:
//
//   - Rules.Admit checks what needs no state: the Tx names this volume,
//     its shape (1…fsys.MaxTxRecords changes, each record key changed at
//     most once and only with a Base, entry records without parent, grant
//     or blocks, inodes with a parent except the root, grants inside the
//     volume and the root's grant the volume itself, the root never
//     deleted), and its signature (the host certificate valid at now and
//     its key's signature of the Tx). Admit depends on the time, so a
//     replicated host admits a Tx once, before it proposes it.
//   - Rules.Apply checks the Tx against a State: every Base names the
//     record's current version (else a conflict), and the writecap covers
//     the write point (the Grant of the nearest inode upward) of every
//     record the Tx changes, before and after the change, of every
//     readcap it adds or revokes, and, where it sets a grant, the write
//     point above it too; readcaps must decode. It returns the Effects of
//     committing the Tx as State.Version+1. Apply is deterministic: the
//     same State and Tx give the same answer on every replica.
//
// A refused Tx gets a *Refusal, whose Kind says which rule refused it and
// which wraps fsys.ErrInvalid, ErrPermission or ErrConflict (errors.Is
// works as before); any other error is the Records' own (a read failure).
//
// # Groups
//
// A host that commits several Txs in one batch checks each against the
// state the earlier ones leave: Overlay is a State's records with the
// Effects of the accepted Txs over them.
//
// # Concurrency
//
// Rules is safe for concurrent use (Admit keeps a cache of verified host
// certificates). Apply reads its Records from the calling goroutine only;
// an Overlay is not safe for concurrent use.
package order
