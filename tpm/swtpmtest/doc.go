// Package swtpmtest runs a real software TPM (swtpm, TPM 2.0) for tests.
//
// # Model
//
// Each [Sim] is one swtpm process owned by one test. It listens on two free
// loopback ports: the server port, which speaks the raw TPM 2.0 command
// stream (write a command, read a response: what tpm2key's "tcp:" device
// expects), and swtpm's control port. Its state, a single file
// tpm2-00.permall of about 1.3 KiB holding the TPM's seeds and NV memory,
// lives in a directory of its own under t.TempDir(). The process is started
// with --flags not-need-init,startup-clear, so it needs no TPM2_Startup and
// no swtpm_setup: a TPM with an empty state directory manufactures itself,
// with fresh seeds, on its first command. Start returns once swtpm has
// written its pid file (it does so only after binding both ports) and has
// answered a TPM2_GetRandom on its port, so the TPM is up and the state
// file exists.
//
// swtpm serves one connection at a time: while one client is connected, a
// second one is accepted by the kernel but gets no answer until the first
// closes. Close one TPM connection before opening another to the same Sim.
//
// # Lifecycle
//
//	sim := swtpmtest.Start(t)            // fresh TPM, stopped by t.Cleanup
//	dev := sim.Device()                  // tpm.Device{Addr: "127.0.0.1:PORT"}
//	sim.Restart(t)                       // power cycle: same state, transient objects gone
//	sim.Wipe(t)                          // a brand-new TPM: new seeds, old keys lost
//	sim.Stop()                           // idempotent; Cleanup calls it too
//
// Restart keeps the same ports whenever it can (it retries binding them for
// a few seconds), so a client holding the old address can reconnect; if
// the ports stay taken it falls back to new ones, and Device and Flag
// report the current ones. [StartWithState] starts a TPM on a copy of an
// existing state directory, such as frozen test data, leaving the original
// untouched.
//
// The child runs in its own process group and, on Linux, is killed if the
// test binary dies; Stop sends SIGTERM, waits, then SIGKILLs the group.
//
// # Missing swtpm and BT_REQUIRE_REAL
//
// Blocktree's rule for tests that need a real component: when swtpm is not
// installed, the test is skipped with
//
//	swtpm not installed: apt-get install swtpm swtpm-tools
//
// unless the environment variable BT_REQUIRE_REAL=1 is set, in which case
// the test fails with the same message. CI sets BT_REQUIRE_REAL=1 so a
// machine without swtpm cannot pass by skipping. [Require] applies this
// rule and returns the swtpm binary's path; other packages' test helpers
// call it too.
//
// # Errors and concurrency
//
// Functions that take a testing.TB report failures with t.Fatal; they must
// be called from the test's goroutine. Device, Flag, StateDir and Stop are
// safe for concurrent use.
package swtpmtest
