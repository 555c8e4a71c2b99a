package pubsub

import (
	"fmt"
	"strings"

	"blocktree.dev/bt/paths"
)

// TopicPrefix starts the name of every gossipsub topic this package uses.
// The rest of the name is the text of the pattern the topic serves: a path
// ("exact" topic) or a path followed by "/..." ("subtree" topic).
const TopicPrefix = "/blocktree/pubsub/1"

const subtreeSuffix = "/..."

// exactTopic is the gossipsub topic of publications to p itself.
func exactTopic(p paths.Path) string { return TopicPrefix + p.String() }

// subtreeTopic is the gossipsub topic of publications to p and everything
// below it: the topic of the pattern "p/...".
func subtreeTopic(p paths.Path) string { return TopicPrefix + p.String() + subtreeSuffix }

// publishTopics returns the gossipsub topics a publication to p goes to:
// its exact topic, then the subtree topic of p and of each ancestor up to
// the root. A path of depth d has d+2 of them.
func publishTopics(p paths.Path) []string {
	out := make([]string, 0, p.Depth()+2)
	out = append(out, exactTopic(p))
	for q, ok := p, true; ok; q, ok = q.Parent() {
		out = append(out, subtreeTopic(q))
	}
	return out
}

// subscribeTopic returns the one gossipsub topic that carries every
// publication pt matches: the exact topic of a literal pattern, else the
// subtree topic of the pattern's literal prefix. A pattern with a wildcard
// root (which would need every domain's traffic) and the zero pattern are
// refused with ErrPattern.
func subscribeTopic(pt paths.Pattern) (string, error) {
	switch {
	case pt.IsZero():
		return "", fmt.Errorf("pubsub: empty pattern: %w", ErrPattern)
	case pt.IsLiteral():
		return exactTopic(pt.Prefix()), nil
	case pt.Prefix().IsZero():
		return "", fmt.Errorf("pubsub: pattern %s has a wildcard root: %w", pt, ErrPattern)
	}
	return subtreeTopic(pt.Prefix()), nil
}

// parseTopic parses a gossipsub topic name of this package into the path
// it is about and whether it is a subtree topic.
func parseTopic(name string) (p paths.Path, subtree, ok bool) {
	rest, ok := strings.CutPrefix(name, TopicPrefix)
	if !ok {
		return paths.Path{}, false, false
	}
	rest, subtree = strings.CutSuffix(rest, subtreeSuffix)
	p, err := paths.Parse(rest)
	if err != nil {
		return paths.Path{}, false, false
	}
	return p, subtree, true
}

// topicCarries reports whether a publication to p may travel on the
// gossipsub topic name: name is p's exact topic or the subtree topic of p
// or an ancestor. It does not allocate.
func topicCarries(name string, p paths.Path) bool {
	q, subtree, ok := parseTopic(name)
	switch {
	case !ok:
		return false
	case subtree:
		return p.HasPrefix(q)
	}
	return p == q
}
