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

// Exit codes. They are part of bt's interface; docs/cli.md lists them.
const (
	exitOK      = 0
	exitError   = 1 // anything not listed below
	exitUsage   = 2 // bad command line: unknown command or flag, bad argument
	exitRepo    = 3 // no repo, a repo exists already, unknown repo version, bad config
	exitKey     = 4 // wrong or missing passphrase, TPM unreachable or cleared, key file problems
	exitCapable = 5 // a writecap, certificate or invite was refused
	exitDaemon  = 6 // no daemon runs for the repo, or another one holds it
	exitNetwork = 7 // no record or endpoint for the path, or the peer or inviter could not be reached in time
	exitRemote  = 8 // the endpoint called answered with an error
)

func exitCode(err error) int {
	switch api.KindOf(err) {
	case api.KindInvalid:
		return exitUsage
	case api.KindDenied:
		return exitCapable
	case api.KindRemote:
		return exitRemote
	case api.KindNotFound, api.KindUnreachable:
		return exitNetwork
	}
	switch {
	case errors.Is(err, api.ErrNoDaemon), errors.Is(err, repo.ErrLocked):
		return exitDaemon
	case errors.Is(err, invite.ErrNoInviter):
		return exitNetwork
	case errors.Is(err, invite.ErrUnknown), errors.Is(err, invite.ErrExpired),
		errors.Is(err, invite.ErrUsed), errors.Is(err, invite.ErrNameInUse):
		return exitCapable
	case errors.Is(err, repo.ErrNoRepo), errors.Is(err, repo.ErrExists),
		errors.Is(err, repo.ErrUnknownVersion), errors.Is(err, repo.ErrBadConfig):
		return exitRepo
	case errors.Is(err, tpm.ErrWrongPassphrase), errors.Is(err, tpm.ErrNeedPassphrase),
		errors.Is(err, tpm.ErrUnavailable), errors.Is(err, tpm.ErrKeyLost),
		errors.Is(err, tpm.ErrUnknownVersion), errors.Is(err, tpm.ErrMalformed),
		errors.Is(err, tpm.ErrNotExportable), errors.Is(err, repo.ErrNoRootKey),
		errors.Is(err, repo.ErrWrongRoot), errors.Is(err, errNoPassphrase):
		return exitKey
	case errors.Is(err, caps.ErrBadSignature), errors.Is(err, caps.ErrExpired),
		errors.Is(err, caps.ErrNotYetValid), errors.Is(err, caps.ErrNotChained),
		errors.Is(err, caps.ErrPathNotCovered), errors.Is(err, caps.ErrRootMismatch),
		errors.Is(err, caps.ErrChainTooLong), errors.Is(err, caps.ErrUnknownVersion),
		errors.Is(err, caps.ErrMalformed), errors.Is(err, caps.ErrWrongHolder):
		return exitCapable
	}
	return exitError
}

// usageError is a bad command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErr(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }
