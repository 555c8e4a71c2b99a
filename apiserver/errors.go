package apiserver

import (
	"context"
	"errors"
	"fmt"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/api"
	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/blocks/replica"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/pubsub"
	"blocktree.dev/bt/wasm"
)

// apiKinds is the one table from the subsystems' sentinel errors to the
// API's kinds; apiError consults it. The first match wins, so an error that
// wraps more than one sentinel gets the kind of the more specific one,
// listed first. hint, when set, is the format (with %v for the error) of
// the message the client sees, with advice on what to do.
var apiKinds = []struct {
	err  error
	kind api.Kind
	hint string
}{
	// The daemon is shutting down.
	{msg.ErrClosed, api.KindUnavailable, "%v (the daemon is stopping)"},
	{pubsub.ErrClosed, api.KindUnavailable, "%v (the daemon is stopping)"},
	{pubsub.ErrCanceled, api.KindUnavailable, ""},
	{p2p.ErrClosed, api.KindUnavailable, "%v (the daemon is stopping)"},
	{blocks.ErrClosed, api.KindUnavailable, "%v (the daemon is stopping)"},
	{exchange.ErrClosed, api.KindUnavailable, "%v (the daemon is stopping)"},
	{actors.ErrClosed, api.KindUnavailable, "%v (the daemon is stopping)"},
	{wasm.ErrClosed, api.KindUnavailable, "%v (the daemon is stopping)"},

	// File system.
	{fsys.ErrNotExist, api.KindNotFound, ""},
	{fsys.ErrExist, api.KindExists, ""},
	{fsys.ErrPermission, api.KindDenied, "%v (a read needs a readcap and a write a writecap that covers the path: ask its owner for `bt grant`)"},
	{fsys.ErrIntegrity, api.KindDenied, ""},
	{fsys.ErrUnavailable, api.KindUnreachable, "%v (is the volume's host running and reachable? `bt peers` shows what this node sees)"},
	{fsys.ErrConflict, api.KindUnavailable, "%v: other writers kept changing it; retry"},
	{fsys.ErrNoSpace, api.KindUnavailable, ""},
	{fsys.ErrNotDir, api.KindInvalid, ""},
	{fsys.ErrIsDir, api.KindInvalid, ""},
	{fsys.ErrNotEmpty, api.KindInvalid, ""},
	{fsys.ErrInvalid, api.KindInvalid, ""},
	{fsys.ErrNameTooLong, api.KindInvalid, ""},
	{fsys.ErrCrossVolume, api.KindInvalid, ""},
	{fsys.ErrNotSupported, api.KindInvalid, ""},

	// Blocks and replication.
	{blocks.ErrNoSpace, api.KindUnavailable, "%v (free space, raise storage.quota, or run `bt repo gc`)"},
	{blocks.ErrNotFound, api.KindNotFound, ""},
	{blocks.ErrIntegrity, api.KindDenied, "%v (a wrong key, or corrupt data: run `bt repo verify`)"},
	{blocks.ErrTooLarge, api.KindInvalid, ""},
	{replica.ErrReplication, api.KindUnreachable, ""},
	{replica.ErrBadRoot, api.KindInvalid, ""},

	// Messaging and pub-sub.
	{msg.ErrTooLarge, api.KindInvalid, ""},
	{msg.ErrNotOwnPath, api.KindInvalid, ""},
	{pubsub.ErrTooLarge, api.KindInvalid, ""},
	{pubsub.ErrPattern, api.KindInvalid, ""},
	{pubsub.ErrReaders, api.KindInvalid, ""},
	{msg.ErrDenied, api.KindDenied, ""},
	{pubsub.ErrDenied, api.KindDenied, ""},
	{msg.ErrNoEndpoint, api.KindNotFound, ""},
	{msg.ErrExists, api.KindExists, ""},
	{msg.ErrUnreachable, api.KindUnreachable, ""},
	{errRemote, api.KindRemote, ""}, // a *msg.RemoteError: the called handler failed

	// The network.
	{p2p.ErrNotFound, api.KindNotFound, ""},
	{p2p.ErrExpired, api.KindNotFound, ""},
	{p2p.ErrBadRecord, api.KindNotFound, ""},
	{p2p.ErrNotAuthenticated, api.KindDenied, ""},
	{p2p.ErrUnreachable, api.KindUnreachable, ""},

	// A deadline of the request passed.
	{context.DeadlineExceeded, api.KindUnreachable, ""},
	// The request was canceled: the client that went away sees no answer,
	// so this is the daemon stopping its requests.
	{context.Canceled, api.KindUnavailable, ""},
}

// apiError is err as the API error the client gets: err itself when it is
// one, else the kind of the first sentinel in apiKinds it wraps (a call's
// remote failure is KindRemote), else an internal error carrying its text.
// It never returns nil: a nil err is an internal error too.
func apiError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	if err == nil {
		return api.Errorf(api.KindInternal, "unknown error")
	}
	for _, k := range apiKinds {
		if is(err, k.err) {
			if k.hint != "" {
				return &api.Error{Kind: k.kind, Message: fmt.Sprintf(k.hint, err)}
			}
			return api.Errorf(k.kind, "%v", err)
		}
	}
	return api.Errorf(api.KindInternal, "%v", err)
}

// errRemote stands in apiKinds for any *msg.RemoteError.
var errRemote = errors.New("remote handler failed")

// is is errors.Is, with errRemote matching a *msg.RemoteError.
func is(err, target error) bool {
	if target == errRemote {
		var re *msg.RemoteError
		return errors.As(err, &re)
	}
	return errors.Is(err, target)
}
