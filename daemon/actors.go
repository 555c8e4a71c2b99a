package daemon

import (
	"context"
	"net/http"

	"blocktree.dev/bt/actors"
)

// actorsList is GET /v1/actors: the node's actors and services.
func (s *server) actorsList(ctx context.Context, r *http.Request) (any, error) {
	out := s.actors.List()
	if out == nil {
		out = []actors.ActorInfo{}
	}
	return out, nil
}
