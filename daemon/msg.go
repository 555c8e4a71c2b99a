package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
)

// msgErr turns a messaging or pub-sub error into an API error of the right
// kind.
func msgErr(err error) error {
	switch {
	case errors.Is(err, msg.ErrTooLarge), errors.Is(err, msg.ErrNotOwnPath), errors.Is(err, pubsub.ErrTooLarge),
		errors.Is(err, pubsub.ErrPattern), errors.Is(err, pubsub.ErrReaders):
		return api.Errorf(api.KindInvalid, "%v", err)
	case errors.Is(err, msg.ErrDenied), errors.Is(err, pubsub.ErrDenied):
		return api.Errorf(api.KindDenied, "%v", err)
	case errors.Is(err, msg.ErrNoEndpoint):
		return api.Errorf(api.KindNotFound, "%v", err)
	case errors.Is(err, msg.ErrExists):
		return api.Errorf(api.KindExists, "%v", err)
	case errors.Is(err, msg.ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.KindUnreachable, "%v", err)
	}
	var re *msg.RemoteError
	if errors.As(err, &re) {
		return api.Errorf(api.KindRemote, "%v", err)
	}
	return p2pErr(err)
}

// deadline applies a request's timeout (default 10 s) to ctx.
func deadline(ctx context.Context, s string) (context.Context, context.CancelFunc, error) {
	d := 10 * time.Second
	if s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			return nil, nil, api.Errorf(api.KindInvalid, "timeout %q: want a positive duration such as 5s", s)
		}
	}
	c, cancel := context.WithTimeout(ctx, d)
	return c, cancel, nil
}

func (s *server) send(ctx context.Context, r *http.Request) (any, error) {
	var req api.SendRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	p, err := parsePath(req.Path)
	if err != nil {
		return nil, err
	}
	ctx, cancel, err := deadline(ctx, req.Timeout)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if req.Call {
		reply, err := s.msgs.Call(ctx, p, bytes.NewReader(req.Payload), int64(len(req.Payload)))
		if err != nil {
			return nil, msgErr(err)
		}
		return api.CallResult{Payload: reply}, nil
	}
	if err := s.msgs.Send(ctx, p, bytes.NewReader(req.Payload), int64(len(req.Payload))); err != nil {
		return nil, msgErr(err)
	}
	return struct{}{}, nil
}

// stream answers a long-lived request with JSON lines, flushed as they go,
// until the client goes away. first is written at once.
func stream(w http.ResponseWriter, first any) (func(v any) error, error) {
	f, ok := w.(http.Flusher)
	if !ok {
		return nil, api.Errorf(api.KindInternal, "streaming unsupported")
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	write := func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		f.Flush()
		return nil
	}
	return write, write(first)
}

func (s *server) listen(w http.ResponseWriter, r *http.Request) {
	var req api.ListenRequest
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := decode(r, &req); err != nil {
		writeErr(w, err.(*api.Error))
		return
	}
	p, err := parsePath(req.Path)
	if err != nil {
		writeErr(w, err.(*api.Error))
		return
	}
	events := make(chan api.Received, 64)
	remove, err := s.msgs.Handle(p, func(ctx context.Context, m *msg.Message) ([]byte, error) {
		body, err := io.ReadAll(m.Body)
		if err != nil {
			return nil, err
		}
		ev := api.Received{From: m.From.String(), To: m.To.String(), Call: m.Call, Payload: body}
		select {
		case events <- ev:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.Context().Done():
			return nil, errors.New("the listener went away")
		}
		if req.Echo {
			return body, nil
		}
		return nil, nil
	})
	if err != nil {
		writeErr(w, msgErr(err).(*api.Error))
		return
	}
	defer remove()
	write, err := stream(w, api.Received{Event: "listening", To: p.String()})
	if err != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-events:
			ev.Event = "message"
			if write(ev) != nil {
				return
			}
		}
	}
}

func (s *server) publish(ctx context.Context, r *http.Request) (any, error) {
	var req api.PublishRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	p, err := parsePath(req.Topic)
	if err != nil {
		return nil, err
	}
	var opts []pubsub.PublishOption
	if len(req.Readers) > 0 {
		var keys []crypto.PubKey
		for _, rp := range req.Readers {
			p, err := parsePath(rp)
			if err != nil {
				return nil, err
			}
			// A reader is a node: its key comes from its path record.
			res, err := s.node.Resolve(ctx, p)
			if err != nil {
				return nil, p2pErr(err)
			}
			if res.NodeKey == nil {
				return nil, api.Errorf(api.KindNotFound, "reader %s: its record names no node key", p)
			}
			keys = append(keys, res.NodeKey)
		}
		opts = append(opts, pubsub.WithReaders(keys...))
	}
	if err := s.pubsub.Publish(ctx, p, req.Payload, opts...); err != nil {
		return nil, msgErr(err)
	}
	return struct{}{}, nil
}

func (s *server) subscribe(w http.ResponseWriter, r *http.Request) {
	var req api.SubscribeRequest
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := decode(r, &req); err != nil {
		writeErr(w, err.(*api.Error))
		return
	}
	pt, err := paths.ParsePattern(req.Pattern)
	if err != nil {
		writeErr(w, api.Errorf(api.KindInvalid, "%v", err))
		return
	}
	sub, err := s.pubsub.Subscribe(r.Context(), pt)
	if err != nil {
		writeErr(w, msgErr(err).(*api.Error))
		return
	}
	defer sub.Cancel()
	write, err := stream(w, api.Published{Event: "subscribed", Topic: pt.String()})
	if err != nil {
		return
	}
	for {
		m, err := sub.Next(r.Context())
		if err != nil {
			return
		}
		ev := api.Published{Event: "message", Topic: m.Topic.String(), From: m.From.String(), Seq: m.Seq,
			Payload: m.Payload, Confidential: m.Confidential, Readable: m.Readable}
		if write(ev) != nil {
			return
		}
	}
}
