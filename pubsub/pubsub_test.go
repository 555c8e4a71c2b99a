package pubsub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

// TestDeliverOnceToEveryMatchingSubscriber: five nodes; one publishes, and
// every subscription whose pattern matches receives each message exactly
// once, with the publisher's verified path and its increasing seq; the
// others receive nothing.
func TestDeliverOnceToEveryMatchingSubscriber(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newTestNet(t, d, Config{}, names(5)...)
	pub := nodes[0]
	topic := d.Path(t, "n00", "sensors", "temp")
	type want struct {
		node  *testNode
		sub   *Subscription
		match bool
	}
	var subs []want
	add := func(n *testNode, pattern string, match bool) {
		subs = append(subs, want{n, subscribe(t, n, d.Pattern(t, pattern)), match})
	}
	add(nodes[1], "/n00/sensors/temp", true) // literal: the exact topic
	add(nodes[2], "/n00/...", true)          // subtree of the publisher
	add(nodes[3], "/*/sensors/temp", true)   // subtree of the root, filtered
	add(nodes[4], "/n00/sensors/*", true)    // one level below /n00/sensors
	add(pub, "/n00/sensors/temp", true)      // the publisher itself
	add(nodes[4], "/n01/...", false)         // another subtree
	add(nodes[3], "/n00/sensors", false)     // the parent only
	add(nodes[2], "/n00/sensors/temp/*", false)
	var matching []*Subscription
	for _, s := range subs {
		if s.match {
			matching = append(matching, s.sub)
		}
	}
	ready(t, pub, topic, matching...)

	const k = 20
	ctx := nettest.Context(t, 30*time.Second)
	for i := range k {
		if err := pub.ps.Publish(ctx, topic, fmt.Appendf(nil, "m-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	seqs := make(map[string]uint64) // payload → seq, the same for every subscriber
	for _, s := range subs {
		if !s.match {
			continue
		}
		got := make(map[string]bool)
		for range k {
			m := recv(t, s.sub, 10*time.Second)
			p := string(m.Payload)
			switch {
			case got[p]:
				t.Fatalf("%s %s: %q delivered twice", s.node.name, s.sub.Pattern(), p)
			case m.Topic != topic || m.From != pub.path() || m.Confidential || !m.Readable:
				t.Fatalf("%s %s: got %+v", s.node.name, s.sub.Pattern(), m)
			case seqs[p] != 0 && seqs[p] != m.Seq:
				t.Fatalf("%s: %q has seq %d, another subscriber saw %d", s.node.name, p, m.Seq, seqs[p])
			}
			got[p] = true
			seqs[p] = m.Seq
		}
	}
	for i := 1; i < k; i++ {
		a, b := seqs[fmt.Sprintf("m-%02d", i-1)], seqs[fmt.Sprintf("m-%02d", i)]
		if a == 0 || b <= a {
			t.Fatalf("seq of message %d is %d, of message %d is %d: not increasing", i-1, a, i, b)
		}
	}
	for _, s := range subs {
		if extra := quiet(s.sub, 300*time.Millisecond); len(extra) > 0 {
			t.Errorf("%s %s: %d unexpected messages, first %+v", s.node.name, s.sub.Pattern(), len(extra), extra[0])
		}
	}
}

// TestPublishWithoutWritecapReachesNobody: a member whose writecap does not
// cover the topic is refused locally; when it sends anyway (test hook),
// every node that receives the message refuses it, none forwards or
// delivers it, and the sender's score falls until it is graylisted.
func TestPublishWithoutWritecapReachesNobody(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newTestNet(t, d, Config{}, names(4)...)
	id, key := member(t, d, "mallory")
	mallory := startTestNode(t, "mallory", id, key, Config{unchecked: true})
	connectAll(t, append(nodes, mallory))

	topic := d.Path(t, "n00", "events")
	ctx := nettest.Context(t, 30*time.Second)
	err := nodes[1].ps.Publish(ctx, topic, []byte("not mine"))
	if !errors.Is(err, ErrDenied) || !errors.Is(err, caps.ErrPathNotCovered) {
		t.Fatalf("publishing under another node's path: got %v, want ErrDenied and ErrPathNotCovered", err)
	}

	var subs []*Subscription
	for _, n := range nodes[1:] {
		subs = append(subs, subscribe(t, n, d.Pattern(t, "/n00/...")))
	}
	ready(t, nodes[0], topic, subs...)
	// Mallory must know of the subscriptions, or its messages would go to
	// no one for want of subscribers rather than be refused.
	name := subtreeTopic(d.Path(t, "n00"))
	nettest.WaitFor(t, 10*time.Second, "mallory to learn of the subscriptions", func() bool {
		ps := mallory.ps.gs.ListPeers(name)
		return slices.Contains(ps, nodes[1].node.ID()) && slices.Contains(ps, nodes[2].node.ID()) && slices.Contains(ps, nodes[3].node.ID())
	})
	mallory.ps.forgetPeerChecks()

	const spam = 10
	for i := range spam {
		if err := mallory.ps.Publish(ctx, topic, fmt.Appendf(nil, "spam %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	nettest.WaitFor(t, 10*time.Second, "honest nodes to refuse the spam", func() bool {
		for _, n := range nodes[1:] {
			if n.ps.Stats().Rejected == 0 {
				return false
			}
		}
		return true
	})
	for i, s := range subs {
		if got := quiet(s, time.Second); len(got) > 0 {
			t.Fatalf("%s received %d messages from a peer without a writecap, first %q", nodes[i+1].name, len(got), got[0].Payload)
		}
	}
	nettest.WaitFor(t, 10*time.Second, "mallory graylisted by every subscriber", func() bool {
		for _, n := range nodes[1:] {
			if n.ps.PeerScores()[mallory.node.ID()] >= graylistThreshold {
				return false
			}
		}
		return true
	})
	for _, n := range nodes[1:] {
		t.Logf("%s scores mallory %.0f (graylist below %d); rejected %d", n.name,
			n.ps.PeerScores()[mallory.node.ID()], graylistThreshold, n.ps.Stats().Rejected)
		if s := n.ps.PeerScores()[nodes[0].node.ID()]; s < 0 {
			t.Errorf("%s scores the honest publisher %.0f", n.name, s)
		}
	}
	// Honest publications still flow.
	if err := nodes[0].ps.Publish(ctx, topic, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if m := recv(t, s, 10*time.Second); string(m.Payload) != "still here" {
			t.Fatalf("got %q", m.Payload)
		}
	}
}

// TestEllipsisReceivesWholeSubtree: "/<r>/n00/..." receives publications to
// /<r>/n00 itself and to topics at several depths below it, and nothing
// from elsewhere.
func TestEllipsisReceivesWholeSubtree(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newTestNet(t, d, Config{}, names(3)...)
	s := subscribe(t, nodes[2], d.Pattern(t, "/n00/..."))
	ready(t, nodes[0], d.Path(t, "n00"), s)
	ready(t, nodes[1], d.Path(t, "n01"), subscribe(t, nodes[2], d.Pattern(t, "/n01")))

	ctx := nettest.Context(t, 30*time.Second)
	topics := []paths.Path{d.Path(t, "n00"), d.Path(t, "n00", "a"), d.Path(t, "n00", "a", "b"),
		d.Path(t, "n00", "a", "b", "c"), d.Path(t, "n00", "z")}
	for _, p := range topics {
		if err := nodes[0].ps.Publish(ctx, p, []byte(p.String())); err != nil {
			t.Fatal(err)
		}
	}
	if err := nodes[1].ps.Publish(ctx, d.Path(t, "n01", "a"), []byte("elsewhere")); err != nil {
		t.Fatal(err)
	}
	got := make(map[string]bool)
	for range topics {
		m := recv(t, s, 10*time.Second)
		if string(m.Payload) != m.Topic.String() || got[m.Topic.String()] {
			t.Fatalf("unexpected %s %q", m.Topic, m.Payload)
		}
		got[m.Topic.String()] = true
	}
	if extra := quiet(s, 300*time.Millisecond); len(extra) > 0 {
		t.Fatalf("received %s too", extra[0].Topic)
	}
}

// TestStarMatchesOneLevel: "*" matches exactly one component, neither the
// path above nor paths deeper.
func TestStarMatchesOneLevel(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newTestNet(t, d, Config{}, names(2)...)
	pub := nodes[0]
	cases := []struct {
		pattern string
		want    []string
		not     []string
	}{
		{"/n00/*", []string{"a", "b"}, []string{"", "a/b", "a/b/c"}},
		{"/n00/*/c", []string{"x/c", "y/c"}, []string{"x", "x/d", "x/c/d", "c"}},
		{"/*/k", []string{"k"}, []string{"", "k/k", "j"}},
	}
	for _, c := range cases {
		t.Run(c.pattern, func(t *testing.T) {
			s := subscribe(t, nodes[1], d.Pattern(t, c.pattern))
			path := func(rel string) paths.Path {
				if rel == "" {
					return pub.path()
				}
				p, err := paths.Parse(pub.path().String() + "/" + rel)
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			ready(t, pub, path(c.want[0]), s)
			ctx := nettest.Context(t, 30*time.Second)
			for _, rel := range append(append([]string(nil), c.not...), c.want...) {
				if err := pub.ps.Publish(ctx, path(rel), []byte(rel)); err != nil {
					t.Fatal(err)
				}
			}
			// Delivery is best-effort (docs/pubsub.md): on a loaded
			// machine gossipsub may drop one, so a wanted message that has
			// not arrived is published again (a few times at most). What
			// is checked is which paths the pattern matches.
			got := make(map[string]bool)
			missing := func() int {
				n := 0
				for _, w := range c.want {
					if !got[w] {
						n++
					}
				}
				return n
			}
			for attempt := 0; attempt < 3 && missing() > 0; attempt++ {
				if attempt > 0 {
					for _, w := range c.want {
						if !got[w] {
							if err := pub.ps.Publish(ctx, path(w), []byte(w)); err != nil {
								t.Fatal(err)
							}
						}
					}
				}
				for _, m := range collect(s, 5*time.Second, missing()) {
					got[string(m.Payload)] = true
				}
			}
			for _, n := range c.not {
				if got[n] {
					t.Errorf("%s received %s", c.pattern, n)
				}
			}
			for _, w := range c.want {
				if !got[w] {
					t.Errorf("%s did not receive %s (got %v)", c.pattern, w, got)
				}
			}
			if extra := quiet(s, 300*time.Millisecond); len(extra) > 0 {
				t.Errorf("%s received %s too", c.pattern, extra[0].Topic)
			}
		})
	}
}

// TestConfidentialTopic: readers decrypt, a subscriber without a readcap
// gets Readable=false and no payload, the key is unwrapped once per key
// (not per message), and a new reader set rotates the key.
func TestConfidentialTopic(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newTestNet(t, d, Config{}, names(4)...)
	pub, alice, eve, bob := nodes[0], nodes[1], nodes[2], nodes[3]
	topic := d.Path(t, "n00", "secret")
	pt := d.Pattern(t, "/n00/secret")
	subs := map[*testNode]*Subscription{}
	for _, n := range nodes {
		subs[n] = subscribe(t, n, pt)
	}
	ready(t, pub, topic, subs[alice], subs[eve], subs[bob], subs[pub])
	ctx := nettest.Context(t, 30*time.Second)

	expect := func(n *testNode, payload string, readable bool) {
		t.Helper()
		m := recv(t, subs[n], 10*time.Second)
		switch {
		case !m.Confidential || m.Readable != readable || m.From != pub.path() || m.Topic != topic:
			t.Fatalf("%s: got %+v, want confidential, readable %v", n.name, m, readable)
		case readable && string(m.Payload) != payload:
			t.Fatalf("%s: read %q, want %q", n.name, m.Payload, payload)
		case !readable && m.Payload != nil:
			t.Fatalf("%s: unreadable message has a payload", n.name)
		}
	}
	for i := range 3 {
		p := fmt.Sprintf("for alice %d", i)
		if err := pub.ps.Publish(ctx, topic, []byte(p), WithReaders(alice.key.PublicKey())); err != nil {
			t.Fatal(err)
		}
		expect(alice, p, true)
		expect(eve, p, false)
		expect(bob, p, false)
		expect(pub, p, true) // the publisher reads its own
	}
	if n := alice.decap.Load(); n != 1 {
		t.Fatalf("alice unwrapped the topic key %d times, want once", n)
	}
	if n := eve.decap.Load() + bob.decap.Load() + pub.decap.Load(); n != 0 {
		t.Fatalf("non-readers ran key agreement %d times", n)
	}
	// A new reader set: a new key, which bob can read too.
	p := "for alice and bob"
	if err := pub.ps.Publish(ctx, topic, []byte(p), WithReaders(bob.key.PublicKey(), alice.key.PublicKey())); err != nil {
		t.Fatal(err)
	}
	expect(alice, p, true)
	expect(bob, p, true)
	expect(eve, p, false)
	expect(pub, p, true)
	if a, b := alice.decap.Load(), bob.decap.Load(); a != 2 || b != 1 {
		t.Fatalf("unwraps after rotation: alice %d (want 2), bob %d (want 1)", a, b)
	}
	if st := eve.ps.Stats(); st.Unreadable != 4 {
		t.Fatalf("eve: %d unreadable, want 4", st.Unreadable)
	}
	// Plain messages on the same topic are still plain.
	if err := pub.ps.Publish(ctx, topic, []byte("public")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, subs[eve], 10*time.Second); m.Confidential || !m.Readable || string(m.Payload) != "public" {
		t.Fatalf("plain message: %+v", m)
	}
}

// TestOverlappingPatterns: a node whose Subscriptions overlap (a literal
// path, two under its node path, one under the root) ends up in the mesh
// of the covering topic only, the root's subtree; each publication then
// reaches it as one gossipsub message, delivered once to every
// Subscription.
func TestOverlappingPatterns(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newTestNet(t, d, Config{}, names(2)...)
	pub, sub := nodes[0], nodes[1]
	topic := d.Path(t, "n00", "a", "b")
	patterns := []string{"/n00/a/b", "/n00/a/...", "/n00/*/b", "/*/a/b"}
	var subs []*Subscription
	for _, p := range patterns {
		subs = append(subs, subscribe(t, sub, d.Pattern(t, p)))
	}
	ready(t, pub, topic, subs...)
	// After the grace, the subscriber is in the root subtree's mesh only,
	// and the publisher knows it.
	root := subtreeTopic(d.Path(t))
	for _, name := range []string{exactTopic(topic), subtreeTopic(d.Path(t, "n00")), root} {
		nettest.WaitFor(t, 10*time.Second+coverGrace, "membership of "+name, func() bool {
			return slices.Contains(pub.ps.gs.ListPeers(name), sub.node.ID()) == (name == root)
		})
	}
	pub.ps.forgetPeerChecks()
	quiet(subs[0], 200*time.Millisecond) // probes in flight
	before := sub.ps.Stats()
	ctx := nettest.Context(t, 30*time.Second)
	const k = 5
	for i := range k {
		if err := pub.ps.Publish(ctx, topic, fmt.Appendf(nil, "once %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range subs {
		got := make(map[string]bool)
		for range k {
			m := recv(t, s, 10*time.Second)
			if got[string(m.Payload)] || !bytes.HasPrefix(m.Payload, []byte("once ")) {
				t.Fatalf("%s: got %q again", patterns[i], m.Payload)
			}
			got[string(m.Payload)] = true
		}
		if extra := quiet(s, 300*time.Millisecond); len(extra) > 0 {
			t.Fatalf("%s: %d extra deliveries of %q", patterns[i], len(extra), extra[0].Payload)
		}
	}
	after := sub.ps.Stats()
	if got := after.Received - before.Received; got != k {
		t.Errorf("subscriber node received %d copies of %d publications, want one each", got, k)
	}
	// Cancelling the covering Subscription brings back the node subtree's
	// and the exact topic's memberships, and nothing is missed meanwhile.
	subs[3].Cancel()
	for i := range k {
		if err := pub.ps.Publish(ctx, topic, fmt.Appendf(nil, "after %d", i)); err != nil {
			t.Fatal(err)
		}
		for _, s := range subs[:3] {
			if m := recv(t, s, 10*time.Second); string(m.Payload) != fmt.Sprintf("after %d", i) {
				t.Fatalf("%s: got %q", s.Pattern(), m.Payload)
			}
		}
	}
	for _, name := range []string{exactTopic(topic), subtreeTopic(d.Path(t, "n00")), root} {
		want := name == subtreeTopic(d.Path(t, "n00"))
		nettest.WaitFor(t, 10*time.Second+coverGrace, "membership of "+name, func() bool {
			return slices.Contains(pub.ps.gs.ListPeers(name), sub.node.ID()) == want
		})
	}
}

// TestDuplicatesAcrossTopics: copies of one publication (same publisher
// and seq) that arrive by several topics are delivered once.
func TestDuplicatesAcrossTopics(t *testing.T) {
	d := nettest.NewDomain(t)
	ps := newChecker(t, time.Now())
	ps.seen = newDedup(16)
	var subs []*Subscription
	for _, p := range []string{"/n00/a/b", "/n00/..."} {
		subs = append(subs, &Subscription{ps: ps, pattern: d.Pattern(t, p), ch: make(chan *Message, 8), done: make(chan struct{})})
	}
	ps.subs.Store(&subs)
	in := &inbound{envelope: &envelope{topic: d.Path(t, "n00", "a", "b"), seq: 7, data: []byte("x")}, publisher: "host"}
	for range 3 {
		ps.deliver(in)
	}
	other := *in.envelope
	other.seq++
	ps.deliver(&inbound{envelope: &other, publisher: "host"})
	for _, s := range subs {
		if len(s.ch) != 2 {
			t.Errorf("%s: %d deliveries, want 2", s.pattern, len(s.ch))
		}
	}
	if st := ps.Stats(); st.Duplicates != 2 || st.Delivered != 4 {
		t.Errorf("stats %+v, want 2 duplicates and 4 deliveries", st)
	}
}

// TestOversized: a publication whose encoding exceeds MaxMessage is refused
// locally, and the validator refuses one that was sent anyway.
func TestOversized(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newTestNet(t, d, Config{MaxMessage: 4096}, "n00")
	n := nodes[0]
	ctx := nettest.Context(t, 10*time.Second)
	topic := d.Path(t, "n00", "big")
	if err := n.ps.Publish(ctx, topic, make([]byte, 2048)); err != nil {
		t.Fatalf("2 KiB: %v", err)
	}
	for _, size := range []int{4096 - 600, 4096, 1 << 20} { // the envelope, the payload, or both are too much
		if err := n.ps.Publish(ctx, topic, make([]byte, size)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%d-byte payload: got %v, want ErrTooLarge", size, err)
		}
	}
	env := validEnvelope(t, n, topic)
	env.data = make([]byte, 4096)
	data, err := env.sign(n.id.HostKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.ps.check(exactTopic(topic), data); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("validator on an oversized message: got %v, want ErrTooLarge", err)
	}
	var readers []crypto.PubKey
	for range MaxReaders + 1 {
		readers = append(readers, nettest.NewKey(t).PublicKey())
	}
	if err := n.ps.Publish(ctx, topic, nil, WithReaders(readers...)); !errors.Is(err, ErrReaders) {
		t.Fatalf("%d readers: got %v, want ErrReaders", len(readers), err)
	}
	for _, max := range []int{1023, canon.MaxSize + 1, -1} {
		c := Config{MaxMessage: max}
		if err := c.Validate(); err == nil {
			t.Errorf("MaxMessage %d accepted", max)
		}
	}
}

func TestSubscribePatterns(t *testing.T) {
	d := nettest.NewDomain(t)
	n := newTestNet(t, d, Config{}, "n00")[0]
	ctx := context.Background()
	for _, pt := range []paths.Pattern{{}, paths.MustParsePattern("/*/a"), paths.MustParsePattern("/*/...")} {
		if _, err := n.ps.Subscribe(ctx, pt); !errors.Is(err, ErrPattern) {
			t.Errorf("subscribe %q: got %v, want ErrPattern", pt, err)
		}
	}
	cases := map[string]string{
		"/n00":       exactTopic(d.Path(t, "n00")),
		"/n00/a/b":   exactTopic(d.Path(t, "n00", "a", "b")),
		"/n00/...":   subtreeTopic(d.Path(t, "n00")),
		"/*":         subtreeTopic(d.Path(t)),
		"/n00/*/b":   subtreeTopic(d.Path(t, "n00")),
		"/n00/a/*/c": subtreeTopic(d.Path(t, "n00")), // subtrees below a node path share its topic
		"/n00/a/...": subtreeTopic(d.Path(t, "n00")),
		"/*/a/...":   subtreeTopic(d.Path(t)),
	}
	for p, want := range cases {
		if got, err := subscribeTopic(d.Pattern(t, p)); err != nil || got != want {
			t.Errorf("%s: topic %q, %v; want %q", p, got, err, want)
		}
	}
}

// TestTopicMapping checks the publication topics of a path and which
// topics may carry it.
func TestTopicMapping(t *testing.T) {
	d := nettest.NewDomain(t)
	for _, tc := range []struct {
		path []string
		want []string
	}{
		{nil, []string{exactTopic(d.Path(t)), subtreeTopic(d.Path(t))}},
		{[]string{"a"}, []string{exactTopic(d.Path(t, "a")), subtreeTopic(d.Path(t, "a")), subtreeTopic(d.Path(t))}},
		{[]string{"a", "b", "c", "d"}, []string{exactTopic(d.Path(t, "a", "b", "c", "d")), subtreeTopic(d.Path(t, "a")), subtreeTopic(d.Path(t))}},
	} {
		p := d.Path(t, tc.path...)
		got := publishTopics(p)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Fatalf("publishTopics(%s) = %v, want %v", p, got, tc.want)
		}
		for _, name := range got {
			if !topicCarries(name, p) {
				t.Errorf("%s does not carry %s", name, p)
			}
			q, _, ok := parseTopic(name)
			if !ok || !p.HasPrefix(q) {
				t.Errorf("parseTopic(%q) = %s, %v", name, q, ok)
			}
		}
	}
	p := d.Path(t, "a", "b")
	for _, name := range []string{exactTopic(d.Path(t, "a")), subtreeTopic(d.Path(t, "a", "b")), subtreeTopic(d.Path(t, "a", "b", "c")),
		exactTopic(d.Path(t, "a", "b", "c")), subtreeTopic(d.Path(t, "ab")), "/blocktree/pubsub/2", "other",
		"/blocktree/pubsub/1" + p.String(), "/blocktree/pubsub/1" + d.Path(t).String() + "/...",
		TopicPrefix + "/not-an-id/a", TopicPrefix + p.String() + "/", TopicPrefix + p.String() + "/*"} {
		if topicCarries(name, p) {
			t.Errorf("%q carries %s", name, p)
		}
	}
	if _, _, ok := parseTopic(subtreeTopic(p)); ok {
		t.Errorf("subtree topic of depth 2 %s parsed", subtreeTopic(p))
	}
	// Every pattern's topic carries every path the pattern matches, and
	// is one a publication goes to.
	for _, pt := range []string{"/a/b", "/a/...", "/*/b", "/a/*", "/...", "/*", "/a/b/...", "/a/*/c/..."} {
		name, err := subscribeTopic(d.Pattern(t, pt))
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []paths.Path{p, d.Path(t, "a", "b", "c", "d"), d.Path(t, "a"), d.Path(t)} {
			if d.Pattern(t, pt).Match(q) && (!topicCarries(name, q) || !slices.Contains(publishTopics(q), name)) {
				t.Errorf("%s matches %s but its topic %s does not carry it", pt, q, name)
			}
		}
	}
}

func TestLifecycle(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newTestNet(t, d, Config{}, names(2)...)
	n := nodes[0]
	s := subscribe(t, n, d.Pattern(t, "/n00/x"))
	s.Cancel()
	s.Cancel()
	if _, err := s.Next(context.Background()); !errors.Is(err, ErrCanceled) {
		t.Fatalf("Next after Cancel: %v", err)
	}
	s2 := subscribe(t, n, d.Pattern(t, "/n00/x"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s2.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with nothing published: %v", err)
	}
	if err := n.ps.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.ps.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	if err := n.ps.Publish(context.Background(), d.Path(t, "n00", "x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := n.ps.Subscribe(context.Background(), d.Pattern(t, "/n00/x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	s2.Cancel()
}

// TestAddGrant: a node publishes outside its own subtree with a writecap
// it was granted; subscribers see its node path as From.
func TestAddGrant(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newTestNet(t, d, Config{}, names(2)...)
	pub, sub := nodes[0], nodes[1]
	topic := d.Path(t, "shared", "board")
	ctx := nettest.Context(t, 30*time.Second)
	if err := pub.ps.Publish(ctx, topic, []byte("x")); !errors.Is(err, ErrDenied) {
		t.Fatalf("before the grant: %v", err)
	}
	pub.ps.AddGrant(d.GrantDay(t, nettest.PrincipalID(t, sub.key.PublicKey()), d.Path(t, "shared"))) // held by another key: unusable
	if err := pub.ps.Publish(ctx, topic, []byte("x")); !errors.Is(err, ErrDenied) || !errors.Is(err, caps.ErrWrongHolder) {
		t.Fatalf("with another node's grant: %v", err)
	}
	pub.ps.AddGrant(d.GrantDay(t, nettest.PrincipalID(t, pub.key.PublicKey()), d.Path(t, "shared")))
	s := subscribe(t, sub, d.Pattern(t, "/shared/..."))
	ready(t, pub, topic, s)
	if err := pub.ps.Publish(ctx, topic, []byte("granted")); err != nil {
		t.Fatal(err)
	}
	m := recv(t, s, 10*time.Second)
	if string(m.Payload) != "granted" || m.From != pub.path() || m.Topic != topic {
		t.Fatalf("got %+v", m)
	}
}
