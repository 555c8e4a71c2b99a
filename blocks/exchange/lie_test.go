//go:build bt_liar

package exchange

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/nettest"
)

// TestEnvLiars: in the bt_liar build, BT_LIE makes New's server lie, and
// the client gives each liar a strike. Run with -tags bt_liar.
func TestEnvLiars(t *testing.T) {
	for _, mode := range []string{"wrong", "other", "oversize", "silent"} {
		t.Run(mode, func(t *testing.T) {
			d := nettest.NewDomain(t)
			client := start(t, d, "client", Config{RequestTimeout: time.Second})
			t.Setenv("BT_LIE", mode)
			l := start(t, d, "liar", Config{}, client.node.AddrInfo())
			if l.liar == nil {
				t.Fatal("BT_LIE did not make a liar")
			}
			bs := makeBlocks(t, 2, 1024)
			put(t, l.store, bs)
			ctx := nettest.Context(t, 20*time.Second)
			if err := client.node.Host().Connect(ctx, l.node.AddrInfo()); err != nil {
				t.Fatal(err)
			}
			_, err := client.Get(ctx, bs[0].CID, Where{Peers: []peer.ID{l.node.ID()}})
			if !errors.Is(err, blocks.ErrNotFound) {
				t.Fatalf("got %v, want ErrNotFound", err)
			}
			if st := statOf(client.Exchange, l.node.ID()); st.TotalStrikes != 1 {
				t.Fatalf("liar %s: %+v", mode, st)
			}
		})
	}
}
