package apiserver

import (
	"context"

	"blocktree.dev/bt/api"
)

// actorsList is GET /v1/actors: the node's actors and services.
func (s *server) actorsList(ctx context.Context, _ api.None) ([]api.Actor, error) {
	out := []api.Actor{}
	for _, a := range s.actors.List() {
		out = append(out, api.Actor{Path: a.Path, Owner: a.Owner, Kind: string(a.Kind), State: a.State,
			ProtocolState: a.ProtocolState, Protocol: a.Protocol, MailboxDepth: a.MailboxDepth, MailboxCap: a.MailboxCap,
			Started: a.Started})
	}
	return out, nil
}
