package repo

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/softkey"
)

var cheapKDF = &softkey.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func newTestRepo(t *testing.T, name string) *Repo {
	t.Helper()
	r, err := Init(context.Background(), filepath.Join(t.TempDir(), "repo"), InitOptions{
		Name: name, TPM: tpm.Device{None: true}, Passphrase: []byte("pw"), KDF: cheapKDF})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInitOpen(t *testing.T) {
	r := newTestRepo(t, "laptop")
	o, err := Open(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o.Config, r.Config) {
		t.Fatalf("opened %+v, created %+v", o.Config, r.Config)
	}
	ctx := context.Background()
	node, err := o.NodeKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	w, err := o.Writecap()
	if err != nil {
		t.Fatal(err)
	}
	if err := caps.NewVerifier().VerifyHolder(w, o.Config.NodeID, o.Config.Node); err != nil {
		t.Fatalf("node writecap: %v", err)
	}
	if _, err := o.RootKey(ctx, func() ([]byte, error) { return []byte("nope"), nil }); !errors.Is(err, tpm.ErrWrongPassphrase) {
		t.Fatalf("RootKey with a wrong passphrase: %v", err)
	}
	root, err := o.RootKey(ctx, func() ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	root.Close()
}

func TestValidate(t *testing.T) {
	good := newTestRepo(t, "laptop").Config
	other := newTestRepo(t, "desk").Config
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want error
	}{
		{"version 2", func(c *Config) { c.Version = 2 }, ErrUnknownVersion},
		{"version 0", func(c *Config) { c.Version = 0 }, ErrUnknownVersion},
		{"bad name", func(c *Config) { c.Name = "a/b" }, ErrBadConfig},
		{"node path of another root", func(c *Config) { c.Node = other.Node }, ErrBadConfig},
		{"name and path disagree", func(c *Config) { c.Name = "desk" }, ErrBadConfig},
		{"bad node id", func(c *Config) { c.NodeID = "Qm" }, ErrBadConfig},
		{"unknown custody", func(c *Config) { c.NodeKey = "hsm" }, ErrBadConfig},
		{"tpm key without a tpm", func(c *Config) { c.NodeKey = CustodyTPM }, ErrBadConfig},
		{"tpm without a tpm key", func(c *Config) { c.TPM = "/dev/tpmrm0" }, ErrBadConfig},
		{"negative quota", func(c *Config) { c.Storage.Quota = -1 }, ErrBadConfig},
		{"replicas 17", func(c *Config) { c.Storage.Replicas = 17 }, ErrBadConfig},
		{"replication of a bad path", func(c *Config) { c.Storage.Replication = map[string]int{"photos": 2} }, ErrBadConfig},
		{"replication factor 0", func(c *Config) { c.Storage.Replication = map[string]int{c.Node.String(): 0} }, ErrBadConfig},
		{"bad scrub interval", func(c *Config) { c.Storage.ScrubInterval = "often" }, ErrBadConfig},
		{"negative gc grace", func(c *Config) { c.Storage.GCGrace = "-1h" }, ErrBadConfig},
		{"good storage", func(c *Config) {
			c.Storage = Storage{Quota: 1 << 30, Replicas: 2, Replication: map[string]int{c.Node.String(): 3}, ScrubInterval: "off", GCGrace: "0s"}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			if err := c.Validate(); !errors.Is(err, tc.want) {
				t.Fatalf("Validate: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestInitLeavesNoRepoOnFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	_, err := Init(context.Background(), dir, InitOptions{Name: "x", TPM: tpm.Device{Addr: "127.0.0.1:1"}, Passphrase: []byte("pw"), KDF: cheapKDF})
	if !errors.Is(err, tpm.ErrUnavailable) {
		t.Fatalf("Init with an unreachable TPM: %v", err)
	}
	if Exists(dir) {
		t.Fatal("failed Init left a config")
	}
}

// frozen is a repo of format version 1 (software keys, root key sealed under
// "blocktree", writecap valid until 2126) that every build must open.
const frozen = "testdata/repo-v1"

// copyFrozen copies the frozen repo to a temp dir with the modes bt writes
// (git keeps no 0600).
func copyFrozen(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	err := filepath.WalkDir(frozen, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(frozen, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestFrozenRepo(t *testing.T) {
	r, err := Open(copyFrozen(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	node, err := r.NodeKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	w, err := r.Writecap()
	if err != nil {
		t.Fatal(err)
	}
	if err := caps.NewVerifier().VerifyHolder(w, r.Config.NodeID, r.Config.Node); err != nil {
		t.Fatal(err)
	}
	root, err := r.RootKey(ctx, func() ([]byte, error) { return []byte("blocktree"), nil })
	if err != nil {
		t.Fatal(err)
	}
	root.Close()
}

// TestWriteFrozen regenerates testdata/repo-v1, for a new format version
// only: BT_REGEN=1 go test ./repo -run TestWriteFrozen.
func TestWriteFrozen(t *testing.T) {
	if os.Getenv("BT_REGEN") == "" {
		t.Skip("regenerates testdata; set BT_REGEN=1")
	}
	os.RemoveAll(frozen)
	_, err := Init(context.Background(), frozen, InitOptions{Name: "frozen", TPM: tpm.Device{None: true},
		Passphrase: []byte("blocktree"), KDF: cheapKDF, WritecapTTL: time.Until(time.Date(2126, 1, 1, 0, 0, 0, 0, time.UTC))})
	if err != nil {
		t.Fatal(err)
	}
}

func FuzzDecodeConfig(f *testing.F) {
	if data, err := os.ReadFile(filepath.Join(frozen, ConfigFile)); err == nil {
		f.Add(data)
		f.Add([]byte(strings.Replace(string(data), `"version": 1`, `"version": 2`, 1)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeConfig(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("decodeConfig accepted a config that does not validate: %v", err)
		}
	})
}

func TestSetRootHost(t *testing.T) {
	r := newTestRepo(t, "laptop")
	if !r.Config.RootHost.IsZero() {
		t.Fatalf("a new repo has root host %s", r.Config.RootHost)
	}
	host, err := paths.New(r.Config.Root, "server")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetRootHost(host); err != nil {
		t.Fatal(err)
	}
	again, err := Open(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Config.RootHost != host {
		t.Fatalf("root host %q after reopening, want %s", again.Config.RootHost, host)
	}
	// Not a node path of this domain.
	for _, bad := range []paths.Path{r.Config.Node.RootPath(), paths.MustParse("/" + string(r.Config.NodeID) + "/x")} {
		if err := r.SetRootHost(bad); !errors.Is(err, ErrBadConfig) {
			t.Errorf("SetRootHost(%s): %v", bad, err)
		}
	}
	// A config without the field (older repos) still opens.
	data, err := os.ReadFile(filepath.Join(r.Dir, ConfigFile))
	if err != nil || !strings.Contains(string(data), `"root_host"`) {
		t.Fatalf("config lacks root_host: %v\n%s", err, data)
	}
}

func TestValidateParses(t *testing.T) {
	good := newTestRepo(t, "laptop").Config
	const boot = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWGB87QGrjoC1gtR9AuG6MFNGNuKEFwoefq42j6K5jsLda"
	for _, tc := range []struct {
		name                string
		storage             Storage
		listen              []string
		wantScrub, wantGrac time.Duration
		wantDefault         int
		wantByPath          int
	}{
		{name: "defaults", wantScrub: DefaultScrubInterval, wantGrac: DefaultGCGrace, wantDefault: 1},
		{name: "scrub off", storage: Storage{ScrubInterval: "off"}, wantScrub: ScrubOff, wantGrac: DefaultGCGrace, wantDefault: 1},
		{name: "set", storage: Storage{Replicas: 3, Replication: map[string]int{good.Node.String(): 2}, ScrubInterval: "90m", GCGrace: "0s"},
			listen: []string{"/ip4/127.0.0.1/tcp/0"}, wantScrub: 90 * time.Minute, wantGrac: 0, wantDefault: 3, wantByPath: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			c.Storage, c.Listen, c.Bootstrap = tc.storage, tc.listen, []string{boot}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			st := c.Storage
			if st.Scrub != tc.wantScrub || st.Grace != tc.wantGrac || st.Policy.Default != tc.wantDefault {
				t.Fatalf("scrub %v grace %v default %d, want %v %v %d", st.Scrub, st.Grace, st.Policy.Default, tc.wantScrub, tc.wantGrac, tc.wantDefault)
			}
			if got := st.Policy.ByPath[good.Node]; got != tc.wantByPath {
				t.Fatalf("factor of %s: %d, want %d", good.Node, got, tc.wantByPath)
			}
			if len(c.ListenAddrs) != len(tc.listen) || len(c.ListenAddrs) > 0 && c.ListenAddrs[0].String() != tc.listen[0] {
				t.Fatalf("listen addrs %v, want %v", c.ListenAddrs, tc.listen)
			}
			if len(c.BootstrapPeers) != 1 || c.BootstrapPeers[0].ID.String() != "12D3KooWGB87QGrjoC1gtR9AuG6MFNGNuKEFwoefq42j6K5jsLda" {
				t.Fatalf("bootstrap peers %v", c.BootstrapPeers)
			}
		})
	}
}

// TestParsedNotWritten: a validated config written back is the file it
// was read from, without the parsed fields.
func TestParsedNotWritten(t *testing.T) {
	dir := copyFrozen(t)
	before, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Config.Storage.Scrub != DefaultScrubInterval || r.Config.Storage.Grace != DefaultGCGrace {
		t.Fatalf("frozen repo: scrub %v grace %v, want the defaults", r.Config.Storage.Scrub, r.Config.Storage.Grace)
	}
	if err := writeConfig(dir, r.Config); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Fatalf("written back:\n%s\nwant:\n%s", after, before)
	}
}
