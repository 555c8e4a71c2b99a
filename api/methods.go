package api

import (
	"context"
	"io"

	"blocktree.dev/bt/paths"
)

// The typed calls of every route. Each is safe for concurrent use; errors
// are *Error from the daemon, or wrap ErrNoDaemon.

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	return Call(ctx, c, RouteStatus, None{})
}

// Peers is GET /v1/peers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) { return Call(ctx, c, RoutePeers, None{}) }

// Resolve is GET /v1/resolve.
func (c *Client) Resolve(ctx context.Context, p paths.Path) (Resolution, error) {
	return Call(ctx, c, RouteResolve, ResolveRequest{Path: p})
}

// Ping is POST /v1/ping.
func (c *Client) Ping(ctx context.Context, req PingRequest) (PingResult, error) {
	return Call(ctx, c, RoutePing, req)
}

// Invite is POST /v1/invites.
func (c *Client) Invite(ctx context.Context, req InviteRequest) (InviteResult, error) {
	return Call(ctx, c, RouteInvite, req)
}

// Send is POST /v1/send: a message, or with req.Call a call whose reply
// the answer holds.
func (c *Client) Send(ctx context.Context, req SendRequest) (CallResult, error) {
	return Call(ctx, c, RouteSend, req)
}

// Listen is POST /v1/listen: each gets every event until it returns an
// error or ctx ends.
func (c *Client) Listen(ctx context.Context, req ListenRequest, each func(Received) error) error {
	return Each(ctx, c, RouteListen, req, each)
}

// Publish is POST /v1/publish.
func (c *Client) Publish(ctx context.Context, req PublishRequest) error {
	_, err := Call(ctx, c, RoutePublish, req)
	return err
}

// Subscribe is POST /v1/subscribe: each gets every event until it returns
// an error or ctx ends.
func (c *Client) Subscribe(ctx context.Context, req SubscribeRequest, each func(Published) error) error {
	return Each(ctx, c, RouteSubscribe, req, each)
}

// Actors is GET /v1/actors.
func (c *Client) Actors(ctx context.Context) ([]Actor, error) {
	return Call(ctx, c, RouteActors, None{})
}

// BlockPut is POST /v1/blocks: body is the file.
func (c *Client) BlockPut(ctx context.Context, req BlockPutRequest, body io.Reader) (BlockPutResult, error) {
	return Put(ctx, c, RouteBlockPut, req, body)
}

// BlockGet is POST /v1/blocks/get: the file goes to w.
func (c *Client) BlockGet(ctx context.Context, req BlockGetRequest, w io.Writer) error {
	return Fetch(ctx, c, RouteBlockGet, req, w)
}

// RepoStat is GET /v1/repo/stat.
func (c *Client) RepoStat(ctx context.Context) (RepoStat, error) {
	return Call(ctx, c, RouteRepoStat, None{})
}

// RepoGC is POST /v1/repo/gc: each gets every event.
func (c *Client) RepoGC(ctx context.Context, req GCRequest, each func(RepoEvent) error) error {
	return Each(ctx, c, RouteRepoGC, req, each)
}

// RepoVerify is POST /v1/repo/verify: each gets every event.
func (c *Client) RepoVerify(ctx context.Context, req VerifyRequest, each func(RepoEvent) error) error {
	return Each(ctx, c, RouteRepoVerify, req, each)
}

// FSList is GET /v1/fs/ls.
func (c *Client) FSList(ctx context.Context, req FSListRequest) (FSListing, error) {
	return Call(ctx, c, RouteFSList, req)
}

// FSLog is GET /v1/fs/log.
func (c *Client) FSLog(ctx context.Context, req FSLogRequest) ([]FSLogEntry, error) {
	return Call(ctx, c, RouteFSLog, req)
}

// FSMkdir is POST /v1/fs/mkdir.
func (c *Client) FSMkdir(ctx context.Context, req FSMkdirRequest) (FSEntry, error) {
	return Call(ctx, c, RouteFSMkdir, req)
}

// FSRemove is POST /v1/fs/rm.
func (c *Client) FSRemove(ctx context.Context, req FSRemoveRequest) (FSRemoveResult, error) {
	return Call(ctx, c, RouteFSRemove, req)
}

// FSMove is POST /v1/fs/mv.
func (c *Client) FSMove(ctx context.Context, req FSMoveRequest) (FSEntry, error) {
	return Call(ctx, c, RouteFSMove, req)
}

// FSWrite is POST /v1/fs/write: body replaces the file's content.
func (c *Client) FSWrite(ctx context.Context, req FSWriteRequest, body io.Reader) (FSEntry, error) {
	return Put(ctx, c, RouteFSWrite, req, body)
}

// FSRead is POST /v1/fs/read: the file goes to w.
func (c *Client) FSRead(ctx context.Context, req FSReadRequest, w io.Writer) error {
	return Fetch(ctx, c, RouteFSRead, req, w)
}

// FSGrant is POST /v1/fs/grant.
func (c *Client) FSGrant(ctx context.Context, req FSGrantRequest) (FSGrantResult, error) {
	return Call(ctx, c, RouteFSGrant, req)
}

// FSRevoke is POST /v1/fs/revoke.
func (c *Client) FSRevoke(ctx context.Context, req FSRevokeRequest) (FSGrantResult, error) {
	return Call(ctx, c, RouteFSRevoke, req)
}

// FSHost is POST /v1/fs/host.
func (c *Client) FSHost(ctx context.Context, req FSHostRequest) (FSVolume, error) {
	return Call(ctx, c, RouteFSHost, req)
}

// FSHosted is GET /v1/fs/hosted.
func (c *Client) FSHosted(ctx context.Context) ([]FSVolume, error) {
	return Call(ctx, c, RouteFSHosted, None{})
}

// FSMount is POST /v1/fs/mount.
func (c *Client) FSMount(ctx context.Context, req FSMountRequest) (FSMount, error) {
	return Call(ctx, c, RouteFSMount, req)
}

// FSUnmount is POST /v1/fs/unmount.
func (c *Client) FSUnmount(ctx context.Context, req FSMountRequest) (FSMount, error) {
	return Call(ctx, c, RouteFSUnmount, req)
}

// FSMounts is GET /v1/fs/mounts.
func (c *Client) FSMounts(ctx context.Context) ([]FSMount, error) {
	return Call(ctx, c, RouteFSMounts, None{})
}

// WasmRun is POST /v1/wasm/run.
func (c *Client) WasmRun(ctx context.Context, req WasmRunRequest) (WasmRunResult, error) {
	return Call(ctx, c, RouteWasmRun, req)
}

// WasmPs is GET /v1/wasm/ps.
func (c *Client) WasmPs(ctx context.Context) ([]WasmInstance, error) {
	return Call(ctx, c, RouteWasmPs, None{})
}

// WasmStop is POST /v1/wasm/stop.
func (c *Client) WasmStop(ctx context.Context, req WasmStopRequest) (WasmStopResult, error) {
	return Call(ctx, c, RouteWasmStop, req)
}

// WasmLogs is POST /v1/wasm/logs: each gets every line.
func (c *Client) WasmLogs(ctx context.Context, req WasmLogsRequest, each func(WasmLogLine) error) error {
	return Each(ctx, c, RouteWasmLogs, req, each)
}

// Bench is POST /v1/bench: each gets every event (progress lines, then one
// result or error) until it returns an error or ctx ends; ending ctx stops
// the bench.
func (c *Client) Bench(ctx context.Context, req BenchRequest, each func(BenchEvent) error) error {
	return Each(ctx, c, RouteBench, req, each)
}

// BenchServe is POST /v1/bench/serve: the endpoint and the subscription
// stay while it runs; each gets every event until it returns an error or
// ctx ends.
func (c *Client) BenchServe(ctx context.Context, req BenchServeRequest, each func(BenchServeEvent) error) error {
	return Each(ctx, c, RouteBenchServe, req, each)
}
