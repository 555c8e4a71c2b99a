package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/repo"
)

// fsCommands are the file-system commands (docs/cli.md, "Files").
func fsCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{fsPutCmd(g), fsGetCmd(g), fsLsCmd(g), fsLogCmd(g), fsCatCmd(g), fsMkdirCmd(g), fsRmCmd(g),
		fsMvCmd(g), fsGrantCmd(g), fsRevokeCmd(g), fsHostCmd(g), fsMountCmd(g), fsUnmountCmd(g)}
}

// fsPath parses a blocktree path argument.
func fsPath(cmd, s string) (paths.Path, error) {
	p, err := paths.Parse(s)
	if err != nil {
		return paths.Path{}, usageErr("%s: %v (a blocktree path: /<root-id>/…; `bt id` shows yours)", cmd, err)
	}
	return p, nil
}

// progressEvent is one --json progress line of put and get.
type progressEvent struct {
	Event string `json:"event"` // "progress", "file" or "done"
	Path  string `json:"path,omitempty"`
	Bytes int64  `json:"bytes"`
	Total int64  `json:"total,omitempty"`
	Files int    `json:"files,omitempty"`
}

// transfer tracks the bytes of a put or get: a bar on a terminal, JSON
// progress lines with --json.
type transfer struct {
	cmd   *cobra.Command
	g     *globals
	bar   *progress
	done  int64
	total int64
	files int
	last  time.Time
}

func newTransfer(cmd *cobra.Command, g *globals, what string, total int64) *transfer {
	return &transfer{cmd: cmd, g: g, bar: newProgress(cmd.ErrOrStderr(), g.json, what), total: total}
}

func (t *transfer) emit(ev progressEvent) {
	if t.g.json {
		b, _ := json.Marshal(ev)
		fmt.Fprintf(t.cmd.OutOrStdout(), "%s\n", b)
	}
}

// add counts n more bytes of the current file.
func (t *transfer) add(n int64) {
	t.done += n
	t.bar.bytes(t.done, t.total)
	if t.g.json && time.Since(t.last) > 200*time.Millisecond {
		t.last = time.Now()
		t.emit(progressEvent{Event: "progress", Bytes: t.done, Total: t.total})
	}
}

func (t *transfer) file(p string) {
	t.files++
	t.emit(progressEvent{Event: "file", Path: p, Bytes: t.done, Total: t.total})
}

func (t *transfer) finish() {
	t.bar.done()
	t.emit(progressEvent{Event: "done", Bytes: t.done, Total: t.total, Files: t.files})
}

type countReader struct {
	r io.Reader
	t *transfer
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.t.add(int64(n))
	return n, err
}

type countWriter struct {
	w io.Writer
	t *transfer
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.t.add(int64(n))
	return n, err
}

func fsPutCmd(g *globals) *cobra.Command {
	var (
		recursive bool
		parents   bool
	)
	cmd := &cobra.Command{
		Use:   "put LOCAL PATH",
		Short: "Copy a local file (or, with -r, a tree) to PATH in the file system",
		Long: "Copy LOCAL (a file, or - for stdin) to the blocktree PATH, replacing its content; with -r copy the\n" +
			"directory LOCAL to PATH (made if missing) and everything under it. The file is encrypted by this\n" +
			"node before it leaves it; the command returns once the volume's host holds it durably. A progress\n" +
			"bar on a terminal; --json prints progress events.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dst, err := fsPath("put", args[1])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if args[0] == "-" {
				t := newTransfer(cmd, g, "sending", -1)
				err := putFile(ctx, c, cmd.InOrStdin(), dst, 0o644, parents, t)
				t.finish()
				return fsErr(err)
			}
			fi, err := os.Stat(args[0])
			if err != nil {
				return usageErr("put: %v", err)
			}
			if fi.IsDir() && !recursive {
				return usageErr("put: %s is a directory: use -r to copy a tree", args[0])
			}
			if !fi.IsDir() {
				f, err := os.Open(args[0])
				if err != nil {
					return usageErr("put: %v", err)
				}
				defer f.Close()
				t := newTransfer(cmd, g, "sending", fi.Size())
				err = putFile(ctx, c, f, dst, uint32(fi.Mode().Perm()), parents, t)
				t.finish()
				return fsErr(err)
			}
			var total int64
			_ = filepath.WalkDir(args[0], func(_ string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if i, err := d.Info(); err == nil {
						total += i.Size()
					}
				}
				return nil
			})
			t := newTransfer(cmd, g, "sending", total)
			err = putTree(ctx, c, args[0], dst, parents, t)
			t.finish()
			return fsErr(err)
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "copy a directory tree")
	cmd.Flags().BoolVarP(&parents, "parents", "p", false, "make PATH's missing parent directories")
	addJSON(cmd, g)
	return cmd
}

func putFile(ctx context.Context, c *api.Client, r io.Reader, dst paths.Path, mode uint32, parents bool, t *transfer) error {
	e, err := c.FSWrite(ctx, api.FSWriteRequest{Path: dst, Mode: mode, Parents: parents}, &countReader{r: r, t: t})
	if err != nil {
		return err
	}
	if e.Path.IsZero() {
		return fmt.Errorf("put %s: the daemon did not confirm the write", dst)
	}
	t.file(dst.String())
	return nil
}

func putTree(ctx context.Context, c *api.Client, local string, dst paths.Path, parents bool, t *transfer) error {
	return filepath.WalkDir(local, func(lp string, d fs.DirEntry, err error) error {
		if err != nil {
			return usageErr("put: %v", err)
		}
		rel, err := filepath.Rel(local, lp)
		if err != nil {
			return err
		}
		target := dst
		if rel != "." {
			if target, err = dst.Join(strings.Split(filepath.ToSlash(rel), "/")...); err != nil {
				return usageErr("put: %s: %v", lp, err)
			}
		}
		switch {
		case d.IsDir():
			_, err := c.FSMkdir(ctx, api.FSMkdirRequest{Path: target, Parents: true})
			return err
		case d.Type().IsRegular():
			f, err := os.Open(lp)
			if err != nil {
				return usageErr("put: %v", err)
			}
			defer f.Close()
			mode := uint32(0o644)
			if i, err := d.Info(); err == nil {
				mode = uint32(i.Mode().Perm())
			}
			return putFile(ctx, c, f, target, mode, parents, t)
		}
		return nil // symlinks and special files are skipped
	})
}

func fsGetCmd(g *globals) *cobra.Command {
	var recursive bool
	cmd := &cobra.Command{
		Use:   "get PATH [LOCAL]",
		Short: "Copy PATH (a file, or with -r a tree) from the file system to LOCAL or stdout",
		Long: "Copy the file at PATH to LOCAL (replaced only once the whole file was read and verified) or\n" +
			"stdout; with -r copy the directory PATH to the local directory LOCAL (made if missing). A progress\n" +
			"bar on a terminal; --json prints progress events.",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := fsPath("get", args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			l, err := c.FSList(ctx, api.FSListRequest{Path: src})
			if err != nil {
				return fsErr(err)
			}
			if l.Entry.Kind == "dir" {
				if !recursive {
					return fsErr(api.Errorf(api.KindInvalid, "get: %s is a directory: use -r to copy a tree", src))
				}
				if len(args) < 2 {
					return usageErr("get: -r needs a LOCAL directory")
				}
				t := newTransfer(cmd, g, "receiving", -1)
				err := getTree(ctx, c, src, args[1], t)
				t.finish()
				return fsErr(err)
			}
			t := newTransfer(cmd, g, "receiving", int64(l.Entry.Size))
			defer t.finish()
			if len(args) == 1 {
				if g.json {
					return usageErr("get: --json needs LOCAL (stdout carries the events)")
				}
				return fsErr(c.FSRead(ctx, api.FSReadRequest{Path: src}, &countWriter{w: cmd.OutOrStdout(), t: t}))
			}
			local := args[1]
			if fi, err := os.Stat(local); err == nil && fi.IsDir() {
				local = filepath.Join(local, src.Base())
			}
			return fsErr(getFile(ctx, c, src, local, t))
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "copy a directory tree")
	addJSON(cmd, g)
	return cmd
}

func getFile(ctx context.Context, c *api.Client, src paths.Path, local string, t *transfer) error {
	err := writeAtomically(local, func(w io.Writer) error {
		return c.FSRead(ctx, api.FSReadRequest{Path: src}, &countWriter{w: w, t: t})
	})
	if err == nil {
		t.file(src.String())
	}
	return err
}

func getTree(ctx context.Context, c *api.Client, src paths.Path, local string, t *transfer) error {
	if err := os.MkdirAll(local, 0o755); err != nil {
		return usageErr("get: %v", err)
	}
	l, err := c.FSList(ctx, api.FSListRequest{Path: src})
	if err != nil {
		return err
	}
	for _, e := range l.Entries {
		if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsRune(e.Name, '/') {
			continue
		}
		cp, err := src.Join(e.Name)
		if err != nil {
			continue
		}
		lp := filepath.Join(local, e.Name)
		switch e.Kind {
		case "dir":
			if err := getTree(ctx, c, cp, lp, t); err != nil {
				return err
			}
		case "file":
			if err := getFile(ctx, c, cp, lp, t); err != nil {
				return err
			}
			_ = os.Chmod(lp, os.FileMode(e.Mode&0o777))
		case "symlink":
			if e.Target != "" {
				_ = os.Symlink(e.Target, lp)
			}
		}
	}
	return nil
}

func fsLsCmd(g *globals) *cobra.Command {
	var (
		long bool
		at   uint64
	)
	cmd := &cobra.Command{
		Use:   "ls [-l] [--at VERSION] PATH",
		Short: "List a directory (or show a file) of the file system, now or as of a volume version",
		Args:  cobra.ExactArgs(1),
		RunE: unary[api.FSListRequest, api.FSListing]{
			req: func(_ *cobra.Command, args []string) (api.FSListRequest, error) {
				p, err := fsPath("ls", args[0])
				return api.FSListRequest{Path: p, At: at}, err
			},
			call: (*api.Client).FSList,
			wrap: fsErr,
			text: func(cmd *cobra.Command, l api.FSListing) error {
				ents := l.Entries
				if l.Entry.Kind != "dir" {
					ents = []api.FSEntry{l.Entry}
				}
				out := cmd.OutOrStdout()
				for _, e := range ents {
					name := e.Name
					if e.Kind == "dir" {
						name += "/"
					}
					if !long {
						fmt.Fprintln(out, name)
						continue
					}
					if e.Target != "" {
						name += " -> " + e.Target
					}
					fmt.Fprintf(out, "%s %10d  %s  v%-6d %s\n", modeString(e), e.Size, e.Mtime.Local().Format("2006-01-02 15:04"), e.Version, name)
				}
				return nil
			},
		}.runE(g),
	}
	cmd.Flags().BoolVarP(&long, "long", "l", false, "mode, size, modification time, version and name")
	cmd.Flags().Uint64Var(&at, "at", 0, "list as of this volume version (see `bt log`)")
	addJSON(cmd, g)
	return cmd
}

func modeString(e api.FSEntry) string {
	kind := "-"
	switch e.Kind {
	case "dir":
		kind = "d"
	case "symlink":
		kind = "l"
	}
	const rwx = "rwxrwxrwx"
	b := []byte(kind)
	for i := range 9 {
		if e.Mode&(1<<(8-i)) != 0 {
			b = append(b, rwx[i])
		} else {
			b = append(b, '-')
		}
	}
	return string(b)
}

func fsLogCmd(g *globals) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "log PATH",
		Short: "List the versions that changed PATH, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: unary[api.FSLogRequest, []api.FSLogEntry]{
			req: func(_ *cobra.Command, args []string) (api.FSLogRequest, error) {
				p, err := fsPath("log", args[0])
				if err != nil {
					return api.FSLogRequest{}, err
				}
				if limit < 1 {
					return api.FSLogRequest{}, usageErr("log: -n must be at least 1")
				}
				return api.FSLogRequest{Path: p, Limit: limit}, nil
			},
			call: (*api.Client).FSLog,
			wrap: fsErr,
			text: func(cmd *cobra.Command, es []api.FSLogEntry) error {
				for _, e := range es {
					fmt.Fprintf(cmd.OutOrStdout(), "v%-6d %s  %-8s %s\n", e.Version, e.Time.Local().Format(time.DateTime), e.Op, e.Writer)
				}
				return nil
			},
		}.runE(g),
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 100, "at most this many versions")
	addJSON(cmd, g)
	return cmd
}

func fsCatCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cat PATH",
		Short: "Write the file at PATH to stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := fsPath("cat", args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			return fsErr(c.FSRead(cmd.Context(), api.FSReadRequest{Path: p}, cmd.OutOrStdout()))
		},
	}
}

func fsMkdirCmd(g *globals) *cobra.Command {
	var parents bool
	cmd := &cobra.Command{
		Use:   "mkdir [-p] PATH",
		Short: "Make a directory (with -p, its missing parents too)",
		Args:  cobra.ExactArgs(1),
		RunE: unary[api.FSMkdirRequest, api.FSEntry]{
			req: func(_ *cobra.Command, args []string) (api.FSMkdirRequest, error) {
				p, err := fsPath("mkdir", args[0])
				return api.FSMkdirRequest{Path: p, Parents: parents}, err
			},
			call: (*api.Client).FSMkdir,
			wrap: fsErr,
		}.runE(g),
	}
	cmd.Flags().BoolVarP(&parents, "parents", "p", false, "make missing parents; an existing directory is no error")
	addJSON(cmd, g)
	return cmd
}

func fsRmCmd(g *globals) *cobra.Command {
	var recursive bool
	cmd := &cobra.Command{
		Use:   "rm [-r] PATH",
		Short: "Remove a file, symlink or empty directory (with -r, a whole tree)",
		Args:  cobra.ExactArgs(1),
		RunE: unary[api.FSRemoveRequest, api.FSRemoveResult]{
			req: func(_ *cobra.Command, args []string) (api.FSRemoveRequest, error) {
				p, err := fsPath("rm", args[0])
				return api.FSRemoveRequest{Path: p, Recursive: recursive}, err
			},
			call: (*api.Client).FSRemove,
			wrap: fsErr,
		}.runE(g),
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "remove a directory and everything under it")
	addJSON(cmd, g)
	return cmd
}

func fsMvCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mv SRC DST",
		Short: "Rename SRC to DST atomically (into DST when it is a directory); both in one volume",
		Args:  cobra.ExactArgs(2),
		RunE: unary[api.FSMoveRequest, api.FSEntry]{
			req: func(_ *cobra.Command, args []string) (api.FSMoveRequest, error) {
				src, err := fsPath("mv", args[0])
				if err != nil {
					return api.FSMoveRequest{}, err
				}
				dst, err := fsPath("mv", args[1])
				return api.FSMoveRequest{Src: src, Dst: dst}, err
			},
			call: (*api.Client).FSMove,
			wrap: fsErr,
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}

// rightPath checks the RIGHT of `grant|revoke RIGHT PRINCIPAL PATH` and
// parses its PATH.
func rightPath(cmd string, args []string) (paths.Path, error) {
	if s := args[0]; s != "read" && s != "write" {
		return paths.Path{}, usageErr("%s: %q: want read or write", cmd, s)
	}
	return fsPath(cmd, args[2])
}

// mountDir builds the request of mount and unmount: DIR made absolute.
func mountDir(cmd string) func(*cobra.Command, []string) (api.FSMountRequest, error) {
	return func(_ *cobra.Command, args []string) (api.FSMountRequest, error) {
		dir, err := filepath.Abs(args[0])
		if err != nil {
			return api.FSMountRequest{}, usageErr("%s: %v", cmd, err)
		}
		return api.FSMountRequest{Dir: dir}, nil
	}
}

func fsGrantCmd(g *globals) *cobra.Command {
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "grant read|write PRINCIPAL PATH",
		Short: "Let PRINCIPAL (a principal ID or a node path) read or write the subtree at PATH",
		Long: "read: wraps PATH's directory key to PRINCIPAL's key (a readcap), so it can read everything under\n" +
			"PATH. write: issues PRINCIPAL a writecap for PATH under this node's own and marks PATH as a write\n" +
			"point; the writecap is printed for the grantee. --expires bounds the grant.",
		Args: cobra.ExactArgs(3),
		RunE: unary[api.FSGrantRequest, api.FSGrantResult]{
			req: func(_ *cobra.Command, args []string) (api.FSGrantRequest, error) {
				p, err := rightPath("grant", args)
				if err != nil {
					return api.FSGrantRequest{}, err
				}
				req := api.FSGrantRequest{Path: p, Principal: args[1], Right: args[0]}
				if expires < 0 {
					return api.FSGrantRequest{}, usageErr("grant: --expires must be positive")
				}
				if expires > 0 {
					req.Expires = time.Now().Add(expires)
				}
				return req, nil
			},
			call: (*api.Client).FSGrant,
			wrap: fsErr,
			text: func(cmd *cobra.Command, res api.FSGrantResult) error {
				if res.Writecap != "" {
					fmt.Fprintln(cmd.OutOrStdout(), res.Writecap)
					fmt.Fprintf(cmd.ErrOrStderr(), "bt: give the writecap above to %s\n", res.Principal)
				}
				if res.Note != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "bt: %s\n", res.Note)
				}
				return nil
			},
		}.runE(g),
	}
	cmd.Flags().DurationVar(&expires, "expires", 0, "the grant ends after this long (default: never for read, the granter's own writecap expiry for write)")
	addJSON(cmd, g)
	return cmd
}

func fsRevokeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke read|write PRINCIPAL PATH",
		Short: "Take back a grant: future writes under PATH are re-keyed away from PRINCIPAL (read)",
		Args:  cobra.ExactArgs(3),
		RunE: unary[api.FSRevokeRequest, api.FSGrantResult]{
			req: func(_ *cobra.Command, args []string) (api.FSRevokeRequest, error) {
				p, err := rightPath("revoke", args)
				return api.FSRevokeRequest{Path: p, Principal: args[1], Right: args[0]}, err
			},
			call: (*api.Client).FSRevoke,
			wrap: fsErr,
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}

func fsHostCmd(g *globals) *cobra.Command {
	var pass passphraseSource
	cmd := &cobra.Command{
		Use:   "host PATH",
		Short: "Host the file-system volume at PATH on this node (kept across restarts)",
		Long: "Make this node the host of the volume at PATH: it stores the volume's (encrypted) records and\n" +
			"blocks, orders writes, and announces itself in the DHT. Needs a writecap for PATH: this node's own\n" +
			"when it covers PATH, else (on the node that holds the root key) one issued now with the root key,\n" +
			"whose passphrase is asked for when it is sealed.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := fsPath("host", args[0])
			if err != nil {
				return err
			}
			r, err := g.openRepo()
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			req := api.FSHostRequest{Path: p}
			w, err := r.Writecap()
			if err != nil {
				return err
			}
			if caps.NewVerifier().VerifyHolder(w, r.Config.NodeID, p) != nil {
				if r.Config.RootKey == repo.CustodyNone || p.Root() != r.Config.Root {
					return fmt.Errorf("host: this node's writecap covers %s, not %s; host it on a node whose writecap covers it: %w", w.Prefix(), p, caps.ErrPathNotCovered)
				}
				// Check the daemon first, so the passphrase is not asked in vain.
				if _, err := c.Status(cmd.Context()); err != nil {
					return err
				}
				k, err := r.RootKey(cmd.Context(), func() ([]byte, error) { return pass.get("Passphrase of the root key", false) })
				if err != nil {
					return err
				}
				now := time.Now()
				hw, err := caps.Issue(cmd.Context(), k, nil, r.Config.NodeID, p, now.Add(-5*time.Minute), now.Add(repo.DefaultWritecapTTL))
				k.Close()
				if err != nil {
					return err
				}
				req.Writecap = base64.RawURLEncoding.EncodeToString(hw.Marshal())
			}
			v, err := c.FSHost(cmd.Context(), req)
			if err != nil {
				return fsErr(err)
			}
			if g.json {
				return printJSON(cmd, v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "hosting %s (version %d) in %s\n", v.Path, v.Version, v.Dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&pass.file, "passphrase-file", "", "read the root key's passphrase from the first line of this file")
	addJSON(cmd, g)
	return cmd
}

func fsMountCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mount DIR",
		Short: "Mount the file system at DIR (served by the daemon until `bt unmount DIR` or it stops)",
		Long: "Ask the daemon to mount the file system at the directory DIR: DIR/<root-id>/… is the domain's\n" +
			"tree. The mount lives in the daemon process; it prints the mount point.",
		Args: cobra.ExactArgs(1),
		RunE: unary[api.FSMountRequest, api.FSMount]{
			req:  mountDir("mount"),
			call: (*api.Client).FSMount,
			wrap: fsErr,
			text: func(cmd *cobra.Command, m api.FSMount) error {
				fmt.Fprintln(cmd.OutOrStdout(), filepath.Join(m.Dir, m.Root.String()))
				return nil
			},
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}

func fsUnmountCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "unmount DIR",
		Short: "Unmount the file system mounted at DIR",
		Args:  cobra.ExactArgs(1),
		RunE: unary[api.FSMountRequest, api.FSMount]{
			req:  mountDir("unmount"),
			call: (*api.Client).FSUnmount,
			wrap: fsErr,
		}.runE(g),
	}
	addJSON(cmd, g)
	return cmd
}
