package main

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/spf13/cobra"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/invite"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/repo"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/softkey"
)

func inviteCmd(g *globals) *cobra.Command {
	var (
		expires time.Duration
		ttl     time.Duration
		pass    passphraseSource
	)
	cmd := &cobra.Command{
		Use:   "invite NAME",
		Short: "Invite a machine into this domain as /<root-id>/NAME; prints a one-time token for `bt join`",
		Long: `Invite a machine into this domain. Needs the root key (this node's repo holds
it: the passphrase is asked for when it is sealed) and a running daemon,
which the new machine contacts. The token works once, until --expires.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := paths.ValidComponent(name); err != nil {
				return usageErr("invite: %q is not a valid node name: %v", name, err)
			}
			if expires <= 0 {
				return usageErr("invite: --expires must be positive")
			}
			r, err := g.openRepo()
			if err != nil {
				return err
			}
			target, err := paths.New(r.Config.Root, name)
			if err != nil {
				return usageErr("invite: %v", err)
			}
			// Check the daemon first, so the passphrase is not asked in vain.
			c, err := g.client()
			if err != nil {
				return err
			}
			if _, err := c.Status(cmd.Context()); err != nil {
				return err
			}
			root, err := r.RootKey(cmd.Context(), func() ([]byte, error) { return pass.get("Passphrase of the root key", false) })
			if err != nil {
				return err
			}
			defer root.Close()
			del, err := softkey.Generate()
			if err != nil {
				return err
			}
			did, err := caps.PrincipalID(del.PublicKey())
			if err != nil {
				return err
			}
			now := time.Now()
			grant, err := caps.Issue(cmd.Context(), root, nil, did, target, now.Add(-5*time.Minute), now.Add(ttl))
			if err != nil {
				return err
			}
			delFile, err := del.Marshal(nil)
			if err != nil {
				return err
			}
			req := api.InviteRequest{Name: name, Delegate: delFile, Grant: grant.Marshal(), Expiry: now.Add(expires)}
			res, err := c.Invite(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, res)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "bt: on the new machine run: bt join <token above>   (valid once, until %s)\n", res.Expiry.Local().Format(time.DateTime))
			return nil
		},
	}
	cmd.Flags().DurationVar(&expires, "expires", time.Hour, "how long the token can be used")
	cmd.Flags().DurationVar(&ttl, "writecap-ttl", repo.DefaultWritecapTTL, "lifetime of the new node's writecap")
	cmd.Flags().StringVar(&pass.file, "passphrase-file", "", "read the root key's passphrase from the first line of this file")
	addJSON(cmd, g)
	return cmd
}

func joinCmd(g *globals) *cobra.Command {
	var (
		tpmFlag string
		force   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "join TOKEN",
		Short: "Add this machine to a domain with a token from `bt invite`",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := invite.ParseToken(args[0])
			if err != nil {
				return usageErr("join: %v", err)
			}
			dev, err := tpm.ParseDevice(tpmFlag)
			if err != nil {
				return usageErr("join: --tpm: %v", err)
			}
			dir, err := g.repoDir()
			if err != nil {
				return err
			}
			if err := repo.CheckFree(dir, force); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			// A throwaway libp2p host that only dials: it has no identity
			// in the domain yet.
			h, err := libp2p.New(libp2p.NoListenAddrs)
			if err != nil {
				return err
			}
			defer h.Close()
			r, err := repo.Join(ctx, dir, repo.JoinOptions{Root: tok.Root, Name: tok.Name, TPM: dev, Force: force, Log: g.log},
				func(ctx context.Context, node tpm.Key) (*caps.Writecap, []string, error) {
					res, err := invite.Join(ctx, h, tok, node.PublicKey())
					if err != nil {
						return nil, nil, err
					}
					var boot []string
					for _, a := range res.Bootstrap {
						boot = append(boot, a.String())
					}
					return res.Writecap, boot, nil
				})
			if err != nil {
				return err
			}
			return printID(cmd, g, r)
		},
	}
	cmd.Flags().StringVar(&tpmFlag, "tpm", "auto", "where the node key lives: auto, none, a device such as /dev/tpmrm0, or tcp:HOST:PORT")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing repo")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up reaching the inviter after this long")
	addJSON(cmd, g)
	return cmd
}
