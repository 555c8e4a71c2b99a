// Package integration tests Blocktree as a user meets it: it builds the
// bt binary once and drives it only through its command line (and, once the
// daemon exists, its API), with real key files, real swtpm processes and
// real repos in temporary directories.
//
// Run with `go test ./integration`; BT_REQUIRE_REAL=1 turns a missing swtpm
// into a failure instead of a skip.
package integration
