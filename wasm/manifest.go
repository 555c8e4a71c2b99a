package wasm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// Version is the manifest format version (docs/wasm.md).
const Version = 1

// Limits of a manifest.
const (
	MaxManifestSize = 256 << 10 // an encoded signed manifest
	MaxNodes        = 64
	MaxRights       = 256 // paths per kind of right
	MaxEnv          = 128 // variables
	MaxEnvSize      = 64 << 10
)

// Restart modes.
const (
	RestartAlways    = "always"     // restart after any exit
	RestartOnFailure = "on-failure" // restart after a failure (trap, panic, limit, deadline), not a clean exit
	RestartNever     = "never"
)

// RestartPolicy says whether and how soon an instance that exited is
// started again. The delay before restart n (1, 2, …) is
// Backoff·2^(n-1), at most MaxBackoff; it starts again from Backoff after
// an instance ran for MaxBackoff or more.
type RestartPolicy struct {
	Mode string // RestartAlways, RestartOnFailure, RestartNever; "": on-failure
	// MaxRestarts bounds the restarts since Start; past it the instance
	// is left failed. 0: unbounded.
	MaxRestarts int
	Backoff     time.Duration // default 100 ms
	MaxBackoff  time.Duration // default 30 s
}

// Rights are what a module's host calls may reach: each list holds path
// prefixes, and a call is allowed when its path lies at or under one.
type Rights struct {
	Read    []paths.Path // read_file; subscribe (the pattern's literal prefix)
	Write   []paths.Path // write_file
	Message []paths.Path // send, call
	Publish []paths.Path // publish
}

// Manifest is a deployment: which module runs where, how, and with which
// rights. On disk it is a SignedManifest (canonical CBOR, docs/wasm.md).
type Manifest struct {
	// Name is the actor name: the module runs at /<root>/<node>/<Name>.
	Name string
	// Module is the module's file path in the blocktree file system.
	Module paths.Path
	// Nodes are the node paths to run on; empty: whichever node starts the
	// manifest (its actor path must then lie under the signer's writecap).
	Nodes   []paths.Path
	Restart RestartPolicy
	Env     map[string]string
	// MemoryLimit bounds the module's linear memory, in bytes (rounded up
	// to 64 KiB pages); 0: DefaultMemoryLimit.
	MemoryLimit uint64
	// Deadline bounds the handling of one message; past it the instance
	// is stopped and fails. 0: DefaultDeadline.
	Deadline time.Duration
	Rights   Rights
}

// Defaults applied when a manifest leaves a field zero.
const (
	DefaultMemoryLimit = 64 << 20
	DefaultDeadline    = 30 * time.Second
	DefaultBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	MaxMemoryLimit     = 4 << 30 // wasm32's whole address space
)

// Errors callers branch on.
var (
	// ErrManifest: a manifest is malformed, of an unknown version, or has
	// an invalid field.
	ErrManifest = errors.New("wasm: bad manifest")
	// ErrSignature: the manifest's signature does not verify (or its host
	// certificate does not bind the signing key to the signer).
	ErrSignature = errors.New("wasm: bad manifest signature")
	// ErrRights: the manifest asks for a right, or an actor path, that
	// its signer's writecap does not cover.
	ErrRights = errors.New("wasm: manifest asks for more than its signer holds")
)

// SignedManifest is a Manifest with the proof of who deployed it: the
// signer's principal ID, a writecap held by the signer, optionally a host
// certificate (when a node's host key signed for its node key), and the
// signature.
type SignedManifest struct {
	Manifest
	Signer   paths.ID
	Writecap *caps.Writecap
	HostCert *caps.HostCert // optional
	Sig      []byte

	body []byte // the signed encoding of Manifest
}

// Wire forms (docs/wasm.md).
type wireManifest struct {
	V        uint              `cbor:"v"`
	Name     string            `cbor:"name"`
	Module   string            `cbor:"module"`
	Nodes    []string          `cbor:"nodes,omitempty"`
	Restart  wireRestart       `cbor:"restart"`
	Env      map[string]string `cbor:"env,omitempty"`
	Memory   uint64            `cbor:"mem,omitempty"`
	Deadline int64             `cbor:"deadline,omitempty"`
	Rights   wireRights        `cbor:"rights"`
}

type wireRestart struct {
	Mode        string `cbor:"mode,omitempty"`
	MaxRestarts int64  `cbor:"max,omitempty"`
	Backoff     int64  `cbor:"backoff,omitempty"`
	MaxBackoff  int64  `cbor:"maxbackoff,omitempty"`
}

type wireRights struct {
	Read    []string `cbor:"read,omitempty"`
	Write   []string `cbor:"write,omitempty"`
	Message []string `cbor:"message,omitempty"`
	Publish []string `cbor:"publish,omitempty"`
}

type wireSigned struct {
	V        uint   `cbor:"v"`
	Body     []byte `cbor:"body"`
	Signer   string `cbor:"signer"`
	Writecap []byte `cbor:"wc"`
	HostCert []byte `cbor:"hc,omitempty"`
	Sig      []byte `cbor:"sig"`
}

// sigContext prefixes what a manifest signature covers.
const sigContext = "blocktree wasm manifest v1"

func signedBytes(body []byte) []byte {
	m := make([]byte, 0, len(sigContext)+1+len(body))
	m = append(m, sigContext...)
	m = append(m, 0)
	return append(m, body...)
}

func strs(ps []paths.Path) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func parsePaths(field string, ss []string, limit int) ([]paths.Path, error) {
	if len(ss) > limit {
		return nil, fmt.Errorf("%w: %d %s, at most %d", ErrManifest, len(ss), field, limit)
	}
	if len(ss) == 0 {
		return nil, nil
	}
	out := make([]paths.Path, len(ss))
	for i, s := range ss {
		p, err := paths.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrManifest, field, err)
		}
		out[i] = p
	}
	return out, nil
}

// Validate checks m's fields; it reports the first problem, wrapping
// ErrManifest.
func (m *Manifest) Validate() error {
	if err := paths.ValidComponent(m.Name); err != nil || strings.HasPrefix(m.Name, ".") {
		return fmt.Errorf("%w: name %q is not a path component not starting with \".\"", ErrManifest, m.Name)
	}
	if m.Module.IsZero() {
		return fmt.Errorf("%w: no module path", ErrManifest)
	}
	switch m.Restart.Mode {
	case "", RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fmt.Errorf("%w: restart mode %q (want always, on-failure or never)", ErrManifest, m.Restart.Mode)
	}
	if m.Restart.MaxRestarts < 0 || m.Restart.Backoff < 0 || m.Restart.MaxBackoff < 0 || m.Deadline < 0 {
		return fmt.Errorf("%w: negative restart count, back-off or deadline", ErrManifest)
	}
	if m.MemoryLimit > MaxMemoryLimit {
		return fmt.Errorf("%w: memory limit %d bytes, more than %d", ErrManifest, m.MemoryLimit, uint64(MaxMemoryLimit))
	}
	if len(m.Nodes) > MaxNodes {
		return fmt.Errorf("%w: %d nodes, at most %d", ErrManifest, len(m.Nodes), MaxNodes)
	}
	for _, n := range m.Nodes {
		if n.IsZero() || n.Depth() < 1 {
			return fmt.Errorf("%w: node path %q is not /<root>/<node>…", ErrManifest, n)
		}
	}
	for _, l := range [][]paths.Path{m.Rights.Read, m.Rights.Write, m.Rights.Message, m.Rights.Publish} {
		if len(l) > MaxRights {
			return fmt.Errorf("%w: %d paths in one right, at most %d", ErrManifest, len(l), MaxRights)
		}
		for _, p := range l {
			if p.IsZero() {
				return fmt.Errorf("%w: empty path in the rights", ErrManifest)
			}
		}
	}
	if len(m.Env) > MaxEnv {
		return fmt.Errorf("%w: %d environment variables, at most %d", ErrManifest, len(m.Env), MaxEnv)
	}
	size := 0
	for k, v := range m.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(v, "\x00") || strings.HasPrefix(k, "BT_") {
			return fmt.Errorf("%w: environment variable %q (no '=', no NUL, no BT_ prefix: reserved)", ErrManifest, k)
		}
		size += len(k) + len(v) + 2
	}
	if size > MaxEnvSize {
		return fmt.Errorf("%w: environment of %d bytes, at most %d", ErrManifest, size, MaxEnvSize)
	}
	return nil
}

func (m *Manifest) wire() wireManifest {
	return wireManifest{
		V: Version, Name: m.Name, Module: m.Module.String(), Nodes: strs(m.Nodes),
		Restart: wireRestart{Mode: m.Restart.Mode, MaxRestarts: int64(m.Restart.MaxRestarts),
			Backoff: int64(m.Restart.Backoff), MaxBackoff: int64(m.Restart.MaxBackoff)},
		Env: m.Env, Memory: m.MemoryLimit, Deadline: int64(m.Deadline),
		Rights: wireRights{Read: strs(m.Rights.Read), Write: strs(m.Rights.Write),
			Message: strs(m.Rights.Message), Publish: strs(m.Rights.Publish)},
	}
}

func decodeBody(body []byte) (Manifest, error) {
	if v, err := canon.Version(body); err == nil && v != Version {
		return Manifest{}, fmt.Errorf("%w: unknown manifest version %d", ErrManifest, v)
	}
	var w wireManifest
	if err := canon.Unmarshal(body, &w); err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if w.V != Version {
		return Manifest{}, fmt.Errorf("%w: unknown manifest version %d", ErrManifest, w.V)
	}
	m := Manifest{Name: w.Name, Env: w.Env, MemoryLimit: w.Memory, Deadline: time.Duration(w.Deadline),
		Restart: RestartPolicy{Mode: w.Restart.Mode, MaxRestarts: int(w.Restart.MaxRestarts),
			Backoff: time.Duration(w.Restart.Backoff), MaxBackoff: time.Duration(w.Restart.MaxBackoff)}}
	if int64(m.Restart.MaxRestarts) != w.Restart.MaxRestarts {
		return Manifest{}, fmt.Errorf("%w: restart count out of range", ErrManifest)
	}
	var err error
	if m.Module, err = paths.Parse(w.Module); err != nil {
		return Manifest{}, fmt.Errorf("%w: module: %w", ErrManifest, err)
	}
	if m.Nodes, err = parsePaths("nodes", w.Nodes, MaxNodes); err != nil {
		return Manifest{}, err
	}
	for _, f := range []struct {
		name string
		in   []string
		out  *[]paths.Path
	}{{"read", w.Rights.Read, &m.Rights.Read}, {"write", w.Rights.Write, &m.Rights.Write},
		{"message", w.Rights.Message, &m.Rights.Message}, {"publish", w.Rights.Publish, &m.Rights.Publish}} {
		if *f.out, err = parsePaths(f.name, f.in, MaxRights); err != nil {
			return Manifest{}, err
		}
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Sign has signer sign m, presenting writecap w (held by the signer). It
// checks m (Validate) but not the rights: Verify does, on every node that
// runs it. The signer may be a node key or any principal key.
func Sign(ctx context.Context, m Manifest, signer caps.Signer, w *caps.Writecap) (*SignedManifest, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if w == nil {
		return nil, fmt.Errorf("%w: no writecap", ErrRights)
	}
	id, err := caps.PrincipalID(signer.PublicKey())
	if err != nil {
		return nil, fmt.Errorf("wasm: sign: %w", err)
	}
	wm := m.wire()
	body, err := canon.Marshal(&wm)
	if err != nil {
		return nil, fmt.Errorf("wasm: sign: %w", err)
	}
	sig, err := signer.Sign(ctx, signedBytes(body))
	if err != nil {
		return nil, fmt.Errorf("wasm: sign: %w", err)
	}
	sm := &SignedManifest{Signer: id, Writecap: w, Sig: sig, body: body}
	// Decode what was signed, so that the value is exactly the one the
	// encoding carries (maps and paths normalised).
	if sm.Manifest, err = decodeBody(body); err != nil {
		return nil, err
	}
	return sm, nil
}

// Marshal returns the signed manifest's canonical encoding.
func (sm *SignedManifest) Marshal() ([]byte, error) {
	if sm.body == nil {
		return nil, fmt.Errorf("%w: not signed (use Sign or DecodeManifest)", ErrManifest)
	}
	if sm.Writecap == nil {
		return nil, fmt.Errorf("%w: no writecap", ErrManifest)
	}
	ws := wireSigned{V: Version, Body: sm.body, Signer: string(sm.Signer), Writecap: sm.Writecap.Marshal(), Sig: sm.Sig}
	if sm.HostCert != nil {
		ws.HostCert = sm.HostCert.Marshal()
	}
	return canon.Marshal(&ws)
}

// DecodeManifest parses an encoded signed manifest. It checks the
// encoding and the fields, not the signature or the rights (Verify).
// Errors wrap ErrManifest.
func DecodeManifest(data []byte) (*SignedManifest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrManifest, len(data), MaxManifestSize)
	}
	if v, err := canon.Version(data); err == nil && v != Version {
		return nil, fmt.Errorf("%w: unknown signed manifest version %d", ErrManifest, v)
	}
	var ws wireSigned
	if err := canon.Unmarshal(data, &ws); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if ws.V != Version {
		return nil, fmt.Errorf("%w: unknown signed manifest version %d", ErrManifest, ws.V)
	}
	m, err := decodeBody(ws.Body)
	if err != nil {
		return nil, err
	}
	id, err := paths.ParseID(ws.Signer)
	if err != nil {
		return nil, fmt.Errorf("%w: signer: %w", ErrManifest, err)
	}
	w, err := caps.Decode(ws.Writecap)
	if err != nil {
		return nil, fmt.Errorf("%w: writecap: %w", ErrManifest, err)
	}
	sm := &SignedManifest{Manifest: m, Signer: id, Writecap: w, Sig: ws.Sig, body: ws.Body}
	if ws.HostCert != nil {
		if sm.HostCert, err = caps.DecodeHostCert(ws.HostCert); err != nil {
			return nil, fmt.Errorf("%w: host certificate: %w", ErrManifest, err)
		}
	}
	return sm, nil
}

// Verify checks the signature (by the signer's key, or by a host key its
// host certificate binds to the signer) and that the writecap is held by
// the signer and covers every right's path and the actor path on every
// listed node. Errors wrap ErrSignature or ErrRights (and the caps error
// that says why). Verify checks the manifest as signed: a SignedManifest
// whose Manifest fields were changed after signing fails with
// ErrSignature.
func (sm *SignedManifest) Verify(v *caps.Verifier) error {
	return sm.verify(v, paths.Path{})
}

// verify is Verify; with node set and no Nodes in the manifest, it also
// checks the actor path on node.
func (sm *SignedManifest) verify(v *caps.Verifier, node paths.Path) error {
	if sm.body == nil {
		return fmt.Errorf("%w: not signed", ErrSignature)
	}
	wm := sm.Manifest.wire()
	body, err := canon.Marshal(&wm)
	if err != nil || string(body) != string(sm.body) {
		return fmt.Errorf("%w: the manifest differs from what was signed", ErrSignature)
	}
	key, err := signerKey(sm)
	if err != nil {
		return err
	}
	ok, err := key.Verify(signedBytes(sm.body), sm.Sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: by %s", ErrSignature, sm.Signer)
	}
	if sm.Writecap == nil {
		return fmt.Errorf("%w: no writecap", ErrRights)
	}
	if h := sm.Writecap.Holder(); h != sm.Signer {
		return fmt.Errorf("%w: the writecap is held by %s, not the signer %s: %w", ErrRights, h, sm.Signer, caps.ErrWrongHolder)
	}
	check := func(what string, p paths.Path) error {
		if err := v.VerifyHolder(sm.Writecap, sm.Signer, p); err != nil {
			return fmt.Errorf("%w: %s %s: %w", ErrRights, what, p, err)
		}
		return nil
	}
	nodes := sm.Nodes
	if len(nodes) == 0 && !node.IsZero() {
		nodes = []paths.Path{node}
	}
	for _, n := range nodes {
		p, err := n.Join(sm.Name)
		if err != nil {
			return fmt.Errorf("%w: actor path: %w", ErrManifest, err)
		}
		if err := check("actor path", p); err != nil {
			return err
		}
	}
	for _, r := range []struct {
		what string
		ps   []paths.Path
	}{{"read", sm.Rights.Read}, {"write", sm.Rights.Write}, {"message", sm.Rights.Message}, {"publish", sm.Rights.Publish}} {
		for _, p := range r.ps {
			if err := check(r.what+" right", p); err != nil {
				return err
			}
		}
	}
	return nil
}

// signerKey returns the key that signed: the host certificate's host key
// (checked against the signer), or the signer's own key, which its ID
// embeds.
func signerKey(sm *SignedManifest) (crypto.PubKey, error) {
	if sm.HostCert != nil {
		if sm.HostCert.NodeID != sm.Signer {
			return nil, fmt.Errorf("%w: host certificate is for %s, not the signer %s", ErrSignature, sm.HostCert.NodeID, sm.Signer)
		}
		if err := sm.HostCert.Verify(time.Now()); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSignature, err)
		}
		return sm.HostCert.Host, nil
	}
	pid, err := peer.Decode(string(sm.Signer))
	if err != nil {
		return nil, fmt.Errorf("%w: signer %s: %w", ErrSignature, sm.Signer, err)
	}
	key, err := pid.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: signer %s has no embedded public key: %w", ErrSignature, sm.Signer, err)
	}
	return key, nil
}

// SignWithHostCert is Sign for a node whose host key signs on behalf of
// its node key: hostKey signs, and cert (issued by the node key) binds it
// to the signer, cert.NodeID.
func SignWithHostCert(ctx context.Context, m Manifest, hostKey caps.Signer, cert *caps.HostCert, w *caps.Writecap) (*SignedManifest, error) {
	sm, err := Sign(ctx, m, hostKey, w)
	if err != nil {
		return nil, err
	}
	sm.Signer, sm.HostCert = cert.NodeID, cert
	return sm, nil
}
