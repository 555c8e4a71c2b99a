// Package wasm runs WebAssembly modules stored in the blocktree file
// system as capability-limited actors. The ABI and the manifest format
// are specified in docs/wasm.md; the Go library for modules is
// blocktree.dev/bt/wasm/guest.
//
// # Model
//
// A module is a file at a path (WASI preview 1, a reactor: built with
// GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared). A deployment is
// a Manifest — the module's path, the nodes it runs on, its restart
// policy, environment, memory limit, per-message deadline and the Rights
// it is granted — signed by a principal whose writecap covers every right
// and the actor path (SignedManifest, Sign, Verify). A manifest asking
// for more than its signer holds is refused with ErrRights.
//
// A Runtime runs manifests on one node: Start verifies, loads the module
// (Files.ReadFile), compiles it with wazero (cached by the CID of its
// bytes and the memory limit, with wazero's compilation cache in
// Config.CacheDir across processes), instantiates it and spawns it as the
// actor /<root>/<node>/<Name> on the node's actors runtime. Messages to
// the actor ([]byte or string; anything else is refused by the actor's
// protocol with actors.ErrProtocol) and publications it subscribed to
// reach the module's bt_handle export on the actor's own goroutine, one
// at a time; its reply is the Call's reply ([]byte).
//
// Every host call the module makes is checked against the manifest's
// rights (docs/wasm.md): a denied call returns an error code to the
// module, which the guest library turns into an error naming the path.
//
// # Lifecycle and supervision
//
//	rt, err := wasm.New(ctx, wasm.Config{Actors: acts, Files: wasm.FSFiles(fs), PubSub: ps})
//	err = rt.Start(ctx, sm)          // returns at once; see Instances, Logs, WaitRunning
//	err = rt.Stop(ctx, "echo")       // stops and forgets the instance
//	rt.Close()                       // stops every instance, releases compiled code
//
// An instance fails when its module traps or panics (during
// initialisation or a message), returns an error from its handler,
// outgrows its memory limit (the reason names the limit), or takes longer
// than its Deadline on one message (the runtime closes the module through
// wazero's close-on-context-done: the reason names the deadline). Its
// restart policy then decides: "always", "on-failure" (the default) or
// "never", at most MaxRestarts times, after exponential back-off from
// Backoff to MaxBackoff. Instances reports each instance's state
// (starting, running, backoff, stopped, failed), restart count and last
// error; Logs its stdout, stderr, log calls and the runtime's notes, in a
// bounded ring per instance.
//
// # Errors
//
// ErrManifest, ErrSignature, ErrRights, ErrNotThisNode, ErrExists,
// ErrNoInstance, ErrClosed and ErrModule, wrapped with the operation.
//
// # Concurrency
//
// Every method of Runtime is safe for concurrent use. Each instance costs
// one actor goroutine, one supervisor goroutine, its linear memory (up to
// its limit) and its log ring; compiled modules are shared between
// instances of the same bytes and memory limit and kept until Close.
package wasm
