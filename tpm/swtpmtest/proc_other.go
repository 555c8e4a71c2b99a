//go:build unix && !linux

package swtpmtest

import "syscall"

// procAttr puts swtpm in its own process group, so Stop can signal it and
// anything it spawned.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
