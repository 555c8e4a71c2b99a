package swtpmtest

import "syscall"

// procAttr puts swtpm in its own process group, so Stop can signal it and
// anything it spawned, and has the kernel kill it if the test binary dies
// (Pdeathsig follows the thread that started it; Go keeps that thread
// unless it was locked, which the test harness does not do).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
