package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/swtpmtest"
)

// Exit codes from docs/cli.md.
const (
	exitUsage = 2
	exitRepo  = 3
	exitKey   = 4
)

func checkID(t *testing.T, id idJSON, name, kind string) {
	t.Helper()
	root, err := paths.ParseID(id.Root)
	if err != nil {
		t.Fatalf("root %q: %v", id.Root, err)
	}
	want, _ := paths.New(root, name)
	if id.Node != want.String() || id.WritecapPrefix != want.String() {
		t.Fatalf("node %q, writecap for %q; want %q", id.Node, id.WritecapPrefix, want)
	}
	if _, err := paths.ParseID(id.NodeID); err != nil || id.NodeID == id.Root {
		t.Fatalf("node id %q (root %q): %v", id.NodeID, id.Root, err)
	}
	if id.Custody.Kind != kind {
		t.Fatalf("custody %+v, want %s", id.Custody, kind)
	}
	exp, err := time.Parse(time.RFC3339, id.WritecapExpiry)
	if err != nil || time.Until(exp) < 300*24*time.Hour {
		t.Fatalf("writecap expiry %q: want about a year from now (%v)", id.WritecapExpiry, err)
	}
}

func TestInitSoftware(t *testing.T) {
	n := newNode(t)
	pass := writeFile(t, "pass", "correct horse battery staple\n")
	r := n.ok("init", "--name", "laptop", "--tpm", "none", "--passphrase-file", pass, "--json")
	var fromInit idJSON
	if err := json.Unmarshal([]byte(r.stdout), &fromInit); err != nil {
		t.Fatalf("init --json: %v\n%s", err, r)
	}
	id := n.id()
	checkID(t, id, "laptop", "software")
	if id != fromInit {
		t.Fatalf("init printed %+v, id prints %+v", fromInit, id)
	}
	if id.RootKey != "software (sealed)" {
		t.Fatalf("root key %q, want sealed software", id.RootKey)
	}
	// The text form says the same things.
	text := n.ok("id").stdout
	for _, want := range []string{id.Root, id.Node, id.NodeID, "software", "sealed"} {
		if !strings.Contains(text, want) {
			t.Errorf("bt id does not show %q:\n%s", want, text)
		}
	}
	// Key files are private.
	for _, f := range []string{"keys/node.key", "keys/root.key", "config.json"} {
		st, err := os.Stat(filepath.Join(n.repo, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", f, st.Mode().Perm())
		}
	}
	// The passphrase never lands in the repo in the clear.
	data, _ := os.ReadFile(filepath.Join(n.repo, "keys/root.key"))
	if strings.Contains(string(data), "correct horse") {
		t.Fatal("passphrase stored in the key file")
	}
}

func TestInitPassphraseFromEnv(t *testing.T) {
	n := newNode(t)
	n.env = []string{"BT_PASSPHRASE=from-the-environment"}
	n.ok("init", "--name", "desk", "--tpm", "none")
	checkID(t, n.id(), "desk", "software")
}

func TestInitSwtpm(t *testing.T) {
	sim := swtpmtest.Start(t)
	n := newNode(t)
	n.ok("init", "--name", "server", "--tpm", sim.Flag(), "--root-tpm")
	id := n.id()
	checkID(t, id, "server", "tpm")
	if id.Custody.Device != sim.Flag() || id.Custody.Algorithm != "ecdsa-p256" || id.RootKey != "tpm" {
		t.Fatalf("custody %+v root key %q; want the swtpm at %s", id.Custody, id.RootKey, sim.Flag())
	}
	// A TPM root key never leaves the TPM.
	n.fails(exitKey, "never leaves the TPM", "key", "export", filepath.Join(t.TempDir(), "root.key"))

	// The keys survive a TPM power cycle: the same identity loads again.
	sim.Restart(t)
	if sim.Flag() != id.Custody.Device {
		t.Fatalf("swtpm came back on another port (%s), so the repo cannot reach it", sim.Flag())
	}
	if again := n.id(); again != id {
		t.Fatalf("after a TPM restart: %+v, before: %+v", again, id)
	}
	// A wiped TPM: a clear error, not another identity.
	sim.Wipe(t)
	r := n.fails(exitKey, "TPM", "id")
	if !strings.Contains(strings.ToLower(r.stderr), "cleared") {
		t.Fatalf("wiped TPM: want an error that says the TPM was cleared:\n%s", r)
	}
}

func TestInitSwtpmNodeKeyOnly(t *testing.T) {
	sim := swtpmtest.Start(t)
	n := newNode(t)
	n.env = []string{"BT_PASSPHRASE=pw"}
	n.ok("init", "--name", "nas", "--tpm", sim.Flag())
	id := n.id()
	checkID(t, id, "nas", "tpm")
	if id.RootKey != "software (sealed)" {
		t.Fatalf("root key %q, want a sealed software key", id.RootKey)
	}
}

func TestInitErrors(t *testing.T) {
	pass := writeFile(t, "pass", "pw\n")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no name", []string{"init", "--passphrase-file", pass}, exitUsage, "--name is required"},
		{"slash in name", []string{"init", "--name", "a/b", "--passphrase-file", pass}, exitUsage, "not a valid path component"},
		{"dot name", []string{"init", "--name", "..", "--passphrase-file", pass}, exitUsage, "not a valid path component"},
		{"invalid UTF-8 in name", []string{"init", "--name", "a\xffb", "--passphrase-file", pass}, exitUsage, "not a valid path component"},
		{"wildcard name", []string{"init", "--name", "*", "--passphrase-file", pass}, exitUsage, "not a valid path component"},
		{"long name", []string{"init", "--name", strings.Repeat("x", 256), "--passphrase-file", pass}, exitUsage, "not a valid path component"},
		{"bad tpm flag", []string{"init", "--name", "a", "--tpm", "maybe", "--passphrase-file", pass}, exitUsage, "--tpm"},
		{"unreachable TPM", []string{"init", "--name", "a", "--tpm", "tcp:127.0.0.1:1", "--passphrase-file", pass}, exitKey, "127.0.0.1:1"},
		{"missing TPM device", []string{"init", "--name", "a", "--tpm", "/dev/tpm-nonexistent", "--passphrase-file", pass}, exitKey, "/dev/tpm-nonexistent"},
		{"root in TPM without one", []string{"init", "--name", "a", "--tpm", "none", "--root-tpm"}, exitError, "--root-tpm"},
		{"no passphrase and no terminal", []string{"init", "--name", "a", "--tpm", "none"}, exitKey, "BT_PASSPHRASE"},
		{"unknown flag", []string{"init", "--name", "a", "--frobnicate"}, exitUsage, "frobnicate"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			n.fails(tc.code, tc.want, tc.args...)
			if _, err := os.Stat(filepath.Join(n.repo, "config.json")); err == nil {
				t.Fatal("a failed init left a repo behind")
			}
		})
	}
}

const exitError = 1

func TestSecondInitRefused(t *testing.T) {
	n := newNode(t)
	n.env = []string{"BT_PASSPHRASE=pw"}
	n.ok("init", "--name", "laptop", "--tpm", "none")
	before := n.id()
	n.fails(exitRepo, "already exists", "init", "--name", "laptop", "--tpm", "none")
	if after := n.id(); after != before {
		t.Fatalf("refused init changed the repo: %+v → %+v", before, after)
	}
	// --force makes a new domain.
	n.ok("init", "--name", "laptop", "--tpm", "none", "--force")
	if after := n.id(); after.Root == before.Root {
		t.Fatal("init --force kept the old root key")
	}
}

func TestRepoErrors(t *testing.T) {
	n := newNode(t)
	n.fails(exitRepo, "bt init", "id")

	n.env = []string{"BT_PASSPHRASE=pw"}
	n.ok("init", "--name", "laptop", "--tpm", "none")
	cfg := filepath.Join(n.repo, "config.json")
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfg, []byte(strings.Replace(string(data), `"version": 1`, `"version": 99`, 1)), 0o600)
	n.fails(exitRepo, "version 99", "id")
	os.WriteFile(cfg, []byte("{not json"), 0o600)
	n.fails(exitRepo, "config", "id")
	os.WriteFile(cfg, data, 0o600)
	n.ok("id")
}

func TestKeyExportImport(t *testing.T) {
	n := newNode(t)
	pass := writeFile(t, "pass", "right\n")
	wrong := writeFile(t, "wrong", "wrong\n")
	n.ok("init", "--name", "laptop", "--tpm", "none", "--passphrase-file", pass)
	backup := filepath.Join(t.TempDir(), "root.key")
	n.ok("key", "export", backup)
	st, err := os.Stat(backup)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup: %v %v", st, err)
	}
	n.fails(exitError, "exists", "key", "export", backup)

	n.fails(exitKey, "wrong passphrase", "key", "import", backup, "--passphrase-file", wrong)
	n.ok("key", "import", backup, "--passphrase-file", pass)

	// A backup of another domain's root is refused.
	other := newNode(t)
	other.ok("init", "--name", "x", "--tpm", "none", "--passphrase-file", pass)
	otherBackup := filepath.Join(t.TempDir(), "other.key")
	other.ok("key", "export", otherBackup)
	n.fails(exitKey, "not this domain's root key", "key", "import", otherBackup, "--passphrase-file", pass)

	// An unsealed root key is sealed on export.
	u := newNode(t)
	u.ok("init", "--name", "u", "--tpm", "none", "--no-passphrase")
	if id := u.id(); id.RootKey != "software (unsealed)" {
		t.Fatalf("root key %q", id.RootKey)
	}
	ub := filepath.Join(t.TempDir(), "u.key")
	u.fails(exitKey, "passphrase", "key", "export", ub)
	u.ok("key", "export", ub, "--passphrase-file", pass)
	u.fails(exitKey, "wrong passphrase", "key", "import", ub, "--passphrase-file", wrong)
	u.ok("key", "import", ub, "--passphrase-file", pass)
	if id := u.id(); id.RootKey != "software (sealed)" {
		t.Fatalf("after importing a sealed backup the root key is %q", id.RootKey)
	}
}
