package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"blocktree.dev/bt/daemon"
)

func daemonCmd(g *globals) *cobra.Command {
	var (
		listen, bootstrap []string
		noMDNS, noNAT     bool
		loopback          bool
		recordTTL         time.Duration
		maxMessage        int64
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run this node: join the domain's network, publish its path, serve the local API",
		Long: `Run this node in the foreground until SIGINT or SIGTERM.

It prints one line when it serves ("ready", its path, peer ID and
addresses; --json for a JSON object) and logs to stderr. One daemon per repo.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := g.openRepo()
			if err != nil {
				return err
			}
			opts := daemon.Options{MDNS: !noMDNS, NAT: !noNAT, Loopback: loopback, RecordTTL: recordTTL,
				MaxMessage: maxMessage, Log: g.log}
			for _, s := range listen {
				a, err := ma.NewMultiaddr(s)
				if err != nil {
					return usageErr("--listen %q: %v", s, err)
				}
				opts.Listen = append(opts.Listen, a)
			}
			for _, s := range bootstrap {
				ai, err := peer.AddrInfoFromString(s)
				if err != nil {
					return usageErr("--bootstrap %q: want a multiaddr ending in /p2p/<peer-id>: %v", s, err)
				}
				opts.Bootstrap = append(opts.Bootstrap, *ai)
			}
			out := cmd.OutOrStdout()
			opts.Ready = func(rd daemon.Ready) {
				if g.json {
					_ = json.NewEncoder(out).Encode(struct {
						Event string `json:"event"`
						daemon.Ready
					}{"ready", rd})
					return
				}
				fmt.Fprintf(out, "ready path=%s peer=%s addrs=%s\n", rd.Path, rd.PeerID, strings.Join(rd.Addrs, ","))
			}
			return daemon.Run(cmd.Context(), r, opts)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&listen, "listen", nil, "listen multiaddrs (repeatable; default: all interfaces, TCP and QUIC on port 4737)")
	f.StringSliceVar(&bootstrap, "bootstrap", nil, "peers to connect to first, /ip4/…/tcp/…/p2p/<peer-id> (repeatable; adds to the repo's)")
	f.BoolVar(&noMDNS, "no-mdns", false, "do not discover peers on the LAN with mDNS")
	f.BoolVar(&noNAT, "no-nat", false, "turn off AutoNAT, relays, hole punching and port mapping")
	f.BoolVar(&loopback, "loopback", false, "relax DHT limits for a cluster of daemons on one machine (tests)")
	f.DurationVar(&recordTTL, "record-ttl", 0, "lifetime of this node's path record (default 1h; republished at half)")
	f.Int64Var(&maxMessage, "max-message", 64<<20, "largest message this node sends or accepts, in bytes")
	addJSON(cmd, g)
	return cmd
}
