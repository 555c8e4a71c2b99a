package swtpmtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"blocktree.dev/bt/tpm"
)

// RequireEnv is the environment variable that turns a missing swtpm from a
// skip into a failure when set to "1".
const RequireEnv = "BT_REQUIRE_REAL"

// missing is the message for a machine without swtpm, skip or fatal.
const missing = "swtpm not installed: apt-get install swtpm swtpm-tools"

// Bounds on waiting for swtpm. They are generous for loaded CI machines and
// still end a broken run quickly.
const (
	readyTimeout  = 10 * time.Second       // one launch until the port is served
	rebindTimeout = 5 * time.Second        // Restart/Wipe retrying the old ports
	stopTimeout   = 5 * time.Second        // SIGTERM until SIGKILL
	pollInterval  = 5 * time.Millisecond   // checking for the pid file
	freshAttempts = 5                      // launches on newly picked ports
	rebindPause   = 50 * time.Millisecond  // between launches on the old ports
	probeTimeout  = 500 * time.Millisecond // one readiness connection
)

// Require applies Blocktree's rule for tests that need swtpm: it returns
// the path of the swtpm binary; when there is none it skips the test, or
// fails it if BT_REQUIRE_REAL=1.
func Require(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("swtpm")
	if err == nil {
		return path
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatal(missing)
	}
	t.Skip(missing)
	return ""
}

// Sim is one swtpm process serving one test. Create it with Start or
// StartWithState.
type Sim struct {
	bin   string
	state string // the TPM state directory
	logs  string // swtpm's stderr and pid files, kept out of state

	// mu guards the running process and its ports. Methods that start a
	// process hold it for the whole launch.
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait has returned
	port   int           // TPM command port
	ctrl   int           // swtpm control port
	launch int           // launches so far, to name log files
}

// Start starts a fresh swtpm (TPM 2.0, new seeds) for t on free
// 127.0.0.1 ports with its state in a t.TempDir. t.Cleanup stops it. It
// skips or fails t as Require does when swtpm is missing, and fails t if
// swtpm does not come up within a few seconds.
func Start(t testing.TB) *Sim {
	t.Helper()
	return startIn(t, t.TempDir())
}

// StartWithState starts swtpm on a copy of the state directory dir (the
// regular files in it, such as tpm2-00.permall), so dir itself, typically
// frozen test data, is never written. t.Cleanup stops it.
func StartWithState(t testing.TB, dir string) *Sim {
	t.Helper()
	state := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("swtpmtest: state %s: %v", dir, err)
	}
	copied := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == ".lock" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("swtpmtest: state: %v", err)
		}
		if err := os.WriteFile(filepath.Join(state, e.Name()), data, 0o600); err != nil {
			t.Fatalf("swtpmtest: state: %v", err)
		}
		copied++
	}
	if copied == 0 {
		t.Fatalf("swtpmtest: state %s holds no files", dir)
	}
	return startIn(t, state)
}

func startIn(t testing.TB, state string) *Sim {
	t.Helper()
	s := &Sim{bin: Require(t), state: state, logs: t.TempDir()}
	t.Cleanup(s.Stop)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(false); err != nil {
		t.Fatal(err)
	}
	return s
}

// Device returns the TPM's current address as a tpm.Device.
func (s *Sim) Device() tpm.Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	return tpm.Device{Addr: s.addrLocked()}
}

// Flag returns the current address as `bt --tpm` takes it:
// "tcp:127.0.0.1:PORT".
func (s *Sim) Flag() string { return s.Device().String() }

// StateDir returns the directory holding the TPM's state.
func (s *Sim) StateDir() string { return s.state }

func (s *Sim) addrLocked() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Stop stops the process: SIGTERM to its process group, then SIGKILL if it
// has not exited within a few seconds. It waits for the process, so
// nothing is leaked. Stop is idempotent and safe for concurrent use.
func (s *Sim) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart stops the TPM and starts it again on the same state, like a
// power cycle: seeds and NV survive, transient objects and sessions do not.
// It keeps the old ports unless they cannot be bound again within a few
// seconds; Device and Flag report the current ones.
func (s *Sim) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	if err := s.startLocked(true); err != nil {
		t.Fatal(err)
	}
}

// Wipe stops the TPM, deletes its state and starts a brand-new TPM with new
// seeds in the same place (ports kept as for Restart). Keys created before
// are lost for good.
func (s *Sim) Wipe(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	entries, err := os.ReadDir(s.state)
	if err != nil {
		t.Fatalf("swtpmtest: wipe: %v", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.state, e.Name())); err != nil {
			t.Fatalf("swtpmtest: wipe: %v", err)
		}
	}
	if err := s.startLocked(true); err != nil {
		t.Fatal(err)
	}
}

func (s *Sim) stopLocked() {
	if s.cmd == nil {
		return
	}
	pgid := -s.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-s.exited:
	case <-t.C:
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-s.exited
	}
	// Anything else left in the group (there should be nothing).
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	s.cmd, s.exited = nil, nil
}

// startLocked launches swtpm. With reuse it first retries the current ports
// for rebindTimeout (a restarted TPM keeps its address), then falls back to
// fresh ports, as a first start does.
func (s *Sim) startLocked(reuse bool) error {
	var errs []error
	if reuse && s.port != 0 {
		deadline := time.Now().Add(rebindTimeout)
		for {
			err := s.launchLocked(s.port, s.ctrl)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(rebindPause)
		}
	}
	for range freshAttempts {
		port, ctrl, err := freePorts()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.launchLocked(port, ctrl); err != nil {
			errs = append(errs, err)
			continue
		}
		return nil
	}
	if len(errs) > 3 {
		errs = errs[len(errs)-3:]
	}
	return fmt.Errorf("swtpmtest: swtpm did not start: %w", errors.Join(errs...))
}

// launchLocked runs one swtpm on the given ports and waits until it serves
// them. swtpm writes its pid file only once it has bound both sockets, so a
// pid file holding the child's pid proves the port is the child's and not
// some other process's that happened to take it.
func (s *Sim) launchLocked(port, ctrl int) error {
	s.launch++
	logPath := filepath.Join(s.logs, fmt.Sprintf("swtpm-%d.log", s.launch))
	pidPath := filepath.Join(s.logs, fmt.Sprintf("swtpm-%d.pid", s.launch))
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor

	cmd := exec.Command(s.bin, "socket", "--tpm2",
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ctrl),
		"--tpmstate", "dir="+s.state,
		"--flags", "not-need-init,startup-clear",
		"--pid", "file="+pidPath,
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited

	fail := func(err error) error {
		s.stopLocked()
		if log := readTail(logPath); log != "" {
			err = fmt.Errorf("%w; swtpm said: %s", err, log)
		}
		return fmt.Errorf("ports %d/%d: %w", port, ctrl, err)
	}
	want := strconv.Itoa(cmd.Process.Pid)
	timeout := time.NewTimer(readyTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			return fail(errors.New("swtpm exited during start"))
		case <-timeout.C:
			return fail(fmt.Errorf("swtpm not ready after %v", readyTimeout))
		case <-tick.C:
		}
		if b, err := os.ReadFile(pidPath); err != nil || strings.TrimSpace(string(b)) != want {
			continue
		}
		if err := probe(port); err != nil {
			continue
		}
		s.port, s.ctrl = port, ctrl
		return nil
	}
}

// getRandom is TPM2_GetRandom for 8 bytes: tag TPM_ST_NO_SESSIONS, size 12,
// TPM_CC_GetRandom, bytesRequested.
var getRandom = []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}

// probe sends one harmless command and checks that a TPM 2.0 answers it
// with success. The first command also makes a new swtpm manufacture its
// state, so StateDir holds tpm2-00.permall from then on.
func probe(port int) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), probeTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(readyTimeout))
	if _, err := c.Write(getRandom); err != nil {
		return err
	}
	var hdr [10]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	if rc := binary.BigEndian.Uint32(hdr[6:]); rc != 0 {
		return fmt.Errorf("TPM2_GetRandom: response code %#x", rc)
	}
	return nil
}

// freePorts picks two distinct free loopback ports. Another process may
// take them before swtpm binds; launchLocked detects that and the caller
// retries.
func freePorts() (int, int, error) {
	a, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer a.Close()
	b, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	return a.Addr().(*net.TCPAddr).Port, b.Addr().(*net.TCPAddr).Port, nil
}

func readTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 4096))
	return strings.TrimSpace(string(b))
}
