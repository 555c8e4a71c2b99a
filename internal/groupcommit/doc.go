// Package groupcommit batches concurrent requests so that one durable write
// serves them all: a request that arrives while a group is being committed
// waits in a queue, and when that group is done the first waiter becomes
// the leader, takes everything queued by then and commits it as the next
// group. A request that finds no leader leads at once, so a lone request
// waits for nothing. Each caller returns only once its own request's group
// is committed; its outcome travels in the request (the commit function
// sets it), so the helper knows nothing of what a request is.
//
// The commit function may defer requests of a group (for instance one whose
// outcome depends on an earlier request of the same group): they go back to
// the head of the queue, in order, and are committed with the next group.
//
// # Concurrency
//
// Group.Do is safe for concurrent use. The commit function is called by one
// goroutine at a time (the leader), with the Group's optional lock held
// (WithLock), and the group is taken from the queue only after that lock is
// acquired, so requests queued while the leader waits for it join the group.
//
// blocks/leveldb commits Puts with it, and fsys/host commits Txs.
package groupcommit
