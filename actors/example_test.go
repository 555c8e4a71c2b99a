package actors_test

import (
	"context"
	"errors"
	"fmt"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/paths"
)

type (
	Open   struct{}
	Close  struct{}
	Peek   struct{}
	Ack    struct{}
	Status struct{ State string }
)

// The door protocol: a closed door can be opened, an open one closed,
// and either peeked at.
var doorProtocol = &actors.Protocol{
	Name:    "door",
	Initial: "closed",
	States: []actors.State{
		{Name: "closed", Accept: []actors.Rule{
			actors.On[Open, Ack]("open"),
			actors.On[Peek, Status](""), // "": stays closed
		}},
		{Name: "open", Accept: []actors.Rule{
			actors.On[Close, Ack]("closed"),
			actors.On[Peek, Status](""),
		}},
	},
}

func Example() {
	ctx := context.Background()
	node := paths.MustParse("/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/laptop")
	rt, err := actors.New(node, nil) // nil router: local only
	if err != nil {
		panic(err)
	}
	defer rt.Close()

	door := actors.Func(func(c *actors.Context, m any) (any, error) {
		if _, ok := m.(Peek); ok {
			return Status{State: c.ProtocolState()}, nil
		}
		return Ack{}, nil
	})
	p, _ := rt.Spawn(ctx, "door", door, actors.WithProtocol(doorProtocol))

	_, err = rt.Call(ctx, p, Close{}) // refused: the door is closed
	fmt.Println(errors.Is(err, actors.ErrProtocol))
	rt.Call(ctx, p, Open{})
	st, _ := rt.Call(ctx, p, Peek{})
	fmt.Println(st)

	// An owner hears of its child's end.
	exits := make(chan actors.Exit, 1)
	owner, _ := rt.Spawn(ctx, "owner", actors.Func(func(c *actors.Context, m any) (any, error) {
		if e, ok := m.(actors.Exit); ok {
			exits <- e
		}
		return nil, nil
	}))
	child, _ := rt.Spawn(ctx, "child", actors.Func(func(c *actors.Context, m any) (any, error) {
		panic("oops")
	}), actors.WithOwner(owner))
	rt.Send(ctx, child, "hello")
	e := <-exits
	rel, _ := node.Rel(e.Path)
	fmt.Println(rel, e.Outcome)
	// Output:
	// true
	// {open}
	// [owner child] panicked
}
