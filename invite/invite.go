package invite

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Errors a joiner branches on; they cross the wire as kinds.
var (
	ErrUnknown   = errors.New("invite not recognised (a wrong token, or one from a daemon that restarted since)")
	ErrExpired   = errors.New("invite expired: ask for a new one")
	ErrUsed      = errors.New("invite already used: each token joins one machine; ask for a new one")
	ErrNameInUse = errors.New("name already in use in this domain")
	ErrNoInviter = errors.New("cannot reach the inviter")
)

// Invite is one pending invitation, held by the inviting daemon.
//
// The root key never enters the daemon: `bt invite` opens it, makes a
// one-shot delegate key, and has the root grant the delegate the new node's
// path. When the joiner proves the secret, the delegate grants the joiner's
// node key that path, and the delegate is forgotten. The joiner's writecap
// is thus joiner ← delegate ← root.
type Invite struct {
	Name     string
	Delegate *softkey.Key
	Grant    *caps.Writecap // root → delegate, for /<root>/<Name>
	Expiry   time.Time      // when the token stops working (the grant lasts longer)
}

type entry struct {
	Invite
	secretHash [sha256.Size]byte
	used       bool
}

// Registry holds a daemon's invitations. It is safe for concurrent use.
type Registry struct {
	root paths.ID
	now  func() time.Time

	// mu guards entries and names.
	mu      sync.Mutex
	entries []*entry        // pending, used and expired invites, pruned a day after expiry
	names   map[string]bool // names with a pending or used invite
}

// NewRegistry returns an empty registry for the domain rooted at root.
func NewRegistry(root paths.ID, now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{root: root, now: now, names: map[string]bool{}}
}

// Add registers an invite and returns its secret. The grant must be issued
// by the root to the delegate for /<root>/<name>; a name with another
// invite pending or used is refused with ErrNameInUse (callers check the
// DHT and the inviter's own name before).
func (r *Registry) Add(inv Invite) ([]byte, error) {
	want, err := paths.New(r.root, inv.Name)
	if err != nil {
		return nil, fmt.Errorf("invite: name %q: %w", inv.Name, err)
	}
	did, err := caps.PrincipalID(inv.Delegate.PublicKey())
	if err != nil {
		return nil, err
	}
	if err := caps.NewVerifier(caps.WithClock(r.now)).VerifyHolder(inv.Grant, did, want); err != nil {
		return nil, fmt.Errorf("invite: delegate's grant: %w", err)
	}
	if !inv.Expiry.After(r.now()) {
		return nil, fmt.Errorf("invite: expiry %v is in the past", inv.Expiry)
	}
	secret := make([]byte, SecretSize)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	if r.names[inv.Name] {
		return nil, fmt.Errorf("invite: %s: %w (another invite for it is pending or used)", want, ErrNameInUse)
	}
	r.names[inv.Name] = true
	r.entries = append(r.entries, &entry{Invite: inv, secretHash: sha256.Sum256(secret)})
	return secret, nil
}

// Pending lists the names of invites not yet used or expired.
func (r *Registry) Pending() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.entries {
		if !e.used && r.now().Before(e.Expiry) {
			out = append(out, e.Name)
		}
	}
	return out
}

// Redeem spends the invite whose secret is given and grants node (the
// joiner's node key) the invite's path. Errors: ErrUnknown, ErrExpired,
// ErrUsed.
func (r *Registry) Redeem(ctx context.Context, secret []byte, node crypto.PubKey) (*caps.Writecap, paths.Path, error) {
	nid, err := caps.PrincipalID(node)
	if err != nil {
		return nil, paths.Path{}, fmt.Errorf("invite: node key: %w", err)
	}
	h := sha256.Sum256(secret)
	r.mu.Lock()
	var e *entry
	for _, c := range r.entries {
		// Compare every entry in constant time: timing says nothing of secrets.
		if subtle.ConstantTimeCompare(c.secretHash[:], h[:]) == 1 {
			e = c
		}
	}
	switch {
	case e == nil:
		r.mu.Unlock()
		return nil, paths.Path{}, ErrUnknown
	case e.used:
		r.mu.Unlock()
		return nil, paths.Path{}, ErrUsed
	case !r.now().Before(e.Expiry):
		r.mu.Unlock()
		return nil, paths.Path{}, ErrExpired
	}
	e.used = true // spent even if issuing fails below: a token is tried once
	inv := e.Invite
	e.Delegate = nil
	r.mu.Unlock()

	p := inv.Grant.Prefix()
	now := r.now()
	w, err := caps.Issue(ctx, inv.Delegate, inv.Grant, nid, p, now.Add(-5*time.Minute), inv.Grant.Expiry())
	if err != nil {
		return nil, paths.Path{}, fmt.Errorf("invite: issuing the writecap: %w", err)
	}
	return w, p, nil
}

// pruneLocked forgets invites a day past their expiry (their names stay
// taken: a used name is in use).
func (r *Registry) pruneLocked() {
	cut := r.now().Add(-24 * time.Hour)
	kept := r.entries[:0]
	for _, e := range r.entries {
		if e.Expiry.After(cut) {
			kept = append(kept, e)
		} else if !e.used {
			delete(r.names, e.Name)
		}
	}
	r.entries = kept
}
