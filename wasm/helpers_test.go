package wasm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// The test modules, built on first use from testdata/<name> with
// GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared (not in TestMain,
// so that fuzz workers do not build them).
var guests = []string{"echo", "writer", "prober", "crasher", "memhog", "slow"}

var (
	guestOnce   sync.Once
	guestDir    string
	guestErr    error
	moduleBytes = map[string][]byte{}
)

// module returns the built test module name.
func module(t testing.TB, name string) []byte {
	t.Helper()
	guestOnce.Do(func() {
		if guestDir, guestErr = os.MkdirTemp("", "wasm-guests"); guestErr == nil {
			guestErr = buildGuests(guestDir)
		}
	})
	if guestErr != nil {
		t.Fatal(guestErr)
	}
	return moduleBytes[name]
}

func TestMain(m *testing.M) {
	code := m.Run()
	if guestDir != "" {
		os.RemoveAll(guestDir)
	}
	os.Exit(code)
}

func buildGuests(dir string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(guests))
	for i, g := range guests {
		wg.Go(func() {
			out := filepath.Join(dir, g+".wasm")
			cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "./testdata/"+g)
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("build guest %s: %v\n%s", g, err, b)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	for _, g := range guests {
		b, err := os.ReadFile(filepath.Join(dir, g+".wasm"))
		if err != nil {
			return err
		}
		moduleBytes[g] = b
	}
	return nil
}

// memFiles is an in-memory Files for tests of the layer above the file
// system; the cross-node test uses the real fsys client.
type memFiles struct {
	mu    sync.Mutex
	files map[paths.Path][]byte // guarded by mu
}

func newMemFiles() *memFiles { return &memFiles{files: make(map[paths.Path][]byte)} }

func (f *memFiles) ReadFile(ctx context.Context, p paths.Path) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.files[p]
	if !ok {
		return nil, fmt.Errorf("read %s: %w", p, fsys.ErrNotExist)
	}
	return append([]byte(nil), b...), nil
}

func (f *memFiles) WriteFile(ctx context.Context, p paths.Path, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[p] = append([]byte(nil), data...)
	return nil
}

// signer is a principal with a writecap from the domain.
type signer struct {
	key *softkey.Key
	id  paths.ID
	wc  *caps.Writecap
}

// newSigner makes a principal that may write under prefix.
func newSigner(t testing.TB, d *nettest.Domain, prefix paths.Path) *signer {
	t.Helper()
	k := nettest.NewKey(t)
	id := nettest.PrincipalID(t, k.PublicKey())
	return &signer{key: k, id: id, wc: d.GrantDay(t, id, prefix)}
}

func (s *signer) sign(t testing.TB, m Manifest) *SignedManifest {
	t.Helper()
	sm, err := Sign(context.Background(), m, s.key, s.wc)
	if err != nil {
		t.Fatal(err)
	}
	return sm
}

// local is a runtime on a local-only actors runtime with in-memory files.
type local struct {
	d     *nettest.Domain
	node  paths.Path
	acts  *actors.Runtime
	files *memFiles
	rt    *Runtime
	admin *signer // may write anywhere in the domain
}

func newLocal(t testing.TB, opts ...func(*Config)) *local {
	t.Helper()
	l := &local{d: nettest.NewDomain(t), files: newMemFiles()}
	l.node = l.d.Path(t, "n")
	acts, err := actors.New(l.node, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acts.Close() })
	l.acts = acts
	cfg := Config{Actors: acts, Files: l.files, Log: nettest.Logger()}
	for _, o := range opts {
		o(&cfg)
	}
	rt, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	l.rt = rt
	l.admin = newSigner(t, l.d, l.d.Path(t))
	return l
}

// module stores the named test module at /<root>/mods/<name>.wasm.
func (l *local) module(t testing.TB, name string) paths.Path {
	t.Helper()
	p := l.d.Path(t, "mods", name+".wasm")
	l.files.WriteFile(context.Background(), p, module(t, name))
	return p
}

// start signs m with the admin and starts it, waiting until it runs.
func (l *local) start(t testing.TB, m Manifest) paths.Path {
	t.Helper()
	ctx := nettest.Context(t, 60*time.Second)
	if err := l.rt.Start(ctx, l.admin.sign(t, m)); err != nil {
		t.Fatal(err)
	}
	if err := l.rt.WaitRunning(ctx, m.Name); err != nil {
		t.Fatal(err)
	}
	return join(t, l.node, m.Name)
}

func join(t testing.TB, p paths.Path, comps ...string) paths.Path {
	t.Helper()
	q, err := p.Join(comps...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func call(t testing.TB, r *actors.Runtime, to paths.Path, payload string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := r.Call(ctx, to, []byte(payload))
	if err != nil {
		t.Fatalf("call %s %q: %v", to, payload, err)
	}
	b, ok := v.([]byte)
	if !ok {
		t.Fatalf("call %s: reply %T, want []byte", to, v)
	}
	return string(b)
}
