// Package deploy is the Wasm deployment controller (docs/wasm.md,
// "Orchestration"): the control plane that keeps a node's modules in line
// with the signed manifests in its deployment directory
// /<root>/<node>/deploy/.
//
// It has two halves. Reconciler is a pure state machine: given a listing
// of the directory, the content of the files it asks for (NeedsRead) and
// the time, Reconcile returns the actions to take (stop, start, start
// again after a back-off, report a refusal), and Started takes a start's
// outcome back. It does no I/O, so its rules are tested as tables.
//
// Controller is the driver, a service (Serve(ctx) error, idempotent
// Close): it lists the directory at every notification of a change by
// another node (Notified, registered with fsys.Client Notify) and every
// Rescan anyway (changes made through this node's own client are not
// notified), reads what the Reconciler asks for, and applies its actions
// to the runtime (wasm.Runtime Start and Stop), making each started
// instance reachable by messaging (MessageBridge). Deployments is what
// `bt ps` shows. While the directory is missing the Controller tries to
// make it; while the volume's host is unreachable nothing is stopped.
//
// Lifecycle: New, then Serve in its own goroutine until its context ends
// or Close is called. Closing the controller leaves the instances to the
// runtime; closing the runtime stops them. Controller is safe for
// concurrent use; Reconciler is not (the Controller serialises it).
package deploy
