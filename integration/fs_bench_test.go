package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/fsbench"
)

// BenchmarkRemoteMount runs the FUSE workloads on node B's mount, in B's
// own directory of the domain volume, whose host is node A (another real
// daemon on 127.0.0.1), against a local gocryptfs in the same run: dd of
// BT_BENCH_DD_COUNT (default 500) × 128 KiB written with conv=fsync and
// read back cold, and BT_BENCH_FILES (default 1000) small files created,
// listed, read and removed. Run with -benchtime=1x.
func BenchmarkRemoteMount(b *testing.B) {
	requireFUSE(b)
	count, files := envInt("BT_BENCH_DD_COUNT", 500), envInt("BT_BENCH_FILES", 1000)
	c, root := fsCluster(b)
	_, tree := mount(b, c.nodes[1], root)
	ours := filepath.Join(tree, strings.TrimPrefix(c.path(1), root+"/"))
	gc := fsbench.Gocryptfs(b)
	src := fsbench.Source(b, count)
	opts := benchcmp.Options{Rounds: 5, Ops: 1}
	benchcmp.Compare(b, "remote-mount-dd-write-vs-gocryptfs", opts, fsbench.DDWrite(src, ours, count), fsbench.DDWrite(src, gc, count))
	benchcmp.Compare(b, "remote-mount-dd-read-vs-gocryptfs", opts, fsbench.DDRead(ours), fsbench.DDRead(gc))
	// One warm-up round outside the comparison, so a failure shows both
	// daemons' logs.
	if err := fsbench.Metadata(ours, files)(); err != nil {
		b.Fatalf("metadata on B's mount: %v\nB's log:\n%s\nA's log:\n%s", err, c.daemons[1].tail(), c.daemons[0].tail())
	}
	r := benchcmp.Compare(b, "remote-mount-metadata-vs-gocryptfs", opts, fsbench.Metadata(ours, files), fsbench.Metadata(gc, files))
	fmt.Printf("  %d files on B's mount (host A): ours/gocryptfs time %.2f\n", files, 1/r.Ratio())
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
