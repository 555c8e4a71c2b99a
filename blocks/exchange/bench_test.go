package exchange

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/nettest"
)

// benchRaw is the anchor's protocol: the client sends one byte, the
// server writes every block's bytes back to back and closes.
const benchRaw protocol.ID = "/bench/blocks-raw/1.0.0"

// BenchmarkFetch1GiB: node B fetches BT_BENCH_BYTES (default 1 GiB) of
// 256 KiB blocks held by node A (both stores: memstore, so the figure is
// the protocol's and not a disk's; B's copies are deleted after each
// round, untimed work that is a map delete per block), against a raw
// libp2p stream between the same two hosts carrying the same bytes.
// Interleaved rounds, medians; target ratio ≥ 0.5. Run with
//
//	go test ./blocks/exchange -run '^$' -bench Fetch1GiB -benchtime=1x
func BenchmarkFetch1GiB(b *testing.B) {
	size := int64(1 << 30)
	if s := os.Getenv("BT_BENCH_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("BT_BENCH_BYTES=%q: want a positive byte count", s)
		}
		size = n
	}
	const blockSize = 256 << 10
	nblocks := int((size + blockSize - 1) / blockSize)
	d := nettest.NewDomain(b)
	ns := cluster(b, d, 2, Config{})
	a, z := ns[0], ns[1] // a holds, z fetches
	ctx := context.Background()

	rng := rand.NewChaCha8([32]byte{7})
	data := make([][]byte, nblocks)
	cids := make([]cid.Cid, nblocks)
	for i := range data {
		buf := make([]byte, blockSize)
		_, _ = rng.Read(buf)
		blk, err := blocks.NewBlock(buf)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.store.Put(ctx, blk); err != nil {
			b.Fatal(err)
		}
		data[i], cids[i] = buf, blk.CID
	}
	a.node.Host().SetStreamHandler(benchRaw, func(s network.Stream) {
		var one [1]byte
		if _, err := io.ReadFull(s, one[:]); err != nil {
			s.Reset()
			return
		}
		for _, d := range data {
			if _, err := s.Write(d); err != nil {
				s.Reset()
				return
			}
		}
		s.Close()
	})
	if err := z.node.Host().Connect(ctx, a.node.AddrInfo()); err != nil {
		b.Fatal(err)
	}
	waitProtocol(b, z, a.node.ID(), benchRaw)
	where := Where{Peers: []peer.ID{a.node.ID()}}

	ours := func() error {
		var n int64
		err := z.Fetch(ctx, cids, where, func(blk blocks.Block) error {
			n += int64(len(blk.Data))
			return nil
		})
		if err == nil && n != int64(nblocks)*blockSize {
			err = fmt.Errorf("fetched %d bytes", n)
		}
		for _, c := range cids { // so that the next round fetches again
			if derr := z.store.Delete(ctx, c); derr != nil && err == nil {
				err = derr
			}
		}
		return err
	}
	buf := make([]byte, blockSize)
	anchor := func() error {
		s, err := z.node.Host().NewStream(ctx, a.node.ID(), benchRaw)
		if err != nil {
			return err
		}
		_ = s.SetDeadline(time.Now().Add(5 * time.Minute))
		if _, err := s.Write([]byte{1}); err != nil {
			s.Reset()
			return err
		}
		r := bufio.NewReaderSize(s, 64<<10)
		var n int64
		for {
			k, err := io.ReadFull(r, buf)
			n += int64(k)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				s.Reset()
				return err
			}
		}
		s.Close()
		if n != int64(nblocks)*blockSize {
			return fmt.Errorf("raw stream carried %d bytes", n)
		}
		return nil
	}
	// The process's CPU time per round too: on a shared machine the wall
	// times say how the scheduler treated us, the CPU times what the work
	// costs.
	var oursCPU, anchorCPU []time.Duration
	withCPU := func(f func() error, into *[]time.Duration) func() error {
		return func() error {
			c := cpuTime()
			err := f()
			*into = append(*into, cpuTime()-c)
			return err
		}
	}
	name := fmt.Sprintf("exchange-fetch-%dMiB-256KiB-blocks-vs-raw-stream (target ≥ 0.5)", size>>20)
	r := benchcmp.Compare(b, name, benchcmp.Options{Rounds: 5, Ops: 1}, withCPU(ours, &oursCPU), withCPU(anchor, &anchorCPU))
	mb := float64(int64(nblocks)*blockSize) / (1 << 20)
	fmt.Printf("bench throughput: ours %.0f MiB/s, raw stream %.0f MiB/s\n", mb/r.Ours.Seconds(), mb/r.Anchor.Seconds())
	if oc, ac := median(oursCPU[1:]), median(anchorCPU[1:]); oc > 0 { // [0]: the warm-up
		fmt.Printf("bench cpu (process, both nodes): ours %v/op anchor %v/op ratio(anchor/ours) %.3f\n", oc.Round(time.Millisecond), ac.Round(time.Millisecond), float64(ac)/float64(oc))
	}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// waitProtocol waits until from's peerstore knows that p speaks proto.
func waitProtocol(b *testing.B, from *testNode, p peer.ID, proto protocol.ID) {
	b.Helper()
	nettest.WaitFor(b, 10*time.Second, "identify of "+string(proto), func() bool {
		got, err := from.node.Host().Peerstore().SupportsProtocols(p, proto, Protocol)
		return err == nil && len(got) == 2
	})
}
