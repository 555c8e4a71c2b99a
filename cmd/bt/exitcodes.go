package main

import (
	"errors"
	"fmt"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/invite"
	"blocktree.dev/bt/repo"
	"blocktree.dev/bt/tpm"
)

// Exit codes. They are part of bt's interface; api.ExitCodes lists them
// with their meanings, and docs/cli.md prints that table.
const (
	exitOK      = int(api.ExitOK)
	exitError   = int(api.ExitError)
	exitUsage   = int(api.ExitUsage)
	exitRepo    = int(api.ExitRepo)
	exitKey     = int(api.ExitKey)
	exitCapable = int(api.ExitCapable)
	exitDaemon  = int(api.ExitDaemon)
	exitNetwork = int(api.ExitNetwork)
	exitRemote  = int(api.ExitRemote)
)

// localExits gives the errors of the commands that work on the repo, the
// keys and the invitation protocol themselves (not through the daemon)
// their exit codes. The daemon's errors get theirs from api.Kinds.
var localExits = []struct {
	err  error
	code int
}{
	{api.ErrNoDaemon, exitDaemon},
	{repo.ErrLocked, exitDaemon},
	{invite.ErrNoInviter, exitNetwork},
	{invite.ErrUnknown, exitCapable},
	{invite.ErrExpired, exitCapable},
	{invite.ErrUsed, exitCapable},
	{invite.ErrNameInUse, exitCapable},
	{repo.ErrNoRepo, exitRepo},
	{repo.ErrExists, exitRepo},
	{repo.ErrUnknownVersion, exitRepo},
	{repo.ErrBadConfig, exitRepo},
	{tpm.ErrWrongPassphrase, exitKey},
	{tpm.ErrNeedPassphrase, exitKey},
	{tpm.ErrUnavailable, exitKey},
	{tpm.ErrKeyLost, exitKey},
	{tpm.ErrUnknownVersion, exitKey},
	{tpm.ErrMalformed, exitKey},
	{tpm.ErrNotExportable, exitKey},
	{repo.ErrNoRootKey, exitKey},
	{repo.ErrWrongRoot, exitKey},
	{errNoPassphrase, exitKey},
	{caps.ErrBadSignature, exitCapable},
	{caps.ErrExpired, exitCapable},
	{caps.ErrNotYetValid, exitCapable},
	{caps.ErrNotChained, exitCapable},
	{caps.ErrPathNotCovered, exitCapable},
	{caps.ErrRootMismatch, exitCapable},
	{caps.ErrChainTooLong, exitCapable},
	{caps.ErrUnknownVersion, exitCapable},
	{caps.ErrMalformed, exitCapable},
	{caps.ErrWrongHolder, exitCapable},
}

// exitCode is the exit code of a command that failed with err: a usage
// error's, an API error's kind's (api.Kinds; FileExit for a file-system
// command's, see fsErr), else the first local sentinel's, else exitError.
func exitCode(err error) int {
	var u *usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		var fe *fileError
		if errors.As(err, &fe) {
			return int(ae.Kind.FileExit())
		}
		return int(ae.Kind.Exit())
	}
	for _, l := range localExits {
		if errors.Is(err, l.err) {
			return l.code
		}
	}
	return exitError
}

// fileError is the error of a file-system command (docs/cli.md, "Files"),
// whose API errors exit by their kind's FileExit.
type fileError struct{ err error }

func (e *fileError) Error() string { return e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// fsErr marks err as a file-system command's (nil stays nil).
func fsErr(err error) error {
	if err == nil {
		return nil
	}
	return &fileError{err}
}

// usageError is a bad command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErr(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }
