package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/repo"
	"blocktree.dev/bt/tpm"
)

func initCmd(g *globals) *cobra.Command {
	var (
		name, tpmFlag string
		rootTPM       bool
		noPassphrase  bool
		force         bool
		pass          passphraseSource
		ttl           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "init --name NAME",
		Short: "Create a new domain: its root key, this node's key and the node's writecap",
		Long: `Create a new domain in the repo (--repo, $BT_REPO or ~/.blocktree).

The root key is stored sealed under a passphrase (--passphrase-file,
$BT_PASSPHRASE, or asked on the terminal), or in the TPM with --root-tpm.
The node key goes in the TPM when one is found (--tpm auto) and in a key
file otherwise. The root then grants this node the path /<root-id>/NAME.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usageErr("init: --name is required: the node's name, e.g. --name laptop")
			}
			if err := paths.ValidComponent(name); err != nil {
				return usageErr("init: --name %q is not a valid path component: %v", name, err)
			}
			dev, err := tpm.ParseDevice(tpmFlag)
			if err != nil {
				return usageErr("init: --tpm: %v", err)
			}
			dir, err := g.repoDir()
			if err != nil {
				return err
			}
			if err := repo.CheckFree(dir, force); err != nil {
				return err
			}
			if dev.Auto {
				if r := repo.ResolveDevice(dev); r.None {
					fmt.Fprintf(cmd.ErrOrStderr(), "bt: --tpm auto: no TPM at %s; keys stay in software key files\n", tpm.DefaultDevice)
				} else {
					fmt.Fprintf(cmd.ErrOrStderr(), "bt: --tpm auto: using the TPM at %s\n", r)
				}
			}
			opts := repo.InitOptions{Name: name, TPM: dev, RootInTPM: rootTPM, Force: force,
				AllowUnsealed: noPassphrase, WritecapTTL: ttl, Log: g.log}
			if !rootTPM && !noPassphrase {
				if opts.Passphrase, err = pass.get("Passphrase for the new root key", true); err != nil {
					return err
				}
			}
			r, err := repo.Init(cmd.Context(), dir, opts)
			if err != nil {
				return err
			}
			return printID(cmd, g, r)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "this node's name: its path is /<root-id>/NAME (required)")
	f.StringVar(&tpmFlag, "tpm", "auto", "where the node key lives: auto, none, a device such as /dev/tpmrm0, or tcp:HOST:PORT")
	f.BoolVar(&rootTPM, "root-tpm", false, "keep the root key in the TPM too (it can then never be exported)")
	f.StringVar(&pass.file, "passphrase-file", "", "read the root key's passphrase from the first line of this file")
	f.BoolVar(&noPassphrase, "no-passphrase", false, "store the root key unsealed (mode 0600); anyone who reads the repo owns the domain")
	f.BoolVar(&force, "force", false, "replace an existing repo (its keys are lost unless exported)")
	f.DurationVar(&ttl, "writecap-ttl", repo.DefaultWritecapTTL, "lifetime of the node's writecap")
	addJSON(cmd, g)
	return cmd
}
