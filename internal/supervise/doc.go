// Package supervise runs a process's long-lived parts as services under
// one supervisor.
//
// A service is anything with Serve(ctx) error that serves until ctx ends
// (or its own Close) and then returns. The supervisor starts services in
// the order they are handed to Start, each Serve in its own goroutine;
// Wait blocks until the supervisor's context ends or a service fails,
// and then stops every service in reverse order of start: it cancels the
// service's context, calls its Close if it has one, and waits for its
// Serve to return before stopping the one started before it. So a part
// started after another (and so built on it) is always stopped first.
//
// A service fails when its Serve returns an error while it was not being
// stopped; the failure is logged and Wait returns it, wrapped with the
// service's name. A Serve that returns nil early is logged, not a failure
// (a service with nothing left to do). Parts that have no Serve of their
// own but must be closed in order are added with Closer.
//
//	sup := supervise.New(log)
//	defer sup.Stop()
//	sup.Start("p2p", node)
//	sup.Start("store", supervise.Closer(store.Close))
//	return sup.Wait(ctx)
//
// A Supervisor is safe for concurrent use; Stop is idempotent.
package supervise
