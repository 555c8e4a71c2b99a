package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/paths"
)

// maxArgMessage bounds a message read from stdin by the CLI.
const maxArgMessage = 64 << 20

// payload is MSG, or stdin when MSG is "-".
func payload(cmd *cobra.Command, arg string) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxArgMessage+1))
	if err != nil {
		return nil, fmt.Errorf("reading stdin: %w", err)
	}
	if len(b) > maxArgMessage {
		return nil, usageErr("message on stdin is over %d bytes", maxArgMessage)
	}
	return b, nil
}

// line renders a payload on one line: as is when it is one line of UTF-8
// text, Go-quoted otherwise.
func line(b []byte) string {
	s := string(b)
	if utf8.ValidString(s) && strconv.CanBackquote(s) {
		return s
	}
	return strconv.Quote(s)
}

func sendCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var confirm bool
	cmd := &cobra.Command{
		Use:   "send PATH MSG",
		Short: "Send MSG (or stdin for -) to the endpoint at PATH, fire-and-forget",
		Args:  cobra.ExactArgs(2),
		RunE: unary[api.SendRequest, api.CallResult]{
			req: func(cmd *cobra.Command, args []string) (api.SendRequest, error) {
				p, err := paths.Parse(args[0])
				if err != nil {
					return api.SendRequest{}, usageErr("send: %v", err)
				}
				body, err := payload(cmd, args[1])
				return api.SendRequest{Path: p, Payload: body, Confirm: confirm, Timeout: timeout.String()}, err
			},
			call: (*api.Client).Send,
		}.runE(g),
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "give up when the message is not queued (or, with --confirm, accepted) within this long")
	cmd.Flags().BoolVar(&confirm, "confirm", false, "wait until the receiver has accepted the message, and report its own refusal")
	return cmd
}

func callCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "call PATH MSG",
		Short: "Call the endpoint at PATH with MSG (or stdin for -); the reply goes to stdout",
		Args:  cobra.ExactArgs(2),
		RunE: unary[api.SendRequest, api.CallResult]{
			req: func(cmd *cobra.Command, args []string) (api.SendRequest, error) {
				p, err := paths.Parse(args[0])
				if err != nil {
					return api.SendRequest{}, usageErr("call: %v", err)
				}
				if timeout <= 0 {
					return api.SendRequest{}, usageErr("call: --timeout must be positive")
				}
				body, err := payload(cmd, args[1])
				return api.SendRequest{Path: p, Payload: body, Call: true, Timeout: timeout.String()}, err
			},
			call: (*api.Client).Send,
			text: func(cmd *cobra.Command, res api.CallResult) error {
				_, err := cmd.OutOrStdout().Write(res.Payload)
				return err
			},
		}.runE(g),
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "deadline for the reply; the receiver sees it too")
	addJSON(cmd, g)
	return cmd
}

func listenCmd(g *globals) *cobra.Command {
	var echo bool
	var group, writecap string
	cmd := &cobra.Command{
		Use:   "listen PATH",
		Short: "Host an endpoint at PATH (this node's path or under it) and print each message received",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := paths.Parse(args[0])
			if err != nil {
				return usageErr("listen: %v", err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if writecap != "" && group == "" {
				return usageErr("listen: --writecap serves another node's path only in a queue group: add --group NAME")
			}
			return c.Listen(cmd.Context(), api.ListenRequest{Path: p, Echo: echo, Group: group, Writecap: writecap}, func(ev api.Received) error {
				if ev.Event == "listening" {
					fmt.Fprintf(cmd.ErrOrStderr(), "bt: listening on %s\n", ev.To)
					return nil
				}
				if g.json {
					return json.NewEncoder(out).Encode(ev)
				}
				_, err := fmt.Fprintln(out, line(ev.Payload))
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&echo, "echo", false, "answer every call with its own payload")
	cmd.Flags().StringVar(&group, "group", "", "join the queue group NAME serving PATH: each message to PATH goes to one member")
	cmd.Flags().StringVar(&writecap, "writecap", "", "with --group, a writecap for PATH held by this node (as `bt grant write` prints it), to serve another node's path")
	addJSON(cmd, g)
	return cmd
}

func pubCmd(g *globals) *cobra.Command {
	var readers []string
	cmd := &cobra.Command{
		Use:   "pub TOPIC MSG",
		Short: "Publish MSG (or stdin for -) on the topic TOPIC (a path your writecap covers)",
		Args:  cobra.ExactArgs(2),
		RunE: unary[api.PublishRequest, api.None]{
			req: func(cmd *cobra.Command, args []string) (api.PublishRequest, error) {
				topic, err := paths.Parse(args[0])
				if err != nil {
					return api.PublishRequest{}, usageErr("pub: %v", err)
				}
				req := api.PublishRequest{Topic: topic}
				for _, r := range readers {
					p, err := paths.Parse(r)
					if err != nil {
						return api.PublishRequest{}, usageErr("pub: --reader: %v", err)
					}
					req.Readers = append(req.Readers, p)
				}
				req.Payload, err = payload(cmd, args[1])
				return req, err
			},
			call: noResp((*api.Client).Publish),
		}.runE(g),
	}
	cmd.Flags().StringSliceVar(&readers, "reader", nil, "make the message confidential: only the node at this path can read it (repeatable)")
	return cmd
}

func subCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sub PATTERN",
		Short: "Print messages on topics matching PATTERN (* one component, ... any depth at the end), one line each",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pt, err := paths.ParsePattern(args[0])
			if err != nil {
				return usageErr("sub: %v", err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			return c.Subscribe(cmd.Context(), api.SubscribeRequest{Pattern: pt}, func(ev api.Published) error {
				if ev.Event == "subscribed" {
					fmt.Fprintf(cmd.ErrOrStderr(), "bt: subscribed to %s\n", ev.Topic)
					return nil
				}
				if g.json {
					return json.NewEncoder(out).Encode(ev)
				}
				text := line(ev.Payload)
				if !ev.Readable {
					text = "(confidential: no readcap on this node)"
				}
				_, err := fmt.Fprintf(out, "%s %s %s\n", ev.Topic, ev.From, text)
				return err
			})
		},
	}
	addJSON(cmd, g)
	return cmd
}
