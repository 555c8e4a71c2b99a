// Package api is the contract between the bt daemon and its clients: HTTP
// with JSON bodies over a unix socket in the repo (mode 0600, so only the
// daemon's user can reach it), specified in docs/api.md.
//
// The contract is typed: every operation is a Route, typed by its request
// and answer, with its method, path and Shape (Unary, Stream of JSON lines,
// Upload of raw bytes, Download of raw bytes). Routes lists them all; the
// daemon registers its handlers by Route and Client calls by Route (Call,
// Each, Put, Fetch, and one method per route), so the two cannot disagree
// on a path or a type. Paths and principal IDs travel as paths.Path and
// paths.ID, parsed when a body is decoded.
//
// Errors cross the boundary as one typed error with a fixed list of kinds
// (Error, Kind). Kinds is the one table from a kind to the HTTP status the
// daemon answers with and the exit code the CLI gives it (ExitCodes lists
// those), so the daemon, the client and the CLI agree.
//
// The package imports only the standard library and paths.
package api
