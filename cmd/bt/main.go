// Command bt is Blocktree: one binary that turns a person's machines into
// one trusted domain. See the README and `bt help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// globals are the flags every command takes.
type globals struct {
	repo     string
	json     bool
	logLevel string
	log      *slog.Logger
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one bt command line and returns its exit code. main only
// calls it, so tests run the CLI in process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "bt: %s\n", strings.TrimPrefix(err.Error(), "bt: "))
	var u *usageError
	if errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "accepts ") || strings.HasPrefix(err.Error(), "requires ") {
		fmt.Fprintln(stderr, "Run 'bt help' for usage.")
		return exitUsage
	}
	return exitCode(err)
}

// newRoot builds the command tree; logs go to stderr.
func newRoot(stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "bt",
		Short:         "Blocktree: your machines as one trusted domain with a global namespace",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
				return usageErr("--log-level %q: want debug, info, warn or error", g.logLevel)
			}
			g.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.repo, "repo", "", "repo directory (default $BT_REPO or ~/.blocktree)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr("%v", err) })
	root.AddCommand(initCmd(g), idCmd(g), keyCmd(g), daemonCmd(g), statusCmd(g), peersCmd(g), resolveCmd(g), pingCmd(g), inviteCmd(g), joinCmd(g),
		sendCmd(g), callCmd(g), listenCmd(g), pubCmd(g), subCmd(g), blockCmd(g), repoCmd(g), actorsCmd(g))
	root.AddCommand(fsCommands(g)...)   // file system: cmd/bt/fs.go
	root.AddCommand(wasmCommands(g)...) // Wasm modules: cmd/bt/wasm.go
	root.AddCommand(benchCmd(g))        // bt bench: cmd/bt/bench.go
	return root
}

// addJSON adds --json to a command that prints data.
func addJSON(cmd *cobra.Command, g *globals) {
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON instead of text")
}
