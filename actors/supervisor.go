package actors

import (
	"fmt"
	"time"

	"blocktree.dev/bt/paths"
)

// Strategy is what a supervisor restarts when a child stops and must be
// restarted.
type Strategy int

const (
	// OneForOne restarts only the child that stopped.
	OneForOne Strategy = iota
	// OneForAll stops all the other children (newest first) and restarts
	// them all, in order.
	OneForAll
	// RestForOne stops the children started after the one that stopped
	// (newest first) and restarts it and them, in order.
	RestForOne
)

// Restart says when a child is restarted.
type Restart int

const (
	// Permanent children are always restarted.
	Permanent Restart = iota
	// Transient children are restarted only after an abnormal exit
	// (Failed, Panicked).
	Transient
	// Temporary children are never restarted.
	Temporary
)

// ChildSpec describes one child of a supervisor.
type ChildSpec struct {
	Name    string       // its name under the supervisor's path
	New     func() Actor // makes a fresh actor for each (re)start
	Restart Restart
	Opts    []SpawnOption
}

// SupervisorSpec configures a supervisor.
type SupervisorSpec struct {
	Strategy Strategy
	// MaxRestarts restarts within Within are allowed; one more and the
	// supervisor stops its children and fails with ErrRestartIntensity
	// (its own owner then decides). Defaults: 3 within 5 s.
	MaxRestarts int
	Within      time.Duration
	Children    []ChildSpec
}

// Supervisor returns an actor that starts spec's children, in order, as
// the actors it owns, and restarts them by spec's strategy when they
// stop. Spawn it like any actor. Its other messages are ignored.
func Supervisor(spec SupervisorSpec) Actor {
	if spec.MaxRestarts <= 0 {
		spec.MaxRestarts = 3
	}
	if spec.Within <= 0 {
		spec.Within = 5 * time.Second
	}
	return &supervisor{spec: spec}
}

type supervisor struct {
	spec     SupervisorSpec
	children []*proc // by spec index; nil: not running
	restarts []time.Time
}

func (s *supervisor) Start(c *Context) error {
	s.children = make([]*proc, len(s.spec.Children))
	for i := range s.spec.Children {
		if err := s.start(c, i); err != nil {
			return err
		}
	}
	return nil
}

func (s *supervisor) start(c *Context, i int) error {
	cs := s.spec.Children[i]
	sc := spawnConfig{kind: KindActor}
	for _, o := range cs.Opts {
		o(&sc)
	}
	p, err := c.p.r.spawn(c.p.path, cs.Name, cs.New(), c.p, sc)
	if err != nil {
		return fmt.Errorf("actors: supervisor %s: start %s: %w", c.p.path, cs.Name, err)
	}
	s.children[i] = p
	return nil
}

func (s *supervisor) stopChild(i int) {
	if p := s.children[i]; p != nil {
		p.stop(Stopped, nil)
		<-p.done
		s.children[i] = nil
	}
}

func (s *supervisor) Receive(c *Context, m any) (any, error) {
	e, ok := m.(Exit)
	if !ok {
		return nil, nil
	}
	i := s.index(e)
	if i < 0 {
		return nil, nil // a child this supervisor stopped itself
	}
	s.children[i] = nil
	switch s.spec.Children[i].Restart {
	case Temporary:
		return nil, nil
	case Transient:
		if !e.Outcome.Abnormal() {
			return nil, nil
		}
	}
	now := time.Now()
	kept := s.restarts[:0]
	for _, t := range s.restarts {
		if now.Sub(t) < s.spec.Within {
			kept = append(kept, t)
		}
	}
	s.restarts = append(kept, now)
	if len(s.restarts) > s.spec.MaxRestarts {
		for j := len(s.children) - 1; j >= 0; j-- {
			s.stopChild(j)
		}
		return nil, fmt.Errorf("actors: supervisor %s: %d restarts within %v, after %s: %w",
			c.p.path, len(s.restarts), s.spec.Within, e, ErrRestartIntensity)
	}
	var restart []int
	switch s.spec.Strategy {
	case OneForOne:
		restart = []int{i}
	case OneForAll, RestForOne:
		from := 0
		if s.spec.Strategy == RestForOne {
			from = i
		}
		for j := len(s.children) - 1; j >= from; j-- {
			s.stopChild(j)
		}
		for j := from; j < len(s.children); j++ {
			restart = append(restart, j)
		}
	}
	for _, j := range restart {
		if err := s.start(c, j); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// index finds the running child that e is about; -1 for an old
// incarnation.
func (s *supervisor) index(e Exit) int {
	for i, p := range s.children {
		if p != nil && p.path == e.Path && p.inc == e.inc {
			return i
		}
	}
	return -1
}

// ChildPaths returns the paths of a supervisor spec's children under the
// supervisor at sup, in order.
func (spec SupervisorSpec) ChildPaths(sup paths.Path) []paths.Path {
	var out []paths.Path
	for _, c := range spec.Children {
		if p, err := sup.Join(c.Name); err == nil {
			out = append(out, p)
		}
	}
	return out
}
