package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Kind classifies an API error.
type Kind string

const (
	KindInvalid     Kind = "invalid"     // the request is malformed or an argument is bad
	KindNotFound    Kind = "not-found"   // no such path or record
	KindUnreachable Kind = "unreachable" // the peer or network could not be reached in time
	KindDenied      Kind = "denied"      // a capability check failed
	KindExists      Kind = "exists"      // the thing exists already (e.g. a name in use)
	KindUnavailable Kind = "unavailable" // the daemon cannot do this now (e.g. shutting down)
	KindRemote      Kind = "remote"      // the handler at the far end of a call failed; Message is its error
	KindInternal    Kind = "internal"    // a bug or an unexpected failure
)

// ExitCode is an exit code of the bt command. The codes are part of bt's
// interface (docs/cli.md, "Exit codes"); ExitCodes lists them.
type ExitCode int

const (
	ExitOK      ExitCode = 0
	ExitError   ExitCode = 1 // anything not listed below
	ExitUsage   ExitCode = 2 // bad command line: unknown command or flag, bad argument
	ExitRepo    ExitCode = 3 // no repo, a repo exists already, unknown repo version, bad config
	ExitKey     ExitCode = 4 // wrong or missing passphrase, TPM unreachable or cleared, key file problems
	ExitCapable ExitCode = 5 // a writecap, certificate or invite was refused, or a name is in use
	ExitDaemon  ExitCode = 6 // no daemon runs for the repo, or another one holds it
	ExitNetwork ExitCode = 7 // no record or endpoint for the path, or the peer or inviter could not be reached in time
	ExitRemote  ExitCode = 8 // the endpoint called answered with an error
)

// ExitCodes is the table of bt's exit codes and what each means, in the
// order docs/cli.md lists them.
var ExitCodes = []struct {
	Code    ExitCode
	Meaning string
}{
	{ExitOK, "success"},
	{ExitError, "any other error"},
	{ExitUsage, "usage: unknown command or flag, missing or bad argument"},
	{ExitRepo, "repo: none at the path, one exists already, unknown repo version, invalid config"},
	{ExitKey, "key: wrong or missing passphrase, TPM unreachable or cleared, bad key file, root key not on this node"},
	{ExitCapable, "capability: a writecap, certificate or invitation was refused (wrong, expired or used token, name in use)"},
	{ExitDaemon, "daemon: none runs for the repo, or one runs and holds it (a second `bt daemon`, `init --force`)"},
	{ExitNetwork, "network: no valid record or no endpoint for the path, or the peer or inviter could not be reached in time"},
	{ExitRemote, "remote: the endpoint that was called answered with an error"},
}

// KindInfo is one row of the error table: a kind, the HTTP status the
// daemon answers it with, the exit code the CLI gives it, and the exit code
// of the file-system commands (docs/cli.md, "Files"), which report every
// file-system error (no such file, exists, not a directory, …) as 1.
type KindInfo struct {
	Kind     Kind
	Status   int
	Exit     ExitCode
	FileExit ExitCode
	Meaning  string
}

// Kinds is the one error table; every Kind has exactly one row. The
// daemon's error writer, the client and the CLI all consult it.
var Kinds = []KindInfo{
	{KindInvalid, http.StatusBadRequest, ExitUsage, ExitError, "malformed request or bad argument"},
	{KindNotFound, http.StatusNotFound, ExitNetwork, ExitError, "no valid record for the path, no such file"},
	{KindUnreachable, http.StatusGatewayTimeout, ExitNetwork, ExitNetwork, "the peer could not be reached in time"},
	{KindDenied, http.StatusForbidden, ExitCapable, ExitCapable, "a capability check failed"},
	{KindExists, http.StatusConflict, ExitCapable, ExitError, "e.g. an invited name is in use"},
	{KindUnavailable, http.StatusServiceUnavailable, ExitError, ExitError, "the daemon cannot do this now"},
	{KindRemote, http.StatusInternalServerError, ExitRemote, ExitRemote, "the endpoint called answered with an error"},
	{KindInternal, http.StatusInternalServerError, ExitError, ExitError, "anything else"},
}

// info returns k's row of Kinds; an unknown kind is internal.
func (k Kind) info() KindInfo {
	for _, i := range Kinds {
		if i.Kind == k {
			return i
		}
	}
	return Kinds[len(Kinds)-1]
}

// Status is the HTTP status the daemon answers an error of kind k with.
func (k Kind) Status() int { return k.info().Status }

// Exit is the exit code the CLI gives an error of kind k.
func (k Kind) Exit() ExitCode { return k.info().Exit }

// FileExit is the exit code a file-system command gives an error of kind k.
func (k Kind) FileExit() ExitCode { return k.info().FileExit }

// Error is an error from the daemon.
type Error struct {
	Kind    Kind   `json:"kind"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error of kind k.
func Errorf(k Kind, format string, a ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, a...)}
}

// KindOf returns the kind of err, KindInternal for a non-API error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ErrNoDaemon: nothing answers on the repo's socket.
var ErrNoDaemon = errors.New("no bt daemon is running for this repo")

// ErrorBody is the body of a failed request: {"error": {kind, message}}.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// TrailerError names the HTTP trailer that carries an error after the
// first byte of a raw answer, as a JSON Error.
const TrailerError = "Bt-Error"
