package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
	"blocktree.dev/bt/tpm/softkey"
)

// Two nodes of one domain on loopback: the desktop subscribes to
// everything under the laptop's path, and the laptop publishes a reading.
// Delivery is best effort, and a new subscription needs a moment to reach
// the publisher, so the laptop publishes until the desktop has it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root, _ := softkey.Generate() // the domain's root key
	rootID, _ := caps.PrincipalID(root.PublicKey())

	start := func(name string, bootstrap ...peer.AddrInfo) (*p2p.Node, *pubsub.PubSub) {
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
		ps, err := pubsub.New(ctx, n, id, pubsub.Config{Decapsulate: nodeKey.ECDH})
		if err != nil {
			panic(err)
		}
		return n, ps
	}
	laptop, laptopPS := start("laptop")
	defer laptop.Close()
	defer laptopPS.Close()
	desktop, desktopPS := start("desktop", laptop.AddrInfo())
	defer desktop.Close()
	defer desktopPS.Close()

	sub, err := desktopPS.Subscribe(ctx, paths.MustParsePattern(laptop.Path().String()+"/..."))
	if err != nil {
		panic(err)
	}
	defer sub.Cancel()
	topic, _ := laptop.Path().Join("sensors", "temp")
	for {
		if err := laptopPS.Publish(ctx, topic, []byte("21.5 °C")); err != nil {
			panic(err)
		}
		wait, stop := context.WithTimeout(ctx, 100*time.Millisecond)
		m, err := sub.Next(wait)
		stop()
		if err == nil {
			fmt.Printf("%q on %s from the laptop: %v\n", m.Payload, topic.String()[len(laptop.Path().String()):], m.From == laptop.Path())
			break
		}
		if ctx.Err() != nil {
			panic("nothing delivered")
		}
	}
	// Without a writecap for the topic, publishing is refused here, and
	// would be by every relay.
	err = desktopPS.Publish(ctx, topic, []byte("spoofed"))
	fmt.Println(err != nil, errors.Is(err, pubsub.ErrDenied))
	// Output:
	// "21.5 °C" on /sensors/temp from the laptop: true
	// true true
}
