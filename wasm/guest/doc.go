// Package guest is the Go library for Blocktree Wasm modules: it imports
// the host functions of the "blocktree_v1" ABI (docs/wasm.md) and exports
// the module's entry point.
//
// A module is a reactor: main is never run. It registers its handler in an
// init function and is built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o echo.wasm .
//
// for example
//
//	package main
//
//	import "blocktree.dev/bt/wasm/guest"
//
//	func init() {
//		guest.Handle(func(m *guest.Message) ([]byte, error) { return m.Payload, nil })
//	}
//
//	func main() {}
//
// The host calls the handler once per message, on the actor's goroutine,
// one at a time. A Message and its Payload are valid only during that
// call (the library reuses its buffers, so handling a message allocates
// nothing by itself). The handler's reply goes back to a Call's caller;
// an error fails the actor (its restart policy applies).
//
// Inside the handler (or an init function) the module may Send, Call,
// Publish, Subscribe, ReadFile, WriteFile and Log. Each call is checked
// against the module's manifest; a denied one returns an *Error with
// Code CodeDenied naming the path (errors.Is(err, ErrDenied)). Goroutines
// a module starts run only while the host is inside one of its calls:
// do the work in the handler.
//
// Why a reactor and not a command module looping on a blocking receive:
// the reactor's handler runs on the actor's own goroutine, so a message
// costs no extra goroutine hand-over, and stopping or timing out a module
// is closing it (docs/wasm.md, "Execution model").
//
// On targets other than wasip1 the package compiles, and every host call
// returns ErrNotWasm.
package guest
