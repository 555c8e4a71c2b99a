package swtpmtest_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/swtpmtest"
)

// getRandom sends TPM2_GetRandom(8) to the TPM at addr and returns the
// response code, proving a TPM 2.0 answers there.
func getRandom(t *testing.T, addr string) uint32 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested 8
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	if _, err := c.Write(cmd); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	rest := make([]byte, binary.BigEndian.Uint32(hdr[2:6])-10)
	if _, err := io.ReadFull(c, rest); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint32(hdr[6:10])
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestStart(t *testing.T) {
	s := swtpmtest.Start(t)
	dev := s.Device()
	if dev.Addr == "" || !strings.HasPrefix(dev.Addr, "127.0.0.1:") {
		t.Fatalf("Device() = %+v", dev)
	}
	parsed, err := tpm.ParseDevice(s.Flag())
	if err != nil || parsed != dev {
		t.Fatalf("ParseDevice(Flag() = %q) = %+v, %v; want %+v", s.Flag(), parsed, err, dev)
	}
	if rc := getRandom(t, dev.Addr); rc != 0 {
		t.Fatalf("GetRandom: rc %#x", rc)
	}
	files, _ := os.ReadDir(s.StateDir())
	var names []string
	for _, f := range files {
		names = append(names, f.Name())
	}
	if fi, err := os.Stat(filepath.Join(s.StateDir(), "tpm2-00.permall")); err != nil || fi.Size() > 16<<10 {
		t.Fatalf("state dir holds %v; want a small tpm2-00.permall (%v)", names, err)
	}
}

func TestTwoSimsAreDistinct(t *testing.T) {
	a, b := swtpmtest.Start(t), swtpmtest.Start(t)
	if a.Flag() == b.Flag() || a.StateDir() == b.StateDir() {
		t.Fatalf("two sims share %s / %s", a.Flag(), a.StateDir())
	}
	getRandom(t, a.Device().Addr)
	getRandom(t, b.Device().Addr)
}

func TestRestartKeepsStateAndPort(t *testing.T) {
	s := swtpmtest.Start(t)
	before := s.Flag()
	state, err := os.ReadFile(filepath.Join(s.StateDir(), "tpm2-00.permall"))
	if err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	if s.Flag() != before {
		t.Errorf("Restart moved the TPM from %s to %s", before, s.Flag())
	}
	if rc := getRandom(t, s.Device().Addr); rc != 0 {
		t.Fatalf("GetRandom after restart: rc %#x", rc)
	}
	after, err := os.ReadFile(filepath.Join(s.StateDir(), "tpm2-00.permall"))
	if err != nil {
		t.Fatal(err)
	}
	// The seeds sit at the start of the permanent state; a restart keeps
	// them (the file's clock and counters may move).
	if len(after) != len(state) {
		t.Fatalf("state file changed size across restart: %d → %d", len(state), len(after))
	}
}

func TestWipe(t *testing.T) {
	s := swtpmtest.Start(t)
	before, err := os.ReadFile(filepath.Join(s.StateDir(), "tpm2-00.permall"))
	if err != nil {
		t.Fatal(err)
	}
	s.Wipe(t)
	getRandom(t, s.Device().Addr)
	after, err := os.ReadFile(filepath.Join(s.StateDir(), "tpm2-00.permall"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before, after) {
		t.Fatal("Wipe left the TPM state as it was")
	}
}

func TestStopIsIdempotentAndLeaksNothing(t *testing.T) {
	s := swtpmtest.Start(t)
	pids := swtpmPids(t, s.StateDir())
	if len(pids) != 1 {
		t.Fatalf("found swtpm processes %v for %s, want one", pids, s.StateDir())
	}
	s.Stop()
	s.Stop()
	if alive(pids[0]) {
		t.Fatalf("swtpm %d still running after Stop", pids[0])
	}
	if _, err := net.DialTimeout("tcp", s.Device().Addr, time.Second); err == nil {
		t.Fatal("port still served after Stop")
	}
}

// swtpmPids finds the swtpm processes whose command line names state.
func swtpmPids(t *testing.T, state string) []int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil || len(dirs) == 0 {
		t.Skip("no /proc to look for processes in")
	}
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil || !bytes.Contains(b, []byte("dir="+state+"\x00")) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(d))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestStartWithState(t *testing.T) {
	a := swtpmtest.Start(t)
	a.Stop()
	src := a.StateDir()
	orig, err := os.ReadFile(filepath.Join(src, "tpm2-00.permall"))
	if err != nil {
		t.Fatal(err)
	}
	b := swtpmtest.StartWithState(t, src)
	if b.StateDir() == src {
		t.Fatal("StartWithState runs on the original directory")
	}
	getRandom(t, b.Device().Addr)
	b.Restart(t)
	getRandom(t, b.Device().Addr)
	b.Stop()
	now, _ := os.ReadFile(filepath.Join(src, "tpm2-00.permall"))
	if !bytes.Equal(orig, now) {
		t.Fatal("StartWithState wrote to the original state")
	}
}

// fakeTB records Skip and Fatal instead of stopping the goroutine.
type fakeTB struct {
	testing.TB
	calls []string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Skip(args ...any)  { f.calls = append(f.calls, "skip: "+fmt.Sprint(args...)) }
func (f *fakeTB) Fatal(args ...any) { f.calls = append(f.calls, "fatal: "+fmt.Sprint(args...)) }

func TestRequire(t *testing.T) {
	const msg = "swtpm not installed: apt-get install swtpm swtpm-tools"
	for _, tc := range []struct {
		env, want string
	}{
		{"", "skip: " + msg},
		{"0", "skip: " + msg},
		{"1", "fatal: " + msg},
	} {
		t.Run("BT_REQUIRE_REAL="+tc.env, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir()) // no swtpm here
			t.Setenv(swtpmtest.RequireEnv, tc.env)
			f := &fakeTB{TB: t}
			swtpmtest.Require(f)
			if len(f.calls) == 0 || f.calls[0] != tc.want {
				t.Fatalf("Require called %q, want %q first", f.calls, tc.want)
			}
		})
	}
	t.Run("installed", func(t *testing.T) {
		path := swtpmtest.Require(t)
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("Require returned %q: %v", path, err)
		}
	})
}
