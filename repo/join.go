package repo

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/tpm2key"
)

// JoinOptions are the choices `bt join` makes.
type JoinOptions struct {
	// Root and Name are the domain and the name the invite is for.
	Root paths.ID
	Name string
	// TPM is where the node key goes.
	TPM   tpm.Device
	Force bool
	Log   *slog.Logger
}

// Obtain gets the new node its writecap: given the node key, it returns the
// writecap and the addresses to bootstrap from.
type Obtain func(ctx context.Context, node tpm.Key) (*caps.Writecap, []string, error)

// Join creates a repo for a machine that joins an existing domain: it
// creates the node key, calls obtain, checks that the writecap is held by
// the node key and covers /<root>/<name>, and writes the repo, config last.
// The repo holds no root key. On failure no repo is left.
func Join(ctx context.Context, dir string, opts JoinOptions, obtain Obtain) (*Repo, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	want, err := paths.New(opts.Root, opts.Name)
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	if err := CheckFree(dir, opts.Force); err != nil {
		return nil, err
	}
	tmp, err := stage(dir)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // nothing left once installed
	r := &Repo{Dir: tmp}
	c := Config{Version: Version, Name: opts.Name, Root: opts.Root, Node: want, RootKey: CustodyNone}
	dev := ResolveDevice(opts.TPM)
	var t *tpm2key.TPM
	if !dev.None {
		if t, err = tpm2key.Open(ctx, dev); err != nil {
			return nil, fmt.Errorf("repo: %w", err)
		}
		defer t.Close()
		c.TPM = dev.String()
	}
	node, custody, err := r.createNodeKey(ctx, t)
	if err != nil {
		return nil, err
	}
	defer node.Close()
	c.NodeKey = custody
	if c.NodeID, err = caps.PrincipalID(node.PublicKey()); err != nil {
		return nil, err
	}
	w, boot, err := obtain(ctx, node)
	if err != nil {
		return nil, err
	}
	if err := caps.NewVerifier().VerifyHolder(w, c.NodeID, want); err != nil {
		return nil, fmt.Errorf("repo: the writecap received does not make this node %s: %w", want, err)
	}
	c.Bootstrap = boot
	r.Config = c
	if err := r.SaveWritecap(w); err != nil {
		return nil, err
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
	r.Dir = dir
	log.Info("joined", "dir", dir, "node", want.String(), "node_key", custody)
	return r, nil
}
