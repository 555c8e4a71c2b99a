// Package api is the contract between the bt daemon and its clients: HTTP
// with JSON bodies over a unix socket in the repo (mode 0600, so only the
// daemon's user can reach it). Endpoints, bodies and errors are specified in
// docs/api.md; this file holds the types, and Client speaks it.
//
// Errors cross the boundary as one typed error with a fixed list of kinds
// (Error, Kind), so the CLI can map them to exit codes and advice.
package api

import (
	"errors"
	"fmt"
	"time"

	"blocktree.dev/bt/tpm"
)

// SocketName is the API socket's file name in the repo.
const SocketName = "api.sock"

// Kind classifies an API error.
type Kind string

const (
	KindInvalid     Kind = "invalid"     // the request is malformed or an argument is bad
	KindNotFound    Kind = "not-found"   // no such path or record
	KindUnreachable Kind = "unreachable" // the peer or network could not be reached in time
	KindDenied      Kind = "denied"      // a capability check failed
	KindExists      Kind = "exists"      // the thing exists already (e.g. a name in use)
	KindUnavailable Kind = "unavailable" // the daemon cannot do this now (e.g. shutting down)
	KindInternal    Kind = "internal"    // a bug or an unexpected failure
)

// Error is an error from the daemon.
type Error struct {
	Kind    Kind   `json:"kind"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error of kind k.
func Errorf(k Kind, format string, a ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, a...)}
}

// KindOf returns the kind of err, KindInternal for a non-API error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ErrNoDaemon: nothing answers on the repo's socket.
var ErrNoDaemon = errors.New("no bt daemon is running for this repo")

// Status is GET /v1/status.
type Status struct {
	Path         string    `json:"path"`
	PeerID       string    `json:"peer_id"`
	NodeID       string    `json:"node_id"`
	Addrs        []string  `json:"addrs"`
	Custody      tpm.Info  `json:"custody"`
	RoutingTable int       `json:"routing_table"`
	Peers        int       `json:"peers"`
	Started      time.Time `json:"started"`
	Uptime       string    `json:"uptime"`
	RecordExpiry time.Time `json:"record_expiry"`
}

// Peer is one connected peer in GET /v1/peers.
type Peer struct {
	PeerID   string   `json:"peer_id"`
	Addrs    []string `json:"addrs"`
	Path     string   `json:"path,omitempty"` // verified path; empty when unverified
	Verified bool     `json:"verified"`
	// Unverified says why a peer has no verified path.
	Unverified string `json:"unverified,omitempty"`
}

// Resolution is GET /v1/resolve?path=P.
type Resolution struct {
	Path      string    `json:"path"`
	PeerID    string    `json:"peer_id"`
	Addrs     []string  `json:"addrs"`
	Expiry    time.Time `json:"expiry"`
	Seq       uint64    `json:"seq"`
	FromCache bool      `json:"from_cache"`
}

// PingRequest is POST /v1/ping.
type PingRequest struct {
	Path    string `json:"path"`
	Timeout string `json:"timeout,omitempty"` // Go duration; default 10s
}

// PingResult answers a PingRequest.
type PingResult struct {
	Path   string  `json:"path"`
	PeerID string  `json:"peer_id"`
	RTTms  float64 `json:"rtt_ms"`
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
	Name   string    `json:"name"`
	Path   string    `json:"path"`
	Token  string    `json:"token"`
	Expiry time.Time `json:"expiry"`
}

// KindRemote: the handler at the far end of a call failed; Message is its
// error.
const KindRemote Kind = "remote"

// SendRequest is POST /v1/send: a message to a path, fire-and-forget, or a
// call when Call is set.
type SendRequest struct {
	Path    string `json:"path"`
	Payload []byte `json:"payload"`
	Call    bool   `json:"call,omitempty"`
	Timeout string `json:"timeout,omitempty"` // Go duration; default 10s
}

// CallResult answers a call.
type CallResult struct {
	Payload []byte `json:"payload"`
}

// ListenRequest is POST /v1/listen: host an endpoint at Path (this node's
// path or under it) for as long as the request lasts. The answer is a
// stream of JSON lines, Received values: first one with Event "listening",
// then one with Event "message" per message.
type ListenRequest struct {
	Path string `json:"path"`
	Echo bool   `json:"echo,omitempty"` // answer every call with its payload
}

// Received is one line of a /v1/listen stream.
type Received struct {
	Event   string `json:"event"` // "listening" or "message"
	From    string `json:"from,omitempty"`
	To      string `json:"to"`
	Call    bool   `json:"call,omitempty"`
	Payload []byte `json:"payload,omitempty"`
}

// PublishRequest is POST /v1/publish.
type PublishRequest struct {
	Topic   string `json:"topic"`
	Payload []byte `json:"payload"`
	// Readers, when set, make the message confidential: only the nodes at
	// these paths can read it.
	Readers []string `json:"readers,omitempty"`
}

// SubscribeRequest is POST /v1/subscribe; the answer is a stream of JSON
// lines, Published values: first Event "subscribed", then "message"s.
type SubscribeRequest struct {
	Pattern string `json:"pattern"`
}

// Published is one line of a /v1/subscribe stream.
type Published struct {
	Event        string `json:"event"` // "subscribed" or "message"
	Topic        string `json:"topic"`
	From         string `json:"from,omitempty"`
	Seq          uint64 `json:"seq,omitempty"`
	Payload      []byte `json:"payload,omitempty"`
	Confidential bool   `json:"confidential,omitempty"`
	Readable     bool   `json:"readable"`
}

// BlockPutResult answers POST /v1/blocks, whose body is a file's bytes
// (Content-Type application/octet-stream; query: replicas=N, path=PATH).
// The daemon seals the file under a fresh key; Root and Key read it back.
type BlockPutResult struct {
	Root     string   `json:"root"`               // the file's root CID (its manifest block)
	Key      string   `json:"key"`                // the file key, base64url without padding
	Size     uint64   `json:"size"`               // plaintext bytes
	Blocks   int      `json:"blocks"`             // sealed chunks
	Replicas []string `json:"replicas,omitempty"` // other nodes that hold it
}

// BlockGetRequest is POST /v1/blocks/get. The answer is the file's
// plaintext (application/octet-stream); an error found after the first
// byte is sent in the trailer TrailerError, and the body is then a prefix
// of the true plaintext.
type BlockGetRequest struct {
	Root    string   `json:"root"`
	Key     string   `json:"key"`
	From    []string `json:"from,omitempty"`    // paths of nodes to ask first
	Timeout string   `json:"timeout,omitempty"` // Go duration; default 5m
}

// TrailerError carries an error that ended a streamed answer, as JSON.
const TrailerError = "Bt-Error"

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
	Path    string    `json:"path"`
	Name    string    `json:"name"`
	Kind    string    `json:"kind"` // "file", "dir" or "symlink"
	Mode    uint32    `json:"mode"` // permission bits
	Size    uint64    `json:"size"`
	Mtime   time.Time `json:"mtime"`
	Owner   string    `json:"owner,omitempty"`
	Version uint64    `json:"version"`
	Ino     uint64    `json:"ino"`
	Target  string    `json:"target,omitempty"` // a symlink's
}

// FSListing answers GET /v1/fs/ls?path=P[&at=V]: the entry at P and, for
// a directory, its children sorted by name.
type FSListing struct {
	Entry   FSEntry   `json:"entry"`
	At      uint64    `json:"at,omitempty"`
	Entries []FSEntry `json:"entries"`
}

// FSLogEntry is one line of GET /v1/fs/log?path=P[&limit=N].
type FSLogEntry struct {
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`
	Writer  string    `json:"writer"`
	Op      string    `json:"op"`
}

// FSMkdirRequest is POST /v1/fs/mkdir; the answer is the FSEntry.
type FSMkdirRequest struct {
	Path    string `json:"path"`
	Parents bool   `json:"parents,omitempty"` // make missing parents; an existing directory is no error
	Mode    uint32 `json:"mode,omitempty"`    // default 0755
}

// FSRemoveRequest is POST /v1/fs/rm.
type FSRemoveRequest struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
}

// FSRemoveResult answers FSRemoveRequest.
type FSRemoveResult struct {
	Removed int `json:"removed"` // files, directories and symlinks removed
}

// FSMoveRequest is POST /v1/fs/mv.
type FSMoveRequest struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// FSReadRequest is POST /v1/fs/read; the answer is the file's bytes
// (application/octet-stream; an error after the first byte comes in the
// TrailerError trailer).
type FSReadRequest struct {
	Path string `json:"path"`
}

// POST /v1/fs/write?path=P[&mode=0644][&parents=1] takes the file's bytes
// as the body, replaces the file's content, makes it durable (fsync) and
// answers with its FSEntry.

// FSGrantRequest is POST /v1/fs/grant.
type FSGrantRequest struct {
	Path      string    `json:"path"`
	Principal string    `json:"principal"`
	Right     string    `json:"right"`            // "read" or "write"
	Expires   time.Time `json:"expires,omitzero"` // zero: no expiry (read) or the granter's own (write)
}

// FSGrantResult answers a grant; Writecap is the writecap issued for a
// write grant (base64url), for the grantee.
type FSGrantResult struct {
	Path      string `json:"path"`
	Principal string `json:"principal"`
	Right     string `json:"right"`
	Writecap  string `json:"writecap,omitempty"`
}

// FSRevokeRequest is POST /v1/fs/revoke.
type FSRevokeRequest struct {
	Path      string `json:"path"`
	Principal string `json:"principal"`
	Right     string `json:"right"`
}

// FSHostRequest is POST /v1/fs/host: host the volume at Path on this
// node. Writecap (base64url, optional) is a writecap for Path held by this
// node's key, when its own writecap does not cover Path.
type FSHostRequest struct {
	Path     string `json:"path"`
	Writecap string `json:"writecap,omitempty"`
}

// FSVolume describes a hosted volume (POST /v1/fs/host, GET /v1/fs/hosted).
type FSVolume struct {
	Path    string `json:"path"`
	Dir     string `json:"dir"`
	Root    uint64 `json:"root"`
	Version uint64 `json:"version"`
}

// FSMountRequest is POST /v1/fs/mount and POST /v1/fs/unmount.
type FSMountRequest struct {
	Dir string `json:"dir"`
}

// FSMount answers a mount (and lists in GET /v1/fs/mounts).
type FSMount struct {
	Dir  string `json:"dir"`
	Root string `json:"root"` // the domain root shown at Dir/<root-id>
}

// Wasm modules (docs/api.md, "Wasm modules"; docs/wasm.md,
// "Orchestration"). A module runs on a node when a signed manifest is in
// the node's deployment directory /<root>/<node>/deploy/.

// WasmRunRequest is POST /v1/wasm/run: the daemon builds a manifest, signs
// it with this node's key and writes it into the deployment directory of
// each node in Nodes (default: this node), or only returns it (Print).
type WasmRunRequest struct {
	Module   string            `json:"module"`             // the module's path in the file system
	Name     string            `json:"name,omitempty"`     // default: the module's base name without .wasm
	Nodes    []string          `json:"nodes,omitempty"`    // node paths; default this node
	Read     []string          `json:"read,omitempty"`     // path prefixes the module may read
	Write    []string          `json:"write,omitempty"`    // … write
	Message  []string          `json:"message,omitempty"`  // … send messages to and call
	Publish  []string          `json:"publish,omitempty"`  // … publish to
	Env      map[string]string `json:"env,omitempty"`      // the module's environment
	Memory   uint64            `json:"memory,omitempty"`   // bytes; 0: the runtime's default
	Deadline string            `json:"deadline,omitempty"` // Go duration per message; "": the runtime's default
	Restart  string            `json:"restart,omitempty"`  // "always", "on-failure" or "never"; "": the default
	Print    bool              `json:"print,omitempty"`    // sign only: answer with the manifest, deploy nothing
}

// WasmRunResult answers a WasmRunRequest.
type WasmRunResult struct {
	Name      string   `json:"name"`
	Signer    string   `json:"signer"`              // the principal that signed
	Manifests []string `json:"manifests,omitempty"` // the manifest files written
	Manifest  []byte   `json:"manifest,omitempty"`  // the signed manifest (Print)
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
	Name     string    `json:"name"`
	File     string    `json:"file"`             // the manifest's path
	Path     string    `json:"path,omitempty"`   // the instance's actor path
	Module   string    `json:"module,omitempty"` // the module's path
	Signer   string    `json:"signer,omitempty"`
	State    string    `json:"state"`
	Restarts int       `json:"restarts"`
	Reason   string    `json:"reason,omitempty"` // why refused, failed or stopped; the last error
	Since    time.Time `json:"since,omitzero"`   // when the state began or the instance started
}

// WasmStopRequest is POST /v1/wasm/stop: remove the manifest of Name from
// Node's deployment directory (default this node), which stops it there.
type WasmStopRequest struct {
	Name string `json:"name"`
	Node string `json:"node,omitempty"`
}

// WasmStopResult answers a WasmStopRequest.
type WasmStopResult struct {
	Name    string `json:"name"`
	Removed string `json:"removed"` // the manifest file removed
	Stopped bool   `json:"stopped"` // this node has stopped it (always false for another node)
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
