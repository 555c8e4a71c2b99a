package wasm

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

func TestEchoLocal(t *testing.T) {
	l := newLocal(t)
	p := l.start(t, Manifest{Name: "echo", Module: l.module(t, "echo")})
	for _, msg := range []string{"hello", "", strings.Repeat("x", 100<<10)} { // the last outgrows the inbox
		if got := call(t, l.acts, p, msg); got != msg {
			t.Fatalf("echo of %d bytes = %d bytes", len(msg), len(got))
		}
	}
	is := l.rt.Instances()
	if len(is) != 1 || is[0].State != StateRunning || is[0].ModuleCID == "" || is[0].Path != p {
		t.Fatalf("instances = %+v", is)
	}
	if _, err := json.Marshal(is); err != nil {
		t.Fatal(err)
	}
	// A message of a type a module cannot take is refused before it is
	// queued, and the module keeps running.
	_, err := l.acts.Call(nettest.Context(t, 10*time.Second), p, 42)
	if !errors.Is(err, actors.ErrProtocol) {
		t.Fatalf("call with an int: %v, want ErrProtocol", err)
	}
	if got := call(t, l.acts, p, "still"); got != "still" {
		t.Fatalf("echo = %q", got)
	}
	// Starting the same name again is refused while it runs; Stop forgets it.
	if err := l.rt.Start(context.Background(), l.admin.sign(t, Manifest{Name: "echo", Module: l.module(t, "echo")})); !errors.Is(err, ErrExists) {
		t.Fatalf("second start: %v, want ErrExists", err)
	}
	if err := l.rt.Stop(nettest.Context(t, 30*time.Second), "echo"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.acts.Call(nettest.Context(t, 10*time.Second), p, []byte("x")); !errors.Is(err, actors.ErrNoActor) {
		t.Fatalf("call after stop: %v, want ErrNoActor", err)
	}
	if len(l.rt.Instances()) != 0 {
		t.Fatalf("instances after stop: %+v", l.rt.Instances())
	}
}

// TestEchoFromAnotherNode runs the echo module on node a and calls it
// from node b over real libp2p on 127.0.0.1.
func TestEchoFromAnotherNode(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := p2pPair(t, d)
	files := newMemFiles()
	mod := d.Path(t, "mods", "echo.wasm")
	files.WriteFile(context.Background(), mod, module(t, "echo"))
	rt, err := New(context.Background(), Config{Actors: a.acts, Files: files, Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	admin := newSigner(t, d, d.Path(t))
	sm := admin.sign(t, Manifest{Name: "echo", Module: mod, Nodes: []paths.Path{a.node.Path()}})
	// b is not in the manifest's nodes.
	rtb, err := New(context.Background(), Config{Actors: b.acts, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	defer rtb.Close()
	if err := rtb.Start(context.Background(), sm); !errors.Is(err, ErrNotThisNode) {
		t.Fatalf("start on b: %v, want ErrNotThisNode", err)
	}
	ctx := nettest.Context(t, 60*time.Second)
	if err := rt.Start(ctx, sm); err != nil {
		t.Fatal(err)
	}
	if err := rt.WaitRunning(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	p := join(t, a.node.Path(), "echo")
	for i := range 3 {
		msg := strings.Repeat("ping", i+1)
		if got := call(t, b.acts, p, msg); got != msg {
			t.Fatalf("remote echo = %q, want %q", got, msg)
		}
	}
}

// TestWriteReadAcrossNodes: a module on node a writes a file through the
// real fsys client; node b's own client reads it.
func TestWriteReadAcrossNodes(t *testing.T) {
	d := nettest.NewDomain(t)
	tv := newTestVolume(t, d)
	na, nb := tv.client(t, "a"), tv.client(t, "b")
	ctx := nettest.Context(t, 120*time.Second)
	if err := na.c.InitVolume(ctx, tv.h, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := na.c.Grant(ctx, tv.vol, nb.id, 1 /* fsys.RightRead */, time.Time{}); err != nil {
		t.Fatal(err)
	}
	root, err := na.c.Walk(ctx, tv.vol)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"mods", "out"} {
		if _, err := na.c.Mkdir(ctx, root.Ino, dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	filesA := FSFiles(na.c)
	mod := join(t, tv.vol, "mods", "writer.wasm")
	if err := filesA.WriteFile(ctx, mod, module(t, "writer")); err != nil {
		t.Fatal(err)
	}
	acts, err := actors.New(d.Path(t, "a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer acts.Close()
	rt, err := New(ctx, Config{Actors: acts, Files: filesA, Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	admin := newSigner(t, d, d.Path(t))
	out := join(t, tv.vol, "out")
	if err := rt.Start(ctx, admin.sign(t, Manifest{Name: "writer", Module: mod, Rights: Rights{Write: []paths.Path{out}}})); err != nil {
		t.Fatal(err)
	}
	if err := rt.WaitRunning(ctx, "writer"); err != nil {
		t.Fatal(err)
	}
	target := join(t, out, "report.txt")
	if got := call(t, acts, join(t, d.Path(t, "a"), "writer"), target.String()+"\nhello from wasm"); got != "ok" {
		t.Fatalf("writer replied %q", got)
	}
	data, err := FSFiles(nb.c).ReadFile(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "hello from wasm" {
		t.Fatalf("node b read %q", data)
	}
	lines, _, _ := rt.Logs("writer", false)
	if !strings.Contains(strings.Join(lines, "\n"), "wrote "+target.String()) {
		t.Fatalf("logs = %q", lines)
	}
}

// TestDenied: every host call outside the manifest's rights returns an
// error to the module, naming the path; granted ones work.
func TestDenied(t *testing.T) {
	l := newLocal(t)
	allowedDir := l.d.Path(t, "ok")
	secret := l.d.Path(t, "secret", "x")
	l.files.WriteFile(context.Background(), join(t, allowedDir, "f"), []byte("granted"))
	l.files.WriteFile(context.Background(), secret, []byte("secret"))
	echo := l.start(t, Manifest{Name: "echo", Module: l.module(t, "echo")})
	p := l.start(t, Manifest{Name: "prober", Module: l.module(t, "prober"), Rights: Rights{
		Read: []paths.Path{allowedDir}, Write: []paths.Path{allowedDir}, Message: []paths.Path{echo}}})
	for _, tc := range []struct{ probe, want string }{
		{"read " + join(t, allowedDir, "f").String(), "ok granted"},
		{"write " + join(t, allowedDir, "g").String(), "ok "},
		{"call " + echo.String(), "ok probe"},
		{"read " + secret.String(), "error 1: read_file " + secret.String() + ": denied"},
		{"write " + secret.String(), "error 1: write_file " + secret.String() + ": denied"},
		{"send " + l.d.Path(t, "n", "other").String(), "error 1: send "},
		{"call " + l.d.Path(t, "n", "other").String(), "error 1: call "},
		{"publish " + l.d.Path(t, "topic").String(), "error 1: publish "},
		{"subscribe " + l.d.Path(t, "secret").String() + "/...", "error 1: subscribe "},
		{"read " + join(t, allowedDir, "missing").String(), "error 2: read_file "},
	} {
		if got := call(t, l.acts, p, tc.probe); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %q, want prefix %q", tc.probe, got, tc.want)
		}
	}
	if b, _ := l.files.ReadFile(context.Background(), secret); string(b) != "secret" {
		t.Fatalf("the denied write changed the file: %q", b)
	}
}

// TestManifestRights: a manifest that asks for more than its signer holds
// is refused, by Verify and by Start.
func TestManifestRights(t *testing.T) {
	l := newLocal(t)
	mod := l.module(t, "echo")
	// The signer may write under /<root>/n/app only.
	narrow := newSigner(t, l.d, l.d.Path(t, "n", "app"))
	v := caps.NewVerifier()
	for name, tc := range map[string]struct {
		m    Manifest
		want error
	}{
		"ok":          {Manifest{Name: "app", Module: mod, Nodes: []paths.Path{l.node}, Rights: Rights{Write: []paths.Path{l.d.Path(t, "n", "app", "data")}}}, nil},
		"actor path":  {Manifest{Name: "other", Module: mod, Nodes: []paths.Path{l.node}}, ErrRights},
		"write right": {Manifest{Name: "app", Module: mod, Nodes: []paths.Path{l.node}, Rights: Rights{Write: []paths.Path{l.d.Path(t, "docs")}}}, ErrRights},
		"read right":  {Manifest{Name: "app", Module: mod, Nodes: []paths.Path{l.node}, Rights: Rights{Read: []paths.Path{l.d.Path(t)}}}, ErrRights},
		"message":     {Manifest{Name: "app", Module: mod, Nodes: []paths.Path{l.node}, Rights: Rights{Message: []paths.Path{l.d.Path(t, "n")}}}, ErrRights},
		"publish":     {Manifest{Name: "app", Module: mod, Nodes: []paths.Path{l.node}, Rights: Rights{Publish: []paths.Path{l.d.Path(t, "t")}}}, ErrRights},
	} {
		t.Run(name, func(t *testing.T) {
			sm := narrow.sign(t, tc.m)
			if err := sm.Verify(v); !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				if err := l.rt.Start(context.Background(), sm); !errors.Is(err, tc.want) {
					t.Fatalf("Start: %v, want %v", err, tc.want)
				}
			}
		})
	}
	// Nodes empty: the actor path is checked on the node that starts it.
	sm := narrow.sign(t, Manifest{Name: "elsewhere", Module: mod})
	if err := l.rt.Start(context.Background(), sm); !errors.Is(err, ErrRights) {
		t.Fatalf("start of an actor path the signer lacks: %v, want ErrRights", err)
	}
	// A writecap held by another principal.
	other := newSigner(t, l.d, l.d.Path(t))
	sm = narrow.sign(t, Manifest{Name: "app", Module: mod})
	sm.Writecap = other.wc
	if err := sm.Verify(v); !errors.Is(err, ErrRights) || !errors.Is(err, caps.ErrWrongHolder) {
		t.Fatalf("borrowed writecap: %v, want ErrRights (ErrWrongHolder)", err)
	}
	// Tampering after signing.
	sm = l.admin.sign(t, Manifest{Name: "app", Module: mod})
	sm.Rights.Write = []paths.Path{l.d.Path(t)}
	if err := sm.Verify(v); !errors.Is(err, ErrSignature) {
		t.Fatalf("tampered: %v, want ErrSignature", err)
	}
	sm = l.admin.sign(t, Manifest{Name: "app", Module: mod})
	sm.Sig[0] ^= 1
	if err := sm.Verify(v); !errors.Is(err, ErrSignature) {
		t.Fatalf("bad signature: %v, want ErrSignature", err)
	}
}

// TestCrashLoop: a module that crashes as it starts is restarted with
// exponential back-off, reported, and given up on after MaxRestarts.
func TestCrashLoop(t *testing.T) {
	// The clock stands still, so no start counts as having run well (which
	// starts the back-off over) however slow the machine is, as under -race.
	now := time.Now()
	l := newLocal(t, func(c *Config) { c.Clock = func() time.Time { return now } })
	sm := l.admin.sign(t, Manifest{Name: "crasher", Module: l.module(t, "crasher"),
		Restart: RestartPolicy{Mode: RestartAlways, MaxRestarts: 4, Backoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond}})
	ctx := nettest.Context(t, 60*time.Second)
	start := time.Now()
	if err := l.rt.Start(ctx, sm); err != nil {
		t.Fatal(err)
	}
	err := l.rt.WaitRunning(ctx, "crasher")
	if err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("WaitRunning: %v, want failed", err)
	}
	// Back-offs 20 + 40 + 80 + 80 ms at least.
	if el := time.Since(start); el < 220*time.Millisecond {
		t.Fatalf("4 restarts took %v: no back-off", el)
	}
	info, _ := l.rt.Instance("crasher")
	if info.State != StateFailed || info.Restarts != 4 || !strings.Contains(info.LastError, "panicked during start") {
		t.Fatalf("info = %+v", info)
	}
	lines, _, _ := l.rt.Logs("crasher", false)
	all := strings.Join(lines, "\n")
	for _, want := range []string{"crasher starting", "deliberate crash", "restarting in 20ms", "restarting in 40ms", "restarting in 80ms", "giving up after 4 restarts"} {
		if !strings.Contains(all, want) {
			t.Errorf("logs lack %q:\n%s", want, all)
		}
	}
}

// TestMemoryLimit: a module that outgrows its memory limit fails with a
// reason saying so; on-failure restarts it.
func TestMemoryLimit(t *testing.T) {
	l := newLocal(t)
	p := l.start(t, Manifest{Name: "hog", Module: l.module(t, "memhog"), MemoryLimit: 48 << 20,
		Restart: RestartPolicy{Mode: RestartOnFailure, Backoff: 10 * time.Millisecond}})
	_, err := l.acts.Call(nettest.Context(t, 30*time.Second), p, []byte("eat"))
	var ae *actors.ActorError
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "memory limit of 50331648 bytes") {
		t.Fatalf("call: %v, want an actor error naming the memory limit", err)
	}
	nettest.WaitFor(t, 30*time.Second, "restart", func() bool {
		i, _ := l.rt.Instance("hog")
		return i.Restarts == 1 && i.State == StateRunning
	})
	if i, _ := l.rt.Instance("hog"); !strings.Contains(i.LastError, "memory limit") {
		t.Fatalf("last error %q", i.LastError)
	}
}

// TestDeadline: a handler that runs past the manifest's deadline is
// stopped with a reason saying so; never: it stays failed.
func TestDeadline(t *testing.T) {
	l := newLocal(t)
	p := l.start(t, Manifest{Name: "slow", Module: l.module(t, "slow"), Deadline: 300 * time.Millisecond,
		Restart: RestartPolicy{Mode: RestartNever}})
	if got := call(t, l.acts, p, "quick"); got != "quick" {
		t.Fatalf("reply %q", got)
	}
	start := time.Now()
	_, err := l.acts.Call(nettest.Context(t, 30*time.Second), p, []byte("spin"))
	if err == nil || !strings.Contains(err.Error(), "longer than the deadline of 300ms") {
		t.Fatalf("call: %v, want the deadline", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("stopped after %v", el)
	}
	nettest.WaitFor(t, 10*time.Second, "failed", func() bool {
		i, _ := l.rt.Instance("slow")
		return i.State == StateFailed
	})
}

// TestStopWhileBusy: Stop ends an instance even while its handler spins.
func TestStopWhileBusy(t *testing.T) {
	l := newLocal(t)
	p := l.start(t, Manifest{Name: "slow", Module: l.module(t, "slow"), Deadline: time.Minute})
	errc := make(chan error, 1)
	go func() {
		_, err := l.acts.Call(context.Background(), p, []byte("spin"))
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := l.rt.Stop(nettest.Context(t, 10*time.Second), "slow"); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		t.Fatal("the spinning call succeeded")
	}
}
