package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

// client returns an API client for the command's repo.
func (g *globals) client() (*api.Client, error) {
	dir, err := g.repoDir()
	if err != nil {
		return nil, err
	}
	return api.NewClient(dir), nil
}

func printJSON(cmd *cobra.Command, v any) error {
	e := json.NewEncoder(cmd.OutOrStdout())
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func statusCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running daemon: path, peer ID, addresses, custody, DHT size, uptime",
		Args:  cobra.NoArgs,
		RunE: unary[api.None, api.Status]{
			call: noReq((*api.Client).Status),
			text: func(cmd *cobra.Command, st api.Status) error {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "path:          %s\n", st.Path)
				fmt.Fprintf(out, "peer id:       %s\n", st.PeerID)
				fmt.Fprintf(out, "node id:       %s\n", st.NodeID)
				fmt.Fprintf(out, "custody:       %s\n", st.Custody)
				fmt.Fprintf(out, "routing table: %d peers\n", st.RoutingTable)
				fmt.Fprintf(out, "connected:     %d peers\n", st.Peers)
				fmt.Fprintf(out, "uptime:        %s\n", st.Uptime)
				if !st.RecordExpiry.IsZero() {
					fmt.Fprintf(out, "record until:  %s\n", st.RecordExpiry.UTC().Format(time.RFC3339))
				}
				for _, a := range st.Addrs {
					fmt.Fprintf(out, "address:       %s\n", a)
				}
				return nil
			},
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}

func peersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List connected peers with their verified paths",
		Args:  cobra.NoArgs,
		RunE: unary[api.None, []api.Peer]{
			call: noReq((*api.Client).Peers),
			text: func(cmd *cobra.Command, ps []api.Peer) error {
				out := cmd.OutOrStdout()
				for _, p := range ps {
					path := p.Path.String()
					if !p.Verified {
						path = "(unverified)"
					}
					fmt.Fprintf(out, "%s  %s  %s\n", p.PeerID, path, strings.Join(p.Addrs, ","))
				}
				return nil
			},
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}

func resolveCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "resolve PATH",
		Short: "Find the peer that hosts PATH",
		Args:  cobra.ExactArgs(1),
		RunE: unary[paths.Path, api.Resolution]{
			req: func(_ *cobra.Command, args []string) (paths.Path, error) {
				p, err := paths.Parse(args[0])
				if err != nil {
					return paths.Path{}, usageErr("resolve: %v", err)
				}
				return p, nil
			},
			call: (*api.Client).Resolve,
			text: func(cmd *cobra.Command, res api.Resolution) error {
				src := "network"
				if res.FromCache {
					src = "cache"
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "path:    %s\npeer id: %s\nexpires: %s\nfrom:    %s\n", res.Path, res.PeerID, res.Expiry.UTC().Format(time.RFC3339), src)
				for _, a := range res.Addrs {
					fmt.Fprintf(out, "address: %s\n", a)
				}
				return nil
			},
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}

func pingCmd(g *globals) *cobra.Command {
	var (
		count   int
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "ping PATH",
		Short: "Measure round trips to the node at PATH over an authenticated stream",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := paths.Parse(args[0])
			if err != nil {
				return usageErr("ping: %v", err)
			}
			if count < 1 {
				return usageErr("ping: -n must be at least 1")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var results []api.PingResult
			for i := range count {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout+time.Second)
				res, err := c.Ping(ctx, api.PingRequest{Path: p, Timeout: timeout.String()})
				cancel()
				if err != nil {
					return err
				}
				results = append(results, res)
				if !g.json {
					fmt.Fprintf(out, "%s seq=%d time=%.3f ms\n", res.Path, i+1, res.RTTms)
				}
			}
			if g.json {
				return printJSON(cmd, results)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&count, "count", "n", 1, "number of round trips")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "deadline for each round trip, resolution and connection included")
	addJSON(cmd, g)
	return cmd
}
