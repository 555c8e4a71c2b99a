package api

import (
	"net/http"
	"net/url"
	"reflect"
)

// Shape is how a route's request and answer travel.
type Shape int

const (
	// Unary: a JSON request body (none for GET, whose request is the
	// query) and one JSON answer.
	Unary Shape = iota
	// Stream: a JSON request body and an answer of JSON lines
	// (application/x-ndjson), flushed as they come.
	Stream
	// Upload: the request's parameters in the query and its body raw bytes
	// (application/octet-stream), streamed; one JSON answer.
	Upload
	// Download: a JSON request body and a raw answer
	// (application/octet-stream); an error after the first byte comes in
	// the TrailerError trailer.
	Download
)

func (s Shape) String() string {
	switch s {
	case Stream:
		return "stream"
	case Upload:
		return "upload"
	case Download:
		return "download"
	}
	return "unary"
}

// Route is one operation of the API: its method, path and shape, typed by
// its request Req and its answer Resp (for a Stream, one line). The daemon
// registers its handlers by Route and the Client calls by Route, so both
// sides agree on the types.
type Route[Req, Resp any] struct {
	Method string
	Path   string
	Shape  Shape
}

// Pattern is the route as an http.ServeMux pattern ("GET /v1/status").
func (r Route[Req, Resp]) Pattern() string { return r.Method + " " + r.Path }

// Info describes r for tables and documentation.
func (r Route[Req, Resp]) Info() RouteInfo {
	return RouteInfo{Method: r.Method, Path: r.Path, Shape: r.Shape,
		Request: reflect.TypeFor[Req](), Response: reflect.TypeFor[Resp]()}
}

// RouteInfo is a Route without its type parameters.
type RouteInfo struct {
	Method, Path      string
	Shape             Shape
	Request, Response reflect.Type
}

// A QueryRequest travels in the URL query instead of a JSON body: the
// request of every GET route and of every Upload.
type QueryRequest interface {
	Query() url.Values
}

// A QuerySetter decodes a QueryRequest from the URL query (its pointer
// type implements it); errors are *Error of KindInvalid.
type QuerySetter interface {
	SetQuery(url.Values) error
}

// Paths of the routes (docs/api.md).
const (
	PathStatus    = "/v1/status"
	PathPeers     = "/v1/peers"
	PathResolve   = "/v1/resolve"
	PathPing      = "/v1/ping"
	PathInvites   = "/v1/invites"
	PathSend      = "/v1/send"
	PathListen    = "/v1/listen"
	PathPublish   = "/v1/publish"
	PathSubscribe = "/v1/subscribe"
	PathActors    = "/v1/actors"

	PathBlocks     = "/v1/blocks"
	PathBlocksGet  = "/v1/blocks/get"
	PathRepoStat   = "/v1/repo/stat"
	PathRepoGC     = "/v1/repo/gc"
	PathRepoVerify = "/v1/repo/verify"
	PathFSList     = "/v1/fs/ls"
	PathFSLog      = "/v1/fs/log"
	PathFSMkdir    = "/v1/fs/mkdir"
	PathFSRemove   = "/v1/fs/rm"
	PathFSMove     = "/v1/fs/mv"
	PathFSWrite    = "/v1/fs/write"
	PathFSRead     = "/v1/fs/read"
	PathFSGrant    = "/v1/fs/grant"
	PathFSRevoke   = "/v1/fs/revoke"
	PathFSHost     = "/v1/fs/host"
	PathFSHosted   = "/v1/fs/hosted"
	PathFSMount    = "/v1/fs/mount"
	PathFSUnmount  = "/v1/fs/unmount"
	PathFSMounts   = "/v1/fs/mounts"
	PathWasmRun    = "/v1/wasm/run"
	PathWasmPs     = "/v1/wasm/ps"
	PathWasmStop   = "/v1/wasm/stop"
	PathWasmLogs   = "/v1/wasm/logs"
)

// Paths of the bench routes (docs/api.md, "Bench").
const (
	PathBench      = "/v1/bench"
	PathBenchServe = "/v1/bench/serve"
)

const (
	get  = http.MethodGet
	post = http.MethodPost
)

// The routes.
var (
	RouteStatus    = Route[None, Status]{get, PathStatus, Unary}
	RoutePeers     = Route[None, []Peer]{get, PathPeers, Unary}
	RouteResolve   = Route[ResolveRequest, Resolution]{get, PathResolve, Unary}
	RoutePing      = Route[PingRequest, PingResult]{post, PathPing, Unary}
	RouteInvite    = Route[InviteRequest, InviteResult]{post, PathInvites, Unary}
	RouteSend      = Route[SendRequest, CallResult]{post, PathSend, Unary}
	RouteListen    = Route[ListenRequest, Received]{post, PathListen, Stream}
	RoutePublish   = Route[PublishRequest, None]{post, PathPublish, Unary}
	RouteSubscribe = Route[SubscribeRequest, Published]{post, PathSubscribe, Stream}
	RouteActors    = Route[None, []Actor]{get, PathActors, Unary}

	RouteBlockPut   = Route[BlockPutRequest, BlockPutResult]{post, PathBlocks, Upload}
	RouteBlockGet   = Route[BlockGetRequest, None]{post, PathBlocksGet, Download}
	RouteRepoStat   = Route[None, RepoStat]{get, PathRepoStat, Unary}
	RouteRepoGC     = Route[GCRequest, RepoEvent]{post, PathRepoGC, Stream}
	RouteRepoVerify = Route[VerifyRequest, RepoEvent]{post, PathRepoVerify, Stream}

	RouteFSList    = Route[FSListRequest, FSListing]{get, PathFSList, Unary}
	RouteFSLog     = Route[FSLogRequest, []FSLogEntry]{get, PathFSLog, Unary}
	RouteFSMkdir   = Route[FSMkdirRequest, FSEntry]{post, PathFSMkdir, Unary}
	RouteFSRemove  = Route[FSRemoveRequest, FSRemoveResult]{post, PathFSRemove, Unary}
	RouteFSMove    = Route[FSMoveRequest, FSEntry]{post, PathFSMove, Unary}
	RouteFSWrite   = Route[FSWriteRequest, FSEntry]{post, PathFSWrite, Upload}
	RouteFSRead    = Route[FSReadRequest, None]{post, PathFSRead, Download}
	RouteFSGrant   = Route[FSGrantRequest, FSGrantResult]{post, PathFSGrant, Unary}
	RouteFSRevoke  = Route[FSRevokeRequest, FSGrantResult]{post, PathFSRevoke, Unary}
	RouteFSHost    = Route[FSHostRequest, FSVolume]{post, PathFSHost, Unary}
	RouteFSHosted  = Route[None, []FSVolume]{get, PathFSHosted, Unary}
	RouteFSMount   = Route[FSMountRequest, FSMount]{post, PathFSMount, Unary}
	RouteFSUnmount = Route[FSMountRequest, FSMount]{post, PathFSUnmount, Unary}
	RouteFSMounts  = Route[None, []FSMount]{get, PathFSMounts, Unary}

	RouteWasmRun  = Route[WasmRunRequest, WasmRunResult]{post, PathWasmRun, Unary}
	RouteWasmPs   = Route[None, []WasmInstance]{get, PathWasmPs, Unary}
	RouteWasmStop = Route[WasmStopRequest, WasmStopResult]{post, PathWasmStop, Unary}
	RouteWasmLogs = Route[WasmLogsRequest, WasmLogLine]{post, PathWasmLogs, Stream}
)

// The bench routes (docs/api.md, "Bench"): load generated inside the
// daemon, and the endpoint that answers it.
var (
	RouteBench      = Route[BenchRequest, BenchEvent]{post, PathBench, Stream}
	RouteBenchServe = Route[BenchServeRequest, BenchServeEvent]{post, PathBenchServe, Stream}
)

// Routes is the table of every route, in the order docs/api.md lists them.
var Routes = []RouteInfo{
	RouteStatus.Info(), RoutePeers.Info(), RouteResolve.Info(), RoutePing.Info(), RouteInvite.Info(),
	RouteSend.Info(), RouteListen.Info(), RoutePublish.Info(), RouteSubscribe.Info(), RouteActors.Info(),
	RouteBlockPut.Info(), RouteBlockGet.Info(), RouteRepoStat.Info(), RouteRepoGC.Info(), RouteRepoVerify.Info(),
	RouteFSList.Info(), RouteFSLog.Info(), RouteFSMkdir.Info(), RouteFSRemove.Info(), RouteFSMove.Info(),
	RouteFSWrite.Info(), RouteFSRead.Info(), RouteFSGrant.Info(), RouteFSRevoke.Info(), RouteFSHost.Info(),
	RouteFSHosted.Info(), RouteFSMount.Info(), RouteFSUnmount.Info(), RouteFSMounts.Info(),
	RouteWasmRun.Info(), RouteWasmPs.Info(), RouteWasmStop.Info(), RouteWasmLogs.Info(),
	RouteBench.Info(), RouteBenchServe.Info(),
}
