package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

// Wasm modules run by the daemons (docs/wasm.md, "Orchestration"): the
// guest modules under testdata/wasm/ are built for wasip1, stored in the
// domain's file system, and deployed by writing signed manifests into a
// node's deployment directory /<root>/<node>/deploy/ — with `bt run`, with
// `bt put`, or through a FUSE mount.

// wasmModules builds the test modules once per run.
var wasmModules = struct {
	once sync.Once
	dir  string
	err  error
}{}

// wasmModule returns the path of the built test module name.
func wasmModule(t *testing.T, name string) string {
	t.Helper()
	wasmModules.once.Do(func() {
		dir, err := os.MkdirTemp("", "bt-wasm-modules-")
		if err != nil {
			wasmModules.err = err
			return
		}
		wasmModules.dir = dir
		for _, m := range []string{"echo", "writer", "crasher", "limits"} {
			cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", filepath.Join(dir, m+".wasm"), "./testdata/wasm/"+m)
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if out, err := cmd.CombinedOutput(); err != nil {
				wasmModules.err = fmt.Errorf("building %s: %v\n%s", m, err, out)
				return
			}
		}
	})
	if wasmModules.err != nil {
		t.Fatal(wasmModules.err)
	}
	return filepath.Join(wasmModules.dir, name+".wasm")
}

// psJSON is `bt ps --json` on n.
func psJSON(t *testing.T, n *node) []api.WasmInstance {
	t.Helper()
	r := n.ok("ps", "--json")
	var list []api.WasmInstance
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("ps --json: %v\n%s", err, r)
	}
	return list
}

// instance returns n's entry for name, and whether there is one.
func instance(t *testing.T, n *node, name string) (api.WasmInstance, bool) {
	t.Helper()
	for _, in := range psJSON(t, n) {
		if in.Name == name {
			return in, true
		}
	}
	return api.WasmInstance{}, false
}

// waitInstance waits until n's entry for name passes ok.
func waitInstance(t *testing.T, n *node, d *daemon, name, what string, within time.Duration, ok func(api.WasmInstance) bool) api.WasmInstance {
	t.Helper()
	var got api.WasmInstance
	eventually(t, within, name+": "+what, func() error {
		in, found := instance(t, n, name)
		if found && ok(in) {
			got = in
			return nil
		}
		return fmt.Errorf("bt ps: %+v (found %v)\ndaemon log:\n%s", in, found, d.tail())
	})
	return got
}

func running(in api.WasmInstance) bool { return in.State == "running" }

// callUntilOn calls path with payload want through n's API until the
// reply is want (with any, until there is a reply), and returns how long
// that took from start. On failure it shows host's ps and hd's log.
func callUntilOn(t *testing.T, n, host *node, hd *daemon, path, want string, any bool, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	c := api.NewClient(n.repo)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := c.Send(cctx, api.SendRequest{Path: paths.MustParse(path), Payload: []byte(want), Call: true, Timeout: "4s"})
		ccancel()
		if err == nil && (any || string(res.Payload) == want) {
			return time.Since(start)
		}
		if err == nil {
			err = fmt.Errorf("reply %q", res.Payload)
		}
		last = err
		time.Sleep(10 * time.Millisecond)
	}
	if host != nil {
		t.Logf("bt ps on the module's node:\n%s\ndaemon log:\n%s", host.run("ps").stdout, hd.tail())
	}
	t.Fatalf("no reply %q from %s within %v: %v", want, path, within, last)
	return 0
}

// waitGone waits until n's ps has no entry for name.
func waitGone(t *testing.T, n *node, d *daemon, name string, within time.Duration) {
	t.Helper()
	eventually(t, within, name+" gone from bt ps", func() error {
		if in, found := instance(t, n, name); found {
			return fmt.Errorf("still listed: %+v\ndaemon log:\n%s", in, d.tail())
		}
		return nil
	})
}

// TestWasm runs the scenarios on one two-node domain (n0 holds the root
// key and hosts the root volume; n1 joined and may write under /<root>/n1).
func TestWasm(t *testing.T) {
	c, root := fsCluster(t)
	n0, n1 := c.nodes[0], c.nodes[1]
	d0, d1 := c.daemons[0], c.daemons[1]
	// The modules live in the root volume, which every member can read.
	mods := root + "/mods"
	for _, m := range []string{"echo", "writer", "crasher", "limits"} {
		n0.ok("put", "-p", wasmModule(t, m), mods+"/"+m+".wasm")
	}

	// The echo service on n1, deployed by n0 with `bt run --on`, called
	// from n0. The first deployment compiles the module (cold: n1's
	// compile cache is empty), the second finds it compiled (warm). Each
	// figure is from `bt run` (manifest written) to the first reply.
	t.Run("echo across nodes", func(t *testing.T) {
		var times [2]time.Duration
		for i, name := range []string{"echo", "echo2"} {
			start := time.Now()
			r := n0.ok("run", mods+"/echo.wasm", "--name", name, "--on", c.path(1), "--json")
			written := time.Since(start)
			var res api.WasmRunResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Manifests) != 1 ||
				res.Manifests[0].String() != c.path(1)+"/deploy/"+name+".manifest" {
				t.Fatalf("run --json: %v\n%s", err, r)
			}
			path := c.path(1) + "/" + name
			times[i] = callUntilOn(t, n0, n1, d1, path, "hello "+name, false, start, 90*time.Second)
			t.Logf("%s start: manifest written after %v, first reply after %v", []string{"cold", "warm"}[i], written, times[i])
			in := waitInstance(t, n1, d1, name, "running on n1", 30*time.Second, running)
			if in.Path.String() != path || in.Module.String() != mods+"/echo.wasm" || in.Signer == "" {
				t.Fatalf("bt ps on n1: %+v", in)
			}
			if out := n0.ok("call", path, "from the CLI").stdout; out != "from the CLI" {
				t.Fatalf("bt call: %q", out)
			}
			if r := n1.ok("ps"); !strings.Contains(r.stdout, name) || !strings.Contains(r.stdout, "running") {
				t.Fatalf("bt ps:\n%s", r)
			}
			n0.ok("stop", name, "--on", c.path(1))
			waitGone(t, n1, d1, name, 30*time.Second)
			r = n0.run("call", "--timeout", "3s", path, "anyone?")
			if r.code == 0 {
				t.Fatalf("a stopped module answered\n%s", r)
			}
		}
		// n1 restarted: the compiled code comes from its compile cache on
		// disk (<repo>/wasm-cache).
		c.daemons[1].stop()
		c.daemons[1] = n1.start()
		d1 = c.daemons[1]
		// Not measured: n1 finding n0's volume again, n0 finding n1's
		// new address.
		eventually(t, 60*time.Second, "n1 back", func() error {
			if r := n1.run("ls", c.path(1)+"/deploy"); r.code != 0 {
				return fmt.Errorf("%s", r)
			}
			if r := n0.run("ping", c.path(1)); r.code != 0 {
				return fmt.Errorf("%s", r)
			}
			return nil
		})
		start := time.Now()
		n0.ok("run", mods+"/echo.wasm", "--name", "echo3", "--on", c.path(1))
		disk := callUntilOn(t, n0, n1, d1, c.path(1)+"/echo3", "hello echo3", false, start, 90*time.Second)
		logb, _ := os.ReadFile(d1.logs)
		for _, l := range strings.Split(string(logb), "\n") {
			if strings.Contains(l, "echo3") && (strings.Contains(l, "subsystem=wasm") || strings.Contains(l, "module")) {
				t.Logf("n1: %s", l)
			}
		}
		n0.ok("stop", "echo3", "--on", c.path(1))
		waitGone(t, n1, d1, "echo3", 30*time.Second)
		t.Logf("manifest written -> first reply: cold (empty compile cache) %v, warm (compiled in this process) %v, "+
			"warm after a daemon restart (compile cache on disk) %v; cold/warm %.1fx, cold/disk %.1fx",
			times[0], times[1], disk, float64(times[0])/float64(times[1]), float64(times[0])/float64(disk))
	})

	// A module on n1 writes a file n0 reads; a path its manifest does not
	// grant is denied, and the denial is in its log.
	t.Run("writer and denied path", func(t *testing.T) {
		out := c.path(1) + "/out"
		n1.ok("mkdir", "-p", out)
		n1.ok("run", mods+"/writer.wasm", "--write", out)
		path := c.path(1) + "/writer"
		callUntilOn(t, n1, n1, d1, path, "no path", true, time.Now(), 60*time.Second)
		if r := n1.ok("call", path, out+"/hello.txt\nhello from wasm\n"); r.stdout != "ok" {
			t.Fatalf("writer: %s", r)
		}
		if got := n0.ok("cat", out+"/hello.txt").stdout; got != "hello from wasm\n" {
			t.Fatalf("n0 reads %q", got)
		}
		// /<root>/n1 is n1's to write, but not the module's.
		r := n1.ok("call", path, c.path(1)+"/not-granted.txt\nnope")
		if !strings.Contains(r.stdout, "denied") {
			t.Fatalf("a write outside the grant: %s", r)
		}
		n1.fails(1, "no such file", "cat", c.path(1)+"/not-granted.txt")
		eventually(t, 10*time.Second, "the denial in bt logs", func() error {
			r := n1.ok("logs", "writer")
			if !strings.Contains(r.stdout, "not-granted.txt") || !strings.Contains(r.stdout, "denied") {
				return fmt.Errorf("bt logs writer:\n%s", r.stdout)
			}
			return nil
		})
		n1.fails(1, "no module named", "logs", "no-such-module")
		n1.ok("stop", "writer")
		waitGone(t, n1, d1, "writer", 10*time.Second)
	})

	// n1 signs a manifest that asks to write under /<root>/n0, which its
	// writecap does not cover, and deploys it on itself with bt put: n1
	// refuses it and says why.
	t.Run("refused manifest", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "greedy.manifest")
		r := n1.ok("run", mods+"/writer.wasm", "--name", "greedy", "--write", c.path(0), "--print-manifest", "-o", file)
		if !strings.Contains(r.stderr, "warning") {
			t.Fatalf("print-manifest gave no warning\n%s", r)
		}
		n1.fails(5, "writecap", "run", mods+"/writer.wasm", "--name", "greedy", "--write", c.path(0))
		n1.ok("put", file, c.path(1)+"/deploy/greedy.manifest")
		in := waitInstance(t, n1, d1, "greedy", "refused", 30*time.Second, func(in api.WasmInstance) bool { return in.State == "refused" })
		if !strings.Contains(in.Reason, "write right") || !strings.Contains(in.Reason, c.path(0)) {
			t.Fatalf("refused for %q", in.Reason)
		}
		if r := n1.ok("ps"); !strings.Contains(r.stdout, "refused") {
			t.Fatalf("bt ps:\n%s", r)
		}
		// Garbage is refused too.
		n1.ok("put", writeFile(t, "junk", "not a manifest"), c.path(1)+"/deploy/junk.manifest")
		eventually(t, 30*time.Second, "junk refused", func() error {
			for _, in := range psJSON(t, n1) {
				if strings.HasSuffix(in.File.String(), "/junk.manifest") && in.State == "refused" && strings.Contains(in.Reason, "decode") {
					return nil
				}
			}
			return fmt.Errorf("%+v", psJSON(t, n1))
		})
		n1.ok("rm", c.path(1)+"/deploy/greedy.manifest")
		n1.ok("rm", c.path(1)+"/deploy/junk.manifest")
		waitGone(t, n1, d1, "greedy", 10*time.Second)
	})

	// A module that crashes as it starts is restarted with growing
	// back-off, and bt ps counts the restarts and says why.
	t.Run("crash loop", func(t *testing.T) {
		n0.ok("run", mods+"/crasher.wasm", "--restart", "always")
		start := time.Now()
		in := waitInstance(t, n0, d0, "crasher", "restarted twice", 60*time.Second, func(in api.WasmInstance) bool { return in.Restarts >= 3 })
		at3 := time.Since(start)
		if in.Reason == "" {
			t.Fatalf("no reason reported: %+v", in)
		}
		time.Sleep(5 * time.Second)
		in2, _ := instance(t, n0, "crasher")
		t.Logf("crasher: %d restarts after %v, %d after %v more; state %s, reason %q", in.Restarts, at3, in2.Restarts, 5*time.Second, in2.State, in2.Reason)
		// Back-off 100 ms doubling: restarts 4..6 take 0.8+1.6+3.2 s, so
		// 5 s more add at most a few; without back-off they would be many.
		if in2.Restarts-in.Restarts > 5 {
			t.Fatalf("%d restarts in 5 s: no back-off", in2.Restarts-in.Restarts)
		}
		if r := n0.ok("logs", "crasher"); !strings.Contains(r.stdout, "about to crash") {
			t.Fatalf("bt logs crasher:\n%s", r)
		}
		n0.ok("stop", "crasher")
		waitGone(t, n0, d0, "crasher", 10*time.Second)
	})

	// A module that runs past its deadline, or past its memory limit, is
	// stopped, and bt ps says which.
	t.Run("limits", func(t *testing.T) {
		for _, tc := range []struct{ name, payload, flag, value, reason string }{
			{"spinner", "spin", "--deadline", "1s", "deadline"},
			{"hog", "hog", "--memory", "32MiB", "memory"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				n0.ok("run", mods+"/limits.wasm", "--name", tc.name, tc.flag, tc.value, "--restart", "never")
				path := c.path(0) + "/" + tc.name
				callUntilOn(t, n0, n0, d0, path, "alive?", false, time.Now(), 60*time.Second)
				r := n0.run("call", "--timeout", "20s", path, tc.payload)
				if r.code == 0 {
					t.Fatalf("the call that breaks the limit succeeded\n%s", r)
				}
				in := waitInstance(t, n0, d0, tc.name, "failed", 20*time.Second, func(in api.WasmInstance) bool { return in.State == "failed" })
				if !strings.Contains(in.Reason, tc.reason) {
					t.Fatalf("failed for %q, want it to say %q", in.Reason, tc.reason)
				}
				t.Logf("%s: %s: %s", tc.name, in.State, in.Reason)
				n0.ok("stop", tc.name)
				waitGone(t, n0, d0, tc.name, 10*time.Second)
			})
		}
	})

	// Deployment through a FUSE mount: a manifest copied into the
	// deployment directory starts the module, removing it stops it.
	t.Run("deploy through the mount", func(t *testing.T) {
		requireFUSE(t)
		file := filepath.Join(t.TempDir(), "echo-m.manifest")
		n0.ok("run", mods+"/echo.wasm", "--name", "echo-m", "--print-manifest", "-o", file)
		_, tree := mount(t, n0, root)
		rel := strings.TrimPrefix(c.path(0), root+"/")
		dst := filepath.Join(tree, rel, "deploy", "echo-m.manifest")
		if out, err := exec.Command("cp", file, dst).CombinedOutput(); err != nil {
			t.Fatalf("cp into the mount: %v\n%s", err, out)
		}
		callUntilOn(t, n1, n0, d0, c.path(0)+"/echo-m", "through the mount", false, time.Now(), 60*time.Second)
		waitInstance(t, n0, d0, "echo-m", "running", 10*time.Second, running)
		if err := os.Remove(dst); err != nil {
			t.Fatal(err)
		}
		waitGone(t, n0, d0, "echo-m", 20*time.Second)
	})
}
