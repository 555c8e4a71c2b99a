package deploy

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/wasm"
)

// memDir is a deployment directory in memory: inode 1 is the directory,
// files get inodes from 2.
type memDir struct {
	mu    sync.Mutex
	dir   paths.Path
	files map[string]*memFile
	next  fsys.Ino
}

type memFile struct {
	ino     fsys.Ino
	version uint64
	data    []byte
}

func (m *memDir) put(name, data string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[name]
	if f == nil {
		m.next++
		f = &memFile{ino: m.next + 1}
		m.files[name] = f
	}
	f.version++
	f.data = []byte(data)
}

func (m *memDir) remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.files, name)
}

func (m *memDir) Walk(ctx context.Context, p paths.Path) (fsys.Attr, error) {
	if p != m.dir {
		return fsys.Attr{}, fsys.ErrNotExist
	}
	return fsys.Attr{Ino: 1, Kind: fsys.KindDir}, nil
}

func (m *memDir) Readdir(ctx context.Context, dir fsys.Ino) ([]fsys.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []fsys.DirEntry
	for name, f := range m.files {
		out = append(out, fsys.DirEntry{Name: name, Ino: f.ino, Kind: fsys.KindFile})
	}
	return out, nil
}

func (m *memDir) byIno(ino fsys.Ino) *memFile {
	for _, f := range m.files {
		if f.ino == ino {
			return f
		}
	}
	return nil
}

func (m *memDir) Getattr(ctx context.Context, ino fsys.Ino) (fsys.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.byIno(ino)
	if f == nil {
		return fsys.Attr{}, fsys.ErrNotExist
	}
	return fsys.Attr{Ino: ino, Kind: fsys.KindFile, Version: f.version, Size: uint64(len(f.data))}, nil
}

func (m *memDir) ReadAt(ctx context.Context, ino fsys.Ino, p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.byIno(ino)
	if f == nil {
		return 0, fsys.ErrNotExist
	}
	if off >= int64(len(f.data)) {
		return 0, nil
	}
	return copy(p, f.data[off:]), nil
}

// fakeRuntime records what it is asked.
type fakeRuntime struct {
	mu  sync.Mutex
	log []string
}

func (r *fakeRuntime) Start(ctx context.Context, sm *wasm.SignedManifest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "start "+sm.Name)
	return nil
}

func (r *fakeRuntime) Stop(ctx context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "stop "+name)
	return nil
}

func (r *fakeRuntime) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.log
	r.log = nil
	return l
}

// TestController drives the controller's Rescan against a directory in
// memory: the driver reads what the reconciler asks, applies its actions
// to the runtime, exposes started instances and undoes that on a stop.
func TestController(t *testing.T) {
	node := mustPath(t, "/laptop")
	dir := mustPath(t, "/laptop/deploy")
	fs := &memDir{dir: dir, files: map[string]*memFile{}}
	rt := &fakeRuntime{}
	var exposed []string
	var emu sync.Mutex
	c, err := New(Config{Node: node, FS: fs, Runtime: rt,
		MakeDir: func(context.Context, paths.Path) error { return nil },
		Expose: func(name string) func() {
			emu.Lock()
			exposed = append(exposed, name)
			emu.Unlock()
			return func() {
				emu.Lock()
				exposed = slices.DeleteFunc(exposed, func(n string) bool { return n == name })
				emu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	c.rec.check = fakeChecks(t)
	if c.Dir() != dir {
		t.Fatalf("Dir %s, want %s", c.Dir(), dir)
	}
	expect := func(want ...string) {
		t.Helper()
		c.Rescan()
		if got := rt.take(); !slices.Equal(got, want) {
			t.Fatalf("runtime asked %v, want %v", got, want)
		}
	}
	fs.put("a.manifest", "echo")
	fs.put(".a.manifest.swp", "garbage")
	expect("start echo")
	expect()
	emu.Lock()
	if !slices.Equal(exposed, []string{"echo"}) {
		t.Fatalf("exposed %v", exposed)
	}
	emu.Unlock()
	fs.put("a.manifest", "echo2")
	expect("stop echo", "start echo2")
	fs.put("b.manifest", "garbage")
	expect()
	st := c.Deployments()
	if len(st) != 2 || st[0].File != "a.manifest" || !st[0].Started || st[1].State != StateRefused {
		t.Fatalf("deployments %+v", st)
	}
	fs.remove("a.manifest")
	expect("stop echo2")
	emu.Lock()
	if len(exposed) != 0 {
		t.Fatalf("still exposed after the stop: %v", exposed)
	}
	emu.Unlock()

	// Serve scans at once and ends with Close; Close is idempotent.
	fs.put("c.manifest", "other")
	served := make(chan error, 1)
	go func() { served <- c.Serve(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := rt.take(); slices.Equal(got, []string{"start other"}) {
			break
		} else if len(got) > 0 || time.Now().After(deadline) {
			t.Fatalf("Serve: runtime asked %v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	c.Close()
}
