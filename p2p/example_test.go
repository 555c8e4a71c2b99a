package p2p_test

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Two nodes of one domain on loopback: the second joins the DHT through
// the first, each publishes its record, and one pings the other by path.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	root, _ := softkey.Generate() // the domain's root key (bt init)
	rootID, _ := caps.PrincipalID(root.PublicKey())

	start := func(name string, bootstrap ...peer.AddrInfo) *p2p.Node {
		nodeKey, _ := softkey.Generate() // the node key in custody
		nodeID, _ := caps.PrincipalID(nodeKey.PublicKey())
		path, _ := paths.New(rootID, name)
		now := time.Now()
		w, _ := caps.Issue(ctx, root, nil, nodeID, path, now.Add(-time.Minute), now.Add(24*time.Hour))
		id, err := p2p.NewIdentity(ctx, nodeKey, w, path, time.Hour)
		if err != nil {
			panic(err)
		}
		n, err := p2p.New(ctx, id, p2p.Config{
			Listen:    []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
			Bootstrap: bootstrap,
			Loopback:  true,
		})
		if err != nil {
			panic(err)
		}
		go n.Serve(ctx)
		return n
	}
	laptop := start("laptop")
	defer laptop.Close()
	desktop := start("desktop", laptop.AddrInfo())
	defer desktop.Close()

	for desktop.Published().Err != nil || desktop.Published().Seq == 0 {
		if ctx.Err() != nil {
			panic("not published")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err := laptop.Ping(ctx, desktop.Path())
	fmt.Println("ping:", err)
	p, ok := laptop.VerifiedPath(desktop.ID())
	fmt.Println("desktop proved its path:", ok && p == desktop.Path())
	// Output:
	// ping: <nil>
	// desktop proved its path: true
}
