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
	"net/url"
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

// Do sends a request with body in as JSON (nil for none) and decodes the
// answer into out (nil to discard). Errors are *Error from the daemon, or
// wrap ErrNoDaemon.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	resp, err := c.send(ctx, method, path, query, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading the daemon's answer: %w", err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding the daemon's answer: %w", err)
	}
	return nil
}

// send makes one request and returns a 200 answer; any other status is
// turned into the daemon's *Error.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	u := "http://bt" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.roundTrip(ctx, req)
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
	var e struct {
		Error *Error `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != nil {
		return nil, e.Error
	}
	return nil, Errorf(KindInternal, "daemon answered %s", resp.Status)
}

// Stream sends a request whose answer is a stream of JSON lines and calls
// each for every line until the stream ends, ctx ends or each returns an
// error (which Stream returns).
func (c *Client) Stream(ctx context.Context, path string, in any, each func(line []byte) error) error {
	resp, err := c.send(ctx, http.MethodPost, path, nil, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 128<<20)
	for sc.Scan() {
		if err := each(sc.Bytes()); err != nil {
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

// Upload sends body as the raw request body (application/octet-stream) and
// decodes the JSON answer into out.
func (c *Client) Upload(ctx context.Context, path string, query url.Values, body io.Reader, out any) error {
	u := "http://bt" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.roundTrip(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading the daemon's answer: %w", err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding the daemon's answer: %w", err)
	}
	return nil
}

// Download sends in as JSON and copies the raw answer to w. An error the
// daemon reports after the first byte (trailer TrailerError) is returned;
// w has then received a prefix of the answer.
func (c *Client) Download(ctx context.Context, path string, in any, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodPost, path, nil, in)
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
