package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// daemonTimeout bounds a daemon's start and stop.
const daemonTimeout = 30 * time.Second

// readyLine is what `bt daemon --json` prints once it serves.
type readyLine struct {
	Event  string   `json:"event"`
	Path   string   `json:"path"`
	PeerID string   `json:"peer_id"`
	Addrs  []string `json:"addrs"`
	Socket string   `json:"socket"`
}

// daemon is one running `bt daemon` process.
type daemon struct {
	t      testing.TB
	n      *node
	cmd    *exec.Cmd
	ready  readyLine
	logs   string // stderr file
	exited chan struct{}
	err    error // from Wait, once exited is closed
}

// loopbackFlags are what a daemon in a one-machine test cluster runs with.
var loopbackFlags = []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-nat", "--loopback"}

// start runs `bt daemon` on the node's repo and waits for its ready line.
// The daemon is stopped in t.Cleanup if the test has not stopped it.
func (n *node) start(extra ...string) *daemon {
	n.t.Helper()
	args := append([]string{"--repo", n.repo, "--log-level", "debug", "daemon", "--json"}, loopbackFlags...)
	args = append(args, extra...)
	bin := n.bin
	if bin == "" {
		bin = btBin
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), n.env...)
	logs, err := os.CreateTemp(n.t.TempDir(), "daemon-*.log")
	if err != nil {
		n.t.Fatal(err)
	}
	defer logs.Close()
	cmd.Stderr = logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	d := &daemon{t: n.t, n: n, cmd: cmd, logs: logs.Name(), exited: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() { // keep draining so the daemon never blocks on stdout
		}
	}()
	go func() { d.err = cmd.Wait(); close(d.exited) }()
	n.t.Cleanup(d.kill)
	select {
	case line, ok := <-lines:
		if !ok {
			<-d.exited
			n.t.Fatalf("bt daemon exited before it was ready (%v)\n%s", d.err, d.tail())
		}
		if err := json.Unmarshal([]byte(line), &d.ready); err != nil || d.ready.Event != "ready" {
			n.t.Fatalf("bt daemon printed %q, want a ready line (%v)", line, err)
		}
	case <-time.After(daemonTimeout):
		d.kill()
		n.t.Fatalf("bt daemon not ready after %v\n%s", daemonTimeout, d.tail())
	}
	return d
}

// tail returns the end of the daemon's log, for failure messages.
func (d *daemon) tail() string {
	b, _ := os.ReadFile(d.logs)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stop sends SIGTERM and checks the daemon exits cleanly and in time.
func (d *daemon) stop() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(daemonTimeout):
		d.kill()
		d.t.Fatalf("bt daemon did not stop within %v of SIGTERM\n%s", daemonTimeout, d.tail())
	}
	if d.err != nil {
		d.t.Fatalf("bt daemon exited with %v after SIGTERM\n%s", d.err, d.tail())
	}
	if _, err := os.Stat(filepath.Join(d.n.repo, "api.sock")); err == nil {
		d.t.Error("bt daemon left its API socket behind")
	}
}

// kill ends the daemon at once, as a crash would.
func (d *daemon) kill() {
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Kill()
	<-d.exited
}

// cluster is a domain of nodes with running daemons, built with invite and
// join as a user would.
type cluster struct {
	t       testing.TB
	nodes   []*node
	daemons []*daemon
	names   []string
}

// newCluster initialises a domain on a first node and invites n-1 more.
// extra flags go to every daemon.
func newCluster(t testing.TB, n int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t}
	first := newNode(t)
	first.env = []string{"BT_PASSPHRASE=cluster"}
	first.ok("init", "--name", "n0", "--tpm", "none")
	c.add(first, "n0", first.start(extra...))
	for i := 1; i < n; i++ {
		c.join(fmt.Sprintf("n%d", i), extra...)
	}
	return c
}

func (c *cluster) add(n *node, name string, d *daemon) {
	c.nodes = append(c.nodes, n)
	c.daemons = append(c.daemons, d)
	c.names = append(c.names, name)
}

// invite has the first node invite name and returns the token.
func (c *cluster) invite(name string) string {
	c.t.Helper()
	r := c.nodes[0].ok("invite", name)
	return strings.TrimSpace(r.stdout)
}

// join adds a node called name and starts its daemon.
func (c *cluster) join(name string, extra ...string) *node {
	c.t.Helper()
	tok := c.invite(name)
	n := newNode(c.t)
	n.ok("join", tok, "--tpm", "none")
	c.add(n, name, n.start(extra...))
	return n
}

// path is the path of node i.
func (c *cluster) path(i int) string { return c.daemons[i].ready.Path }

// eventually retries f until it returns nil or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: still failing after %v: %v", what, within, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
