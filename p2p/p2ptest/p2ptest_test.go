package p2ptest_test

import (
	"testing"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/p2p/p2ptest"
)

func TestStartPublishConnect(t *testing.T) {
	d := nettest.NewDomain(t)
	a := p2ptest.Start(t, d, "a")
	b := p2ptest.Start(t, d, "b", p2ptest.WithBootstrap(a.AddrInfo()))
	p2ptest.WaitPublished(t, a.Node, b.Node)
	p2ptest.Connect(t, a.Node, b.Node)
	if a.Path() != d.Path(t, "a") || b.Identity.Path != d.Path(t, "b") {
		t.Fatalf("paths %s and %s", a.Path(), b.Identity.Path)
	}
	if a.NodeID == "" {
		t.Fatal("no node ID")
	}
	b.Close()
	b.Close() // idempotent; Cleanup calls it again
}
