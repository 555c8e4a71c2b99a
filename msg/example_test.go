package msg_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Two nodes of one domain on loopback: the desktop serves a greeter at
// /<root>/desktop/greeter, and the laptop calls it by path. The handler
// learns the caller's verified path.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root, _ := softkey.Generate() // the domain's root key (bt init)
	rootID, _ := caps.PrincipalID(root.PublicKey())

	start := func(name string, bootstrap ...peer.AddrInfo) (*p2p.Node, *msg.Router) {
		nodeKey, _ := softkey.Generate()
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
		r, err := msg.New(n, msg.Config{})
		if err != nil {
			panic(err)
		}
		return n, r
	}
	laptop, lr := start("laptop")
	defer laptop.Close()
	defer lr.Close()
	desktop, dr := start("desktop", laptop.AddrInfo())
	defer desktop.Close()
	defer dr.Close()

	greeter, _ := desktop.Path().Join("greeter")
	_, err := dr.Handle(greeter, func(ctx context.Context, m *msg.Message) ([]byte, error) {
		name, err := io.ReadAll(m.Body)
		if err != nil {
			return nil, err
		}
		return fmt.Appendf(nil, "hello %s, from %s", name, m.From.Base()), nil
	})
	if err != nil {
		panic(err)
	}
	for desktop.Published().Seq == 0 || desktop.Published().Err != nil { // wait until it can be resolved
		if ctx.Err() != nil {
			panic("not published")
		}
		time.Sleep(10 * time.Millisecond)
	}

	callCtx, cancelCall := context.WithTimeout(ctx, 5*time.Second)
	defer cancelCall()
	reply, err := lr.Call(callCtx, greeter, strings.NewReader("world"), 5)
	fmt.Printf("%s, %v\n", reply, err)

	nobody, _ := desktop.Path().Join("nobody")
	_, err = lr.Call(callCtx, nobody, nil, 0)
	fmt.Println(errors.Is(err, msg.ErrNoEndpoint))
	// Output:
	// hello world, from laptop, <nil>
	// true
}
