package wasm

import (
	"context"
	"fmt"
	"io"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

var (
	errNotExist   = fsys.ErrNotExist
	errPermission = fsys.ErrPermission
)

// FSFiles adapts a blocktree file system to Files: ReadFile walks to the
// file and reads it whole; WriteFile creates the file if needed (not its
// directory), truncates it, writes and fsyncs.
func FSFiles(fs fsys.FS) Files { return fsFiles{fs} }

type fsFiles struct{ fs fsys.FS }

func (f fsFiles) ReadFile(ctx context.Context, p paths.Path) ([]byte, error) {
	a, err := f.fs.Walk(ctx, p)
	if err != nil {
		return nil, err
	}
	if a.Kind != fsys.KindFile {
		return nil, fmt.Errorf("read %s: %w", p, fsys.ErrIsDir)
	}
	buf := make([]byte, a.Size)
	var off int64
	for off < int64(len(buf)) {
		n, err := f.fs.ReadAt(ctx, a.Ino, buf[off:], off)
		off += int64(n)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if n == 0 {
			break
		}
	}
	return buf[:off], nil
}

func (f fsFiles) WriteFile(ctx context.Context, p paths.Path, data []byte) error {
	dir, ok := p.Parent()
	if !ok {
		return fmt.Errorf("write %s: %w", p, fsys.ErrInvalid)
	}
	d, err := f.fs.Walk(ctx, dir)
	if err != nil {
		return err
	}
	a, err := f.fs.Create(ctx, d.Ino, p.Base(), 0o644, false)
	if err != nil {
		return err
	}
	if a.Kind != fsys.KindFile {
		return fmt.Errorf("write %s: %w", p, fsys.ErrIsDir)
	}
	zero := uint64(0)
	if _, err := f.fs.Setattr(ctx, a.Ino, fsys.SetAttr{Size: &zero}); err != nil {
		return err
	}
	for off := 0; off < len(data); {
		n, err := f.fs.WriteAt(ctx, a.Ino, data[off:], int64(off))
		if err != nil {
			return err
		}
		off += n
	}
	return f.fs.Fsync(ctx, a.Ino)
}
