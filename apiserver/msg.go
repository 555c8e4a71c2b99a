package apiserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/api/serve"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
)

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

func (s *server) send(ctx context.Context, req api.SendRequest) (api.CallResult, error) {
	if err := need(req.Path); err != nil {
		return api.CallResult{}, err
	}
	ctx, cancel, err := deadline(ctx, req.Timeout)
	if err != nil {
		return api.CallResult{}, err
	}
	defer cancel()
	if req.Call {
		reply, err := s.msgs.Call(ctx, req.Path, bytes.NewReader(req.Payload), int64(len(req.Payload)))
		if err != nil {
			return api.CallResult{}, err
		}
		return api.CallResult{Payload: reply}, nil
	}
	if req.Confirm {
		return api.CallResult{}, s.msgs.SendConfirmed(ctx, req.Path, bytes.NewReader(req.Payload), int64(len(req.Payload)))
	}
	return api.CallResult{}, s.msgs.Send(ctx, req.Path, bytes.NewReader(req.Payload), int64(len(req.Payload)))
}

// listen hosts an endpoint at the request's path until the client goes
// away (or the daemon stops): one "listening" line, then one per message.
func (s *server) listen(ctx context.Context, req api.ListenRequest, out *serve.Events[api.Received]) error {
	if err := need(req.Path); err != nil {
		return err
	}
	var wc *caps.Writecap
	if req.Writecap != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.Writecap)
		if err != nil {
			return api.Errorf(api.KindInvalid, "writecap: %v", err)
		}
		if wc, err = caps.Decode(b); err != nil {
			return api.Errorf(api.KindInvalid, "writecap: %v", err)
		}
	}
	if wc != nil && req.Group == "" {
		return api.Errorf(api.KindInvalid, "a writecap serves another node's path only in a queue group: add a group name")
	}
	evs := make(chan api.Received, 64)
	handle := s.msgs.Handle
	if req.Group != "" {
		handle = func(p paths.Path, h msg.Handler) (func(), error) { return s.msgs.HandleGroup(p, req.Group, wc, h) }
	}
	remove, err := handle(req.Path, func(hctx context.Context, m *msg.Message) ([]byte, error) {
		body, err := io.ReadAll(m.Body)
		if err != nil {
			return nil, err
		}
		ev := api.Received{Event: "message", From: m.From, To: m.To, Call: m.Call, Payload: body}
		select {
		case evs <- ev:
		case <-hctx.Done():
			return nil, hctx.Err()
		case <-ctx.Done():
			return nil, errors.New("the listener went away")
		}
		if req.Echo {
			return body, nil
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	defer remove()
	if out.Send(api.Received{Event: "listening", To: req.Path}) != nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-evs:
			if out.Send(ev) != nil {
				return nil
			}
		}
	}
}

func (s *server) publish(ctx context.Context, req api.PublishRequest) (api.None, error) {
	if err := need(req.Topic); err != nil {
		return api.None{}, err
	}
	var opts []pubsub.PublishOption
	if len(req.Readers) > 0 {
		var keys []crypto.PubKey
		for _, p := range req.Readers {
			if err := need(p); err != nil {
				return api.None{}, err
			}
			// A reader is a node: its key comes from its path record.
			res, err := s.node.Resolve(ctx, p)
			if err != nil {
				return api.None{}, err
			}
			if res.NodeKey == nil {
				return api.None{}, api.Errorf(api.KindNotFound, "reader %s: its record names no node key", p)
			}
			keys = append(keys, res.NodeKey)
		}
		opts = append(opts, pubsub.WithReaders(keys...))
	}
	return api.None{}, s.pubsub.Publish(ctx, req.Topic, req.Payload, opts...)
}

// subscribe streams the messages on topics matching the request's pattern
// until the client goes away: one "subscribed" line, then one per message.
func (s *server) subscribe(ctx context.Context, req api.SubscribeRequest, out *serve.Events[api.Published]) error {
	if req.Pattern.IsZero() {
		_, err := paths.ParsePattern("")
		return api.Errorf(api.KindInvalid, "%v", err)
	}
	sub, err := s.pubsub.Subscribe(ctx, req.Pattern)
	if err != nil {
		return err
	}
	defer sub.Cancel()
	if out.Send(api.Published{Event: "subscribed", Topic: req.Pattern}) != nil {
		return nil
	}
	for {
		m, err := sub.Next(ctx)
		if err != nil {
			return nil
		}
		// Every path is a literal pattern.
		topic, err := paths.ParsePattern(m.Topic.String())
		if err != nil {
			continue
		}
		ev := api.Published{Event: "message", Topic: topic, From: m.From, Seq: m.Seq,
			Payload: m.Payload, Confidential: m.Confidential, Readable: m.Readable}
		if out.Send(ev) != nil {
			return nil
		}
	}
}
