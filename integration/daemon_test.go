package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/tpm/swtpmtest"
)

const (
	exitCapable = 5
	exitDaemon  = 6
	exitNetwork = 7
)

type statusJSON struct {
	Path         string   `json:"path"`
	PeerID       string   `json:"peer_id"`
	NodeID       string   `json:"node_id"`
	Addrs        []string `json:"addrs"`
	RoutingTable int      `json:"routing_table"`
	Custody      struct {
		Kind string `json:"kind"`
	} `json:"custody"`
}

type resolveJSON struct {
	Path      string   `json:"path"`
	PeerID    string   `json:"peer_id"`
	Addrs     []string `json:"addrs"`
	FromCache bool     `json:"from_cache"`
}

func decodeJSON[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("invalid JSON from %s: %v", r, err)
	}
	return v
}

func TestDaemonLifecycle(t *testing.T) {
	n := newNode(t)
	n.env = []string{"BT_PASSPHRASE=pw"}
	n.ok("init", "--name", "solo", "--tpm", "none")
	n.fails(exitDaemon, "no bt daemon is running", "status")

	d := n.start()
	id := n.id()
	if d.ready.Path != id.Node || d.ready.PeerID == "" || len(d.ready.Addrs) == 0 {
		t.Fatalf("ready line %+v for node %s", d.ready, id.Node)
	}
	st, err := os.Stat(filepath.Join(n.repo, "api.sock"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("API socket: %v, mode %v; want 0600", err, st.Mode())
	}
	s := decodeJSON[statusJSON](t, n.ok("status", "--json"))
	if s.Path != id.Node || s.PeerID != d.ready.PeerID || s.NodeID != id.NodeID || s.Custody.Kind != "software" {
		t.Fatalf("status %+v, ready %+v, id %+v", s, d.ready, id)
	}
	if s.PeerID == s.NodeID {
		t.Fatal("the libp2p identity is the node key itself; want a host key certified by it")
	}
	// A second daemon on the same repo is refused.
	second := n.run(append([]string{"daemon"}, loopbackFlags...)...)
	if second.code != exitDaemon || !strings.Contains(second.stderr, "running") {
		t.Fatalf("second daemon: %s", second)
	}
	// So is replacing the repo under it.
	n.fails(exitDaemon, "running", "init", "--name", "solo", "--tpm", "none", "--force")
	// Bad input to the API gets a clear error.
	n.fails(exitUsage, "paths:", "resolve", "not-a-path")
	d.stop()
	n.fails(exitDaemon, "no bt daemon is running", "status")
	// It starts again on the same repo, with a new host key.
	d2 := n.start()
	if d2.ready.PeerID == d.ready.PeerID {
		t.Fatal("restarted daemon kept its host key")
	}
	d2.stop()
}

// TestTenNodeDomain builds a 10-node domain with invite and join; every
// node resolves and pings every other node's path.
func TestTenNodeDomain(t *testing.T) {
	c := newCluster(t, 10)
	for i := range c.nodes {
		for j := range c.nodes {
			if i == j {
				continue
			}
			var res resolveJSON
			eventually(t, 30*time.Second, fmt.Sprintf("n%d resolves n%d", i, j), func() error {
				r := c.nodes[i].run("resolve", c.path(j), "--json")
				if r.code != 0 {
					return fmt.Errorf("%s", r)
				}
				return json.Unmarshal([]byte(r.stdout), &res)
			})
			if res.PeerID != c.daemons[j].ready.PeerID || res.Path != c.path(j) {
				t.Fatalf("n%d resolved %s to %+v, want peer %s", i, c.path(j), res, c.daemons[j].ready.PeerID)
			}
			c.nodes[i].ok("ping", c.path(j), "-n", "1")
		}
	}
	// Resolving again is answered from the cache.
	res := decodeJSON[resolveJSON](t, c.nodes[3].ok("resolve", c.path(7), "--json"))
	if !res.FromCache {
		t.Errorf("warm resolve not from cache: %+v", res)
	}
	// Every peer n0 talks to has proved its path.
	type peerJSON struct {
		PeerID   string `json:"peer_id"`
		Path     string `json:"path"`
		Verified bool   `json:"verified"`
	}
	peers := decodeJSON[[]peerJSON](t, c.nodes[0].ok("peers", "--json"))
	verified := map[string]string{}
	for _, p := range peers {
		if p.Verified {
			verified[p.PeerID] = p.Path
		}
	}
	for j := 1; j < len(c.nodes); j++ {
		if got := verified[c.daemons[j].ready.PeerID]; got != c.path(j) {
			t.Errorf("n0 sees n%d (%s) with verified path %q, want %s", j, c.daemons[j].ready.PeerID, got, c.path(j))
		}
	}
	ping := c.nodes[1].ok("ping", c.path(2), "-n", "3")
	if strings.Count(ping.stdout, "time=") != 3 {
		t.Errorf("ping -n 3 printed:\n%s", ping.stdout)
	}
}

func TestInviteErrors(t *testing.T) {
	c := newCluster(t, 2)
	inviter := c.nodes[0]

	// A name in use, by the inviter itself or by a running node.
	inviter.fails(exitCapable, "this node's own path", "invite", "n0")
	eventually(t, 20*time.Second, "n1's record is visible to n0", func() error {
		if r := inviter.run("resolve", c.path(1)); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	inviter.fails(exitCapable, "in use", "invite", "n1")
	inviter.fails(exitUsage, "not a valid node name", "invite", "a/b")

	// A used token.
	tok := c.invite("n2")
	newNode(t).ok("join", tok, "--tpm", "none")
	newNode(t).fails(exitCapable, "already used", "join", tok, "--tpm", "none")
	// The same name cannot be invited twice.
	inviter.fails(exitCapable, "in use", "invite", "n2")

	// A wrong secret in an otherwise good token.
	good := c.invite("n3")
	wrong := good[:len(good)-4] + flip(good[len(good)-4:])
	late := newNode(t)
	r := late.run("join", wrong, "--tpm", "none")
	if r.code != exitCapable && r.code != exitUsage {
		t.Fatalf("join with a wrong secret: %s", r)
	}
	if _, err := os.Stat(filepath.Join(late.repo, "config.json")); err == nil {
		t.Fatal("a failed join left a repo")
	}
	late.ok("join", good, "--tpm", "none") // the wrong try did not spend it

	// An expired token.
	short := strings.TrimSpace(inviter.ok("invite", "n4", "--expires", "1s").stdout)
	time.Sleep(1500 * time.Millisecond)
	newNode(t).fails(exitCapable, "expired", "join", short, "--tpm", "none")

	// Garbage.
	newNode(t).fails(exitUsage, "not a valid invite token", "join", "hello")

	// An unreachable inviter.
	tok5 := c.invite("n5")
	c.daemons[0].stop()
	newNode(t).fails(exitNetwork, "cannot reach the inviter", "join", tok5, "--tpm", "none", "--timeout", "5s")
	// And inviting needs the daemon.
	inviter.fails(exitDaemon, "no bt daemon", "invite", "n6")
}

// flip changes a base64url string so it decodes to other bytes.
func flip(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}

// TestKilledNodeExpires kills a node: once its record expires, resolving
// its path fails clearly; a restart (with a new peer ID) resolves again.
func TestKilledNodeExpires(t *testing.T) {
	const ttl = 3 * time.Second
	c := newCluster(t, 3, "--record-ttl", ttl.String())
	observer, victim := c.nodes[1], 2
	eventually(t, 20*time.Second, "n1 resolves n2", func() error {
		if r := observer.run("resolve", c.path(victim)); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	c.daemons[victim].kill()
	killed := time.Now()
	var last result
	eventually(t, 4*ttl+10*time.Second, "resolving a killed node fails", func() error {
		last = observer.run("resolve", c.path(victim))
		if last.code == 0 {
			return fmt.Errorf("still resolves: %s", last.stdout)
		}
		return nil
	})
	if last.code != exitNetwork || !strings.Contains(last.stderr, c.path(victim)) {
		t.Fatalf("resolve of a dead node %v after the kill: want exit %d naming the path, got %s", time.Since(killed).Round(time.Millisecond), exitNetwork, last)
	}
	t.Logf("resolution failed %v after the kill (record TTL %v)", time.Since(killed).Round(time.Millisecond), ttl)

	restarted := c.nodes[victim].start("--record-ttl", ttl.String())
	if restarted.ready.PeerID == c.daemons[victim].ready.PeerID {
		t.Fatal("restarted node kept its peer ID")
	}
	eventually(t, 30*time.Second, "n1 resolves the restarted n2", func() error {
		r := observer.run("resolve", c.path(victim), "--json")
		if r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		if res := decodeJSON[resolveJSON](t, r); res.PeerID != restarted.ready.PeerID {
			return fmt.Errorf("resolves to %s, want the new %s", res.PeerID, restarted.ready.PeerID)
		}
		return nil
	})
	observer.ok("ping", c.path(victim))
}

// TestTwoDomainsOneDHT: two domains share a DHT and resolve each other.
func TestTwoDomainsOneDHT(t *testing.T) {
	a := newCluster(t, 2)
	b := newNode(t)
	b.env = []string{"BT_PASSPHRASE=other"}
	b.ok("init", "--name", "home", "--tpm", "none")
	bd := b.start("--bootstrap", a.daemons[0].ready.Addrs[0])
	if root := func(p string) string { return strings.Split(p, "/")[1] }; root(bd.ready.Path) == root(a.path(0)) {
		t.Fatal("the two domains share a root")
	}
	for _, tc := range []struct {
		from   *node
		target string
		peer   string
	}{
		{b, a.path(1), a.daemons[1].ready.PeerID},
		{a.nodes[1], bd.ready.Path, bd.ready.PeerID},
	} {
		eventually(t, 30*time.Second, "resolve "+tc.target, func() error {
			r := tc.from.run("resolve", tc.target, "--json")
			if r.code != 0 {
				return fmt.Errorf("%s", r)
			}
			if got := decodeJSON[resolveJSON](t, r).PeerID; got != tc.peer {
				return fmt.Errorf("resolved to %s, want %s", got, tc.peer)
			}
			return nil
		})
		tc.from.ok("ping", tc.target)
	}
}

// TestDaemonOnSwtpm runs a node whose key is in a (software) TPM, joined
// into a domain whose root key is in another.
func TestDaemonOnSwtpm(t *testing.T) {
	rootTPM, nodeTPM := swtpmtest.Start(t), swtpmtest.Start(t)
	a := newNode(t)
	a.ok("init", "--name", "vault", "--tpm", rootTPM.Flag(), "--root-tpm")
	ad := a.start()
	if s := decodeJSON[statusJSON](t, a.ok("status", "--json")); s.Custody.Kind != "tpm" {
		t.Fatalf("status custody %+v", s.Custody)
	}
	// The daemon does not hold the TPM: the CLI opens the root key in it.
	tok := strings.TrimSpace(a.ok("invite", "edge").stdout)
	b := newNode(t)
	b.ok("join", tok, "--tpm", nodeTPM.Flag())
	if id := b.id(); id.Custody.Kind != "tpm" || id.RootKey != "none" {
		t.Fatalf("joined node: %+v", id)
	}
	bd := b.start()
	eventually(t, 30*time.Second, "vault resolves edge", func() error {
		r := a.run("resolve", bd.ready.Path, "--json")
		if r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	a.ok("ping", bd.ready.Path)
	b.ok("ping", ad.ready.Path)
}

// TestExpiredWritecap: a node whose writecap expires while it runs can no
// longer be resolved or reached by its path, and a daemon whose writecap
// has expired, or does not cover its path, refuses to start.
func TestExpiredWritecap(t *testing.T) {
	const life = 8 * time.Second
	c := newCluster(t, 1)
	tok := strings.TrimSpace(c.nodes[0].ok("invite", "brief", "--writecap-ttl", life.String()).stdout)
	n := newNode(t)
	n.ok("join", tok, "--tpm", "none")
	granted := time.Now()
	d := n.start()
	eventually(t, 20*time.Second, "n0 reaches brief", func() error {
		if r := c.nodes[0].run("ping", d.ready.Path); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	if time.Since(granted) >= life {
		t.Fatalf("setup took longer than the writecap's life (%v)", life)
	}
	time.Sleep(time.Until(granted.Add(life + time.Second)))
	// A newcomer cannot resolve or reach it any more.
	fresh := c.join("late")
	var last result
	eventually(t, 20*time.Second, "the expired node is refused", func() error {
		last = fresh.run("ping", d.ready.Path, "--timeout", "3s")
		if last.code == 0 {
			return fmt.Errorf("still reachable: %s", last.stdout)
		}
		return nil
	})
	if last.code != exitNetwork && last.code != exitCapable {
		t.Fatalf("ping of a node with an expired writecap: %s", last)
	}
	d.stop()
	// Restarting it is refused with a clear error.
	r := n.run(append([]string{"daemon"}, loopbackFlags...)...)
	if r.code != exitCapable || !strings.Contains(r.stderr, "expired") {
		t.Fatalf("daemon with an expired writecap: %s", r)
	}
}

// TestWrongWritecapRefused: a repo whose writecap is another node's, or
// covers another path, does not start.
func TestWrongWritecapRefused(t *testing.T) {
	c := newCluster(t, 1)
	a := newNode(t)
	a.ok("join", c.invite("a"), "--tpm", "none")
	b := newNode(t)
	b.ok("join", c.invite("b"), "--tpm", "none")
	wa, err := os.ReadFile(filepath.Join(a.repo, "writecap"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.repo, "writecap"), wa, 0o600); err != nil {
		t.Fatal(err)
	}
	r := b.run(append([]string{"daemon"}, loopbackFlags...)...)
	if r.code != exitCapable || !strings.Contains(r.stderr, "writecap") {
		t.Fatalf("daemon with another node's writecap: %s", r)
	}
}

// TestActorsListed: the daemon runs an actor runtime and `bt actors`
// reports it, as JSON and as text.
func TestActorsListed(t *testing.T) {
	n := newNode(t)
	n.env = []string{"BT_PASSPHRASE=pw"}
	n.ok("init", "--name", "actors", "--tpm", "none")
	n.start()
	r := n.ok("actors", "--json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || list == nil {
		t.Fatalf("bt actors --json: want a JSON list, got %s (%v)", r, err)
	}
	if r := n.ok("actors"); !strings.Contains(r.stdout, "no actors") && !strings.Contains(r.stdout, "PATH") {
		t.Fatalf("bt actors: %s", r)
	}
}
