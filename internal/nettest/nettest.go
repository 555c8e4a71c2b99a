// Package nettest holds what the tests of the networked packages (p2p, msg,
// pubsub) share: a test domain, that is a root key and the paths and
// writecaps it issues, fresh node keys, and small helpers for timeouts,
// polling and logs. Every helper fails the test through t on error.
//
// It is for tests only. It starts no nodes and does not import
// blocktree.dev/bt/p2p, so that p2p's own in-package tests can use it; the
// tests of the packages above p2p start their nodes with p2p/p2ptest,
// which is built on it. Set BT_TEST_LOG=1 to have Logger log at debug
// level to stderr.
package nettest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Domain is a root key and the writecaps it issues.
type Domain struct {
	Root *softkey.Key
	ID   paths.ID // the root's principal ID, which every path of the domain starts with
}

// NewDomain makes a domain with a fresh root key.
func NewDomain(t testing.TB) *Domain {
	t.Helper()
	k := NewKey(t)
	return &Domain{Root: k, ID: PrincipalID(t, k.PublicKey())}
}

// NewKey makes a fresh software key, as a root or node key.
func NewKey(t testing.TB) *softkey.Key {
	t.Helper()
	k, err := softkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// PrincipalID returns pk's principal ID.
func PrincipalID(t testing.TB, pk crypto.PubKey) paths.ID {
	t.Helper()
	id, err := caps.PrincipalID(pk)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Path returns /<root>/<comps...>.
func (d *Domain) Path(t testing.TB, comps ...string) paths.Path {
	t.Helper()
	p, err := paths.New(d.ID, comps...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Pattern parses /<root><rest> as a pattern: d.Pattern(t, "/*/inbox").
func (d *Domain) Pattern(t testing.TB, rest string) paths.Pattern {
	t.Helper()
	pt, err := paths.ParsePattern("/" + string(d.ID) + rest)
	if err != nil {
		t.Fatal(err)
	}
	return pt
}

// Grant has the root let holder write under prefix from nbf to exp.
func (d *Domain) Grant(t testing.TB, holder paths.ID, prefix paths.Path, nbf, exp time.Time) *caps.Writecap {
	t.Helper()
	w, err := caps.Issue(context.Background(), d.Root, nil, holder, prefix, nbf, exp)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// GrantDay has the root let holder write under prefix from an hour ago to
// a day from now.
func (d *Domain) GrantDay(t testing.TB, holder paths.ID, prefix paths.Path) *caps.Writecap {
	t.Helper()
	now := time.Now()
	return d.Grant(t, holder, prefix, now.Add(-time.Hour), now.Add(24*time.Hour))
}

// Member makes a node key and has the root grant it /<root>/<name> for
// the next day (GrantDay): what p2p.NewIdentity needs for a node of d.
func (d *Domain) Member(t testing.TB, name string) (key *softkey.Key, path paths.Path, w *caps.Writecap) {
	t.Helper()
	key = NewKey(t)
	path = d.Path(t, name)
	return key, path, d.GrantDay(t, PrincipalID(t, key.PublicKey()), path)
}

// Logger returns a debug-level text logger to stderr when BT_TEST_LOG is
// set, and nil otherwise: the packages' configs then discard their logs.
func Logger() *slog.Logger {
	if os.Getenv("BT_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Context returns a context that expires after d and is cancelled at
// cleanup.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond every 20ms until it holds, and fails the test if d
// passes first; what names the awaited condition in the failure.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
