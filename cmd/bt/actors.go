package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// actorJSON is one entry of GET /v1/actors (actors.ActorInfo).
type actorJSON struct {
	Path          string `json:"path"`
	Owner         string `json:"owner,omitempty"`
	Kind          string `json:"kind"`
	State         string `json:"state"`
	ProtocolState string `json:"protocol_state,omitempty"`
	Protocol      string `json:"protocol,omitempty"`
	MailboxDepth  int    `json:"mailbox_depth"`
	MailboxCap    int    `json:"mailbox_cap"`
}

func actorsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "actors",
		Short: "List the node's actors and services: path, owner, kind, state, mailbox depth",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var raw json.RawMessage
			if err := g.call(cmd.Context(), http.MethodGet, "/v1/actors", nil, nil, &raw); err != nil {
				return err
			}
			var list []actorJSON
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("decoding the daemon's answer: %w", err)
			}
			if g.json {
				return printJSON(cmd, raw)
			}
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
				owner := a.Owner
				if owner == "" {
					owner = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", a.Path, a.Kind, state, a.MailboxDepth, a.MailboxCap, owner)
			}
			return tw.Flush()
		},
	}
	addJSON(cmd, g)
	return cmd
}
