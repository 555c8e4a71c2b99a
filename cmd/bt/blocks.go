package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

func blockCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "block",
		Short: "Store a file as encrypted blocks and read it back by its root and key",
	}
	cmd.AddCommand(blockPutCmd(g), blockGetCmd(g))
	return cmd
}

func blockPutCmd(g *globals) *cobra.Command {
	var (
		replicas int
		path     string
	)
	cmd := &cobra.Command{
		Use:   "put FILE|-",
		Short: "Seal FILE (or stdin) under a fresh key into the daemon's store; print its root and key",
		Long: "Seal FILE (or stdin for -) under a fresh random key into the daemon's block store, pin it, and\n" +
			"replicate it to reach its replication factor (--replicas, else the repo's policy for --path,\n" +
			"else 1). The answer comes once every copy is durable. Keep the printed key: it is the only\n" +
			"way to read the file.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.BlockPutRequest{Replicas: replicas}
			if replicas != 0 && replicas < 1 {
				return usageErr("block put: --replicas must be at least 1")
			}
			if path != "" {
				p, err := paths.Parse(path)
				if err != nil {
					return usageErr("block put: --path: %v", err)
				}
				req.Path = p
			}
			var (
				in    io.Reader
				total int64 = -1
			)
			if args[0] == "-" {
				in = cmd.InOrStdin()
			} else {
				f, err := os.Open(args[0])
				if err != nil {
					return usageErr("block put: %v", err)
				}
				defer f.Close()
				if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
					total = fi.Size()
				}
				in = f
			}
			bar := newProgress(cmd.ErrOrStderr(), g.json, "sending")
			in = &countingReader{r: in, each: func(n int64) { bar.bytes(n, total) }}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.BlockPut(cmd.Context(), req, in)
			bar.done()
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, res)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "root      %s\nkey       %s\nsize      %d bytes in %d blocks\n", res.Root, res.Key, res.Size, res.Blocks)
			if len(res.Replicas) > 0 {
				var rs []string
				for _, p := range res.Replicas {
					rs = append(rs, p.String())
				}
				fmt.Fprintf(out, "replicas  %s\n", strings.Join(rs, ", "))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 0, "replication factor: nodes that must hold the file before the put succeeds")
	cmd.Flags().StringVar(&path, "path", "", "the blocktree path the file belongs to (selects the repo's replication policy)")
	addJSON(cmd, g)
	return cmd
}

func blockGetCmd(g *globals) *cobra.Command {
	var (
		key     string
		from    []string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "get ROOT --key KEY [OUT]",
		Short: "Read the file at ROOT (from this node or its peers) and write it to OUT or stdout",
		Long: "Fetch the blocks of the file at ROOT (from the local store, the nodes named by --from, then\n" +
			"any node that announced it), verify every block, decrypt with KEY and write the plaintext to\n" +
			"OUT (replaced only when the whole file checked) or to stdout.",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return usageErr("block get: --key is required (the key `bt block put` printed)")
			}
			req := api.BlockGetRequest{Root: args[0], Key: key, Timeout: timeout.String()}
			for _, f := range from {
				p, err := paths.Parse(f)
				if err != nil {
					return usageErr("block get: --from: %v", err)
				}
				req.From = append(req.From, p)
			}
			if timeout <= 0 {
				return usageErr("block get: --timeout must be positive")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if len(args) == 1 {
				return c.BlockGet(cmd.Context(), req, cmd.OutOrStdout())
			}
			return writeAtomically(args[1], func(w io.Writer) error {
				return c.BlockGet(cmd.Context(), req, w)
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the file key, as `bt block put` printed it")
	cmd.Flags().StringArrayVar(&from, "from", nil, "path of a node to fetch from first (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	return cmd
}

// writeAtomically writes to a temporary file next to name and renames it
// into place only when write succeeded.
func writeAtomically(name string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".bt-*")
	if err != nil {
		return usageErr("%v", err)
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

func repoCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repo",
		Short: "Inspect and maintain the daemon's block store: stat, gc, verify",
	}
	cmd.AddCommand(repoStatCmd(g), repoGCCmd(g), repoVerifyCmd(g))
	return cmd
}

func repoStatCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stat",
		Short: "Show the block store: blocks, bytes, pins, quota",
		Args:  cobra.NoArgs,
		RunE: unary[api.None, api.RepoStat]{
			call: noReq((*api.Client).RepoStat),
			text: func(cmd *cobra.Command, st api.RepoStat) error {
				quota := "none"
				if st.Quota > 0 {
					quota = fmt.Sprintf("%s (%.1f%% used)", humanBytes(st.Quota), 100*float64(st.Bytes)/float64(st.Quota))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "store          %s\nblocks         %d\nbytes          %d (%s)\npins           %d\npinned blocks  %d\nquota          %s\n",
					st.Dir, st.Blocks, st.Bytes, humanBytes(st.Bytes), st.Pins, st.PinnedBlocks, quota)
				return nil
			},
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}

func repoGCCmd(g *globals) *cobra.Command {
	var grace string
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete unpinned blocks older than the grace period",
		Long: "Delete every block no pin names whose last write is older than --grace (default: the repo's\n" +
			"storage.gc_grace, 1h). Safe while the daemon keeps writing. --json prints progress events.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if grace != "" {
				if d, err := time.ParseDuration(grace); err != nil || d < 0 {
					return usageErr("gc: --grace %q: want a duration such as 1h", grace)
				}
			}
			bar := newProgress(cmd.ErrOrStderr(), g.json, "collecting")
			done, err := g.repoStream(cmd, func(c *api.Client, each func(api.RepoEvent) error) error {
				return c.RepoGC(cmd.Context(), api.GCRequest{Grace: grace}, each)
			}, func(ev api.RepoEvent) {
				bar.count(ev.Scanned, -1, fmt.Sprintf("%d deleted, %s freed", ev.Deleted, humanBytes(ev.Freed)))
			})
			bar.done()
			if err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(cmd.OutOrStdout(), "scanned %d blocks, deleted %d, freed %s, kept %d unpinned blocks younger than the grace period\n",
					done.Scanned, done.Deleted, humanBytes(done.Freed), done.Kept)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&grace, "grace", "", "keep unpinned blocks written less than this long ago (0 collects all)")
	addJSON(cmd, g)
	return cmd
}

func repoVerifyCmd(g *globals) *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Read and verify every stored block; check that every pinned block is present",
		Long: "Read every block and check it against its CID, and check that every pinned block is present.\n" +
			"With --repair, delete corrupt blocks and fetch pinned ones again from replicas. Exits 1 when\n" +
			"corrupt or missing blocks remain. --json prints progress events.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bar := newProgress(cmd.ErrOrStderr(), g.json, "verifying")
			done, err := g.repoStream(cmd, func(c *api.Client, each func(api.RepoEvent) error) error {
				return c.RepoVerify(cmd.Context(), api.VerifyRequest{Repair: repair}, each)
			}, func(ev api.RepoEvent) {
				bar.count(ev.Checked, ev.Total, fmt.Sprintf("%s, %d corrupt", humanBytes(ev.Bytes), ev.NCorrupt))
			})
			bar.done()
			if err != nil {
				return err
			}
			if !g.json {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "verified %d blocks (%s)\n", done.Checked, humanBytes(done.Bytes))
				for _, c := range done.Corrupt {
					fmt.Fprintf(out, "corrupt   %s\n", c)
				}
				for _, c := range done.Removed {
					fmt.Fprintf(out, "removed   %s\n", c)
				}
				for _, c := range done.Repaired {
					fmt.Fprintf(out, "repaired  %s\n", c)
				}
				for _, c := range done.Missing {
					fmt.Fprintf(out, "missing   %s\n", c)
				}
			}
			bad := len(done.Missing)
			if !repair {
				bad += len(done.Corrupt)
			}
			if bad > 0 {
				hint := "run `bt repo verify --repair` to fetch them from replicas"
				if repair {
					hint = "no reachable replica had them"
				}
				return fmt.Errorf("%d corrupt and %d missing blocks: %s", len(done.Corrupt), len(done.Missing), hint)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "delete corrupt blocks and fetch missing pinned blocks from replicas")
	addJSON(cmd, g)
	return cmd
}

// errStreamDone stops a repo stream at its "done" event.
var errStreamDone = errors.New("done")

// repoStream runs a streamed repo operation: each progress event goes to
// progress (and, with --json, to stdout as a line); it returns the "done"
// event.
func (g *globals) repoStream(cmd *cobra.Command, call func(*api.Client, func(api.RepoEvent) error) error, progress func(api.RepoEvent)) (api.RepoEvent, error) {
	c, err := g.client()
	if err != nil {
		return api.RepoEvent{}, err
	}
	var last api.RepoEvent
	err = call(c, func(ev api.RepoEvent) error {
		if g.json {
			line, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n", line)
		}
		switch ev.Event {
		case "progress":
			progress(ev)
		case "done":
			last = ev
			return errStreamDone
		case "error":
			if ev.Error != nil {
				return ev.Error
			}
			return api.Errorf(api.KindInternal, "the daemon reported an error without a message")
		}
		return nil
	})
	if errors.Is(err, errStreamDone) {
		return last, nil
	}
	return last, err
}

// progress draws a one-line progress bar on a terminal; elsewhere (or with
// --json) it draws nothing.
type progress struct {
	w     io.Writer
	on    bool
	what  string
	start time.Time
	last  time.Time
	drew  bool
}

func newProgress(w io.Writer, json bool, what string) *progress {
	on := false
	if f, ok := w.(*os.File); ok && !json {
		on = term.IsTerminal(int(f.Fd()))
	}
	return &progress{w: w, on: on, what: what, start: time.Now()}
}

// bytes shows n of total bytes (total < 0: unknown).
func (p *progress) bytes(n, total int64) {
	if !p.tick() {
		return
	}
	rate := float64(n) / max(time.Since(p.start).Seconds(), 1e-3)
	if total > 0 {
		p.draw(float64(n)/float64(total), fmt.Sprintf("%s / %s  %s/s", humanBytes(n), humanBytes(total), humanBytes(int64(rate))))
		return
	}
	p.draw(-1, fmt.Sprintf("%s  %s/s", humanBytes(n), humanBytes(int64(rate))))
}

// count shows n of total items (total < 0: unknown) and a note.
func (p *progress) count(n, total int64, note string) {
	if !p.tick() {
		return
	}
	if total > 0 {
		p.draw(float64(n)/float64(total), fmt.Sprintf("%d / %d blocks  %s", n, total, note))
		return
	}
	p.draw(-1, fmt.Sprintf("%d blocks  %s", n, note))
}

func (p *progress) tick() bool {
	if !p.on || time.Since(p.last) < 100*time.Millisecond {
		return false
	}
	p.last = time.Now()
	return true
}

func (p *progress) draw(frac float64, text string) {
	const width = 30
	bar := ""
	if frac >= 0 {
		n := int(min(max(frac, 0), 1) * width)
		bar = "[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "] " + fmt.Sprintf("%3.0f%% ", 100*min(frac, 1))
	}
	fmt.Fprintf(p.w, "\r\033[K%s %s%s", p.what, bar, text)
	p.drew = true
}

// done clears the bar.
func (p *progress) done() {
	if p.drew {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// countingReader reports the bytes read so far after every Read.
type countingReader struct {
	r    io.Reader
	n    int64
	each func(n int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	c.each(c.n)
	return n, err
}

// humanBytes renders n bytes with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
