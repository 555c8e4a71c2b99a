package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/api"
)

func actorsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "actors",
		Short: "List the node's actors and services: path, owner, kind, state, mailbox depth",
		Args:  cobra.NoArgs,
		RunE: unary[api.None, []api.Actor]{
			call: listOf((*api.Client).Actors),
			text: func(cmd *cobra.Command, list []api.Actor) error {
				if len(list) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no actors")
					return nil
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PATH\tKIND\tSTATE\tMAILBOX\tOWNER")
				for _, a := range list {
					state := a.State
					if a.ProtocolState != "" {
						state += " (" + a.Protocol + ": " + a.ProtocolState + ")"
					}
					owner := a.Owner.String()
					if owner == "" {
						owner = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", a.Path, a.Kind, state, a.MailboxDepth, a.MailboxCap, owner)
				}
				return tw.Flush()
			},
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}
