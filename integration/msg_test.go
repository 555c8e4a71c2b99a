package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

// bgProc is a long-running CLI command (bt listen, bt sub) whose stdout
// lines are collected.
type bgProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	stderr bytes.Buffer
	done   chan struct{}
}

// background runs bt with args until the test ends and waits until it
// prints ready on stderr.
func (n *node) background(ready string, args ...string) *bgProc {
	n.t.Helper()
	cmd := exec.Command(btBin, append([]string{"--repo", n.repo}, args...)...)
	cmd.Env = append(cleanEnv(), n.env...)
	p := &bgProc{cmd: cmd, done: make(chan struct{})}
	cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	out, err := cmd.StdoutPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 8<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		cmd.Wait()
		close(p.done)
	}()
	n.t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
	eventually(n.t, 15*time.Second, "bt "+strings.Join(args, " ")+" ready", func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if strings.Contains(p.stderr.String(), ready) {
			return nil
		}
		select {
		case <-p.done:
			n.t.Fatalf("bt %v exited: %s", args, p.stderr.String())
		default:
		}
		return fmt.Errorf("stderr so far: %q", p.stderr.String())
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// output returns the lines printed so far.
func (p *bgProc) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLines waits until the process printed at least n lines.
func (p *bgProc) waitLines(t testing.TB, n int, within time.Duration) []string {
	t.Helper()
	eventually(t, within, fmt.Sprintf("%d lines", n), func() error {
		if got := p.output(); len(got) < n {
			return fmt.Errorf("%d lines: %q", len(got), got)
		}
		return nil
	})
	return p.output()
}

func TestSendAndCall(t *testing.T) {
	c := newCluster(t, 2)
	inbox := c.path(1) + "/inbox"
	l := c.nodes[1].background("listening", "listen", inbox, "--echo", "--json")
	eventually(t, 20*time.Second, "n0 reaches n1", func() error {
		if r := c.nodes[0].run("ping", c.path(1)); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	if r := c.nodes[0].ok("call", inbox, "hello"); r.stdout != "hello" {
		t.Fatalf("call reply %q, want the echo", r.stdout)
	}
	c.nodes[0].ok("send", inbox, "fire and forget")
	lines := l.waitLines(t, 2, 10*time.Second)
	var got []api.Received
	for _, s := range lines {
		var ev api.Received
		if err := json.Unmarshal([]byte(s), &ev); err != nil {
			t.Fatalf("listen printed %q: %v", s, err)
		}
		got = append(got, ev)
	}
	if got[0].From.String() != c.path(0) || string(got[0].Payload) != "hello" || !got[0].Call {
		t.Errorf("first message %+v: want the call from %s", got[0], c.path(0))
	}
	if got[1].From.String() != c.path(0) || string(got[1].Payload) != "fire and forget" || got[1].Call {
		t.Errorf("second message %+v", got[1])
	}
	// A payload from stdin.
	r := c.nodes[0].runStdin("line one\nline two\n", "call", inbox, "-")
	if r.code != 0 || r.stdout != "line one\nline two\n" {
		t.Fatalf("call with stdin: %s", r)
	}
	// No endpoint at a path.
	c.nodes[0].fails(exitNetwork, "no endpoint", "call", c.path(1)+"/nobody", "x")
	c.nodes[0].fails(exitNetwork, "no endpoint", "send", "--confirm", c.path(1)+"/nobody", "x")
	// A send without --confirm is queued; its refusal is reported by the
	// next send there.
	c.nodes[0].ok("send", c.path(1)+"/nobody", "x")
	eventually(t, 10*time.Second, "the refusal of a queued send is reported", func() error {
		r := c.nodes[0].run("send", c.path(1)+"/nobody", "x")
		if r.code == 0 {
			return fmt.Errorf("send succeeded: %s", r)
		}
		if !strings.Contains(r.stderr, "were not delivered") || !strings.Contains(r.stderr, "no handler") {
			t.Fatalf("the report of an undelivered send: %s", r)
		}
		return nil
	})
	// Only under one's own path.
	c.nodes[0].fails(exitUsage, "", "listen", c.path(1)+"/theirs")
	// A local endpoint, called in-process.
	c.nodes[1].ok("call", inbox, "local")
}

// TestCallDeadline: a call with a 1 s deadline to a killed node fails
// within 1.5 s.
func TestCallDeadline(t *testing.T) {
	c := newCluster(t, 2)
	inbox := c.path(1) + "/inbox"
	c.nodes[1].background("listening", "listen", inbox, "--echo")
	eventually(t, 20*time.Second, "n0 calls n1", func() error {
		if r := c.nodes[0].run("call", inbox, "x"); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	c.daemons[1].kill()
	start := time.Now()
	r := c.nodes[0].run("call", inbox, "are you there", "--timeout", "1s")
	took := time.Since(start)
	if r.code == 0 {
		t.Fatalf("call to a killed node succeeded: %s", r)
	}
	if took > 1500*time.Millisecond {
		t.Fatalf("call with a 1s deadline to a killed node took %v (want ≤ 1.5s): %s", took, r)
	}
	if !strings.Contains(r.stderr, c.path(1)) {
		t.Errorf("the error does not say which node: %s", r)
	}
	t.Logf("failed after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
}

// TestThousandCalls: 1,000 concurrent calls through the daemon's API all
// complete with their own replies.
func TestThousandCalls(t *testing.T) {
	c := newCluster(t, 2)
	inbox := c.path(1) + "/echo"
	c.nodes[1].background("listening", "listen", inbox, "--echo")
	client := api.NewClient(c.nodes[0].repo)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	eventually(t, 20*time.Second, "first call", func() error {
		_, err := client.Send(ctx, api.SendRequest{Path: paths.MustParse(inbox), Payload: []byte("x"), Call: true})
		return err
	})
	const n = 1000
	var wg sync.WaitGroup
	var bad atomic.Int32
	errs := make(chan error, n)
	sem := make(chan struct{}, 1000)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			want := fmt.Appendf(nil, "call %d", i)
			res, err := client.Send(ctx, api.SendRequest{Path: paths.MustParse(inbox), Payload: want, Call: true, Timeout: "60s"})
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(res.Payload, want) {
				bad.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if bad.Load() != 0 {
		t.Fatalf("%d calls got another call's reply", bad.Load())
	}
}

func TestOversizedAndForeign(t *testing.T) {
	c := newCluster(t, 1)
	small := c.join("small", "--max-message", "1024")
	inbox := c.daemons[1].ready.Path + "/inbox"
	small.background("listening", "listen", inbox, "--echo")
	big := strings.Repeat("x", 2048)
	eventually(t, 20*time.Second, "n0 calls small", func() error {
		if r := c.nodes[0].run("call", inbox, "x"); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	// The receiver refuses what is over its limit, and says so.
	c.nodes[0].fails(exitUsage, "too large", "call", inbox, big)
	// The sender refuses what is over its own limit before sending.
	small.fails(exitUsage, "too large", "call", c.path(0)+"/x", big)

	// Another domain's node, without a writecap from this root, is refused.
	other := newNode(t)
	other.env = []string{"BT_PASSPHRASE=other"}
	other.ok("init", "--name", "stranger", "--tpm", "none")
	other.start("--bootstrap", c.daemons[0].ready.Addrs[0])
	eventually(t, 20*time.Second, "stranger resolves small", func() error {
		if r := other.run("resolve", inbox[:strings.LastIndex(inbox, "/")]); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	other.fails(exitCapable, "writecap", "call", inbox, "let me in")
}

func TestPubSub(t *testing.T) {
	c := newCluster(t, 5)
	root := strings.Split(c.path(0), "/")[1]
	news := c.path(0) + "/news"
	subs := map[string]*bgProc{
		"exact": c.nodes[1].background("subscribed", "sub", news, "--json"),
		"tree":  c.nodes[2].background("subscribed", "sub", c.path(0)+"/...", "--json"),
		"star":  c.nodes[3].background("subscribed", "sub", "/"+root+"/*/news", "--json"),
		"below": c.nodes[4].background("subscribed", "sub", news+"/*", "--json"),
	}
	// Gossipsub needs a moment to graft the mesh; publish until the exact
	// subscriber hears, then the real messages.
	eventually(t, 30*time.Second, "the mesh forms", func() error {
		c.nodes[0].ok("pub", news+"/warmup", "w")
		c.nodes[0].ok("pub", news, "warmup")
		for name, s := range subs {
			if len(s.output()) == 0 {
				return fmt.Errorf("%s has heard nothing yet", name)
			}
		}
		return nil
	})
	c.nodes[0].ok("pub", news, "headline")
	c.nodes[0].ok("pub", news+"/sports", "goal")
	c.nodes[0].ok("pub", c.path(0)+"/weather", "rain")
	time.Sleep(2 * time.Second) // best-effort delivery: give it time, then count
	got := func(name string) map[string]int {
		m := map[string]int{}
		for _, s := range subs[name].output() {
			var ev api.Published
			if err := json.Unmarshal([]byte(s), &ev); err != nil {
				t.Fatalf("sub printed %q: %v", s, err)
			}
			if ev.From.String() != c.path(0) || ev.Seq == 0 {
				t.Errorf("%s: message %+v: want publisher %s and a sequence number", name, ev, c.path(0))
			}
			m[string(ev.Payload)]++
		}
		return m
	}
	for _, tc := range []struct {
		sub      string
		want     []string
		wantNone []string
	}{
		{"exact", []string{"headline"}, []string{"goal", "rain"}},
		{"tree", []string{"headline", "goal", "rain"}, nil},
		{"star", []string{"headline"}, []string{"goal", "rain"}},
		{"below", []string{"goal"}, []string{"headline", "rain"}},
	} {
		m := got(tc.sub)
		for _, w := range tc.want {
			if m[w] != 1 {
				t.Errorf("%s subscriber got %q %d times, want once (all: %v)", tc.sub, w, m[w], m)
			}
		}
		for _, w := range tc.wantNone {
			if m[w] != 0 {
				t.Errorf("%s subscriber got %q, which its pattern does not match", tc.sub, w)
			}
		}
	}
	// A node without a writecap for the topic cannot publish on it.
	c.nodes[3].fails(exitCapable, "writecap", "pub", news, "forged headline")
	time.Sleep(time.Second)
	if m := got("exact"); m["forged headline"] != 0 {
		t.Error("a message from a node without a writecap reached a subscriber")
	}

	// A confidential topic: only the named reader can read it.
	secret := c.path(0) + "/secret"
	reader := c.nodes[1].background("subscribed", "sub", secret, "--json")
	outsider := c.nodes[2].background("subscribed", "sub", secret, "--json")
	eventually(t, 30*time.Second, "confidential message delivered", func() error {
		c.nodes[0].ok("pub", secret, "for n1 only", "--reader", c.path(1))
		if len(reader.output()) == 0 || len(outsider.output()) == 0 {
			return fmt.Errorf("reader %d, outsider %d lines", len(reader.output()), len(outsider.output()))
		}
		return nil
	})
	var rv, ov api.Published
	json.Unmarshal([]byte(reader.output()[0]), &rv)
	json.Unmarshal([]byte(outsider.output()[0]), &ov)
	if !rv.Readable || string(rv.Payload) != "for n1 only" {
		t.Errorf("the reader got %+v", rv)
	}
	if ov.Readable || len(ov.Payload) != 0 || !ov.Confidential {
		t.Errorf("the outsider got %+v; want an unreadable confidential message", ov)
	}
}

// runStdin runs bt with stdin.
func (n *node) runStdin(stdin string, args ...string) result {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"--repo", n.repo}, args...)
	cmd := exec.CommandContext(ctx, btBin, full...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(cleanEnv(), n.env...)
	err := cmd.Run()
	r := result{args: full, stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	}
	return r
}
