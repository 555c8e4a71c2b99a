package wasm

import (
	"context"
	"errors"
	"io"
	"testing"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// fakeFile is an fsys.FS of one file, for FSFiles' edge cases; the
// methods FSFiles does not call panic (nil embedded interface).
type fakeFile struct {
	fsys.FS
	size  uint64 // what Walk says
	data  []byte // what ReadAt reads
	eof   bool   // ReadAt says io.EOF at the end
	reads []int  // the lengths asked of ReadAt
}

func (f *fakeFile) Walk(ctx context.Context, p paths.Path) (fsys.Attr, error) {
	return fsys.Attr{Ino: 2, Kind: fsys.KindFile, Size: f.size}, nil
}

func (f *fakeFile) ReadAt(ctx context.Context, ino fsys.Ino, p []byte, off int64) (int, error) {
	f.reads = append(f.reads, len(p))
	if off >= int64(len(f.data)) {
		if f.eof {
			return 0, io.EOF
		}
		return 0, nil
	}
	n := copy(p, f.data[off:])
	if f.eof && off+int64(n) == int64(len(f.data)) {
		return n, io.EOF
	}
	return n, nil
}

func TestFSFilesReadFile(t *testing.T) {
	p, err := paths.Parse("/12D3KooWGB87QGrjoC1gtR9AuG6MFNGNuKEFwoefq42j6K5jsLda/m.wasm")
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, fileChunk+10)
	for _, tc := range []struct {
		name      string
		file      *fakeFile
		want      int
		wantErr   error
		wantReads int
	}{
		{"over the limit", &fakeFile{size: MaxReadFile + 1}, 0, fsys.ErrInvalid, 0},
		{"at the limit is read", &fakeFile{size: 3, data: []byte("abc")}, 3, nil, 1},
		{"io.EOF with the last bytes", &fakeFile{size: 3, data: []byte("abc"), eof: true}, 3, nil, 1},
		{"shrank since Walk", &fakeFile{size: 10, data: []byte("abc")}, 3, nil, 1},
		{"read in chunks", &fakeFile{size: uint64(len(big)), data: big}, len(big), nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FSFiles(tc.file).ReadFile(context.Background(), p)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ReadFile: %v, want %v", err, tc.wantErr)
			}
			if len(got) != tc.want || len(tc.file.reads) != tc.wantReads {
				t.Fatalf("read %d bytes in %d calls %v, want %d in %d", len(got), len(tc.file.reads), tc.file.reads, tc.want, tc.wantReads)
			}
			for _, n := range tc.file.reads {
				if n > fileChunk {
					t.Fatalf("a ReadAt of %d bytes, over the %d-byte chunk", n, fileChunk)
				}
			}
		})
	}
}
