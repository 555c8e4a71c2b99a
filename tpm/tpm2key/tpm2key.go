package tpm2key

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"

	"blocktree.dev/bt/tpm"
)

// Algorithm is the signature algorithm of every key this package makes.
const Algorithm = "ecdsa-p256"

// closeTimeout bounds the best-effort flushes done by Close.
const closeTimeout = 5 * time.Second

// srkTemplate is the parent of every key this package creates: the TCG
// reference ECC P-256 storage root key template (TCG TPM v2.0 Provisioning
// Guidance), created in the owner hierarchy with an empty authorization.
// TPM2_CreatePrimary derives it from the owner seed, so it is the same key
// after every restart until the TPM is cleared.
var srkTemplate = tpm2.Marshal(tpm2.New2B(tpm2.ECCSRKTemplate))

// keyTemplate is the template of every key this package creates: ECC P-256,
// unrestricted, both sign and decrypt so the one key serves TPM2_Sign and
// TPM2_ECDH_ZGen, no default scheme (TPM_ALG_NULL: each command names
// its own), private area generated inside the TPM and never duplicable
// (fixedTPM, fixedParent, sensitiveDataOrigin), used with its (empty)
// authorization value (userWithAuth). noDA exempts it from dictionary-attack
// lockout: its authorization value is empty, so lockout would protect
// nothing and would only let failed guesses by other TPM users stop the
// node from signing.
var keyTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Decrypt:             true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		CurveID:   tpm2.TPMECCNistP256,
		KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// emptyAuth is the password session with an empty password. It holds no
// state, so one serves every command.
var emptyAuth = tpm2.PasswordAuth(nil)

// TPM is one connection to one TPM. It creates and loads keys; the keys
// use the connection. It is safe for concurrent use: commands are
// serialised, one at a time, as the TPM runs them anyway.
//
// When the connection breaks or the TPM restarts, the next operation
// reconnects and reloads what it needs from the key's blob, once (see the
// package documentation).
type TPM struct {
	addr, path string   // exactly one is set
	info       tpm.Info // immutable

	// mu serialises the commands sent on the connection (a TPM runs one at
	// a time and the stream cannot interleave them) and guards all fields
	// below, including those of every key and parent of this TPM.
	mu      sync.Mutex
	link    link              // nil when broken or closed; dialled again on demand
	gen     uint64            // connection generation: bumped by a dial or a distrust; see readyLocked
	tr      opTransport       // go-tpm's view of link for the running operation
	parents map[string]*obj   // loaded parents, by template (TPM2B_PUBLIC bytes)
	keys    map[*key]struct{} // open keys, flushed by Close
	closed  bool
}

// obj is an object the TPM holds for us: its handle, its Name, and the
// connection generation in which the handle was last known to hold it.
// Guarded by TPM.mu.
type obj struct {
	handle tpm2.TPMHandle // 0: not loaded
	name   tpm2.TPM2BName
	gen    uint64
}

// opTransport is the go-tpm transport for one operation: it sends on the
// TPM's current link under the operation's context and deadline. Set by
// beginLocked; used only with mu held.
type opTransport struct {
	t        *TPM
	ctx      context.Context
	deadline time.Time // ctx's deadline, or DefaultTimeout from the start
}

func (o *opTransport) Send(cmd []byte) ([]byte, error) { return o.t.sendLocked(cmd) }

// beginLocked starts an operation under ctx; endLocked ends it.
func (t *TPM) beginLocked(ctx context.Context) {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Now().Add(DefaultTimeout)
	}
	t.tr.ctx, t.tr.deadline = ctx, d
}

func (t *TPM) endLocked() { t.tr.ctx = nil }

// linkError is an I/O failure on the link: the connection is gone (and has
// been dropped); a new one may work.
type linkError struct{ err error }

func (e *linkError) Error() string { return e.err.Error() }
func (e *linkError) Unwrap() error { return e.err }

// dialError is a failure to reach the device at all.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// Open connects to the TPM dev names: dev.Addr (raw TPM 2.0 commands over
// TCP, as swtpm serves them) or dev.Path (a character device such as
// /dev/tpmrm0; dev.Auto means tpm.DefaultDevice). It creates the parent
// storage key, which proves the TPM answers and works, and keeps it loaded
// while the connection lives.
//
// A device that cannot be reached, or does not answer before ctx ends, gives
// an error wrapping tpm.ErrUnavailable that names the device and says what
// to check. A TPM that refuses to create the parent (an owner hierarchy
// with a password, a TPM in lockout) gives its own error.
func Open(ctx context.Context, dev tpm.Device) (*TPM, error) {
	switch {
	case dev.Addr != "", dev.Path != "":
	case dev.Auto:
		dev = tpm.Device{Path: tpm.DefaultDevice}
	default:
		return nil, fmt.Errorf("tpm2key: open: no TPM device given (--tpm %s)", dev)
	}
	if dev.Addr != "" {
		dev.Path = ""
	}
	t := &TPM{
		addr:    dev.Addr,
		path:    dev.Path,
		info:    tpm.Info{Kind: tpm.KindTPM, Device: dev.String(), Algorithm: Algorithm},
		parents: make(map[string]*obj),
		keys:    make(map[*key]struct{}),
	}
	t.tr.t = t
	t.mu.Lock()
	defer t.mu.Unlock()
	err := t.runLocked(ctx, nil, func() error {
		_, err := t.parentLocked(srkTemplate)
		return err
	})
	if err != nil {
		t.dropLocked()
		return nil, fmt.Errorf("tpm2key: open %s: %w", t.info.Device, err)
	}
	return t, nil
}

// Info describes where this TPM's keys live: Kind tpm, the device as
// `bt --tpm` takes it, and Algorithm "ecdsa-p256". Safe for concurrent use.
func (t *TPM) Info() tpm.Info { return t.info }

// Create makes a new key in the TPM under the parent storage key and loads
// it. It returns the key and the encoded blob to store; Load turns the blob
// back into the key on this TPM (also after a restart) and on no other.
// Errors wrap tpm.ErrUnavailable when the TPM cannot be reached, tpm.ErrClosed
// after Close, or the TPM's refusal. Safe for concurrent use.
func (t *TPM) Create(ctx context.Context) (tpm.Key, []byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, nil, fmt.Errorf("tpm2key: create: %w", tpm.ErrClosed)
	}
	var b Blob
	err := t.runLocked(ctx, nil, func() error {
		p, err := t.parentLocked(srkTemplate)
		if err != nil {
			return err
		}
		rsp, err := tpm2.Create{
			ParentHandle: tpm2.AuthHandle{Handle: p.handle, Name: p.name, Auth: emptyAuth},
			InPublic:     tpm2.New2B(keyTemplate),
		}.Execute(&t.tr)
		if err != nil {
			return err
		}
		b = Blob{
			V:          BlobVersion,
			Parent:     srkTemplate,
			ParentName: bytes.Clone(p.name.Buffer),
			Public:     tpm2.Marshal(rsp.OutPublic),
			Private:    tpm2.Marshal(rsp.OutPrivate),
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("tpm2key: create: %w", err)
	}
	data, err := b.Encode()
	if err != nil {
		return nil, nil, err
	}
	// Load what will be stored, so a key that works is one whose blob loads.
	k, err := t.loadLocked(ctx, data)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm2key: create: %w", err)
	}
	return k, data, nil
}

// Load decodes blob (see DecodeBlob) and loads the key into the TPM,
// keeping it loaded until the key is closed. It fails with an error
// wrapping tpm.ErrKeyLost when this TPM cannot hold the key: its owner seed
// is not the one the key was created under (the TPM was cleared, or this is
// another TPM) or it refuses the private area as not its own; with
// tpm.ErrMalformed or tpm.ErrUnknownVersion for a blob it cannot read; with
// tpm.ErrUnavailable when the TPM cannot be reached. Safe for concurrent
// use.
func (t *TPM) Load(ctx context.Context, blob []byte) (tpm.Key, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, err := t.loadLocked(ctx, blob)
	if err != nil {
		return nil, fmt.Errorf("tpm2key: load: %w", err)
	}
	return k, nil
}

func (t *TPM) loadLocked(ctx context.Context, blob []byte) (*key, error) {
	if t.closed {
		return nil, tpm.ErrClosed
	}
	_, l, err := decodeBlob(blob)
	if err != nil {
		return nil, err
	}
	k := &key{t: t, l: l, obj: obj{name: l.name}}
	if err := t.runLocked(ctx, k, func() error { return nil }); err != nil {
		return nil, err
	}
	t.keys[k] = struct{}{}
	return k, nil
}

// Close flushes every key and parent this TPM loaded and closes the
// connection. Keys of a closed TPM fail with tpm.ErrClosed. Close is
// idempotent and safe for concurrent use.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	t.beginLocked(ctx)
	defer t.endLocked()
	for k := range t.keys {
		t.flushLocked(&k.obj)
		delete(t.keys, k)
	}
	for tmpl, p := range t.parents {
		t.flushLocked(p)
		delete(t.parents, tmpl)
	}
	if t.link == nil {
		return nil
	}
	err := t.link.close()
	t.link = nil
	if err != nil {
		return fmt.Errorf("tpm2key: close: %w", err)
	}
	return nil
}

// runLocked runs op on a working connection, with k (if not nil) loaded.
// When op or the preparation fails because the connection broke or a
// handle is no longer ours (the TPM restarted or was flushed behind our
// back), it reconnects and reloads and tries once more. Errors come back
// explained: link failures wrap tpm.ErrUnavailable.
func (t *TPM) runLocked(ctx context.Context, k *key, op func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.beginLocked(ctx)
	defer t.endLocked()
	for attempt := 0; ; attempt++ {
		err := t.readyLocked(k)
		if err == nil {
			err = op()
		}
		if err == nil {
			return nil
		}
		if attempt > 0 || ctx.Err() != nil || !retryable(err) {
			return t.explain(err)
		}
		// Distrust every handle: each is checked (ReadPublic, by Name)
		// or reloaded before its next use.
		t.gen++
	}
}

// readyLocked makes sure there is a connection and, if k is not nil, that
// k is loaded in it. Handles loaded in an earlier connection generation
// are trusted again only if the TPM still holds the same object under them:
// swtpm keeps objects across connections, the kernel resource manager
// flushes them, and a restarted TPM holds none.
func (t *TPM) readyLocked(k *key) error {
	if t.link == nil {
		l, err := dial(t.tr.ctx, t.tr.deadline, t.addr, t.path)
		if err != nil {
			return &dialError{err}
		}
		t.link = l
		t.gen++
	}
	if k == nil {
		return nil
	}
	if k.obj.handle != 0 {
		if held, err := t.holdsLocked(&k.obj); err != nil || held {
			return err
		}
	}
	p, err := t.parentLocked(k.l.parent)
	if err != nil {
		return err
	}
	if !bytes.Equal(p.name.Buffer, k.l.parentName) {
		return fmt.Errorf("%w: the TPM's storage root key is not the one this key was created under", tpm.ErrKeyLost)
	}
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: p.handle, Name: p.name, Auth: emptyAuth},
		InPrivate:    k.l.private,
		InPublic:     k.l.public,
	}.Execute(&t.tr)
	switch {
	case err == nil:
	case errors.Is(err, tpm2.TPMRCIntegrity), errors.Is(err, tpm2.TPMRCSensitive):
		// The private area does not open under this parent: it was
		// wrapped by another TPM or seed (or altered).
		return fmt.Errorf("%w: %w", tpm.ErrKeyLost, err)
	default:
		return err
	}
	k.obj.handle, k.obj.gen = rsp.ObjectHandle, t.gen
	if !bytes.Equal(rsp.Name.Buffer, k.obj.name.Buffer) {
		t.flushLocked(&k.obj)
		return fmt.Errorf("the TPM loaded the key under another Name: %w", tpm.ErrMalformed)
	}
	return nil
}

// holdsLocked reports whether o's handle is still valid in this connection
// generation, checking with ReadPublic that the TPM still holds the object
// of that Name if the handle is from an earlier one. It forgets a handle
// that no longer holds o.
func (t *TPM) holdsLocked(o *obj) (bool, error) {
	if o.handle == 0 {
		return false, nil
	}
	if o.gen == t.gen {
		return true, nil
	}
	rsp, err := tpm2.ReadPublic{ObjectHandle: o.handle}.Execute(&t.tr)
	var le *linkError
	if errors.As(err, &le) {
		return false, err
	}
	if err != nil || !bytes.Equal(rsp.Name.Buffer, o.name.Buffer) {
		o.handle = 0 // not ours any more: never flush it
		return false, nil
	}
	o.gen = t.gen
	return true, nil
}

// parentLocked returns the parent for template tmpl (TPM2B_PUBLIC bytes),
// creating it with TPM2_CreatePrimary in the owner hierarchy unless it is
// already loaded in this connection.
func (t *TPM) parentLocked(tmpl []byte) (*obj, error) {
	p := t.parents[string(tmpl)]
	if p != nil {
		if held, err := t.holdsLocked(p); err != nil || held {
			return p, err
		}
		delete(t.parents, string(tmpl))
	}
	contents, err := sized(tmpl, maxPublicSize)
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: emptyAuth},
		InPublic:      tpm2.BytesAs2B[tpm2.TPMTPublic](contents),
	}.Execute(&t.tr)
	switch {
	case err == nil:
	case errors.Is(err, tpm2.TPMRCBadAuth), errors.Is(err, tpm2.TPMRCAuthFail):
		return nil, fmt.Errorf("creating the storage root key: the owner hierarchy has a password, and Blocktree needs it empty: %w", err)
	case errors.Is(err, tpm2.TPMRCLockout):
		return nil, fmt.Errorf("creating the storage root key: the TPM is in dictionary-attack lockout: %w", err)
	default:
		return nil, fmt.Errorf("creating the storage root key: %w", err)
	}
	p = &obj{handle: rsp.ObjectHandle, name: rsp.Name, gen: t.gen}
	t.parents[string(tmpl)] = p
	return p, nil
}

// flushLocked flushes o from the TPM if the TPM still holds it, best
// effort: an object on a broken connection or a restarted TPM is gone
// anyway, and one we can no longer prove ours is left alone. It reports
// only a TPM's refusal to flush an object that is ours.
func (t *TPM) flushLocked(o *obj) error {
	if o.handle == 0 {
		return nil
	}
	if t.link == nil {
		// The connection dropped (a timeout, say) but the TPM may still
		// hold the object: swtpm keeps objects across connections. Dial
		// once to flush it rather than leave it in one of its few slots.
		if err := t.readyLocked(nil); err != nil {
			o.handle = 0
			return nil
		}
	}
	if held, err := t.holdsLocked(o); err != nil || !held {
		o.handle = 0
		return nil
	}
	_, err := tpm2.FlushContext{FlushHandle: o.handle}.Execute(&t.tr)
	o.handle = 0
	var le *linkError
	if err != nil && !errors.As(err, &le) && !errors.Is(err, tpm2.TPMRCHandle) {
		return err
	}
	return nil
}

// retryable reports whether err may go away after reconnecting and
// reloading: the connection broke, or a handle no longer names a loaded
// object (the TPM restarted or someone flushed it).
func retryable(err error) bool {
	var le *linkError
	return errors.As(err, &le) ||
		errors.Is(err, tpm2.TPMRCHandle) ||
		errors.Is(err, tpm2.TPMRCReferenceH0)
}

// explain turns link and dial failures into tpm.ErrUnavailable errors that
// name the device and say what to check, and says what a full TPM means;
// other errors pass unchanged.
func (t *TPM) explain(err error) error {
	var de *dialError
	if errors.As(err, &de) {
		return fmt.Errorf("%w: %s: %w; %s", tpm.ErrUnavailable, t.info.Device, de.err, hint(t.addr, t.path, de.err))
	}
	var le *linkError
	if errors.As(err, &le) {
		return fmt.Errorf("%w: %s stopped answering: %w", tpm.ErrUnavailable, t.info.Device, le.err)
	}
	if errors.Is(err, tpm2.TPMRCObjectMemory) {
		return fmt.Errorf("%w (the TPM has no free object slot: close other keys or TPM connections; "+
			"a TPM without a resource manager, such as swtpm or /dev/tpm0, holds three objects, "+
			"and each connection's parent takes one)", err)
	}
	return err
}

// Response codes that ask the caller to send the same command again.
var busy = [...]tpm2.TPMRC{tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting}

// sendLocked sends one command on the link for the running operation,
// resending it while the TPM answers that it is busy (within the
// operation's deadline). An I/O failure drops the link.
func (t *TPM) sendLocked(cmd []byte) ([]byte, error) {
	ctx, deadline := t.tr.ctx, t.tr.deadline
	delay := time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return nil, err // nothing sent: the link stays usable
		}
		if t.link == nil {
			return nil, &linkError{errors.New("not connected")}
		}
		rsp, err := t.link.send(ctx, deadline, cmd)
		if err != nil {
			t.dropLocked()
			return nil, &linkError{err}
		}
		if len(rsp) < headerSize {
			t.dropLocked()
			return nil, &linkError{fmt.Errorf("response of %d bytes", len(rsp))}
		}
		rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10]))
		if rc != busy[0] && rc != busy[1] && rc != busy[2] || time.Now().Add(delay).After(deadline) {
			return rsp, nil // go-tpm reports a busy code we give up on
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return rsp, nil // go-tpm reports the busy code
		case <-timer.C:
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// dropLocked closes a broken link; the next operation dials again.
func (t *TPM) dropLocked() {
	if t.link != nil {
		t.link.close()
		t.link = nil
	}
}
