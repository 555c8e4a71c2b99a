package repo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/atomicfile"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/softkey"
	"blocktree.dev/bt/tpm/tpm2key"
)

// ResolveDevice turns a --tpm choice into the TPM to use, or none. "auto"
// picks tpm.DefaultDevice when it exists and software keys otherwise; an
// explicit device is returned as is (opening it will fail loudly if it is
// not there — never a silent fallback).
func ResolveDevice(d tpm.Device) tpm.Device {
	if !d.Auto {
		return d
	}
	if _, err := os.Stat(tpm.DefaultDevice); err == nil {
		return tpm.Device{Path: tpm.DefaultDevice}
	}
	return tpm.Device{None: true}
}

// stage makes a fresh staging directory beside dir in which a new repo is
// built; install moves it into place. So a failed init or join leaves the
// old repo (or none) untouched.
func stage(dir string) (string, error) {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", fmt.Errorf("repo: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".new-")
	if err != nil {
		return "", fmt.Errorf("repo: %w", err)
	}
	if err := os.Mkdir(filepath.Join(tmp, KeysDir), 0o700); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("repo: %w", err)
	}
	return tmp, nil
}

// install replaces dir (if any) by the staged repo tmp.
func install(tmp, dir string) error {
	var old string
	if _, err := os.Stat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("repo: replacing %s: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			os.Rename(old, dir)
		}
		return fmt.Errorf("repo: %w", err)
	}
	if old != "" {
		os.RemoveAll(old)
	}
	if d, err := os.Open(filepath.Dir(dir)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// CheckFree returns ErrExists if dir holds a repo and force is false.
func CheckFree(dir string, force bool) error {
	if !Exists(dir) {
		return nil
	}
	if !force {
		return fmt.Errorf("%w at %s: pass --force to replace it (its keys are lost unless exported) or --repo for another", ErrExists, dir)
	}
	unlock, err := Lock(dir)
	if err != nil {
		return err
	}
	unlock()
	return nil
}

// InitOptions are the choices `bt init` makes.
type InitOptions struct {
	// Name is the node's name, the last component of its path.
	Name string
	// TPM is where the node key goes: a device, none, or auto.
	TPM tpm.Device
	// RootInTPM puts the root key in the TPM instead of a sealed key file.
	RootInTPM bool
	// Passphrase seals the software root key. Empty stores it unsealed
	// (only with AllowUnsealed).
	Passphrase    []byte
	AllowUnsealed bool
	// Force replaces an existing repo.
	Force bool
	// WritecapTTL is the node writecap's lifetime (DefaultWritecapTTL).
	WritecapTTL time.Duration
	// KDF overrides the passphrase KDF costs (tests).
	KDF *softkey.KDFParams
	Log *slog.Logger
}

// Init creates a repo at dir: a new domain whose root key issues the node a
// writecap for /<root>/<name>. It refuses an existing repo unless
// opts.Force, and an invalid name. The config is written last, so a crash
// leaves either no repo or a whole one.
func Init(ctx context.Context, dir string, opts InitOptions) (*Repo, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := paths.ValidComponent(opts.Name); err != nil {
		return nil, fmt.Errorf("repo: node name %q: %w", opts.Name, err)
	}
	if err := CheckFree(dir, opts.Force); err != nil {
		return nil, err
	}
	if opts.RootInTPM && opts.TPM.None {
		return nil, errors.New("repo: --root-tpm needs a TPM, but --tpm none was given")
	}
	if !opts.RootInTPM && len(opts.Passphrase) == 0 && !opts.AllowUnsealed {
		return nil, errors.New("repo: the root key needs a passphrase: use --passphrase-file or BT_PASSPHRASE, or --no-passphrase to store it unsealed")
	}
	if opts.WritecapTTL <= 0 {
		opts.WritecapTTL = DefaultWritecapTTL
	}
	dev := ResolveDevice(opts.TPM)
	if opts.RootInTPM && dev.None {
		return nil, fmt.Errorf("repo: --root-tpm: no TPM found at %s; name one with --tpm", tpm.DefaultDevice)
	}
	if opts.TPM.Auto {
		if dev.None {
			log.Info("no TPM found; using software keys", "looked_for", tpm.DefaultDevice)
		} else {
			log.Info("TPM found; node key goes in the TPM", "device", dev.String())
		}
	}
	tmp, err := stage(dir)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // nothing left once installed
	r := &Repo{Dir: tmp}
	c := Config{Version: Version, Name: opts.Name}

	var t *tpm2key.TPM
	if !dev.None {
		var err error
		if t, err = tpm2key.Open(ctx, dev); err != nil {
			return nil, fmt.Errorf("repo: %w", err)
		}
		defer t.Close()
		c.TPM = dev.String()
	}

	// Root key.
	var root tpm.Key
	if opts.RootInTPM {
		k, blob, err := t.Create(ctx)
		if err != nil {
			return nil, fmt.Errorf("repo: root key: %w", err)
		}
		defer k.Close()
		if err := atomicfile.Write(r.path(rootTPMFile), blob, 0o600); err != nil {
			return nil, fmt.Errorf("repo: %w", err)
		}
		root, c.RootKey = k, CustodyTPM
	} else {
		k, err := softkey.Generate()
		if err != nil {
			return nil, fmt.Errorf("repo: %w", err)
		}
		if err := saveSoftKey(r.path(rootKeyFile), k, opts.Passphrase, opts.KDF); err != nil {
			return nil, err
		}
		root, c.RootKey = k, CustodySoftware
	}
	rootID, err := caps.PrincipalID(root.PublicKey())
	if err != nil {
		return nil, err
	}

	// Node key.
	node, custody, err := r.createNodeKey(ctx, t)
	if err != nil {
		return nil, err
	}
	defer node.Close()
	c.NodeKey = custody
	if c.RootKey != CustodyTPM && c.NodeKey != CustodyTPM {
		c.TPM = ""
	}
	if c.NodeID, err = caps.PrincipalID(node.PublicKey()); err != nil {
		return nil, err
	}
	c.Root = rootID
	if c.Node, err = paths.New(rootID, opts.Name); err != nil {
		return nil, err
	}

	// The root grants the node its path. Not-before is backdated a little so
	// peers whose clocks lag accept it.
	now := time.Now()
	w, err := caps.Issue(ctx, root, nil, c.NodeID, c.Node, now.Add(-5*time.Minute), now.Add(opts.WritecapTTL))
	if err != nil {
		return nil, fmt.Errorf("repo: node writecap: %w", err)
	}
	if err := atomicfile.Write(r.path(WritecapFile), w.Marshal(), 0o600); err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	if err := writeConfig(tmp, c); err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	if err := install(tmp, dir); err != nil {
		return nil, err
	}
	r.Dir, r.Config = dir, c
	log.Info("repo created", "dir", dir, "node", c.Node.String(), "node_key", c.NodeKey, "root_key", c.RootKey)
	return r, nil
}

// createNodeKey makes the node key: in the TPM t when t is not nil, else in
// a software key file. The caller closes the key.
func (r *Repo) createNodeKey(ctx context.Context, t *tpm2key.TPM) (tpm.Key, Custody, error) {
	if t != nil {
		k, blob, err := t.Create(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("repo: node key: %w", err)
		}
		if err := atomicfile.Write(r.path(nodeTPMFile), blob, 0o600); err != nil {
			k.Close()
			return nil, "", fmt.Errorf("repo: %w", err)
		}
		return k, CustodyTPM, nil
	}
	k, err := softkey.Generate()
	if err != nil {
		return nil, "", fmt.Errorf("repo: %w", err)
	}
	if err := saveSoftKey(r.path(nodeKeyFile), k, nil, nil); err != nil {
		return nil, "", err
	}
	return k, CustodySoftware, nil
}

func saveSoftKey(path string, k *softkey.Key, passphrase []byte, kdf *softkey.KDFParams) error {
	var data []byte
	var err error
	if kdf != nil {
		data, err = k.MarshalWithKDF(passphrase, *kdf)
	} else {
		data, err = k.Marshal(passphrase)
	}
	if err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	return nil
}

// tpmKey is a key together with the TPM connection opened for it, closed
// with it.
type tpmKey struct {
	tpm.Key
	t *tpm2key.TPM
}

func (k tpmKey) Close() error { return errors.Join(k.Key.Close(), k.t.Close()) }

func (r *Repo) openTPMKey(ctx context.Context, blobFile string) (tpm.Key, error) {
	blob, err := os.ReadFile(r.path(blobFile))
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	dev, err := tpm.ParseDevice(r.Config.TPM)
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	t, err := tpm2key.Open(ctx, dev)
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	k, err := t.Load(ctx, blob)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("repo: %s: %w", blobFile, err)
	}
	return tpmKey{k, t}, nil
}

// NodeKey opens the node's key. The caller closes it.
func (r *Repo) NodeKey(ctx context.Context) (tpm.Key, error) {
	var k tpm.Key
	var err error
	if r.Config.NodeKey == CustodyTPM {
		k, err = r.openTPMKey(ctx, nodeTPMFile)
	} else {
		k, err = softkey.Load(r.path(nodeKeyFile), nil)
	}
	if err != nil {
		return nil, err
	}
	if id, _ := caps.PrincipalID(k.PublicKey()); id != r.Config.NodeID {
		k.Close()
		return nil, fmt.Errorf("repo: node key is %s but the config says %s: the repo is inconsistent", id, r.Config.NodeID)
	}
	return k, nil
}

// RootKeySealed reports whether opening the root key needs a passphrase.
func (r *Repo) RootKeySealed() (bool, error) {
	if r.Config.RootKey != CustodySoftware {
		return false, nil
	}
	data, err := os.ReadFile(r.path(rootKeyFile))
	if err != nil {
		return false, fmt.Errorf("repo: %w", err)
	}
	return softkey.Sealed(data)
}

// RootKey opens the domain's root key; passphrase is asked for only when the
// key file is sealed. Errors wrap ErrNoRootKey, tpm.ErrWrongPassphrase, ….
func (r *Repo) RootKey(ctx context.Context, passphrase func() ([]byte, error)) (tpm.Key, error) {
	var k tpm.Key
	switch r.Config.RootKey {
	case CustodyNone:
		return nil, fmt.Errorf("repo: %w: issue writecaps on the node that does, or `bt key import` a backup", ErrNoRootKey)
	case CustodyTPM:
		var err error
		if k, err = r.openTPMKey(ctx, rootTPMFile); err != nil {
			return nil, err
		}
	default:
		sealed, err := r.RootKeySealed()
		if err != nil {
			return nil, err
		}
		var pass []byte
		if sealed {
			if pass, err = passphrase(); err != nil {
				return nil, err
			}
		}
		if k, err = softkey.Load(r.path(rootKeyFile), pass); err != nil {
			return nil, err
		}
	}
	if id, _ := caps.PrincipalID(k.PublicKey()); id != r.Config.Root {
		k.Close()
		return nil, fmt.Errorf("repo: root key is %s but the config says %s: %w", id, r.Config.Root, ErrWrongRoot)
	}
	return k, nil
}

// ExportRootKey returns the root key as a sealed key file for backup. A
// sealed root key is exported as it is stored; an unsealed one is sealed
// under newPassphrase. A TPM root key cannot be exported
// (tpm.ErrNotExportable).
func (r *Repo) ExportRootKey(newPassphrase func() ([]byte, error)) ([]byte, error) {
	switch r.Config.RootKey {
	case CustodyNone:
		return nil, fmt.Errorf("repo: %w", ErrNoRootKey)
	case CustodyTPM:
		return nil, fmt.Errorf("repo: %w", tpm.ErrNotExportable)
	}
	data, err := os.ReadFile(r.path(rootKeyFile))
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	sealed, err := softkey.Sealed(data)
	if err != nil {
		return nil, err
	}
	if sealed {
		return data, nil
	}
	k, err := softkey.Unmarshal(data, nil)
	if err != nil {
		return nil, err
	}
	pass, err := newPassphrase()
	if err != nil {
		return nil, err
	}
	if len(pass) == 0 {
		return nil, errors.New("repo: an exported key must be sealed: give a passphrase")
	}
	return k.Marshal(pass)
}

// ImportRootKey stores a root key backup (a key file as ExportRootKey
// writes) in the repo, sealed as it came. It must open with passphrase and
// be this domain's root key (else ErrWrongRoot).
func (r *Repo) ImportRootKey(data []byte, passphrase func() ([]byte, error)) error {
	sealed, err := softkey.Sealed(data)
	if err != nil {
		return err
	}
	var pass []byte
	if sealed {
		if pass, err = passphrase(); err != nil {
			return err
		}
	}
	k, err := softkey.Unmarshal(data, pass)
	if err != nil {
		return err
	}
	if id, _ := caps.PrincipalID(k.PublicKey()); id != r.Config.Root {
		return fmt.Errorf("repo: key %s, domain root %s: %w", id, r.Config.Root, ErrWrongRoot)
	}
	if r.Config.RootKey == CustodyTPM {
		return errors.New("repo: this node's root key is in its TPM already")
	}
	if err := atomicfile.Write(r.path(rootKeyFile), data, 0o600); err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	if r.Config.RootKey != CustodySoftware {
		c := r.Config
		c.RootKey = CustodySoftware
		if err := writeConfig(r.Dir, c); err != nil {
			return fmt.Errorf("repo: %w", err)
		}
		r.Config = c
	}
	return nil
}
