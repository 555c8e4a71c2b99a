// Package repo is a node's on-disk state: its config, its keys (or the TPM
// blobs that stand for them) and its writecap. The layout and the config
// format are specified in docs/repo.md.
//
//	<repo>/config.json     versioned config (written last by Init)
//	<repo>/keys/node.key   node key, software custody (0600)
//	<repo>/keys/node.tpm   node key, TPM custody (blob; the key stays in the TPM)
//	<repo>/keys/root.key   root key, software, sealed under a passphrase
//	<repo>/keys/root.tpm   root key in the TPM
//	<repo>/writecap        the node's writecap (CBOR, docs/writecap.md)
//
// A Repo value is read-only after Open and safe for concurrent use; Init and
// the key import write files atomically and durably.
package repo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/atomicfile"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm"
)

// Version is the repo format version this build writes and reads.
const Version = 1

// File names inside a repo.
const (
	ConfigFile   = "config.json"
	KeysDir      = "keys"
	WritecapFile = "writecap"
	nodeKeyFile  = "keys/node.key"
	nodeTPMFile  = "keys/node.tpm"
	rootKeyFile  = "keys/root.key"
	rootTPMFile  = "keys/root.tpm"
)

// Errors callers branch on.
var (
	ErrNoRepo         = errors.New("no blocktree repo")
	ErrExists         = errors.New("a blocktree repo already exists")
	ErrUnknownVersion = errors.New("repo has an unknown format version")
	ErrBadConfig      = errors.New("invalid repo config")
	ErrNoRootKey      = errors.New("this node does not hold the root key")
	ErrWrongRoot      = errors.New("key is not this domain's root key")
	ErrLocked         = errors.New("a bt daemon is running for this repo")
)

// LockFile is the daemon's lock in the repo.
const LockFile = "daemon.lock"

// Lock takes the repo's daemon lock (an flock, released when the process
// dies) and returns its release. A held lock gives ErrLocked.
func Lock(dir string) (func(), error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("repo: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (lock %s): stop it first, or use another --repo", ErrLocked, path)
		}
		return nil, fmt.Errorf("repo: lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// Custody names where a key lives, as the config records it.
type Custody string

const (
	CustodySoftware Custody = "software"
	CustodyTPM      Custody = "tpm"
	CustodyNone     Custody = "none" // the root key of a joined node: held elsewhere
)

// Config is the repo's config file, version 1.
type Config struct {
	Version int `json:"version"`
	// Name is the node's name: the last component of its path.
	Name string `json:"name"`
	// Root is the domain's root principal.
	Root paths.ID `json:"root"`
	// Node is this node's path, /<root>/<name>.
	Node paths.Path `json:"node"`
	// NodeID is the node key's principal ID.
	NodeID paths.ID `json:"node_id"`
	// NodeKey is where the node key lives.
	NodeKey Custody `json:"node_key"`
	// RootKey is where the root key lives, or "none" when the node does
	// not hold it.
	RootKey Custody `json:"root_key"`
	// TPM is the TPM that holds the TPM-custody keys ("/dev/tpmrm0",
	// "tcp:127.0.0.1:2321"); empty when no key is in a TPM.
	TPM string `json:"tpm,omitempty"`
	// Listen are the daemon's listen addresses (multiaddrs); empty for the
	// defaults. `bt daemon --listen` overrides them.
	Listen []string `json:"listen,omitempty"`
	// Bootstrap are peers the daemon connects to on start (multiaddrs
	// ending in /p2p/<peer-id>); `bt join` writes the inviter's.
	Bootstrap []string `json:"bootstrap,omitempty"`
	// Storage configures the block store; every field is optional.
	Storage Storage `json:"storage,omitzero"`
	// RootHost is the path of the node that hosts the domain's root file
	// system volume /<root> (the node that created the domain): learned
	// from the inviter after `bt join`, and tried before the DHT when the
	// volume is looked for (docs/fs.md). Optional.
	RootHost paths.Path `json:"root_host,omitzero"`

	// ListenAddrs and BootstrapPeers are Listen and Bootstrap parsed by
	// Validate: what the daemon uses. They are not in the file.
	ListenAddrs    []ma.Multiaddr  `json:"-"`
	BootstrapPeers []peer.AddrInfo `json:"-"`
}

// Storage configures the node's block store (docs/repo.md).
type Storage struct {
	// Quota bounds the bytes of stored blocks; 0 means none.
	Quota int64 `json:"quota,omitempty"`
	// Replicas is the default replication factor (1 when 0).
	Replicas int `json:"replicas,omitempty"`
	// Replication maps paths to replication factors; the longest prefix
	// of a file's path wins.
	Replication map[string]int `json:"replication,omitempty"`
	// ScrubInterval is the time between scrubs (a Go duration, "off" to
	// disable; default 6h).
	ScrubInterval string `json:"scrub_interval,omitempty"`
	// GCGrace keeps unpinned blocks younger than this from `bt repo gc`
	// (a Go duration; default 1h).
	GCGrace string `json:"gc_grace,omitempty"`

	// The fields above parsed, with defaults filled, by Validate: what
	// the daemon uses. They are not in the file.

	// Policy is Replicas and Replication.
	Policy ReplicationPolicy `json:"-"`
	// Scrub is ScrubInterval: DefaultScrubInterval when unset, ScrubOff
	// when "off".
	Scrub time.Duration `json:"-"`
	// Grace is GCGrace: DefaultGCGrace when unset.
	Grace time.Duration `json:"-"`
}

// IsZero reports whether st sets nothing in the file (the parsed fields do
// not count), so that "storage" stays out of a config that had none.
func (st Storage) IsZero() bool {
	return st.Quota == 0 && st.Replicas == 0 && len(st.Replication) == 0 && st.ScrubInterval == "" && st.GCGrace == ""
}

// ReplicationPolicy is a parsed replication config: Default for every
// path, ByPath for the subtrees named (the longest prefix wins).
type ReplicationPolicy struct {
	Default int
	ByPath  map[paths.Path]int
}

// Storage defaults.
const (
	// DefaultScrubInterval is the time between scrubs when the config
	// sets none.
	DefaultScrubInterval = 6 * time.Hour
	// ScrubOff is Storage.Scrub when scrubbing is off.
	ScrubOff time.Duration = -1
	// DefaultGCGrace is Storage.Grace when the config sets none.
	DefaultGCGrace = time.Hour
)

// MaxReplicas bounds a replication factor.
const MaxReplicas = 16

// validate checks st's fields and fills its parsed ones.
func (st *Storage) validate() error {
	if st.Quota < 0 {
		return fmt.Errorf("storage.quota %d: want bytes ≥ 0", st.Quota)
	}
	if st.Replicas < 0 || st.Replicas > MaxReplicas {
		return fmt.Errorf("storage.replicas %d: want 1..%d", st.Replicas, MaxReplicas)
	}
	pol := ReplicationPolicy{Default: max(st.Replicas, 1), ByPath: make(map[paths.Path]int, len(st.Replication))}
	for p, f := range st.Replication {
		pp, err := paths.Parse(p)
		if err != nil {
			return fmt.Errorf("storage.replication %q: %v", p, err)
		}
		if f < 1 || f > MaxReplicas {
			return fmt.Errorf("storage.replication %q: factor %d, want 1..%d", p, f, MaxReplicas)
		}
		pol.ByPath[pp] = f
	}
	scrub := DefaultScrubInterval
	switch st.ScrubInterval {
	case "":
	case "off":
		scrub = ScrubOff
	default:
		d, err := time.ParseDuration(st.ScrubInterval)
		if err != nil || d <= 0 {
			return fmt.Errorf("storage.scrub_interval %q: want a positive duration such as 6h, or off", st.ScrubInterval)
		}
		scrub = d
	}
	grace := DefaultGCGrace
	if st.GCGrace != "" {
		d, err := time.ParseDuration(st.GCGrace)
		if err != nil || d < 0 {
			return fmt.Errorf("storage.gc_grace %q: want a duration such as 1h", st.GCGrace)
		}
		grace = d
	}
	st.Policy, st.Scrub, st.Grace = pol, scrub, grace
	return nil
}

// Validate checks c, fills defaults and parses the file's text fields into
// the parsed ones (ListenAddrs, BootstrapPeers, Storage.Policy, .Scrub,
// .Grace), so that users of a validated Config parse nothing. It refuses
// an unknown version (ErrUnknownVersion) and any inconsistency
// (ErrBadConfig). Open and Init validate; code that builds or changes a
// Config calls it again. The file's fields are left as they are, so
// writing a validated Config back writes what was read.
func (c *Config) Validate() error {
	if c.Version != Version {
		return fmt.Errorf("%w: version %d, this bt reads version %d (use a bt release that knows it)", ErrUnknownVersion, c.Version, Version)
	}
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: %s", ErrBadConfig, fmt.Sprintf(f, a...)) }
	if err := paths.ValidComponent(c.Name); err != nil {
		return bad("name: %v", err)
	}
	if _, err := paths.ParseID(string(c.Root)); err != nil {
		return bad("root: %v", err)
	}
	if _, err := paths.ParseID(string(c.NodeID)); err != nil {
		return bad("node_id: %v", err)
	}
	want, err := paths.New(c.Root, c.Name)
	if err != nil || c.Node != want {
		return bad("node path %q is not /<root>/<name> (%s)", c.Node, want)
	}
	switch c.NodeKey {
	case CustodySoftware, CustodyTPM:
	default:
		return bad("node_key %q: want software or tpm", c.NodeKey)
	}
	switch c.RootKey {
	case CustodySoftware, CustodyTPM, CustodyNone:
	case "":
		c.RootKey = CustodyNone
	default:
		return bad("root_key %q: want software, tpm or none", c.RootKey)
	}
	listen := make([]ma.Multiaddr, 0, len(c.Listen))
	for _, a := range c.Listen {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return bad("listen %q: %v", a, err)
		}
		listen = append(listen, m)
	}
	boot := make([]peer.AddrInfo, 0, len(c.Bootstrap))
	for _, a := range c.Bootstrap {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil {
			return bad("bootstrap %q: want a multiaddr ending in /p2p/<peer-id>: %v", a, err)
		}
		boot = append(boot, *ai)
	}
	c.ListenAddrs, c.BootstrapPeers = listen, boot
	if err := c.Storage.validate(); err != nil {
		return bad("%v", err)
	}
	if !c.RootHost.IsZero() && (c.RootHost.Root() != c.Root || c.RootHost.Depth() != 1) {
		return bad("root_host %q is not a node path /<root>/<name> of this domain", c.RootHost)
	}
	usesTPM := c.NodeKey == CustodyTPM || c.RootKey == CustodyTPM
	if usesTPM {
		d, err := tpm.ParseDevice(c.TPM)
		if err != nil || d.Auto || d.None {
			return bad("tpm %q: a key is in a TPM, so name it: a device path or tcp:HOST:PORT", c.TPM)
		}
	} else if c.TPM != "" {
		return bad("tpm %q is set but no key is in a TPM", c.TPM)
	}
	return nil
}

// Repo is an opened repo.
type Repo struct {
	Dir    string
	Config Config
}

// DefaultDir is $BT_REPO, or ~/.blocktree.
func DefaultDir() (string, error) {
	if d := os.Getenv("BT_REPO"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("repo: no home directory (%v): pass --repo or set BT_REPO", err)
	}
	return filepath.Join(home, ".blocktree"), nil
}

// Exists reports whether dir holds a repo (a config file).
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, ConfigFile))
	return err == nil
}

// Open reads the repo at dir. Errors wrap ErrNoRepo, ErrUnknownVersion or
// ErrBadConfig.
func Open(dir string) (*Repo, error) {
	data, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s: run `bt init --name NAME` to create one, or pass --repo", ErrNoRepo, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	c, err := decodeConfig(data)
	if err != nil {
		return nil, fmt.Errorf("repo %s: %w", dir, err)
	}
	return &Repo{Dir: dir, Config: c}, nil
}

func decodeConfig(data []byte) (Config, error) {
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %v", ErrBadConfig, ConfigFile, err)
	}
	if probe.Version != Version {
		return Config{}, fmt.Errorf("%w: version %d, this bt reads version %d (use a bt release that knows it)", ErrUnknownVersion, probe.Version, Version)
	}
	var c Config
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %v", ErrBadConfig, ConfigFile, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (r *Repo) path(name string) string { return filepath.Join(r.Dir, name) }

// Writecap reads the node's writecap.
func (r *Repo) Writecap() (*caps.Writecap, error) {
	data, err := os.ReadFile(r.path(WritecapFile))
	if err != nil {
		return nil, fmt.Errorf("repo: writecap: %w", err)
	}
	w, err := caps.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("repo: %s: %w", r.path(WritecapFile), err)
	}
	return w, nil
}

// SaveWritecap replaces the node's writecap, after checking that it is held
// by the node and covers the node's path now.
func (r *Repo) SaveWritecap(w *caps.Writecap) error {
	if err := caps.NewVerifier().VerifyHolder(w, r.Config.NodeID, r.Config.Node); err != nil {
		return fmt.Errorf("repo: refusing writecap: %w", err)
	}
	return atomicfile.Write(r.path(WritecapFile), w.Marshal(), 0o600)
}

// SetRootHost records p as the host of the domain's root volume in the
// config (atomically and durably); it refuses a path that is not a node
// path of this domain (ErrBadConfig). r itself is left unchanged (it is
// read-only; Open the repo again to see the change).
func (r *Repo) SetRootHost(p paths.Path) error {
	c := r.Config
	c.RootHost = p
	if err := c.Validate(); err != nil {
		return err
	}
	if err := writeConfig(r.Dir, c); err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	return nil
}

func writeConfig(dir string, c Config) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, ConfigFile), append(data, '\n'), 0o600)
}

// DefaultWritecapTTL is how long the writecap Init issues to the node lasts.
const DefaultWritecapTTL = 365 * 24 * time.Hour
