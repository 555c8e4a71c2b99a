package actors

import (
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
)

// Protocol declares what an actor accepts: a set of named states and, for
// each, the message types it takes, what each one replies and the state
// it leads to. It is plain Go data:
//
//	var doorProtocol = &actors.Protocol{
//		Name:    "door",
//		Initial: "closed",
//		States: []actors.State{
//			{Name: "closed", Accept: []actors.Rule{
//				actors.On[Open, Ack]("open"),   // Open replies Ack, then the door is open
//				actors.On[Lock, Ack]("locked"),
//				actors.On[Peek, Status](""),    // "": stay in this state
//			}},
//			{Name: "open", Accept: []actors.Rule{actors.On[Close, Ack]("closed")}},
//			{Name: "locked", Accept: []actors.Rule{actors.OnTell[Unlock]("closed")}},
//		},
//	}
//
// The runtime checks each message when it is queued, against the state
// the actor will be in when it handles it (transitions depend only on the
// message's type, so that state is known in advance), and refuses one
// that the state does not accept with an error wrapping ErrProtocol: the
// sender gets it, and the actor never sees the message. A reply of a type
// other than the rule's is an error too: the caller gets ErrProtocol and
// the actor fails. Notices (Exit, Down) are outside the protocol.
type Protocol struct {
	Name    string
	Initial string
	States  []State

	compiled map[string]map[reflect.Type]*rule // set by compile
}

// State is one state of a Protocol: the messages it accepts.
type State struct {
	Name   string
	Accept []Rule
}

// Rule says that a message of type Msg is accepted, replies a value of
// type Reply (nil: no value — the actor returns a nil reply), and moves
// the actor to state Next ("" stays). Build rules with On and OnTell.
type Rule struct {
	Msg   reflect.Type
	Reply reflect.Type
	Next  string
}

// On is the rule: a message of type M is accepted, the actor replies a
// value of type R, then it is in state next ("": unchanged). R may be an
// interface type: any reply that implements it.
func On[M, R any](next string) Rule {
	return Rule{Msg: reflect.TypeFor[M](), Reply: reflect.TypeFor[R](), Next: next}
}

// OnTell is the rule for a message of type M that gets no reply value
// (the actor returns nil), then state next ("": unchanged).
func OnTell[M any](next string) Rule {
	return Rule{Msg: reflect.TypeFor[M](), Next: next}
}

// rule is a compiled Rule.
type rule struct {
	state string // the state it applies in
	msg   reflect.Type
	reply reflect.Type
	next  string // resolved: never ""
}

// compile checks p and builds its lookup table. It is idempotent, and
// not safe to run concurrently with itself (WithProtocol runs it at
// Spawn).
func (p *Protocol) compile() error {
	if p.compiled != nil {
		return nil
	}
	if p.Initial == "" {
		return fmt.Errorf("actors: protocol %q: no initial state", p.Name)
	}
	m := make(map[string]map[reflect.Type]*rule, len(p.States))
	for _, s := range p.States {
		if s.Name == "" {
			return fmt.Errorf("actors: protocol %q: a state without a name", p.Name)
		}
		if _, dup := m[s.Name]; dup {
			return fmt.Errorf("actors: protocol %q: state %q declared twice", p.Name, s.Name)
		}
		m[s.Name] = make(map[reflect.Type]*rule, len(s.Accept))
	}
	if _, ok := m[p.Initial]; !ok {
		return fmt.Errorf("actors: protocol %q: initial state %q is not declared", p.Name, p.Initial)
	}
	for _, s := range p.States {
		for _, r := range s.Accept {
			if r.Msg == nil {
				return fmt.Errorf("actors: protocol %q: state %q: a rule without a message type", p.Name, s.Name)
			}
			next := r.Next
			if next == "" {
				next = s.Name
			}
			if _, ok := m[next]; !ok {
				return fmt.Errorf("actors: protocol %q: state %q: %v leads to undeclared state %q", p.Name, s.Name, r.Msg, next)
			}
			if _, dup := m[s.Name][r.Msg]; dup {
				return fmt.Errorf("actors: protocol %q: state %q: two rules for %v", p.Name, s.Name, r.Msg)
			}
			m[s.Name][r.Msg] = &rule{state: s.Name, msg: r.Msg, reply: r.Reply, next: next}
		}
	}
	p.compiled = m
	return nil
}

// protoRun is one actor's run of a protocol. projected is the state after
// every queued message (guarded by the mailbox's mu); current is the state
// after the last handled one.
type protoRun struct {
	p         *Protocol
	projected string
	current   atomic.Pointer[string]
}

func newProtoRun(p *Protocol) *protoRun {
	pr := &protoRun{p: p, projected: p.Initial}
	s := p.Initial
	pr.current.Store(&s)
	return pr
}

// admit checks m against the projected state and advances it.
func (pr *protoRun) admit(m any) (*rule, error) {
	t := reflect.TypeOf(m)
	r := pr.p.compiled[pr.projected][t]
	if r == nil {
		return nil, fmt.Errorf("protocol %q in state %q does not accept %v: %w", pr.p.Name, pr.projected, t, ErrProtocol)
	}
	pr.projected = r.next
	return r, nil
}

// checkReply checks a reply against the rule that admitted its message.
func (r *rule) checkReply(p *Protocol, v any) error {
	if r.reply == nil {
		if v != nil {
			return fmt.Errorf("protocol %q in state %q: %v replies nothing, the actor replied %T: %w", p.Name, r.state, r.msg, v, ErrProtocol)
		}
		return nil
	}
	t := reflect.TypeOf(v)
	ok := t != nil && (t == r.reply || (r.reply.Kind() == reflect.Interface && t.Implements(r.reply)))
	if !ok {
		return fmt.Errorf("protocol %q in state %q: %v replies %v, the actor replied %T: %w", p.Name, r.state, r.msg, r.reply, v, ErrProtocol)
	}
	return nil
}

var errNilMessage = errors.New("nil message")
