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

// MaxReadFile bounds one ReadFile of FSFiles (a module's code or data): a
// larger file is ErrInvalid, before anything is read or allocated.
const MaxReadFile = 256 << 20

// fileChunk is the size of one ReadAt or WriteAt of FSFiles.
const fileChunk = 1 << 20

// FSFiles adapts a blocktree file system to Files: ReadFile walks to the
// file and reads it whole (at most MaxReadFile bytes, in chunks; the end
// of the file, io.EOF or a short read, ends it); WriteFile creates the
// file if needed (not its directory), truncates it if it is not empty,
// writes it in chunks and fsyncs.
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
	if a.Size > MaxReadFile {
		return nil, fmt.Errorf("read %s: %d bytes, over the %d-byte limit: %w", p, a.Size, MaxReadFile, fsys.ErrInvalid)
	}
	buf := make([]byte, a.Size)
	var off int64
	for off < int64(len(buf)) {
		chunk := buf[off:min(off+fileChunk, int64(len(buf)))]
		n, err := f.fs.ReadAt(ctx, a.Ino, chunk, off)
		off += int64(n)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if n < len(chunk) || err == io.EOF {
			break // the file ends here (it shrank since Walk)
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
	if a.Size != 0 {
		zero := uint64(0)
		if _, err := f.fs.Setattr(ctx, a.Ino, fsys.SetAttr{Size: &zero}); err != nil {
			return err
		}
	}
	for off := 0; off < len(data); {
		n, err := f.fs.WriteAt(ctx, a.Ino, data[off:min(len(data), off+fileChunk)], int64(off))
		if err != nil {
			return err
		}
		off += n
	}
	return f.fs.Fsync(ctx, a.Ino)
}
