package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/repo"
	"blocktree.dev/bt/tpm"
)

// idInfo is what `bt id` prints.
type idInfo struct {
	Root           string   `json:"root"`
	Node           string   `json:"node"`
	NodeID         string   `json:"node_id"`
	Custody        tpm.Info `json:"custody"`
	RootKey        string   `json:"root_key"`
	WritecapPrefix string   `json:"writecap_prefix"`
	WritecapExpiry string   `json:"writecap_expiry"`
	Repo           string   `json:"repo"`
}

func idCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Show this node's identity: root, path, principal ID, key custody, writecap",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := g.openRepo()
			if err != nil {
				return err
			}
			return printID(cmd, g, r)
		},
	}
	addJSON(cmd, g)
	return cmd
}

// printID opens the node key (so what it prints is what is there, TPM
// included) and prints the node's identity.
func printID(cmd *cobra.Command, g *globals, r *repo.Repo) error {
	k, err := r.NodeKey(cmd.Context())
	if err != nil {
		return err
	}
	defer k.Close()
	w, err := r.Writecap()
	if err != nil {
		return err
	}
	rootKey := string(r.Config.RootKey)
	if r.Config.RootKey == repo.CustodySoftware {
		if sealed, err := r.RootKeySealed(); err == nil && sealed {
			rootKey += " (sealed)"
		} else if err == nil {
			rootKey += " (unsealed)"
		}
	}
	info := idInfo{
		Root: string(r.Config.Root), Node: r.Config.Node.String(), NodeID: string(r.Config.NodeID),
		Custody: k.Info(), RootKey: rootKey, WritecapPrefix: w.Prefix().String(),
		WritecapExpiry: w.Expiry().UTC().Format(time.RFC3339), Repo: r.Dir,
	}
	out := cmd.OutOrStdout()
	if g.json {
		e := json.NewEncoder(out)
		e.SetIndent("", "  ")
		return e.Encode(info)
	}
	fmt.Fprintf(out, "root:      %s\n", info.Root)
	fmt.Fprintf(out, "node:      %s\n", info.Node)
	fmt.Fprintf(out, "node id:   %s\n", info.NodeID)
	fmt.Fprintf(out, "custody:   %s\n", info.Custody)
	fmt.Fprintf(out, "root key:  %s\n", info.RootKey)
	fmt.Fprintf(out, "writecap:  %s until %s\n", info.WritecapPrefix, info.WritecapExpiry)
	fmt.Fprintf(out, "repo:      %s\n", info.Repo)
	return nil
}
