package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

// bt bench (docs/cli.md, "Bench"): the daemon generates the load
// (POST /v1/bench); this command shows its progress and prints the result.

// Defaults of a bench, as nats bench's.
const (
	benchDefaultSize = 128
	benchDefaultMsgs = 100_000
)

// benchPlainEvery is how often a bench off a terminal prints a progress
// line on stderr.
const benchPlainEvery = time.Second

func benchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure messaging between live daemons: rate, bytes/s and latency percentiles (like nats bench)",
		Long: "Measure messaging between live daemons, the way nats bench does. The local daemon generates the load\n" +
			"itself; `bt bench serve PATH` answers it on the node that owns PATH (for pub: on each node that should\n" +
			"receive).",
	}
	cmd.AddCommand(
		benchRunCmd(g, api.BenchCall, "call PATH", "Call PATH MSGS times, from CLIENTS concurrent clients; the latency is the round trip"),
		benchRunCmd(g, api.BenchSend, "send PATH", "Send to PATH MSGS times, fire-and-forget; the latency is until the receiver accepted"),
		benchRunCmd(g, api.BenchPub, "pub TOPIC", "Publish on TOPIC MSGS times and report what each subscriber received"),
		benchServeCmd(g),
	)
	return cmd
}

// parseBenchSize is parseSize that also takes 0.
func parseBenchSize(s string) (int, error) {
	if strings.TrimSpace(s) == "0" {
		return 0, nil
	}
	n, err := parseSize(s)
	if err != nil || n > 1<<40 {
		return 0, fmt.Errorf("%q: want a size such as 64 or 1KiB", s)
	}
	return int(n), nil
}

// sizeFlag is a flag of bytes: a number with an optional unit (K, M, G).
type sizeFlag struct {
	n   int
	set bool
}

func (f *sizeFlag) String() string {
	if !f.set && f.n == 0 {
		return ""
	}
	return strconv.Itoa(f.n)
}

func (f *sizeFlag) Set(s string) error {
	n, err := parseBenchSize(s)
	if err != nil {
		return err
	}
	f.n, f.set = n, true
	return nil
}

func (f *sizeFlag) Type() string { return "B" }

func benchRunCmd(g *globals, kind, use, short string) *cobra.Command {
	var (
		size    = sizeFlag{n: benchDefaultSize}
		msgs    int
		clients int
		timeout time.Duration
		confirm bool
	)
	cmd := &cobra.Command{
		Use:   use + " [--size B] [--msgs N] [--clients C]",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := paths.Parse(args[0])
			if err != nil {
				return usageErr("bench %s: %v", kind, err)
			}
			if timeout <= 0 {
				return usageErr("bench %s: --timeout must be positive", kind)
			}
			req := api.BenchRequest{Kind: kind, Path: p, Size: size.n, Msgs: msgs, Clients: clients, Confirm: confirm, Timeout: timeout.String()}
			c, err := g.client()
			if err != nil {
				return err
			}
			bar := newBenchProgress(cmd.ErrOrStderr(), g.json, kind)
			var res *api.BenchResult
			err = c.Bench(cmd.Context(), req, func(ev api.BenchEvent) error {
				switch ev.Event {
				case "progress":
					bar.show(ev)
				case "result":
					res = ev.Result
					return errStreamDone
				case "error":
					if ev.Error != nil {
						return ev.Error
					}
					return api.Errorf(api.KindInternal, "the daemon reported an error without a message")
				}
				return nil
			})
			bar.done()
			if !errors.Is(err, errStreamDone) {
				return err
			}
			if res == nil {
				return api.Errorf(api.KindInternal, "the daemon sent no result")
			}
			if g.json {
				err = printJSON(cmd, res)
			} else {
				err = printBench(cmd.OutOrStdout(), res)
			}
			if err != nil {
				return err
			}
			if res.Errors > 0 {
				return fmt.Errorf("%d of %d messages failed; the first: %s", res.Errors, res.Msgs, res.FirstError)
			}
			return nil
		},
	}
	cmd.Flags().Var(&size, "size", "payload bytes of each message (K, M suffixes)")
	cmd.Flags().IntVar(&msgs, "msgs", benchDefaultMsgs, "messages to send, shared out among the clients")
	cmd.Flags().IntVar(&clients, "clients", 1, "concurrent clients")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "deadline of each message")
	if kind == api.BenchSend {
		cmd.Flags().BoolVar(&confirm, "confirm", false, "each send waits until the receiver accepted it")
	}
	addJSON(cmd, g)
	return cmd
}

// printBench prints a result as text.
func printBench(w io.Writer, r *api.BenchResult) error {
	clients := "clients"
	if r.Clients == 1 {
		clients = "client"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s msgs of %s from %d %s in %s\n", r.Kind, r.Path, commas(r.Count), humanBytes(int64(r.Size)), r.Clients, clients,
		(time.Duration(r.Seconds * float64(time.Second))).Round(time.Millisecond))
	fmt.Fprintf(&b, "  rate     %s msg/s  %s/s\n", commas(int64(r.Rate)), humanBytes(int64(r.BytesPerSec)))
	fmt.Fprintf(&b, "  latency  %s\n", latencyLine(r.Latency))
	if r.Errors > 0 {
		fmt.Fprintf(&b, "  errors   %s (the first: %s)\n", commas(r.Errors), r.FirstError)
	}
	if r.Kind == api.BenchPub {
		if len(r.Subscribers) == 0 {
			b.WriteString("  delivered: no subscriber reported\n")
		}
		for _, s := range r.Subscribers {
			pct := 0.0
			if r.Count > 0 {
				pct = 100 * float64(s.Count) / float64(r.Count)
			}
			fmt.Fprintf(&b, "  delivered to %s: %s of %s (%.2f%%) at %s msg/s\n", s.Node, commas(s.Count), commas(r.Count), pct, commas(int64(s.Rate)))
			fmt.Fprintf(&b, "    one way  %s (on the two nodes' clocks)\n", latencyLine(s.Latency))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func latencyLine(l api.BenchLatency) string {
	return fmt.Sprintf("min %s  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s",
		micros(l.Min), micros(l.P50), micros(l.P90), micros(l.P99), micros(l.P999), micros(l.Max), micros(l.Mean))
}

// micros renders a latency in microseconds with a fitting unit.
func micros(us float64) string {
	switch {
	case us < 10:
		return fmt.Sprintf("%.1fµs", us)
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2fms", us/1000)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

// commas renders n with thousands separators.
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// benchProgress shows a bench's progress on stderr: a bar on a terminal, a
// plain line every benchPlainEvery elsewhere, nothing with --json.
type benchProgress struct {
	bar   *progress
	plain bool
	w     io.Writer
	kind  string
	last  time.Time
}

func newBenchProgress(w io.Writer, json bool, kind string) *benchProgress {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &benchProgress{bar: newProgress(w, json, "bench "+kind), plain: !json && !tty, w: w, kind: kind, last: time.Now()}
}

func (p *benchProgress) show(ev api.BenchEvent) {
	text := fmt.Sprintf("%s / %s msgs", commas(ev.Done), commas(ev.Total))
	if ev.Seconds > 0 {
		text += fmt.Sprintf("  %s msg/s", commas(int64(float64(ev.Done)/ev.Seconds)))
	}
	if ev.Errors > 0 {
		text += fmt.Sprintf("  %s errors", commas(ev.Errors))
	}
	if p.kind == api.BenchPub {
		text += fmt.Sprintf("  %s delivered", commas(ev.Delivered))
	}
	if ev.Phase == "drain" {
		text += " (waiting for the subscribers' counts)"
	}
	if p.plain {
		if time.Since(p.last) >= benchPlainEvery {
			p.last = time.Now()
			fmt.Fprintf(p.w, "bench %s: %s\n", p.kind, text)
		}
		return
	}
	if p.bar.tick() {
		frac := 0.0
		if ev.Total > 0 {
			frac = float64(ev.Done+ev.Errors) / float64(ev.Total)
		}
		p.bar.draw(frac, text)
	}
}

func (p *benchProgress) done() { p.bar.done() }

func benchServeCmd(g *globals) *cobra.Command {
	var replySize sizeFlag
	cmd := &cobra.Command{
		Use:   "serve PATH [--reply-size B]",
		Short: "Answer benches at PATH while it runs: an echo endpoint for call and send, a counting subscriber for pub",
		Long: "Answer benches at PATH while it runs. When PATH is this node's (or under it), an endpoint there answers\n" +
			"calls with their payload (or --reply-size bytes) and accepts sends; in any case a subscription to the\n" +
			"topic PATH counts the messages of pub benches and reports them to each publisher. Prints what arrived,\n" +
			"at most every second.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := paths.Parse(args[0])
			if err != nil {
				return usageErr("bench serve: %v", err)
			}
			req := api.BenchServeRequest{Path: p}
			if replySize.set {
				req.ReplySize = &replySize.n
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			return c.BenchServe(cmd.Context(), req, func(ev api.BenchServeEvent) error {
				if ev.Event == "serving" {
					what := "call and send: an endpoint here; pub: a subscription"
					if !ev.Endpoint {
						what = "pub only: the path is not this node's, so calls and sends go to the node that owns it"
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "bt: serving benches at %s (%s)\n", ev.Path, what)
					return nil
				}
				if g.json {
					return json.NewEncoder(out).Encode(ev)
				}
				dropped := ""
				if ev.Dropped > 0 {
					dropped = fmt.Sprintf(" (%s publications dropped: the subscription's queue was full)", commas(ev.Dropped))
				}
				_, err := fmt.Fprintf(out, "received %s calls, %s sends, %s published, %s%s\n",
					commas(ev.Calls), commas(ev.Sends), commas(ev.Published), humanBytes(ev.Bytes), dropped)
				return err
			})
		},
	}
	cmd.Flags().Var(&replySize, "reply-size", "answer calls with this many bytes instead of their payload (default: echo)")
	addJSON(cmd, g)
	return cmd
}
