package api

import (
	"net/url"
	"strconv"
	"time"

	"blocktree.dev/bt/paths"
)

// SocketName is the API socket's file name in the repo.
const SocketName = "api.sock"

// None is the request of a route that takes no parameters, and the answer
// of one that answers with an empty object.
type None struct{}

// Custody says where a key lives (the daemon's tpm.Info): Kind "software"
// or "tpm", the TPM's Device, and the key's signature Algorithm.
type Custody struct {
	Kind      string `json:"kind"`
	Device    string `json:"device,omitempty"`
	Algorithm string `json:"algorithm"`
}

func (c Custody) String() string {
	if c.Device == "" {
		return c.Kind + " (" + c.Algorithm + ")"
	}
	return c.Kind + " " + c.Device + " (" + c.Algorithm + ")"
}

// Status is GET /v1/status.
type Status struct {
	Path         paths.Path `json:"path"`
	PeerID       paths.ID   `json:"peer_id"`
	NodeID       paths.ID   `json:"node_id"`
	Addrs        []string   `json:"addrs"`
	Custody      Custody    `json:"custody"`
	RoutingTable int        `json:"routing_table"`
	Peers        int        `json:"peers"`
	Started      time.Time  `json:"started"`
	Uptime       string     `json:"uptime"`
	RecordExpiry time.Time  `json:"record_expiry"`
}

// Peer is one connected peer in GET /v1/peers.
type Peer struct {
	PeerID   paths.ID   `json:"peer_id"`
	Addrs    []string   `json:"addrs"`
	Path     paths.Path `json:"path,omitzero"` // verified path; empty when unverified
	Verified bool       `json:"verified"`
	// Unverified says why a peer has no verified path.
	Unverified string `json:"unverified,omitempty"`
}

// ResolveRequest is GET /v1/resolve?path=P.
type ResolveRequest struct {
	Path paths.Path
}

// Query encodes r as the URL query.
func (r ResolveRequest) Query() url.Values { return url.Values{"path": {r.Path.String()}} }

// SetQuery decodes r from the URL query.
func (r *ResolveRequest) SetQuery(q url.Values) (err error) {
	r.Path, err = queryPath(q, "path")
	return err
}

// Resolution answers a ResolveRequest.
type Resolution struct {
	Path      paths.Path `json:"path"`
	PeerID    paths.ID   `json:"peer_id"`
	Addrs     []string   `json:"addrs"`
	Expiry    time.Time  `json:"expiry"`
	Seq       uint64     `json:"seq"`
	FromCache bool       `json:"from_cache"`
}

// PingRequest is POST /v1/ping.
type PingRequest struct {
	Path    paths.Path `json:"path"`
	Timeout string     `json:"timeout,omitempty"` // Go duration; default 10s
}

// PingResult answers a PingRequest.
type PingResult struct {
	Path   paths.Path `json:"path"`
	PeerID paths.ID   `json:"peer_id"`
	RTTms  float64    `json:"rtt_ms"`
}

// InviteRequest is POST /v1/invites: `bt invite` has opened the root key and
// hands the daemon a one-shot delegate key and the root's grant to it.
type InviteRequest struct {
	Name     string    `json:"name"`
	Delegate []byte    `json:"delegate"` // software key file (docs/keys.md), unsealed
	Grant    []byte    `json:"grant"`    // writecap root → delegate for /<root>/<name>
	Expiry   time.Time `json:"expiry"`
}

// InviteResult answers an InviteRequest.
type InviteResult struct {
	Name   string     `json:"name"`
	Path   paths.Path `json:"path"`
	Token  string     `json:"token"`
	Expiry time.Time  `json:"expiry"`
}

// SendRequest is POST /v1/send: a message to a path, fire-and-forget, or a
// call when Call is set.
type SendRequest struct {
	Path    paths.Path `json:"path"`
	Payload []byte     `json:"payload"`
	Call    bool       `json:"call,omitempty"`
	Confirm bool       `json:"confirm,omitempty"` // a send: wait for the receiver's acceptance
	Timeout string     `json:"timeout,omitempty"` // Go duration; default 10s
}

// CallResult answers a SendRequest: the reply of a call; a send answers
// with no payload ({}).
type CallResult struct {
	Payload []byte `json:"payload,omitzero"`
}

// ListenRequest is POST /v1/listen: host an endpoint at Path (this node's
// path or under it) for as long as the request lasts. The answer is a
// stream of JSON lines, Received values: first one with Event "listening",
// then one with Event "message" per message.
type ListenRequest struct {
	Path paths.Path `json:"path"`
	Echo bool       `json:"echo,omitempty"` // answer every call with its payload
	// Group, when set, joins the queue group of that name serving Path
	// (docs/msg.md, "Queue groups"): each message to Path goes to one
	// member. Path may then be another node's, with Writecap (base64url,
	// as `bt grant write` prints it) a writecap for it held by this node.
	Group    string `json:"group,omitempty"`
	Writecap string `json:"writecap,omitempty"`
}

// Received is one line of a /v1/listen stream.
type Received struct {
	Event   string     `json:"event"` // "listening" or "message"
	From    paths.Path `json:"from,omitzero"`
	To      paths.Path `json:"to"`
	Call    bool       `json:"call,omitempty"`
	Payload []byte     `json:"payload,omitempty"`
}

// PublishRequest is POST /v1/publish.
type PublishRequest struct {
	Topic   paths.Path `json:"topic"`
	Payload []byte     `json:"payload"`
	// Readers, when set, make the message confidential: only the nodes at
	// these paths can read it.
	Readers []paths.Path `json:"readers,omitempty"`
}

// SubscribeRequest is POST /v1/subscribe; the answer is a stream of JSON
// lines, Published values: first Event "subscribed", then "message"s.
type SubscribeRequest struct {
	Pattern paths.Pattern `json:"pattern"`
}

// Published is one line of a /v1/subscribe stream.
type Published struct {
	Event string `json:"event"` // "subscribed" or "message"
	// Topic is the pattern subscribed to (subscribed), or the topic the
	// message was published to (message: a literal pattern, a path).
	Topic        paths.Pattern `json:"topic"`
	From         paths.Path    `json:"from,omitzero"`
	Seq          uint64        `json:"seq,omitempty"`
	Payload      []byte        `json:"payload,omitempty"`
	Confidential bool          `json:"confidential,omitempty"`
	Readable     bool          `json:"readable"`
}

// BlockPutRequest is POST /v1/blocks?replicas=N&path=P, whose body is a
// file's bytes (Content-Type application/octet-stream). Replicas 0 and a
// zero Path are left out: the repo's policy applies.
type BlockPutRequest struct {
	Replicas int
	Path     paths.Path
}

// Query encodes r as the URL query.
func (r BlockPutRequest) Query() url.Values {
	q := url.Values{}
	if r.Replicas != 0 {
		q.Set("replicas", strconv.Itoa(r.Replicas))
	}
	if !r.Path.IsZero() {
		q.Set("path", r.Path.String())
	}
	return q
}

// SetQuery decodes r from the URL query.
func (r *BlockPutRequest) SetQuery(q url.Values) (err error) {
	if v := q.Get("replicas"); v != "" {
		if r.Replicas, err = strconv.Atoi(v); err != nil || r.Replicas < 1 {
			return Errorf(KindInvalid, "replicas %q: want a positive number", v)
		}
	}
	if q.Get("path") != "" {
		r.Path, err = queryPath(q, "path")
	}
	return err
}

// BlockPutResult answers a BlockPutRequest.
// The daemon seals the file under a fresh key; Root and Key read it back.
type BlockPutResult struct {
	Root     string       `json:"root"`               // the file's root CID (its manifest block)
	Key      string       `json:"key"`                // the file key, base64url without padding
	Size     uint64       `json:"size"`               // plaintext bytes
	Blocks   int          `json:"blocks"`             // sealed chunks
	Replicas []paths.Path `json:"replicas,omitempty"` // other nodes that hold it
}

// BlockGetRequest is POST /v1/blocks/get. The answer is the file's
// plaintext (application/octet-stream); an error found after the first
// byte is sent in the trailer TrailerError, and the body is then a prefix
// of the true plaintext.
type BlockGetRequest struct {
	Root    string       `json:"root"`
	Key     string       `json:"key"`
	From    []paths.Path `json:"from,omitempty"`    // paths of nodes to ask first
	Timeout string       `json:"timeout,omitempty"` // Go duration; default 5m
}

// RepoStat answers GET /v1/repo/stat.
type RepoStat struct {
	Dir          string `json:"dir"` // the block store's directory
	Blocks       int64  `json:"blocks"`
	Bytes        int64  `json:"bytes"`
	Pins         int64  `json:"pins"`
	PinnedBlocks int64  `json:"pinned_blocks"`
	Quota        int64  `json:"quota"` // 0 = none
}

// GCRequest is POST /v1/repo/gc; the answer is a stream of JSON lines,
// RepoEvent values: "progress" events, then one "done".
type GCRequest struct {
	Grace string `json:"grace,omitempty"` // Go duration; default the repo's gc_grace
}

// VerifyRequest is POST /v1/repo/verify; the answer is a stream of JSON
// lines, RepoEvent values: "progress" events, then one "done".
type VerifyRequest struct {
	Repair bool `json:"repair,omitempty"` // delete corrupt blocks, fetch missing pinned ones
}

// RepoEvent is one line of a /v1/repo/gc or /v1/repo/verify stream.
type RepoEvent struct {
	Event string `json:"event"` // "progress", "done" or "error"
	// gc
	Scanned int64 `json:"scanned,omitempty"`
	Deleted int64 `json:"deleted,omitempty"`
	Freed   int64 `json:"freed,omitempty"`
	Kept    int64 `json:"kept,omitempty"`
	// verify
	Checked  int64    `json:"checked,omitempty"`
	Total    int64    `json:"total,omitempty"`
	Bytes    int64    `json:"bytes,omitempty"`
	Corrupt  []string `json:"corrupt,omitempty"`
	Missing  []string `json:"missing,omitempty"`
	Repaired []string `json:"repaired,omitempty"`
	Removed  []string `json:"removed,omitempty"` // corrupt unpinned blocks deleted by a repair
	NCorrupt int64    `json:"n_corrupt,omitempty"`
	// error
	Error *Error `json:"error,omitempty"`
}

// File system (docs/api.md, "File system"). Paths are absolute blocktree
// paths; versions are volume versions.

// FSEntry is one file, directory or symlink.
type FSEntry struct {
	Path    paths.Path `json:"path"`
	Name    string     `json:"name"`
	Kind    string     `json:"kind"` // "file", "dir" or "symlink"
	Mode    uint32     `json:"mode"` // permission bits
	Size    uint64     `json:"size"`
	Mtime   time.Time  `json:"mtime"`
	Owner   paths.ID   `json:"owner,omitempty"`
	Version uint64     `json:"version"`
	Ino     uint64     `json:"ino"`
	Target  string     `json:"target,omitempty"` // a symlink's
}

// FSListing answers GET /v1/fs/ls?path=P[&at=V]: the entry at P and, for
// a directory, its children sorted by name.
type FSListing struct {
	Entry   FSEntry   `json:"entry"`
	At      uint64    `json:"at,omitempty"`
	Entries []FSEntry `json:"entries"`
}

// FSListRequest is GET /v1/fs/ls?path=P[&at=V]: At 0 is now.
type FSListRequest struct {
	Path paths.Path
	At   uint64
}

// Query encodes r as the URL query.
func (r FSListRequest) Query() url.Values {
	q := url.Values{"path": {r.Path.String()}}
	if r.At > 0 {
		q.Set("at", strconv.FormatUint(r.At, 10))
	}
	return q
}

// SetQuery decodes r from the URL query.
func (r *FSListRequest) SetQuery(q url.Values) (err error) {
	if r.Path, err = queryPath(q, "path"); err != nil {
		return err
	}
	if v := q.Get("at"); v != "" {
		if r.At, err = strconv.ParseUint(v, 10, 64); err != nil || r.At == 0 {
			return Errorf(KindInvalid, "at %q: want a version number ≥ 1 (see `bt log`)", v)
		}
	}
	return nil
}

// FSLogRequest is GET /v1/fs/log?path=P[&limit=N]; Limit 0 is the
// daemon's default (100).
type FSLogRequest struct {
	Path  paths.Path
	Limit int
}

// Query encodes r as the URL query.
func (r FSLogRequest) Query() url.Values {
	q := url.Values{"path": {r.Path.String()}}
	if r.Limit != 0 {
		q.Set("limit", strconv.Itoa(r.Limit))
	}
	return q
}

// SetQuery decodes r from the URL query.
func (r *FSLogRequest) SetQuery(q url.Values) (err error) {
	if r.Path, err = queryPath(q, "path"); err != nil {
		return err
	}
	if v := q.Get("limit"); v != "" {
		if r.Limit, err = strconv.Atoi(v); err != nil || r.Limit < 1 {
			return Errorf(KindInvalid, "limit %q: want a positive number", v)
		}
	}
	return nil
}

// FSLogEntry is one answer line of an FSLogRequest.
type FSLogEntry struct {
	Version uint64     `json:"version"`
	Time    time.Time  `json:"time"`
	Writer  paths.Path `json:"writer"`
	Op      string     `json:"op"`
}

// FSMkdirRequest is POST /v1/fs/mkdir; the answer is the FSEntry.
type FSMkdirRequest struct {
	Path    paths.Path `json:"path"`
	Parents bool       `json:"parents,omitempty"` // make missing parents; an existing directory is no error
	Mode    uint32     `json:"mode,omitempty"`    // default 0755
}

// FSRemoveRequest is POST /v1/fs/rm.
type FSRemoveRequest struct {
	Path      paths.Path `json:"path"`
	Recursive bool       `json:"recursive,omitempty"`
}

// FSRemoveResult answers FSRemoveRequest.
type FSRemoveResult struct {
	Removed int `json:"removed"` // files, directories and symlinks removed
}

// FSMoveRequest is POST /v1/fs/mv.
type FSMoveRequest struct {
	Src paths.Path `json:"src"`
	Dst paths.Path `json:"dst"`
}

// FSReadRequest is POST /v1/fs/read; the answer is the file's bytes
// (application/octet-stream; an error after the first byte comes in the
// TrailerError trailer).
type FSReadRequest struct {
	Path paths.Path `json:"path"`
}

// FSWriteRequest is POST /v1/fs/write?path=P[&mode=644][&parents=1],
// whose body is the file's bytes: it replaces the file's content, makes it
// durable (fsync) and answers with its FSEntry. Mode is always sent; a
// request without one means 0644.
type FSWriteRequest struct {
	Path    paths.Path
	Mode    uint32 // permission bits of a new file
	Parents bool   // make missing parent directories
}

// Query encodes r as the URL query.
func (r FSWriteRequest) Query() url.Values {
	q := url.Values{"path": {r.Path.String()}, "mode": {strconv.FormatUint(uint64(r.Mode), 8)}}
	if r.Parents {
		q.Set("parents", "1")
	}
	return q
}

// SetQuery decodes r from the URL query.
func (r *FSWriteRequest) SetQuery(q url.Values) (err error) {
	if r.Path, err = queryPath(q, "path"); err != nil {
		return err
	}
	r.Mode = 0o644
	if v := q.Get("mode"); v != "" {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o7777 {
			return Errorf(KindInvalid, "mode %q: want octal permission bits such as 644", v)
		}
		r.Mode = uint32(m)
	}
	r.Parents = q.Get("parents") == "1"
	return nil
}

// FSGrantRequest is POST /v1/fs/grant.
type FSGrantRequest struct {
	Path      paths.Path `json:"path"`
	Principal string     `json:"principal"`
	Right     string     `json:"right"`            // "read" or "write"
	Expires   time.Time  `json:"expires,omitzero"` // zero: no expiry (read) or the granter's own (write)
}

// FSGrantResult answers a grant; Writecap is the writecap issued for a
// write grant (base64url), for the grantee. Note says what the grant did
// not do, if anything (a write grant of a path with no file marks no
// write point).
type FSGrantResult struct {
	Path      paths.Path `json:"path"`
	Principal paths.ID   `json:"principal"`
	Note      string     `json:"note,omitempty"`
	Right     string     `json:"right"`
	Writecap  string     `json:"writecap,omitempty"`
}

// FSRevokeRequest is POST /v1/fs/revoke.
type FSRevokeRequest struct {
	Path      paths.Path `json:"path"`
	Principal string     `json:"principal"`
	Right     string     `json:"right"`
}

// FSHostRequest is POST /v1/fs/host: host the volume at Path on this
// node. Writecap (base64url, optional) is a writecap for Path held by this
// node's key, when its own writecap does not cover Path.
type FSHostRequest struct {
	Path     paths.Path `json:"path"`
	Writecap string     `json:"writecap,omitempty"`
}

// FSVolume describes a hosted volume (POST /v1/fs/host, GET /v1/fs/hosted).
type FSVolume struct {
	Path    paths.Path `json:"path"`
	Dir     string     `json:"dir"`
	Root    uint64     `json:"root"`
	Version uint64     `json:"version"`
}

// FSMountRequest is POST /v1/fs/mount and POST /v1/fs/unmount.
type FSMountRequest struct {
	Dir string `json:"dir"`
}

// FSMount answers a mount (and lists in GET /v1/fs/mounts).
type FSMount struct {
	Dir  string   `json:"dir"`
	Root paths.ID `json:"root"` // the domain root shown at Dir/<root-id>
}

// Wasm modules (docs/api.md, "Wasm modules"; docs/wasm.md,
// "Orchestration"). A module runs on a node when a signed manifest is in
// the node's deployment directory /<root>/<node>/deploy/.

// WasmRunRequest is POST /v1/wasm/run: the daemon builds a manifest, signs
// it with this node's key and writes it into the deployment directory of
// each node in Nodes (default: this node), or only returns it (Print).
type WasmRunRequest struct {
	Module   paths.Path        `json:"module"`             // the module's path in the file system
	Name     string            `json:"name,omitempty"`     // default: the module's base name without .wasm
	Nodes    []paths.Path      `json:"nodes,omitempty"`    // node paths; default this node
	Read     []paths.Path      `json:"read,omitempty"`     // path prefixes the module may read
	Write    []paths.Path      `json:"write,omitempty"`    // … write
	Message  []paths.Path      `json:"message,omitempty"`  // … send messages to and call
	Publish  []paths.Path      `json:"publish,omitempty"`  // … publish to
	Env      map[string]string `json:"env,omitempty"`      // the module's environment
	Memory   uint64            `json:"memory,omitempty"`   // bytes; 0: the runtime's default
	Deadline string            `json:"deadline,omitempty"` // Go duration per message; "": the runtime's default
	Restart  string            `json:"restart,omitempty"`  // "always", "on-failure" or "never"; "": the default
	Print    bool              `json:"print,omitempty"`    // sign only: answer with the manifest, deploy nothing
}

// WasmRunResult answers a WasmRunRequest.
type WasmRunResult struct {
	Name      string       `json:"name"`
	Signer    paths.ID     `json:"signer"`              // the principal that signed
	Manifests []paths.Path `json:"manifests,omitempty"` // the manifest files written
	Manifest  []byte       `json:"manifest,omitempty"`  // the signed manifest (Print)
	// Warning says why the manifest would be refused where it is deployed
	// (Print only: a deployment is refused before it is written).
	Warning string `json:"warning,omitempty"`
}

// Wasm instance states in WasmInstance.State besides the runtime's own
// (running, restarting, stopped, …).
const (
	WasmRefused  = "refused"  // the manifest did not decode or verify
	WasmIgnored  = "ignored"  // the manifest names other nodes only
	WasmFailed   = "failed"   // the module could not be started; retried with back-off
	WasmStarting = "starting" // verified, being started
)

// WasmInstance is one entry of GET /v1/wasm/ps: a manifest in this node's
// deployment directory and what became of it.
type WasmInstance struct {
	Name     string     `json:"name"`
	File     paths.Path `json:"file"`            // the manifest's path
	Path     paths.Path `json:"path,omitzero"`   // the instance's actor path
	Module   paths.Path `json:"module,omitzero"` // the module's path
	Signer   paths.ID   `json:"signer,omitempty"`
	State    string     `json:"state"`
	Restarts int        `json:"restarts"`
	Reason   string     `json:"reason,omitempty"` // why refused, failed or stopped; the last error
	Since    time.Time  `json:"since,omitzero"`   // when the state began or the instance started
}

// WasmStopRequest is POST /v1/wasm/stop: remove the manifest of Name from
// Node's deployment directory (default this node), which stops it there.
type WasmStopRequest struct {
	Name string     `json:"name"`
	Node paths.Path `json:"node,omitzero"` // default this node
}

// WasmStopResult answers a WasmStopRequest.
type WasmStopResult struct {
	Name    string     `json:"name"`
	Removed paths.Path `json:"removed"` // the manifest file removed
	Stopped bool       `json:"stopped"` // this node has stopped it (always false for another node)
}

// WasmLogsRequest is POST /v1/wasm/logs; the answer is a stream of JSON
// lines, WasmLogLine values: the lines kept so far, then, with Follow,
// new lines as they come; without Follow the stream ends with Event "end".
type WasmLogsRequest struct {
	Name   string `json:"name"`
	Follow bool   `json:"follow,omitempty"`
}

// WasmLogLine is one line of a /v1/wasm/logs stream.
type WasmLogLine struct {
	Event string `json:"event"` // "line" or "end"
	Line  string `json:"line,omitempty"`
}

// Actor is one entry of GET /v1/actors: an actor or service of the node
// (docs/actors.md).
type Actor struct {
	Path          paths.Path `json:"path"`
	Owner         paths.Path `json:"owner,omitzero"`
	Kind          string     `json:"kind"`                     // "actor", "service" or "provider"
	State         string     `json:"state"`                    // running, stopping
	ProtocolState string     `json:"protocol_state,omitempty"` // the declared protocol's current state
	Protocol      string     `json:"protocol,omitempty"`       // the declared protocol's name
	MailboxDepth  int        `json:"mailbox_depth"`
	MailboxCap    int        `json:"mailbox_cap"`
	Started       time.Time  `json:"started,omitzero"`
}

// queryPath parses the path in query parameter name; a missing one is
// invalid as an empty path is.
func queryPath(q url.Values, name string) (paths.Path, error) {
	p, err := paths.Parse(q.Get(name))
	if err != nil {
		return paths.Path{}, Errorf(KindInvalid, "%v", err)
	}
	return p, nil
}

// Bench (docs/api.md, "Bench"; docs/cli.md, `bt bench`). The daemon
// generates the load itself, so the API socket is not in the measurement.

// The kinds of a BenchRequest.
const (
	BenchCall = "call" // msg Call: the latency is the round trip
	BenchSend = "send" // msg Send: the latency is until the receiver accepted
	BenchPub  = "pub"  // pub-sub Publish: the latency is until Publish returned
)

// BenchRequest is POST /v1/bench: Msgs messages of Size bytes to Path (the
// endpoint of a call or send, the topic of a pub), from Clients concurrent
// clients sharing the messages out. The answer is a stream of JSON lines,
// BenchEvent values: "progress" lines, then one "result" (or "error").
// The bench stops when the client goes away.
type BenchRequest struct {
	Kind    string     `json:"kind"` // BenchCall, BenchSend or BenchPub
	Path    paths.Path `json:"path"`
	Size    int        `json:"size"` // payload bytes; a pub needs BenchHeaderSize at least
	Msgs    int        `json:"msgs"`
	Clients int        `json:"clients"`
	Confirm bool       `json:"confirm,omitempty"` // a send bench: each send waits for its acceptance
	Timeout string     `json:"timeout,omitempty"` // Go duration per message; default 10s
}

// BenchHeaderSize is the smallest payload of a pub bench: each message
// carries the run, its number and the time it was published, so that the
// subscribers can count what arrives.
const BenchHeaderSize = 28

// BenchEvent is one line of a /v1/bench stream.
type BenchEvent struct {
	Event string `json:"event"` // "progress", "result" or "error"
	// progress: Phase "run" while the messages go, then for a pub "drain"
	// while the subscribers' counts come in.
	Phase     string  `json:"phase,omitempty"`
	Done      int64   `json:"done,omitempty"`      // messages that succeeded so far
	Errors    int64   `json:"errors,omitempty"`    // messages that failed so far
	Total     int64   `json:"total,omitempty"`     // the messages of the run
	Delivered int64   `json:"delivered,omitempty"` // pub: arrivals reported so far, over all subscribers
	Seconds   float64 `json:"seconds,omitempty"`   // since the run began
	// result
	Result *BenchResult `json:"result,omitempty"`
	// error
	Error *Error `json:"error,omitempty"`
}

// BenchResult is the outcome of a bench.
type BenchResult struct {
	Kind    string     `json:"kind"`
	Path    paths.Path `json:"path"`
	Size    int        `json:"size"`
	Msgs    int        `json:"msgs"`
	Clients int        `json:"clients"`
	// Count is the messages that succeeded, Errors those that failed (a run
	// stops early after too many); FirstError is the first failure.
	Count      int64  `json:"count"`
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// Seconds is the run's duration, from the first message sent to the
	// last one done; Rate is Count per second and BytesPerSec Rate times
	// Size (payloads sent; a call's replies are not counted).
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"`
	BytesPerSec float64 `json:"bytes_per_sec"`
	// Latency is of every message that succeeded.
	Latency BenchLatency `json:"latency"`
	// Subscribers (pub only) is what each subscriber reported receiving,
	// sorted by node; nil when none reported.
	Subscribers []BenchDelivery `json:"subscribers,omitempty"`
}

// BenchLatency summarises latencies in microseconds: exact Min, Max and
// Mean, and percentiles from a histogram with buckets at most 1/64 (1.6 %)
// wide, so P50 ≤ P90 ≤ P99 ≤ P999.
type BenchLatency struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min_us"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p99_9_us"`
	Max   float64 `json:"max_us"`
}

// BenchDelivery is what one subscriber of a pub bench received: Count
// messages of the run, Bytes of payload, at Rate messages per second from
// its first arrival to its last. Latency is one way, publication to
// arrival, on the two nodes' clocks: only as good as their agreement.
type BenchDelivery struct {
	Node    paths.Path   `json:"node"`
	Count   int64        `json:"count"`
	Bytes   int64        `json:"bytes"`
	Rate    float64      `json:"rate"`
	Latency BenchLatency `json:"latency"`
}

// BenchServeRequest is POST /v1/bench/serve: answer benches at Path for as
// long as the request lasts. When Path is this node's (or under it) an
// endpoint there answers calls (with their payload, or ReplySize bytes when
// set) and accepts sends; in any case a subscription to the topic Path
// counts the messages of pub benches and reports them to their publisher.
// The answer is a stream of JSON lines, BenchServeEvent values: first one
// with Event "serving", then "stats" at most every second while messages
// come.
type BenchServeRequest struct {
	Path      paths.Path `json:"path"`
	ReplySize *int       `json:"reply_size,omitempty"` // nil: echo each call's payload
}

// BenchServeEvent is one line of a /v1/bench/serve stream.
type BenchServeEvent struct {
	Event string     `json:"event"` // "serving" or "stats"
	Path  paths.Path `json:"path"`
	// serving: whether there is an endpoint (Path is this node's) and a
	// subscription.
	Endpoint   bool `json:"endpoint,omitempty"`
	Subscribed bool `json:"subscribed,omitempty"`
	// stats: what arrived so far.
	Calls     int64 `json:"calls,omitempty"`
	Sends     int64 `json:"sends,omitempty"`
	Published int64 `json:"published,omitempty"`
	Bytes     int64 `json:"bytes,omitempty"`
	// Dropped counts the publications this node's subscription queue had
	// no room for (pub-sub drops rather than blocks).
	Dropped int64 `json:"dropped,omitempty"`
}
