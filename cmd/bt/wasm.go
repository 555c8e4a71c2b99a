package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

// wasmCommands are the commands that run Wasm modules (docs/cli.md,
// "Wasm modules").
func wasmCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{wasmRunCmd(g), wasmPsCmd(g), wasmStopCmd(g), wasmLogsCmd(g)}
}

// parseSize parses a byte count: a number with an optional unit, K, M or G
// (powers of 1024; KiB, MiB, GiB and KB, MB, GB mean the same).
func parseSize(s string) (uint64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	mult := uint64(1)
	for _, u := range []struct {
		suf string
		m   uint64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suf)), u.m
			break
		}
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil || n == 0 || n > (1<<63)/mult {
		return 0, fmt.Errorf("%q: want a positive size such as 64MiB", s)
	}
	return n * mult, nil
}

func wasmRunCmd(g *globals) *cobra.Command {
	var (
		req        api.WasmRunRequest
		nodes      []string
		read       []string
		write      []string
		message    []string
		publish    []string
		env        []string
		memory     string
		deadline   time.Duration
		print      bool
		outputFile string
	)
	cmd := &cobra.Command{
		Use:   "run MODULE_PATH",
		Short: "Run the Wasm module at MODULE_PATH on this node (or the --on nodes) as a capability-limited actor",
		Long: "Build a manifest for the module at MODULE_PATH (a blocktree path) with the rights given, have this\n" +
			"node sign it, and write it into each target node's deployment directory /<root>/<node>/deploy/NAME.manifest;\n" +
			"each target's daemon then starts the module (`bt ps` there shows it). The module may touch only the\n" +
			"paths its rights name: --read and --write (files), --message (send and call), --publish (topics); each\n" +
			"is a path prefix. This node must hold a writecap that covers the rights.\n\n" +
			"--print-manifest signs without deploying and writes the manifest to stdout (or -o FILE); copying it\n" +
			"into a deployment directory (through a mount, or with `bt put`) deploys it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mod, err := fsPath("run", args[0])
			if err != nil {
				return err
			}
			req.Module, req.Print = mod, print
			for _, c := range []struct {
				flag string
				in   []string
				out  *[]paths.Path
			}{{"run --on", nodes, &req.Nodes}, {"run --read", read, &req.Read}, {"run --write", write, &req.Write},
				{"run --message", message, &req.Message}, {"run --publish", publish, &req.Publish}} {
				for _, s := range c.in {
					p, err := fsPath(c.flag, s)
					if err != nil {
						return err
					}
					*c.out = append(*c.out, p)
				}
			}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageErr("run: --env %q: want KEY=VALUE", kv)
				}
				if req.Env == nil {
					req.Env = map[string]string{}
				}
				req.Env[k] = v
			}
			if memory != "" {
				n, err := parseSize(memory)
				if err != nil {
					return usageErr("run: --memory %v", err)
				}
				req.Memory = n
			}
			if deadline < 0 {
				return usageErr("run: --deadline must be positive")
			}
			if deadline > 0 {
				req.Deadline = deadline.String()
			}
			switch req.Restart {
			case "", "always", "on-failure", "never":
			default:
				return usageErr("run: --restart %q: want always, on-failure or never", req.Restart)
			}
			if outputFile != "" && !print {
				return usageErr("run: -o needs --print-manifest")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.WasmRun(cmd.Context(), req)
			if err != nil {
				return fsErr(err)
			}
			if res.Warning != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "bt: warning: %s\n", res.Warning)
			}
			if print {
				if outputFile != "" {
					if err := os.WriteFile(outputFile, res.Manifest, 0o644); err != nil {
						return err
					}
				} else if !g.json {
					_, err := cmd.OutOrStdout().Write(res.Manifest)
					return err
				}
			}
			if g.json {
				return printJSON(cmd, res)
			}
			for _, m := range res.Manifests {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: manifest written to %s\n", res.Name, m)
			}
			if print && outputFile != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: manifest signed by %s written to %s\n", res.Name, res.Signer, outputFile)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "the instance's name (default: the module's file name without .wasm)")
	f.StringArrayVar(&nodes, "on", nil, "node path to run it on (repeatable; default this node)")
	f.StringArrayVar(&read, "read", nil, "path prefix the module may read files under (repeatable)")
	f.StringArrayVar(&write, "write", nil, "path prefix the module may write files under (repeatable)")
	f.StringArrayVar(&message, "message", nil, "path prefix the module may send messages to and call (repeatable)")
	f.StringArrayVar(&publish, "publish", nil, "topic prefix the module may publish to (repeatable)")
	f.StringArrayVar(&env, "env", nil, "KEY=VALUE in the module's environment (repeatable)")
	f.StringVar(&memory, "memory", "", "memory limit, such as 64MiB (default: the runtime's)")
	f.DurationVar(&deadline, "deadline", 0, "how long the module may run on one message (default: the runtime's)")
	f.StringVar(&req.Restart, "restart", "", "restart policy: always, on-failure or never (default: the runtime's)")
	f.BoolVar(&print, "print-manifest", false, "sign the manifest and print it (or write it to -o FILE); deploy nothing")
	f.StringVarP(&outputFile, "output", "o", "", "with --print-manifest: write the manifest to FILE")
	addJSON(cmd, g)
	return cmd
}

func wasmPsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List this node's Wasm modules: name, state, restarts, module and why refused or stopped",
		Args:  cobra.NoArgs,
		RunE: unary[api.None, []api.WasmInstance]{
			call: listOf((*api.Client).WasmPs),
			text: func(cmd *cobra.Command, list []api.WasmInstance) error {
				if len(list) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no modules")
					return nil
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSTATE\tRESTARTS\tMODULE\tPATH\tREASON")
				for _, in := range list {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", dash(in.Name), in.State, in.Restarts, dash(in.Module.String()), dash(in.Path.String()), dash(oneLine(in.Reason)))
				}
				return tw.Flush()
			},
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func wasmStopCmd(g *globals) *cobra.Command {
	var on string
	cmd := &cobra.Command{
		Use:   "stop NAME",
		Short: "Stop the Wasm module NAME by removing its manifest from the deployment directory",
		Long: "Remove the manifest of NAME from this node's deployment directory (or --on NODE_PATH's), which\n" +
			"stops the module there. On this node the command returns once it has stopped.",
		Args: cobra.ExactArgs(1),
		RunE: unary[api.WasmStopRequest, api.WasmStopResult]{
			req: func(_ *cobra.Command, args []string) (api.WasmStopRequest, error) {
				req := api.WasmStopRequest{Name: args[0]}
				if on != "" {
					p, err := fsPath("stop --on", on)
					if err != nil {
						return api.WasmStopRequest{}, err
					}
					req.Node = p
				}
				return req, nil
			},
			call: (*api.Client).WasmStop,
			wrap: fsErr,
			text: func(cmd *cobra.Command, res api.WasmStopResult) error {
				what := "removed"
				if res.Stopped {
					what = "stopped; removed"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s %s\n", res.Name, what, res.Removed)
				return nil
			},
		}.runE(g),
	}
	cmd.Flags().StringVar(&on, "on", "", "the node path whose deployment directory holds it (default this node)")
	addJSON(cmd, g)
	return cmd
}

// errEndOfLogs ends a logs stream that does not follow.
var errEndOfLogs = errors.New("end of logs")

func wasmLogsCmd(g *globals) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print the log of this node's Wasm module NAME (-f: and follow it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			err = c.WasmLogs(cmd.Context(), api.WasmLogsRequest{Name: args[0], Follow: follow}, func(l api.WasmLogLine) error {
				if l.Event == "end" {
					return errEndOfLogs
				}
				if g.json {
					b, err := json.Marshal(l)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(out, "%s\n", b)
					return err
				}
				_, err := fmt.Fprintln(out, l.Line)
				return err
			})
			if errors.Is(err, errEndOfLogs) {
				return nil
			}
			if follow && cmd.Context().Err() != nil {
				return nil // interrupted: the normal end of -f
			}
			return fsErr(err)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until interrupted")
	addJSON(cmd, g)
	return cmd
}
