package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// putJSON is `bt block put --json`.
type putJSON struct {
	Root     string   `json:"root"`
	Key      string   `json:"key"`
	Size     uint64   `json:"size"`
	Blocks   int      `json:"blocks"`
	Replicas []string `json:"replicas"`
}

// statJSON is `bt repo stat --json`.
type statJSON struct {
	Dir          string `json:"dir"`
	Blocks       int64  `json:"blocks"`
	Bytes        int64  `json:"bytes"`
	Pins         int64  `json:"pins"`
	PinnedBlocks int64  `json:"pinned_blocks"`
	Quota        int64  `json:"quota"`
}

// eventJSON is one line of `bt repo verify|gc --json`.
type eventJSON struct {
	Event    string   `json:"event"`
	Checked  int64    `json:"checked"`
	Total    int64    `json:"total"`
	Deleted  int64    `json:"deleted"`
	Corrupt  []string `json:"corrupt"`
	Missing  []string `json:"missing"`
	Repaired []string `json:"repaired"`
}

// randomFile writes n pseudo-random bytes (seeded) that start with marker
// and returns its path and contents.
func randomFile(t testing.TB, seed uint64, n int, marker string) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	copy(data, marker)
	name := filepath.Join(t.TempDir(), fmt.Sprintf("file-%d", seed))
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return name, data
}

func (n *node) put(file string, extra ...string) putJSON {
	n.t.Helper()
	r := n.ok(append([]string{"block", "put", file, "--json"}, extra...)...)
	var p putJSON
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.Root == "" || p.Key == "" {
		n.t.Fatalf("bt block put printed %q (%v)", r.stdout, err)
	}
	return p
}

// get reads root through `bt block get` into a file and returns its bytes.
func (n *node) get(p putJSON, extra ...string) ([]byte, result) {
	n.t.Helper()
	out := filepath.Join(n.t.TempDir(), "out")
	r := n.run(append([]string{"block", "get", p.Root, "--key", p.Key, out}, extra...)...)
	if r.code != 0 {
		return nil, r
	}
	b, err := os.ReadFile(out)
	if err != nil {
		n.t.Fatal(err)
	}
	return b, r
}

func (n *node) stat() statJSON {
	n.t.Helper()
	var st statJSON
	if err := json.Unmarshal([]byte(n.ok("repo", "stat", "--json").stdout), &st); err != nil {
		n.t.Fatal(err)
	}
	return st
}

// events decodes JSON lines and returns them with the final "done" one.
func events(t testing.TB, r result) ([]eventJSON, eventJSON) {
	t.Helper()
	var evs []eventJSON
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var ev eventJSON
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("bad JSON line %q in %s", line, r)
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 || evs[len(evs)-1].Event != "done" {
		t.Fatalf("no done event in %s", r)
	}
	return evs, evs[len(evs)-1]
}

// storeContains reports whether any file under dir contains marker.
func storeContains(t testing.TB, dir string, marker []byte) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		found = bytes.Contains(b, marker)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestBlockPutGet: a file put on n0 reads back on n1 (fetched from n0 and
// verified); the store holds no plaintext; a wrong key is refused; stat,
// verify and gc report what a user expects.
func TestBlockPutGet(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	const marker = "PLAINTEXT-MARKER-a6f1c0de"
	file, data := randomFile(t, 1, 3<<20+12345, marker)
	p := a.put(file)
	if p.Size != uint64(len(data)) || p.Blocks != 13 {
		t.Fatalf("put = %+v, want size %d in 13 blocks", p, len(data))
	}
	got, r := b.get(p, "--from", c.path(0))
	if r.code != 0 || !bytes.Equal(got, data) {
		t.Fatalf("get on n1: %s (got %d bytes, equal %v)", r, len(got), bytes.Equal(got, data))
	}
	// Through stdout too, and a second time from n1's own cache.
	if r := b.ok("block", "get", p.Root, "--key", p.Key); r.stdout != string(data) {
		t.Fatal("bt block get to stdout differs from the file")
	}
	for _, n := range []*node{a, b} {
		if storeContains(t, filepath.Join(n.repo, "blocks"), []byte(marker)) {
			t.Errorf("the block store of %s holds the file's plaintext", n.repo)
		}
	}
	if st := a.stat(); st.Blocks != 14 || st.Pins != 1 || st.PinnedBlocks != 14 || st.Bytes < int64(len(data)) {
		t.Errorf("n0 stat = %+v, want 14 blocks (13 chunks + manifest), all pinned", st)
	}
	if st := b.stat(); st.Blocks != 14 || st.Pins != 0 {
		t.Errorf("n1 stat = %+v, want 14 cached, unpinned blocks", st)
	}
	// A wrong key: the blocks verify, the tags do not.
	wrong := p
	wrong.Key = strings.Repeat("A", len(p.Key))
	if _, r := b.get(wrong); r.code != exitCapable || !strings.Contains(r.stderr, "integrity") {
		t.Fatalf("get with a wrong key: want exit %d and an integrity error, got %s", exitCapable, r)
	}
	// An unknown root fails within its timeout, naming it.
	other := p
	other.Root = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
	if _, r := b.get(other, "--timeout", "3s"); r.code == 0 || !strings.Contains(r.stderr, other.Root) {
		t.Fatalf("get of an unknown root: %s", r)
	}
	evs, done := events(t, a.ok("repo", "verify", "--json"))
	if done.Checked != 14 || len(done.Corrupt) != 0 || len(done.Missing) != 0 || evs[0].Event != "progress" {
		t.Fatalf("verify on n0: %+v", evs)
	}
	// gc keeps n0's pinned blocks and drops n1's cache.
	if _, done := events(t, a.ok("repo", "gc", "--grace", "0", "--json")); done.Deleted != 0 {
		t.Errorf("gc on n0 deleted %d pinned blocks", done.Deleted)
	}
	if _, done := events(t, b.ok("repo", "gc", "--grace", "0", "--json")); done.Deleted != 14 {
		t.Errorf("gc on n1 deleted %d cached blocks, want 14", done.Deleted)
	}
	if st := b.stat(); st.Blocks != 0 || st.Bytes != 0 {
		t.Errorf("n1 after gc: %+v", st)
	}
	b.fails(2, "--key is required", "block", "get", p.Root)
	b.fails(2, "want the 32-byte file key", "block", "get", p.Root, "--key", "short")
}

// TestScrubRepairs: a replica's corrupted block is found by verify and
// fetched again from the other holder by verify --repair.
func TestScrubRepairs(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	waitPeers(t, a, 1)
	file, data := randomFile(t, 2, 1<<20, "scrub")
	p := a.put(file, "--replicas", "2")
	if len(p.Replicas) != 1 || p.Replicas[0] != c.path(1) {
		t.Fatalf("put --replicas 2 = %+v, want a replica on %s", p, c.path(1))
	}
	c.daemons[1].stop()
	// Flip a byte inside the first block of n1's pack file (256 KiB
	// blocks live in packs: docs/blockstore.md).
	packs, err := filepath.Glob(filepath.Join(b.repo, "blocks", "packs", "*.pack"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("no pack file in n1's store (%v)", err)
	}
	f, err := os.OpenFile(packs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := f.ReadAt(one, 4096); err != nil {
		t.Fatal(err)
	}
	one[0] ^= 0x40
	if _, err := f.WriteAt(one, 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c.daemons[1] = b.start()
	r := b.run("repo", "verify", "--json")
	_, found := events(t, r)
	if r.code != 1 || len(found.Corrupt) != 1 || !strings.HasPrefix(found.Corrupt[0], "bafkrei") {
		t.Fatalf("verify of a corrupted store: want exit 1 naming one block, got %s", r)
	}
	eventually(t, 30*time.Second, "verify --repair", func() error {
		r := b.run("repo", "verify", "--repair", "--json")
		if r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		if _, done := events(t, r); len(done.Repaired) != 1 || done.Repaired[0] != found.Corrupt[0] {
			return fmt.Errorf("repaired %v, want %v", done.Repaired, found.Corrupt)
		}
		return nil
	})
	if _, done := events(t, b.ok("repo", "verify", "--json")); len(done.Corrupt)+len(done.Missing) != 0 {
		t.Fatalf("after repair: %+v", done)
	}
	c.daemons[0].stop()
	if got, r := b.get(p); r.code != 0 || !bytes.Equal(got, data) {
		t.Fatalf("the repaired replica does not read back alone: %s", r)
	}
}

// waitPeers waits until n's daemon has at least k verified peers.
func waitPeers(t testing.TB, n *node, k int) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%d verified peers", k), func() error {
		var ps []struct {
			Verified bool `json:"verified"`
		}
		if err := json.Unmarshal([]byte(n.ok("peers", "--json").stdout), &ps); err != nil {
			return err
		}
		v := 0
		for _, p := range ps {
			if p.Verified {
				v++
			}
		}
		if v < k {
			return fmt.Errorf("%d verified peers", v)
		}
		return nil
	})
}

// TestReplicationSurvivesTwoLosses: a file put at factor 3 on a 5-node
// cluster reads back on a node that never held it after two of its three
// holders (the writer among them) are killed.
func TestReplicationSurvivesTwoLosses(t *testing.T) {
	c := newCluster(t, 5)
	waitPeers(t, c.nodes[0], 4)
	file, data := randomFile(t, 3, 2<<20+7, "rf3")
	p := c.nodes[0].put(file, "--replicas", "3")
	if len(p.Replicas) != 2 {
		t.Fatalf("put --replicas 3 = %+v, want 2 replicas", p)
	}
	holders := append([]string{c.path(0)}, p.Replicas...)
	var reader *node
	var killed []string
	for i := range c.nodes {
		switch {
		case !slices.Contains(holders, c.path(i)):
			if reader == nil {
				reader = c.nodes[i]
			}
		case len(killed) < 2:
			c.daemons[i].kill()
			killed = append(killed, c.path(i))
		}
	}
	t.Logf("holders %v; killed %v", holders, killed)
	eventually(t, 60*time.Second, "reading the file after two holders died", func() error {
		got, r := reader.get(p, "--timeout", "20s")
		if r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		if !bytes.Equal(got, data) {
			return fmt.Errorf("read %d bytes that differ from the file", len(got))
		}
		return nil
	})
	// Asking for more copies than there are nodes fails clearly, and the
	// file stays readable where it was written.
	r := reader.run("block", "put", file, "--replicas", "9", "--json")
	if r.code != exitNetwork || !strings.Contains(r.stderr, "replication factor not reached") {
		t.Fatalf("put --replicas 9 on a 3-node remainder: %s", r)
	}
}

// TestCrashDuringWrites kills a daemon with SIGKILL at random points of a
// write workload, 22 times: after each restart every acknowledged file
// reads back intact and verify finds nothing corrupt.
func TestCrashDuringWrites(t *testing.T) {
	n := newNode(t)
	n.env = []string{"BT_PASSPHRASE=pw"}
	n.ok("init", "--name", "crash", "--tpm", "none")
	type acked struct {
		p   putJSON
		sum [32]byte
	}
	var all []acked
	rng := rand.New(rand.NewPCG(42, 7))
	// Files of 1 KiB (inline) to 700 KiB (three file blocks).
	var files []string
	var sums [][32]byte
	for i := range 8 {
		f, data := randomFile(t, uint64(100+i), 1<<10+rng.IntN(700<<10), "crash")
		files, sums = append(files, f), append(sums, sha256.Sum256(data))
	}
	const iterations = 22
	for it := range iterations {
		d := n.start()
		var (
			mu   sync.Mutex
			got  []acked
			stop = make(chan struct{})
			wg   sync.WaitGroup
		)
		for w := range 2 {
			wg.Go(func() {
				for j := 0; ; j++ {
					select {
					case <-stop:
						return
					default:
					}
					k := (it*7 + w*3 + j) % len(files)
					r := n.run("block", "put", files[k], "--json")
					if r.code != 0 {
						return // the daemon died under us
					}
					var p putJSON
					if json.Unmarshal([]byte(r.stdout), &p) == nil && p.Root != "" {
						mu.Lock()
						got = append(got, acked{p, sums[k]})
						mu.Unlock()
					}
				}
			})
		}
		time.Sleep(time.Duration(100+rng.IntN(900)) * time.Millisecond)
		d.kill()
		close(stop)
		wg.Wait()
		all = append(all, got...)
		d = n.start()
		// Every acknowledged file of this round (and a sample of older
		// ones) reads back.
		check := got
		for range min(3, len(all)) {
			check = append(check, all[rng.IntN(len(all))])
		}
		for _, a := range check {
			b, r := n.get(a.p)
			if r.code != 0 || sha256.Sum256(b) != a.sum {
				t.Fatalf("iteration %d: acknowledged file %s does not read back after kill -9: %s", it, a.p.Root, r)
			}
		}
		r := n.run("repo", "verify", "--json")
		if _, done := events(t, r); r.code != 0 || len(done.Corrupt) != 0 || len(done.Missing) != 0 {
			t.Fatalf("iteration %d: verify after kill -9: %s", it, r)
		}
		d.stop()
	}
	if len(all) < iterations {
		t.Fatalf("only %d puts were acknowledged in %d iterations: the workload did not run", len(all), iterations)
	}
	t.Logf("%d acknowledged puts over %d kill -9 iterations", len(all), iterations)
}

// TestLyingPeers: three daemons that lie about blocks (random bytes,
// another block's bytes, an oversized answer) and one that never answers
// are asked first; the file still arrives, verified, from the honest
// holder within 10 s.
func TestLyingPeers(t *testing.T) {
	c := newCluster(t, 1)
	honest := c.nodes[0]
	file, data := randomFile(t, 4, 1<<20+99, "liars")
	p := honest.put(file)
	var from []string
	for _, lie := range []string{"wrong", "other", "oversize", "silent"} {
		tok := c.invite("liar-" + lie)
		n := newNode(t)
		n.ok("join", tok, "--tpm", "none")
		// Liars hold blocks of their own, so "other" has some to send.
		f, _ := randomFile(t, 5, 300<<10, "liar")
		d := n.start()
		n.put(f)
		d.stop()
		n.bin, n.env = btLiarBin, append(n.env, "BT_LIE="+lie)
		c.add(n, "liar-"+lie, n.start())
		from = append(from, "--from", c.path(len(c.nodes)-1))
	}
	reader := c.join("reader")
	from = append(from, "--from", c.path(0))
	start := time.Now()
	got, r := reader.get(p, append(from, "--timeout", "10s")...)
	took := time.Since(start)
	if r.code != 0 || !bytes.Equal(got, data) {
		t.Fatalf("get past three liars and a silent peer: %s", r)
	}
	if took > 10*time.Second {
		t.Fatalf("the file arrived after %v, want within 10s", took)
	}
	t.Logf("file of %d bytes arrived past the liars in %v", len(data), took.Round(time.Millisecond))
	if _, done := events(t, reader.ok("repo", "verify", "--json")); len(done.Corrupt) != 0 {
		t.Fatalf("the reader stored a lie: %+v", done)
	}
}
