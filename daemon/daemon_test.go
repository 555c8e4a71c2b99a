package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestListenUnix: the API socket is at the path asked, mode 0600, no
// private directory is left behind, a stale socket is replaced, and the
// process umask is untouched.
func TestListenUnix(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stale bool
	}{{"fresh", false}, {"stale socket left", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "bt")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			sock := filepath.Join(dir, "api.sock")
			if tc.stale {
				if err := os.WriteFile(sock, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := syscall.Umask(0o022)
			syscall.Umask(before)
			ln, err := listenUnix(sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if after := syscall.Umask(before); after != before {
				t.Fatalf("umask changed from %o to %o", before, after)
			}
			fi, err := os.Stat(sock)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
				t.Fatalf("socket mode %v, want a socket with 0600", fi.Mode())
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Fatalf("repo holds %d entries, want the socket only", len(ents))
			}
			go func() {
				if c, err := ln.Accept(); err == nil {
					c.Close()
				}
			}()
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatalf("dial the moved socket: %v", err)
			}
			c.Close()
		})
	}
}

func TestListenUnixTooLong(t *testing.T) {
	sock := "/" + strings.Repeat("x", 110) + "/api.sock"
	if _, err := listenUnix(sock); err == nil || !strings.Contains(err.Error(), "unix socket limit") {
		t.Fatalf("listenUnix of a %d-byte path: %v", len(sock), err)
	}
}
