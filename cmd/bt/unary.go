package main

import (
	"context"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/api"
)

// unary is the body of a command that makes one API call: it builds the
// request Req from the command line, calls the daemon once, and prints the
// answer Resp (indented JSON with --json, else text). Commands that stream,
// ask for passphrases or read the repo themselves keep their own RunE.
//
// The steps run in this order, each ending the command on error: req, the
// API client (the repo directory), call, then printing. So a bad command
// line is reported before a missing repo or daemon.
type unary[Req, Resp any] struct {
	// req builds the request from the arguments and flags; its errors
	// are returned as they are (usageErr for a bad command line). nil
	// means the zero Req.
	req func(cmd *cobra.Command, args []string) (Req, error)
	// call makes the API call; a method expression such as
	// (*api.Client).FSMkdir fits as it is.
	call func(c *api.Client, ctx context.Context, req Req) (Resp, error)
	// wrap maps an error of call (fsErr for file-system commands); nil
	// returns it as it is.
	wrap func(error) error
	// text prints the answer without --json; nil prints nothing.
	text func(cmd *cobra.Command, res Resp) error
}

// runE returns the command's cobra RunE.
func (u unary[Req, Resp]) runE(g *globals) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		var req Req
		if u.req != nil {
			var err error
			if req, err = u.req(cmd, args); err != nil {
				return err
			}
		}
		c, err := g.client()
		if err != nil {
			return err
		}
		res, err := u.call(c, cmd.Context(), req)
		if err != nil {
			if u.wrap != nil {
				return u.wrap(err)
			}
			return err
		}
		if g.json {
			return printJSON(cmd, res)
		}
		if u.text == nil {
			return nil
		}
		return u.text(cmd, res)
	}
}

// noReq adapts a client method that takes no request, such as
// (*api.Client).Status, to unary's call.
func noReq[Resp any](f func(*api.Client, context.Context) (Resp, error)) func(*api.Client, context.Context, api.None) (Resp, error) {
	return func(c *api.Client, ctx context.Context, _ api.None) (Resp, error) { return f(c, ctx) }
}

// listOf is noReq for a method that answers a list; an empty list is
// printed as [] with --json, never null.
func listOf[T any](f func(*api.Client, context.Context) ([]T, error)) func(*api.Client, context.Context, api.None) ([]T, error) {
	return func(c *api.Client, ctx context.Context, _ api.None) ([]T, error) {
		l, err := f(c, ctx)
		if l == nil {
			l = []T{}
		}
		return l, err
	}
}

// noResp adapts a client method that answers only an error, such as
// (*api.Client).Publish, to unary's call.
func noResp[Req any](f func(*api.Client, context.Context, Req) error) func(*api.Client, context.Context, Req) (api.None, error) {
	return func(c *api.Client, ctx context.Context, req Req) (api.None, error) { return api.None{}, f(c, ctx, req) }
}
