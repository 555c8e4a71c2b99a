package order_test

import (
	"errors"
	"fmt"
	"time"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/order"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Example shows the two steps and their refusals on a volume held in
// memory: Admit refuses a Tx that changes a record without naming its
// base version, and Apply refuses one whose base is not the record's
// current version. A host stores the Effects of an accepted Tx.
func Example() {
	owner, err := softkey.FromSeed(make([]byte, 32))
	if err != nil {
		panic(err)
	}
	id, _ := caps.PrincipalID(owner.PublicKey())
	vol, err := paths.New(id, "data")
	if err != nil {
		panic(err)
	}
	const root fsys.Ino = 1
	rules := order.New(vol, root, caps.NewVerifier())
	state := order.State{Version: 7, Records: order.Map{
		{Ino: root}: {Key: fsys.RecordKey{Ino: root}, Version: 3, Grant: vol},
	}}

	blind := &fsys.Tx{Volume: vol, Put: []fsys.Record{{Key: fsys.RecordKey{Ino: root}, Grant: vol, Sealed: []byte("x")}}}
	err = rules.Admit(blind, time.Now())
	fmt.Println(order.KindOf(err), errors.Is(err, fsys.ErrInvalid))

	stale := &fsys.Tx{Volume: vol, Base: []fsys.Base{{Key: fsys.RecordKey{Ino: root}, Version: 2}},
		Put: blind.Put}
	_, err = rules.Apply(state, stale)
	fmt.Println(order.KindOf(err), errors.Is(err, fsys.ErrConflict))
	// Output:
	// malformed true
	// conflict true
}
