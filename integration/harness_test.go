package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// btBin is the bt binary built once for the whole run by TestMain;
// btLiarBin is built with the bt_liar tag, for lying daemons.
var btBin, btLiarBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bt-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	btBin = filepath.Join(dir, "bt")
	build := exec.Command("go", "build", "-o", btBin, "blocktree.dev/bt/cmd/bt")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building bt:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// The same bt with the exchange's test-only lying modes (BT_LIE).
	btLiarBin = filepath.Join(dir, "bt-liar")
	build = exec.Command("go", "build", "-tags", "bt_liar", "-o", btLiarBin, "blocktree.dev/bt/cmd/bt")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building bt with -tags bt_liar:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one finished bt command.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("bt %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// node is one repo driven through the bt binary.
type node struct {
	t    testing.TB
	repo string
	env  []string
	bin  string // the bt binary its daemon runs; btBin when empty
}

func newNode(t testing.TB) *node {
	t.Helper()
	return &node{t: t, repo: filepath.Join(t.TempDir(), "repo")}
}

// run runs bt with args against the node's repo, with stdin empty and not a
// terminal, bounded in time.
func (n *node) run(args ...string) result {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"--repo", n.repo}, args...)
	cmd := exec.CommandContext(ctx, btBin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(cleanEnv(), n.env...)
	err := cmd.Run()
	r := result{args: full, stdout: out.String(), stderr: errb.String()}
	if ctx.Err() != nil {
		n.t.Fatalf("bt %v did not finish in time\n%s", args, r)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("running bt: %v", err)
	}
	return r
}

// ok runs bt and fails the test unless it exits 0.
func (n *node) ok(args ...string) result {
	n.t.Helper()
	r := n.run(args...)
	if r.code != 0 {
		n.t.Fatalf("%s", r)
	}
	return r
}

// fails runs bt and checks it exits with code and says want on stderr.
func (n *node) fails(code int, want string, args ...string) result {
	n.t.Helper()
	r := n.run(args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		n.t.Fatalf("want exit %d and %q on stderr, got %s", code, want, r)
	}
	return r
}

// cleanEnv is the environment without the variables that would make bt
// use another repo or passphrase than the test says.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BT_REPO=") || strings.HasPrefix(kv, "BT_PASSPHRASE=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// idJSON is `bt id --json`.
type idJSON struct {
	Root    string `json:"root"`
	Node    string `json:"node"`
	NodeID  string `json:"node_id"`
	Custody struct {
		Kind      string `json:"kind"`
		Device    string `json:"device"`
		Algorithm string `json:"algorithm"`
	} `json:"custody"`
	RootKey        string `json:"root_key"`
	WritecapPrefix string `json:"writecap_prefix"`
	WritecapExpiry string `json:"writecap_expiry"`
}

func (n *node) id() idJSON {
	n.t.Helper()
	r := n.ok("id", "--json")
	var id idJSON
	if err := json.Unmarshal([]byte(r.stdout), &id); err != nil {
		n.t.Fatalf("bt id --json printed invalid JSON: %v\n%s", err, r)
	}
	return id
}

// writeFile writes a file in the test's temp dir and returns its path.
func writeFile(t testing.TB, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
