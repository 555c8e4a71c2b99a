package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// File-system tests: real `bt daemon` processes on loopback. n0 created
// the domain, so it hosts the root volume /<root> and grants every
// member a readcap on it; n1 joined and writes under its own node
// directory /<root>/n1 (its writecap covers only that).

// fsCluster starts a two-node domain and waits until n1 can read the
// root volume (it found the host and got its readcap).
func fsCluster(t testing.TB) (*cluster, string) {
	t.Helper()
	c := newCluster(t, 2)
	root := "/" + c.nodes[0].id().Root
	// Wait for n0's grant first, so the tests start from a domain where n1
	// already reads (a client without the key asks again every 2 s).
	eventually(t, 60*time.Second, "n0 grants n1 read", func() error {
		b, _ := os.ReadFile(c.daemons[0].logs)
		if !strings.Contains(string(b), "granted read on the root volume") {
			return fmt.Errorf("no grant yet:\n%s", c.daemons[0].tail())
		}
		return nil
	})
	eventually(t, 60*time.Second, "n1 lists the root volume", func() error {
		r := c.nodes[1].run("ls", root)
		if r.code != 0 {
			return fmt.Errorf("%s\nn0's log:\n%s", r, c.daemons[0].tail())
		}
		return nil
	})
	return c, root
}

func lsJSON(t *testing.T, n *node, args ...string) fsListing {
	t.Helper()
	r := n.ok(append([]string{"ls", "--json"}, args...)...)
	var l fsListing
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, r)
	}
	return l
}

type fsListing struct {
	Entry   fsEntry   `json:"entry"`
	Entries []fsEntry `json:"entries"`
}

type fsEntry struct {
	Path    string `json:"path"`
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Size    uint64 `json:"size"`
	Version uint64 `json:"version"`
}

func names(l fsListing) string {
	var ns []string
	for _, e := range l.Entries {
		ns = append(ns, e.Name)
	}
	return strings.Join(ns, ",")
}

func TestFSCommands(t *testing.T) {
	c, _ := fsCluster(t)
	n0, n1 := c.nodes[0], c.nodes[1]
	home := c.path(1) // /<root>/n1

	// A tree, put with -r by n1, read back with -r by n0 and n1.
	src := t.TempDir()
	big, data := randomFile(t, 7, 3<<20, "FSMARKER-TREE-7f3a")
	for name, content := range map[string]string{"a.txt": "alpha\n", "sub/b.txt": "beta\n", "sub/deeper/c.txt": "gamma\n"} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(big, filepath.Join(src, "sub", "big.bin")); err != nil {
		t.Fatal(err)
	}
	tree := home + "/tree"
	r := n1.ok("put", "-r", "--json", src, tree)
	if !strings.Contains(r.stdout, `"event":"done"`) {
		t.Fatalf("put --json printed no done event\n%s", r)
	}
	for i, n := range []*node{n1, n0} {
		dst := filepath.Join(t.TempDir(), fmt.Sprintf("copy%d", i))
		n.ok("get", "-r", tree, dst)
		got, err := os.ReadFile(filepath.Join(dst, "sub", "big.bin"))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("node %d: big.bin differs after get -r (%v)", i, err)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, "sub", "deeper", "c.txt")); string(b) != "gamma\n" {
			t.Fatalf("node %d: c.txt = %q", i, b)
		}
	}
	if out := n0.ok("cat", tree+"/a.txt").stdout; out != "alpha\n" {
		t.Fatalf("cat: %q", out)
	}

	// ls -l and --json.
	l := lsJSON(t, n0, tree+"/sub")
	if names(l) != "b.txt,big.bin,deeper" || l.Entry.Kind != "dir" {
		t.Fatalf("ls --json: %+v", l)
	}
	if r := n1.ok("ls", "-l", tree+"/sub"); !strings.Contains(r.stdout, "-rw-r--r--") || !strings.Contains(r.stdout, "deeper/") {
		t.Fatalf("ls -l:\n%s", r)
	}

	// mkdir -p, mv, rm -r.
	n1.ok("mkdir", "-p", home+"/x/y/z")
	n1.ok("mkdir", "-p", home+"/x/y/z") // exists: no error
	n1.fails(1, "parent", "mkdir", home+"/nope/a")
	n1.ok("mv", tree+"/a.txt", home+"/x/y/z")
	if out := n1.ok("cat", home+"/x/y/z/a.txt").stdout; out != "alpha\n" {
		t.Fatalf("after mv: %q", out)
	}
	n1.fails(1, "no such file", "cat", tree+"/a.txt")
	n1.fails(1, "not empty", "rm", tree+"/sub")
	n1.ok("rm", "-r", tree+"/sub")
	if l := lsJSON(t, n1, tree); len(l.Entries) != 0 {
		t.Fatalf("after rm -r: %s", names(l))
	}

	// log and ls --at show old versions.
	f := home + "/notes.txt"
	n1.ok("put", writeFile(t, "v1", "version one\n"), f)
	v1 := lsJSON(t, n1, f).Entry.Version
	n1.ok("put", writeFile(t, "v2", "version two, longer\n"), f)
	n1.ok("rm", home+"/x", "-r")
	var log []struct {
		Version uint64 `json:"version"`
		Op      string `json:"op"`
	}
	if err := json.Unmarshal([]byte(n1.ok("log", "--json", f).stdout), &log); err != nil || len(log) < 2 {
		t.Fatalf("log --json: %v %+v", err, log)
	}
	if log[0].Version <= log[len(log)-1].Version {
		t.Fatalf("log is not newest first: %+v", log)
	}
	old := lsJSON(t, n1, "--at", fmt.Sprint(v1), home)
	if !slices.Contains(strings.Split(names(old), ","), "x") || !strings.Contains(names(old), "notes.txt") {
		t.Fatalf("ls --at %d: %s", v1, names(old))
	}
	for _, e := range old.Entries {
		if e.Name == "notes.txt" && e.Size != uint64(len("version one\n")) {
			t.Fatalf("notes.txt at v%d has size %d", v1, e.Size)
		}
	}
	if now := lsJSON(t, n1, home); slices.Contains(strings.Split(names(now), ","), "x") {
		t.Fatalf("x still listed: %s", names(now))
	}

	// Bad input.
	n1.fails(2, "blocktree path", "ls", "relative/path")
	n1.fails(2, "read or write", "grant", "admin", "x", home)
}

// TestFSWriteNeedsWritecap: n1's writecap covers /<root>/n1 only.
func TestFSWriteNeedsWritecap(t *testing.T) {
	c, root := fsCluster(t)
	c.nodes[1].fails(5, "permission denied", "put", writeFile(t, "f", "nope\n"), root+"/not-mine.txt")
	c.nodes[1].fails(5, "permission denied", "mkdir", root+"/dir")
	// n0 holds a writecap for the whole domain.
	c.nodes[0].ok("put", writeFile(t, "f", "mine\n"), root+"/mine.txt")
}

// TestFSReadNeedsReadcap: a node of another domain, sharing the DHT, finds
// the volume but cannot read it.
func TestFSReadNeedsReadcap(t *testing.T) {
	c, root := fsCluster(t)
	c.nodes[0].ok("put", writeFile(t, "s", "secret\n"), root+"/secret.txt")
	other := newNode(t)
	other.env = []string{"BT_PASSPHRASE=other"}
	other.ok("init", "--name", "stranger", "--tpm", "none")
	other.start("--bootstrap", c.daemons[0].ready.Addrs[0])
	r := other.run("cat", root+"/secret.txt")
	if r.code == 0 || strings.Contains(r.stdout, "secret") {
		t.Fatalf("a node without a readcap read the file\n%s", r)
	}
	if r.code != 5 && r.code != 7 {
		t.Fatalf("want exit 5 (denied) or 7 (no host it may use)\n%s", r)
	}
}

// TestFSHostHoldsNoPlaintext: the host's repo has no byte of a file's
// content or its name.
func TestFSHostHoldsNoPlaintext(t *testing.T) {
	c, _ := fsCluster(t)
	marker := "FSMARKER-PLAINTEXT-2b9c1e"
	file, _ := randomFile(t, 11, 1<<20, marker)
	name := "NAMEMARKER-d41e.txt"
	c.nodes[1].ok("put", file, c.path(1)+"/"+name)
	c.daemons[0].stop()
	if storeContains(t, c.nodes[0].repo, []byte(marker)) {
		t.Fatal("the host's repo holds the file's plaintext")
	}
	if storeContains(t, c.nodes[0].repo, []byte("NAMEMARKER-d41e")) {
		t.Fatal("the host's repo holds the file's name")
	}
}

// TestFSConcurrentWriters: two nodes writing the same directory at once
// both succeed.
func TestFSConcurrentWriters(t *testing.T) {
	c, root := fsCluster(t)
	shared := c.path(1) + "/shared"
	c.nodes[1].ok("mkdir", shared)
	c.nodes[1].ok("grant", "write", c.path(0), shared) // n0 may write there anyway (root writecap)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i, n := range c.nodes[:2] {
		wg.Go(func() {
			for j := range 5 {
				r := n.run("put", writeFile(t, "w", fmt.Sprintf("node %d file %d\n", i, j)), fmt.Sprintf("%s/n%d-%d.txt", shared, i, j))
				if r.code != 0 {
					errs <- r.String()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if l := lsJSON(t, c.nodes[0], shared); len(l.Entries) != 10 {
		t.Fatalf("%d entries after concurrent writes: %s", len(l.Entries), names(l))
	}
	_ = root
}

// requireFUSE skips without /dev/fuse, unless BT_REQUIRE_REAL=1 (then it
// fails).
func requireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("BT_REQUIRE_REAL") == "1" {
			t.Fatalf("BT_REQUIRE_REAL=1 but /dev/fuse is missing: %v", err)
		}
		t.Skipf("no /dev/fuse: %v", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			if os.Getenv("BT_REQUIRE_REAL") == "1" {
				t.Fatalf("BT_REQUIRE_REAL=1 but no fusermount3: %v", err)
			}
			t.Skipf("no fusermount3: %v", err)
		}
	}
}

// mount mounts n's file system at a fresh directory and returns the
// domain's tree in it.
func mount(t testing.TB, n *node, root string) (dir, tree string) {
	t.Helper()
	dir = t.TempDir()
	r := n.ok("mount", "--json", dir)
	var m struct {
		Dir  string `json:"dir"`
		Root string `json:"root"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m.Dir != dir {
		t.Fatalf("mount --json: %v\n%s", err, r)
	}
	t.Cleanup(func() { _ = exec.Command("fusermount3", "-uz", dir).Run() })
	return dir, filepath.Join(dir, strings.TrimPrefix(root, "/"))
}

func TestFSMounts(t *testing.T) {
	requireFUSE(t)
	c, root := fsCluster(t)
	_, treeA := mount(t, c.nodes[1], root)
	_, treeB := mount(t, c.nodes[0], root)
	rel := strings.TrimPrefix(c.path(1), root+"/")

	// Written through A's mount (n1), read through B's (n0) and with get.
	p := filepath.Join(treeA, rel, "hello.txt")
	if err := os.WriteFile(p, []byte("hello from A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "B reads the file", func() error {
		b, err := os.ReadFile(filepath.Join(treeB, rel, "hello.txt"))
		if err != nil || string(b) != "hello from A\n" {
			return fmt.Errorf("%q, %v", b, err)
		}
		return nil
	})
	if out := c.nodes[0].ok("cat", c.path(1)+"/hello.txt").stdout; out != "hello from A\n" {
		t.Fatalf("bt cat on B: %q", out)
	}
	// A change on A shows on B without remounting.
	if err := os.WriteFile(p, []byte("changed on A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "B sees the change", func() error {
		b, err := os.ReadFile(filepath.Join(treeB, rel, "hello.txt"))
		if err != nil || string(b) != "changed on A\n" {
			return fmt.Errorf("%q, %v", b, err)
		}
		return nil
	})
	c.nodes[1].ok("unmount", filepath.Dir(treeA))
}

// TestFSKillWhileReading: kill -9 of the daemon that serves a mount while
// a reader waits on it: the read fails within 5 s, no process stays in D
// state, and after a restart a new mount shows every fsync'd file intact.
func TestFSKillWhileReading(t *testing.T) {
	requireFUSE(t)
	c, root := fsCluster(t)
	n1 := c.nodes[1]
	_, tree := mount(t, n1, root)
	rel := strings.TrimPrefix(c.path(1), root+"/")
	want := map[string][]byte{}
	for i := range 5 {
		name := filepath.Join(tree, rel, fmt.Sprintf("synced-%d.bin", i))
		_, data := randomFile(t, uint64(100+i), 300<<10, "")
		fh, err := os.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := fh.Sync(); err != nil {
			t.Fatal(err)
		}
		fh.Close()
		want[filepath.Base(name)] = data
	}
	// A reader blocked on the mount: tail -f never finishes on its own.
	reader := exec.Command("tail", "-f", filepath.Join(tree, rel, "synced-0.bin"))
	reader.Stdout = new(bytes.Buffer)
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- reader.Wait() }()
	time.Sleep(500 * time.Millisecond)
	statter := exec.Command("stat", filepath.Join(tree, rel))
	c.daemons[1].kill()
	start := time.Now()
	stErr := make(chan error, 1)
	go func() { stErr <- statter.Run() }()
	select {
	case err := <-stErr:
		if err == nil {
			t.Fatal("stat through a dead daemon's mount succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a call on the dead daemon's mount did not return within 5 s")
	}
	t.Logf("the call failed %v after the kill", time.Since(start))
	_ = reader.Process.Kill()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("the reader is stuck (state %s)", procState(reader.Process.Pid))
	}
	// Restart, remount, check.
	_ = exec.Command("fusermount3", "-uz", filepath.Dir(tree)).Run()
	c.daemons[1] = n1.start()
	_, tree2 := mount(t, n1, root)
	for name, data := range want {
		var got []byte
		eventually(t, 30*time.Second, "read "+name, func() error {
			var err error
			if got, err = os.ReadFile(filepath.Join(tree2, rel, name)); err != nil {
				return fmt.Errorf("%w\nn1's log:\n%s", err, c.daemons[1].tail())
			}
			return nil
		})
		if !bytes.Equal(got, data) {
			t.Fatalf("%s differs after the crash (%d bytes, want %d)", name, len(got), len(data))
		}
	}
}

// procState returns the state letter of a process, "gone" when it has none.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "gone"
	}
	f := strings.Fields(string(b))
	if len(f) > 2 {
		return f[2]
	}
	return "?"
}

var _ = syscall.SIGKILL
