package p2p

import (
	"os"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/internal/nettest"
)

// TestDaemonConfigInNetns builds two nodes with the daemon's configuration
// — NAT traversal and mDNS on — and checks that they find each other by
// mDNS and authenticate. NAT port mapping and mDNS send multicast, so this
// runs only inside a private network namespace with nothing but loopback:
//
//	unshare -n sh -c 'ip link set lo up; ip link set lo multicast on; BT_TEST_NETNS=1 go test ./p2p -run TestDaemonConfigInNetns'
func TestDaemonConfigInNetns(t *testing.T) {
	if os.Getenv("BT_TEST_NETNS") == "" {
		t.Skip("set BT_TEST_NETNS=1 and run inside `unshare -n` (see the comment)")
	}
	d := nettest.NewDomain(t)
	var nodes []*Node
	for _, name := range []string{"a", "b"} {
		id, _ := member(t, d, name)
		cfg := DaemonConfig()
		cfg.Listen = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0"), ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}
		cfg.Loopback = true
		cfg.Log = nettest.Logger()
		nodes = append(nodes, startNode(t, id, cfg))
	}
	nettest.WaitFor(t, 30*time.Second, "mDNS discovery and auth", func() bool {
		p, ok := nodes[0].VerifiedPath(nodes[1].ID())
		return ok && p == nodes[1].Path()
	})
	for _, n := range nodes {
		waitPublished(t, n)
	}
	if _, err := nodes[1].Ping(nettest.Context(t, 10*time.Second), nodes[0].Path()); err != nil {
		t.Fatal(err)
	}
}
