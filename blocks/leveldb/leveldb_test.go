package leveldb

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"blocktree.dev/bt/blocks"
)

func newBlock(t testing.TB, n int) blocks.Block {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	return mkBlock(t, data)
}

func mkBlock(t testing.TB, data []byte) blocks.Block {
	t.Helper()
	c, err := cid.V1Builder{Codec: cid.Raw, MhType: multihash.SHA2_256}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return blocks.Block{CID: c, Data: data}
}

func newTestStore(t testing.TB, dir string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var sizes = []int{0, 1, 1024, DefaultInlineThreshold, DefaultInlineThreshold + 1, 256 << 10, blocks.MaxBlockSize}

func TestMethods(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, t.TempDir())
	var all []blocks.Block
	var total int64
	for _, n := range sizes {
		t.Run(fmt.Sprintf("size=%d", n), func(t *testing.T) {
			b := newBlock(t, n)
			if ok, err := s.Has(ctx, b.CID); err != nil || ok {
				t.Fatalf("Has before put = %v, %v", ok, err)
			}
			if _, err := s.Get(ctx, b.CID); !errors.Is(err, blocks.ErrNotFound) {
				t.Fatalf("Get before put: %v", err)
			}
			if err := s.Put(ctx, b); err != nil {
				t.Fatal(err)
			}
			if err := s.Put(ctx, b); err != nil { // no-op
				t.Fatal(err)
			}
			got, err := s.Get(ctx, b.CID)
			if err != nil || string(got) != string(b.Data) {
				t.Fatalf("Get = %d bytes, %v", len(got), err)
			}
			if ok, err := s.Has(ctx, b.CID); err != nil || !ok {
				t.Fatalf("Has = %v, %v", ok, err)
			}
			all = append(all, b)
			total += int64(n)
		})
	}
	if n, by, err := s.Size(ctx); err != nil || n != int64(len(all)) || by != total {
		t.Fatalf("Size = %d, %d, %v; want %d, %d", n, by, err, len(all), total)
	}
	seen := map[cid.Cid]bool{}
	for c, err := range s.All(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		seen[c] = true
	}
	if len(seen) != len(all) {
		t.Fatalf("All saw %d, want %d", len(seen), len(all))
	}
	// Early break.
	for range s.All(ctx) {
		break
	}
	// Bad puts.
	b := newBlock(t, 100)
	bad := blocks.Block{CID: b.CID, Data: append([]byte{1}, b.Data...)}
	if err := s.Put(ctx, bad); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("Put mismatched = %v", err)
	}
	big := newBlock(t, blocks.MaxBlockSize+1)
	if err := s.Put(ctx, big); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("Put too large = %v", err)
	}
	// Delete.
	for _, b := range all {
		if err := s.Delete(ctx, b.CID); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, b.CID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, b.CID); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("Get after delete: %v", err)
		}
	}
	if n, by, err := s.Size(ctx); err != nil || n != 0 || by != 0 {
		t.Fatalf("Size after delete = %d, %d, %v", n, by, err)
	}
	assertNoFiles(t, s.dir)
	// Close.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, b); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("Put after close = %v", err)
	}
	if _, err := s.Get(ctx, b.CID); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("Get after close = %v", err)
	}
	if _, err := s.Has(ctx, b.CID); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("Has after close = %v", err)
	}
	if err := s.Delete(ctx, b.CID); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("Delete after close = %v", err)
	}
	if _, _, err := s.Size(ctx); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("Size after close = %v", err)
	}
	for _, err := range s.All(ctx) {
		if !errors.Is(err, blocks.ErrClosed) {
			t.Fatalf("All after close = %v", err)
		}
	}
}

func assertNoFiles(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(filepath.Join(dir, dirBlobs), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("leftover block file %s", p)
		}
		return nil
	})
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []blocks.Block
	for _, n := range sizes {
		b := newBlock(t, n)
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
		want = append(want, b)
	}
	if err := s.Delete(ctx, want[0].CID); err != nil {
		t.Fatal(err)
	}
	want = want[1:]
	_, wantBytes, _ := s.Size(ctx)
	s.Close()
	// Leftovers of a crashed Put: a temp file and an orphan block file.
	os.WriteFile(filepath.Join(dir, dirTmp, "put-1"), []byte("x"), 0o600)
	orphan := newBlock(t, 200<<10)
	s2 := &Store{dir: dir}
	os.MkdirAll(filepath.Dir(s2.blobPath(orphan.CID)), 0o700)
	os.WriteFile(s2.blobPath(orphan.CID), orphan.Data, 0o600)

	s = newTestStore(t, dir)
	for _, b := range want {
		got, err := s.Get(ctx, b.CID)
		if err != nil || string(got) != string(b.Data) {
			t.Fatalf("Get after reopen: %v", err)
		}
	}
	if n, by, err := s.Size(ctx); err != nil || n != int64(len(want)) || by != wantBytes {
		t.Fatalf("Size after reopen = %d, %d, %v", n, by, err)
	}
	if _, err := os.Stat(s.blobPath(orphan.CID)); !os.IsNotExist(err) {
		t.Fatalf("orphan file survived Open: %v", err)
	}
	if ok, _ := s.Has(ctx, orphan.CID); ok {
		t.Fatal("orphan visible")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, dirTmp)); len(ents) != 0 {
		t.Fatalf("tmp not cleaned: %v", ents)
	}
}

// packRecord returns the pack record of c.
func packRecord(t testing.TB, s *Store, c cid.Cid) record {
	t.Helper()
	rec, err := s.db.Get(blockKey(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseRecord(rec)
	if err != nil || r.kind != recordPack {
		t.Fatalf("record of %s = %+v, %v; want a pack record", c, r, err)
	}
	return r
}

func TestCorruption(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStore(t, dir)
	b := newBlock(t, 256<<10)
	if err := s.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	r := packRecord(t, s, b.CID)
	p := s.packPath(r.pack)
	pack, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(pack)
	flipped[r.off+12345] ^= 0x01
	os.WriteFile(p, flipped, 0o600)
	if _, err := s.Get(ctx, b.CID); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("Get flipped = %v", err)
	}
	os.WriteFile(p, pack[:r.off+100], 0o600)
	if _, err := s.Get(ctx, b.CID); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("Get truncated = %v", err)
	}
	s.packs.drop(r.pack)
	os.Rename(p, p+".away")
	if _, err := s.Get(ctx, b.CID); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("Get missing pack = %v", err)
	}
	os.Rename(p+".away", p)
	os.WriteFile(p, pack, 0o600)
	// An inline record whose bytes rotted.
	small := newBlock(t, 1000)
	rec := []byte{recordV1, recordInline}
	rec = append(rec, 0xe8, 0x07) // uvarint 1000
	rot := append([]byte(nil), small.Data...)
	rot[0] ^= 0xff
	if err := s.db.Put(blockKey(small.CID), append(rec, rot...), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, small.CID); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("Get rotted inline = %v", err)
	}
	// A file record (format 2) whose file is damaged or missing.
	fb := newBlock(t, 100<<10)
	s2 := &Store{dir: dir}
	os.MkdirAll(filepath.Dir(s2.blobPath(fb.CID)), 0o700)
	bad := bytes.Clone(fb.Data)
	bad[7] ^= 1
	os.WriteFile(s2.blobPath(fb.CID), bad, 0o600)
	if err := s.db.Put(blockKey(fb.CID), appendRecord(nil, record{kind: recordFile, size: uint64(len(fb.Data))}), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, fb.CID); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("Get flipped file = %v", err)
	}
	os.Remove(s2.blobPath(fb.CID))
	if _, err := s.Get(ctx, fb.CID); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("Get missing file = %v", err)
	}
	// The store can be repaired by deleting and putting again.
	if err := s.Delete(ctx, b.CID); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, b.CID); err != nil {
		t.Fatal(err)
	}
}

func TestQuota(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, t.TempDir(), WithQuota(300<<10))
	a, b := newBlock(t, 200<<10), newBlock(t, 200<<10)
	if err := s.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, b); !errors.Is(err, blocks.ErrNoSpace) {
		t.Fatalf("Put over quota = %v", err)
	}
	if err := s.Delete(ctx, a.CID); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
}

func TestVersionRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.db.Put(keyVersion, []byte{99}, nil)
	s.Close()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("Open unknown version = %v", err)
	}
}

// TestHelperWriter is the subprocess of TestCrash: it puts blocks (every
// fifth time with PutMany, two more blocks with it), pins them (three
// pins, each replaced by the newest block and the one before), unpins,
// deletes and runs GC (grace 0, which compacts the 1 MiB packs), printing
// each operation before it starts (deletes, pins, GC) or once acknowledged
// (puts, pins), until it is killed.
func TestHelperWriter(t *testing.T) {
	dir := os.Getenv("BT_LEVELDB_CRASH_DIR")
	if dir == "" {
		t.Skip("subprocess helper for TestCrash")
	}
	s, err := Open(dir, withPackSize(1<<20))
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	ctx := context.Background()
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex // guards out: the writers below print too
	say := func(format string, args ...any) {
		outMu.Lock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
		outMu.Unlock()
	}
	// Two more writers put at the same time, so that Puts and PutManys
	// share group commits (inline and pack blocks mixed). gcMu keeps
	// them out while GC runs: the test takes every unpinned block as
	// collectable from the "GC" line on, so a block acknowledged after
	// that line must not be older than GC's cutoff.
	var gcMu sync.RWMutex
	for w := range 2 {
		go func() {
			for i := 0; ; i++ {
				batch := []blocks.Block{newBlock(t, []int{1 << 10, 60<<10 + w, 3 << 10}[i%3])}
				if i%4 == 3 {
					batch = append(batch, newBlock(t, 30<<10+i), newBlock(t, 100+i))
				}
				gcMu.RLock()
				var err error
				if len(batch) == 1 {
					err = s.Put(ctx, batch[0])
				} else {
					err = s.PutMany(ctx, batch)
				}
				if err == nil {
					for _, b := range batch {
						say("%s %d", b.CID, len(b.Data))
					}
				}
				gcMu.RUnlock()
				if err != nil {
					say("ERR %v", err)
					os.Exit(2)
				}
			}
		}()
	}
	check := func(err error) {
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
	}
	prev := map[string]cid.Cid{} // the newest block of each pin
	for i := 0; ; i++ {
		n := 1 << 10
		if i%3 == 0 {
			n = 100<<10 + i
		}
		b := newBlock(t, n)
		batch := []blocks.Block{b}
		if i%5 == 4 {
			batch = append(batch, newBlock(t, 200<<10+i), newBlock(t, 2<<10))
			err = s.PutMany(ctx, batch)
		} else {
			err = s.Put(ctx, b)
		}
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		for _, b := range batch {
			say("%s %d", b.CID, len(b.Data))
		}
		if i%7 == 6 { // also exercise Delete mid-run
			say("DEL %s", b.CID)
			if err := s.Delete(ctx, b.CID); err != nil {
				fmt.Println("ERR", err)
				os.Exit(2)
			}
			continue
		}
		name := fmt.Sprintf("p%d", i%3)
		set := []cid.Cid{b.CID}
		if p, ok := prev[name]; ok {
			set = append(set, p)
		}
		strs := make([]string, len(set))
		for j, c := range set {
			strs[j] = c.String()
		}
		say("PINNING %s %s", name, strings.Join(strs, " "))
		check(s.Pin(ctx, name, set))
		say("PINNED %s", name)
		prev[name] = b.CID
		if i%11 == 10 {
			say("UNPINNING %s", name)
			check(s.Unpin(ctx, name))
			say("UNPINNED %s", name)
			delete(prev, name)
		}
		if i%13 == 12 {
			gcMu.Lock()
			say("GC")
			_, err := s.GC(ctx, 0, nil)
			gcMu.Unlock()
			check(err)
		}
	}
}

// pinState is what the crash test knows of one pin: the acknowledged set
// (nil: no pin) and, while a Pin or Unpin is in flight, the set it makes
// (nil for Unpin).
type pinState struct {
	acked, pending map[cid.Cid]bool
	inFlight       bool
}

func cidSet(strs []string) map[cid.Cid]bool {
	m := map[cid.Cid]bool{}
	for _, s := range strs {
		c, _ := cid.Decode(s)
		m[c] = true
	}
	return m
}

func sameSet(a, b map[cid.Cid]bool) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for c := range a {
		if !b[c] {
			return false
		}
	}
	return true
}

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	ctx := context.Background()
	dir := t.TempDir()
	acked := map[cid.Cid]int{}
	pins := map[string]*pinState{}
	pinOf := func(name string) *pinState {
		if pins[name] == nil {
			pins[name] = &pinState{}
		}
		return pins[name]
	}
	ackedPinned := func(c cid.Cid) bool {
		for _, p := range pins {
			if p.acked[c] {
				return true
			}
		}
		return false
	}
	pinOps, gcs := 0, 0
	deadline := time.Now().Add(20 * time.Second)
	iters := 0
	for ; iters < 25 && time.Now().Before(deadline); iters++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$")
		cmd.Env = append(os.Environ(), "BT_LEVELDB_CRASH_DIR="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		time.AfterFunc(time.Duration(100+mrand.IntN(300))*time.Millisecond, func() {
			cmd.Process.Signal(syscall.SIGKILL)
		})
		deleting := map[cid.Cid]bool{}
		for l := range lines {
			f := strings.Fields(l)
			switch {
			case len(f) >= 2 && f[0] == "PINNING":
				p := pinOf(f[1])
				p.pending, p.inFlight = cidSet(f[2:]), true
			case len(f) == 2 && f[0] == "UNPINNING":
				p := pinOf(f[1])
				p.pending, p.inFlight = nil, true
			case len(f) == 2 && (f[0] == "PINNED" || f[0] == "UNPINNED"):
				p := pinOf(f[1])
				p.acked, p.pending, p.inFlight = p.pending, nil, false
				pinOps++
			case len(f) == 1 && f[0] == "GC":
				// Unpinned blocks may go from now on.
				for c := range acked {
					if !ackedPinned(c) {
						delete(acked, c)
					}
				}
				gcs++
			case len(f) == 2 && f[0] == "DEL":
				c, _ := cid.Decode(f[1])
				deleting[c] = true
				delete(acked, c)
			case len(f) == 2 && f[0] != "ERR":
				c, err := cid.Decode(f[0])
				if err != nil {
					t.Fatalf("bad line %q", l)
				}
				n, _ := strconv.Atoi(f[1])
				acked[c] = n
			case strings.HasPrefix(l, "ERR"):
				t.Fatalf("helper: %s", l)
			}
		}
		cmd.Wait()

		s, err := Open(dir, withPackSize(1<<20))
		if err != nil {
			t.Fatalf("iteration %d: reopen: %v", iters, err)
		}
		for c, n := range acked {
			got, err := s.Get(ctx, c)
			if err != nil || len(got) != n {
				t.Fatalf("iteration %d: acknowledged %s: %d bytes, %v", iters, c, len(got), err)
			}
		}
		var count, bytes int64
		for c, err := range s.All(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			count++
			// Every visible block is whole and verifies, acknowledged
			// or not (an in-flight put or delete).
			got, err := s.Get(ctx, c)
			if err != nil {
				t.Fatalf("iteration %d: visible %s broken: %v", iters, c, err)
			}
			bytes += int64(len(got))
			if _, ok := acked[c]; ok {
				continue
			}
			acked[c] = -1 // tolerate; it is whole
		}
		for c, n := range acked {
			if n == -1 {
				got, _ := s.Get(ctx, c)
				acked[c] = len(got)
			}
		}
		if n, by, err := s.Size(ctx); err != nil || n != count || by != bytes {
			t.Fatalf("iteration %d: Size = %d, %d, %v; All saw %d, %d bytes", iters, n, by, err, count, bytes)
		}
		checkPacks(t, dir)
		// Pins: each is its acknowledged state, or the one in flight.
		seen := map[string]bool{}
		for pi, err := range s.Pins(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			seen[pi.Name] = true
			if pins[pi.Name] == nil {
				t.Fatalf("iteration %d: unknown pin %q", iters, pi.Name)
			}
		}
		distinct := map[cid.Cid]bool{}
		for name, p := range pins {
			var got map[cid.Cid]bool
			if seen[name] {
				got = map[cid.Cid]bool{}
				for c, err := range s.Pinned(ctx, name) {
					if err != nil {
						t.Fatal(err)
					}
					got[c] = true
				}
			}
			if !sameSet(got, p.acked) && !(p.inFlight && sameSet(got, p.pending)) {
				t.Fatalf("iteration %d: pin %q = %v, acknowledged %v (in flight %v: %v)", iters, name, got, p.acked, p.inFlight, p.pending)
			}
			p.acked, p.pending, p.inFlight = got, nil, false
			for c := range got {
				distinct[c] = true
				// Every pinned block was put (acknowledged) before its
				// Pin started and is never deleted while pinned.
				if _, err := s.Get(ctx, c); err != nil {
					t.Fatalf("iteration %d: pinned block %s of %q: %v", iters, c, name, err)
				}
			}
		}
		if st, err := s.Stat(ctx); err != nil || st.Pins != int64(len(seen)) || st.PinnedBlocks != int64(len(distinct)) || st.Blocks != count {
			t.Fatalf("iteration %d: Stat = %+v, %v; want %d pins, %d pinned, %d blocks", iters, st, err, len(seen), len(distinct), count)
		}
		s.Close()
	}
	t.Logf("%d crash iterations, %d blocks acknowledged and verified, %d pin operations, %d GCs", iters, len(acked), pinOps, gcs)
	if iters < 20 {
		t.Fatalf("only %d iterations in time", iters)
	}
}

func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, t.TempDir())
	const workers, each = 4, 20
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			var err error
			for i := range each {
				b := newBlock(t, []int{100, 40 << 10}[i%2]+w)
				if err = s.Put(ctx, b); err != nil {
					break
				}
				if _, err = s.Get(ctx, b.CID); err != nil {
					break
				}
				if i%3 == 0 {
					if err = s.Delete(ctx, b.CID); err != nil {
						break
					}
				}
				for range s.All(ctx) {
				}
			}
			errs <- err
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	n, _, err := s.Size(ctx)
	want := int64(workers * (each - (each+2)/3))
	if err != nil || n != want {
		t.Fatalf("Size = %d, %v; want %d", n, err, want)
	}
}
