package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
)

// Client calls a daemon's API. It is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the daemon of the repo at dir.
func NewClient(dir string) *Client {
	sock := filepath.Join(dir, SocketName)
	return &Client{socket: sock, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}}
}

// send makes the request of route r for req and returns a 200 answer;
// any other status is turned into the daemon's *Error. A GET request and
// an Upload's parameters go in the query (req is a QueryRequest); any other
// request is the JSON body. body is an Upload's raw body.
func (c *Client) send(ctx context.Context, info RouteInfo, req any, body io.Reader) (*http.Response, error) {
	u := "http://bt" + info.Path
	ctype := "application/json"
	switch {
	case info.Shape == Upload:
		ctype = "application/octet-stream"
		fallthrough
	case info.Method == http.MethodGet:
		if qr, ok := req.(QueryRequest); ok {
			if q := qr.Query(); len(q) > 0 {
				u += "?" + q.Encode()
			}
		}
	default:
		b, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, info.Method, u, body)
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", ctype)
	return c.roundTrip(ctx, hr)
}

// roundTrip makes one request and returns a 200 answer; any other status
// is turned into the daemon's *Error.
func (c *Client) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (socket %s): start it with `bt daemon`", ErrNoDaemon, c.socket)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("talking to the daemon at %s: %w", c.socket, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e ErrorBody
	if json.Unmarshal(data, &e) == nil && e.Error != nil {
		return nil, e.Error
	}
	return nil, Errorf(KindInternal, "daemon answered %s", resp.Status)
}

// maxAnswer bounds a JSON answer.
const maxAnswer = 16 << 20

// Call calls the Unary route r with req and returns its answer. Errors are
// *Error from the daemon, or wrap ErrNoDaemon. Safe for concurrent use.
func Call[Req, Resp any](ctx context.Context, c *Client, r Route[Req, Resp], req Req) (Resp, error) {
	var out Resp
	resp, err := c.send(ctx, r.Info(), req, nil)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	return out, decodeAnswer(resp.Body, &out)
}

// Put calls the Upload route r with req's parameters and body as the raw
// request body, and returns its answer.
func Put[Req, Resp any](ctx context.Context, c *Client, r Route[Req, Resp], req Req, body io.Reader) (Resp, error) {
	var out Resp
	resp, err := c.send(ctx, r.Info(), req, body)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	return out, decodeAnswer(resp.Body, &out)
}

func decodeAnswer(r io.Reader, out any) error {
	data, err := io.ReadAll(io.LimitReader(r, maxAnswer))
	if err != nil {
		return fmt.Errorf("reading the daemon's answer: %w", err)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding the daemon's answer: %w", err)
	}
	return nil
}

// Each calls the Stream route r with req and calls each for every line of
// the answer until the stream ends, ctx ends or each returns an error
// (which Each returns). A stream the daemon ends is an error too: streams
// run until the client stops reading, or end with an event that each
// recognises and stops at.
func Each[Req, Ev any](ctx context.Context, c *Client, r Route[Req, Ev], req Req, each func(Ev) error) error {
	resp, err := c.send(ctx, r.Info(), req, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 128<<20)
	for sc.Scan() {
		var ev Ev
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bad line from the daemon: %w", err)
		}
		if err := each(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("the daemon's stream broke: %w", err)
	}
	return errors.New("the daemon ended the stream (did it stop?)")
}

// Fetch calls the Download route r with req and copies the raw answer to
// w. An error the daemon reports after the first byte (trailer
// TrailerError) is returned; w has then received a prefix of the answer.
func Fetch[Req any](ctx context.Context, c *Client, r Route[Req, None], req Req, w io.Writer) error {
	resp, err := c.send(ctx, r.Info(), req, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("receiving from the daemon: %w", err)
	}
	if t := resp.Trailer.Get(TrailerError); t != "" {
		var e Error
		if json.Unmarshal([]byte(t), &e) == nil && e.Kind != "" {
			return &e
		}
		return Errorf(KindInternal, "%s", t)
	}
	return nil
}
