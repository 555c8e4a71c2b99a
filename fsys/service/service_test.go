package service

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/repo"
)

func TestHostedList(t *testing.T) {
	f := &Service{r: &repo.Repo{Dir: t.TempDir()}}
	l, err := f.LoadHosted()
	if err != nil || l.Version != 1 || len(l.Volumes) != 0 {
		t.Fatalf("LoadHosted of no file: %+v, %v", l, err)
	}
	p, err := paths.Parse("/12D3KooWGB87QGrjoC1gtR9AuG6MFNGNuKEFwoefq42j6K5jsLda/photos")
	if err != nil {
		t.Fatal(err)
	}
	l.Volumes = append(l.Volumes, HostedEntry{Path: p, Writecap: []byte{1, 2}})
	if err := f.SaveHosted(l); err != nil {
		t.Fatal(err)
	}
	got, err := f.LoadHosted()
	if err != nil || len(got.Volumes) != 1 || got.Volumes[0].Path != p || len(got.Volumes[0].Writecap) != 2 {
		t.Fatalf("LoadHosted: %+v, %v", got, err)
	}
	if d := f.VolumeDir(p); filepath.Dir(d) != filepath.Join(f.r.Dir, FSDir) || d != f.VolumeDir(p) {
		t.Fatalf("VolumeDir %s", d)
	}
	for _, bad := range []string{`{"version":2,"volumes":[]}`, `not json`} {
		if err := os.WriteFile(filepath.Join(f.r.Dir, FSDir, hostedFile), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := f.LoadHosted(); !errors.Is(err, repo.ErrBadConfig) {
			t.Fatalf("LoadHosted of %q: %v, want ErrBadConfig", bad, err)
		}
	}
}
