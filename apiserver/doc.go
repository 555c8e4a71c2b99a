// Package apiserver answers the local API (docs/api.md) over the node's
// components: the p2p node, messaging, pub-sub, actors, the block store
// and its replication, the file system service (fsys/service) and the
// Wasm runtime with its deployment controller (wasm/deploy).
//
// New takes the components in a Config and returns one http.Handler that
// registers every route of api.Routes with the generic handlers of
// api/serve; the daemon serves it on its unix socket. Subsystem errors
// become API kinds through one table (errors.go): a handler returns the
// subsystem's error, wrapped with %w, and the table names its kind.
//
// The handlers only adapt requests: they check and convert a request's
// fields, call the component, and turn the result into the response
// type. Each takes its context from the request, which the daemon ends
// when it stops, so streams (listen, subscribe, logs) end first.
package apiserver
