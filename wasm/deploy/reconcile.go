package deploy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/wasm"
)

// States of a deployment that is not running (the API's words; a running
// one has the runtime's state).
const (
	StateRefused  = "refused"  // the manifest did not decode or verify
	StateIgnored  = "ignored"  // the manifest names other nodes only
	StateFailed   = "failed"   // the module could not be started; retried with back-off
	StateStarting = "starting" // verified, being started
)

// Limits of the reconciler.
const (
	// MaxManifest bounds a manifest file; a larger one is refused.
	MaxManifest = 1 << 20
	// MaxDeployments bounds the files of a deployment directory looked
	// at in one scan; the rest are refused.
	MaxDeployments = 256
	// RetryMin and RetryMax bound the back-off of a failed start.
	RetryMin, RetryMax = 2 * time.Second, time.Minute
)

// File is one file of the deployment directory as a scan lists it.
type File struct {
	Name    string
	Version uint64 // the file's version: a change makes it read again
	Size    uint64
}

// Read is the content of a file the reconciler asked for (NeedsRead), or
// why it could not be read.
type Read struct {
	Data []byte
	Err  error
}

// Kind is what an Action asks for.
type Kind int

// Kinds of action.
const (
	// Stop the instance of File (named Name); Why says why.
	Stop Kind = iota + 1
	// Start Manifest (from File); Retry marks a start tried again after
	// a failure.
	Start
	// Report that File was refused (Why) or ignored (Ignored): for the
	// log; its status is already in Deployments.
	Report
)

// Action is one step for the driver to take, in order.
type Action struct {
	Kind     Kind
	File     string
	Name     string
	Manifest *wasm.SignedManifest // Start
	Retry    bool                 // Start: after a failure
	Why      string               // Stop and Report
	Ignored  bool                 // Report: for other nodes (else refused)
}

// Status is what became of one file of the deployment directory.
type Status struct {
	File     string               // its name in the directory
	Name     string               // the manifest's Name ("" when it did not decode)
	Manifest *wasm.SignedManifest // nil when it did not decode
	Started  bool                 // handed to the runtime (running, restarting, …)
	State    string               // when not started: StateRefused, …
	Reason   string
	Since    time.Time
	RetryAt  time.Time // StateFailed: when to try again
	Backoff  time.Duration
}

// Checks are what the reconciler asks of a manifest file: Decode it
// (wasm.DecodeManifest), then, when it is for this node, Verify it (the
// signature, the writecap, the domain; the error is the reason it is
// refused). Both are pure.
type Checks struct {
	Decode func(data []byte) (*wasm.SignedManifest, error)
	Verify func(sm *wasm.SignedManifest) error
}

// Reconciler is the deployment controller's state machine, without I/O:
// it keeps one deployment per file of a node's deployment directory and
// turns each listing of the directory (and the content of the files it
// asked for) into actions: stop what is gone or changed, start what is
// new or changed, start again what failed once its back-off is over,
// report what it refuses. Start outcomes are fed back with Started.
//
// A manifest that does not decode or verify, is over MaxManifest, is
// beyond the first MaxDeployments files, or names a name another file's
// instance runs, is refused (a name clash is checked again every scan).
// A manifest whose Nodes name only other nodes is ignored. An empty file
// is being written and waits. A file rewritten with the same bytes
// changes nothing.
//
// A Reconciler is not safe for concurrent use: its driver serialises
// calls.
type Reconciler struct {
	node  paths.Path // this node
	dir   paths.Path // its deployment directory (for reasons)
	check Checks
	deps  map[string]*dep // by file name
}

type dep struct {
	Status
	version uint64
	sum     [32]byte
	clash   bool // refused because another file runs its name
}

// NewReconciler returns a reconciler for node's deployment directory dir.
func NewReconciler(node, dir paths.Path, check Checks) *Reconciler {
	if check.Decode == nil {
		check.Decode = wasm.DecodeManifest
	}
	return &Reconciler{node: node, dir: dir, check: check, deps: make(map[string]*dep)}
}

// NeedsRead reports whether Reconcile needs f's content: f is new or
// changed, not empty and not over MaxManifest.
func (r *Reconciler) NeedsRead(f File) bool {
	d := r.deps[f.Name]
	return (d == nil || d.version != f.Version) && f.Size > 0 && f.Size <= MaxManifest
}

// Reconcile takes a listing of the directory at now, and the Read of
// every file for which NeedsRead holds (a missing one counts as not
// read), and returns the actions that bring the instances in line with
// it: the stops first, then per file in name order (so a name clash is
// decided the same way on every scan).
func (r *Reconciler) Reconcile(now time.Time, files []File, reads map[string]Read) []Action {
	var acts []Action
	listed := make(map[string]File, len(files))
	for _, f := range files {
		listed[f.Name] = f
	}
	for _, name := range slices.Sorted(maps.Keys(r.deps)) {
		if _, ok := listed[name]; !ok {
			acts = r.stop(acts, r.deps[name], "its manifest was removed")
			delete(r.deps, name)
		}
	}
	names := slices.Sorted(maps.Keys(listed))
	for i, file := range names {
		f := listed[file]
		old := r.deps[file]
		if old != nil && old.version == f.Version {
			switch {
			case old.State == StateFailed && !now.Before(old.RetryAt):
				acts = r.start(acts, old, true)
			case old.clash && r.nameFree(old):
				old.clash = false
				acts = r.start(acts, old, false)
			}
			continue
		}
		if f.Size == 0 {
			// Being written: a file is created before its content is
			// committed, and other nodes see it empty in between.
			continue
		}
		d := &dep{Status: Status{File: file, Since: now}, version: f.Version}
		var data []byte
		switch rd, ok := reads[file]; {
		case i >= MaxDeployments:
			acts = r.refuse(acts, d, fmt.Sprintf("over %d files in %s", MaxDeployments, r.dir))
		case f.Size > MaxManifest:
			acts = r.refuse(acts, d, fmt.Sprintf("manifest is %d bytes, over the %d-byte limit", f.Size, MaxManifest))
		case !ok:
			continue // not read: try again next scan
		case rd.Err != nil:
			acts = r.refuse(acts, d, fmt.Sprintf("reading the manifest: %v", rd.Err))
		case len(rd.Data) > MaxManifest:
			acts = r.refuse(acts, d, fmt.Sprintf("manifest is over the %d-byte limit", MaxManifest))
		default:
			data = rd.Data
		}
		if data == nil {
			acts = r.replace(acts, old, d)
			continue
		}
		d.sum = sha256.Sum256(data)
		if old != nil && old.sum == d.sum {
			old.version = f.Version // rewritten with the same bytes
			continue
		}
		var ok bool
		acts, ok = r.checkInto(acts, d, data)
		acts = r.replace(acts, old, d)
		if ok {
			acts = r.start(acts, d, false)
		}
	}
	return acts
}

// Started records the outcome of a Start action of file at now. A
// manifest the runtime refuses (bad fields, signature or rights) stays
// refused, one not for this node is ignored; another failure is retried
// with back-off. It returns the action to report, if any.
func (r *Reconciler) Started(file string, err error, now time.Time) (Action, bool) {
	d := r.deps[file]
	if d == nil || d.State != StateStarting {
		return Action{}, false // replaced or removed meanwhile
	}
	d.Since = now
	switch {
	case err == nil:
		d.Started, d.State, d.Reason, d.Backoff = true, "", "", 0
		return Action{}, false
	case errors.Is(err, wasm.ErrManifest), errors.Is(err, wasm.ErrSignature), errors.Is(err, wasm.ErrRights):
		d.State, d.Reason = StateRefused, err.Error()
		return Action{Kind: Report, File: file, Name: d.Name, Why: d.Reason}, true
	case errors.Is(err, wasm.ErrNotThisNode):
		d.State, d.Reason = StateIgnored, err.Error()
		return Action{}, false
	}
	d.Backoff = min(max(2*d.Backoff, RetryMin), RetryMax)
	d.State, d.Reason, d.RetryAt = StateFailed, err.Error(), now.Add(d.Backoff)
	return Action{}, false
}

// Deployments returns the status of every file, in file name order.
func (r *Reconciler) Deployments() []Status {
	out := make([]Status, 0, len(r.deps))
	for _, name := range slices.Sorted(maps.Keys(r.deps)) {
		out = append(out, r.deps[name].Status)
	}
	return out
}

// checkInto decodes and verifies data into d; on refusal, or when the
// manifest is for other nodes, it sets d's state and reports it.
func (r *Reconciler) checkInto(acts []Action, d *dep, data []byte) ([]Action, bool) {
	sm, err := r.check.Decode(data)
	if err != nil {
		return r.refuse(acts, d, fmt.Sprintf("cannot decode the manifest: %v", err)), false
	}
	d.Manifest, d.Name = sm, sm.Name
	if len(sm.Nodes) > 0 && !slices.Contains(sm.Nodes, r.node) {
		d.State, d.Reason = StateIgnored, fmt.Sprintf("the manifest is for %s, not this node", joinPaths(sm.Nodes))
		return append(acts, Action{Kind: Report, File: d.File, Name: d.Name, Why: d.Reason, Ignored: true}), false
	}
	if r.check.Verify != nil {
		if err := r.check.Verify(sm); err != nil {
			return r.refuse(acts, d, err.Error()), false
		}
	}
	if !r.nameFree(d) {
		acts = r.refuse(acts, d, fmt.Sprintf("the name %q is taken by another manifest of %s", d.Name, r.dir))
		d.clash = true
		return acts, false
	}
	return acts, true
}

// nameFree reports whether no other file's instance runs (or is being
// started with) d's name.
func (r *Reconciler) nameFree(d *dep) bool {
	for _, o := range r.deps {
		if o.File != d.File && o.Name == d.Name && (o.Started || o.State == StateStarting) {
			return false
		}
	}
	return true
}

func (r *Reconciler) refuse(acts []Action, d *dep, why string) []Action {
	d.State, d.Reason = StateRefused, why
	return append(acts, Action{Kind: Report, File: d.File, Name: d.Name, Why: why})
}

// replace puts d in place of old (nil when new), stopping old's instance.
func (r *Reconciler) replace(acts []Action, old, d *dep) []Action {
	if old != nil {
		acts = r.stop(acts, old, "its manifest changed")
	}
	r.deps[d.File] = d
	return acts
}

func (r *Reconciler) stop(acts []Action, d *dep, why string) []Action {
	if !d.Started {
		return acts
	}
	d.Started = false
	return append(acts, Action{Kind: Stop, File: d.File, Name: d.Name, Why: why})
}

func (r *Reconciler) start(acts []Action, d *dep, retry bool) []Action {
	d.State = StateStarting
	return append(acts, Action{Kind: Start, File: d.File, Name: d.Name, Manifest: d.Manifest, Retry: retry})
}

func joinPaths(ps []paths.Path) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
