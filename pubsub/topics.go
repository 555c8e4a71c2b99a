package pubsub

import (
	"fmt"
	"strings"

	"blocktree.dev/bt/paths"
)

// TopicPrefix starts the name of every gossipsub topic this package uses.
// The rest of the name is the text of the pattern the topic serves: a path
// ("exact" topic) or a domain's or node's path followed by "/..."
// ("subtree" topic). Format version 2 (docs/pubsub.md#topic-mapping).
const TopicPrefix = "/blocktree/pubsub/2"

const subtreeSuffix = "/..."

// maxSubtreeDepth is the depth of the deepest subtree topic: the domain's
// (depth 0) and each node's (depth 1). Deeper subtrees share their node's
// topic, so a publication goes to at most three topics whatever its depth.
const maxSubtreeDepth = 1

// exactTopic is the gossipsub topic of publications to p itself.
func exactTopic(p paths.Path) string { return TopicPrefix + p.String() }

// subtreeTopic is the gossipsub topic of publications to p and everything
// below it: the topic of the pattern "p/...". Only the subtrees of a root
// and of a node path (depth 0 and 1) have topics.
func subtreeTopic(p paths.Path) string { return TopicPrefix + p.String() + subtreeSuffix }

// ancestorAt returns p's ancestor-or-self of the given depth (p itself
// when p is not deeper).
func ancestorAt(p paths.Path, depth int) paths.Path {
	for p.Depth() > depth {
		p, _ = p.Parent()
	}
	return p
}

// publishTopics returns the gossipsub topics a publication to p goes to:
// its exact topic, then the subtree topic of its node path (its ancestor
// of depth 1, or p itself) unless p is a root, then the subtree topic of
// its root. A root has two topics, every other path three.
func publishTopics(p paths.Path) []string {
	out := make([]string, 0, maxSubtreeDepth+2)
	out = append(out, exactTopic(p))
	for d := min(p.Depth(), maxSubtreeDepth); d >= 0; d-- {
		out = append(out, subtreeTopic(ancestorAt(p, d)))
	}
	return out
}

// subscribeTopic returns the one gossipsub topic that carries every
// publication pt matches: the exact topic of a literal pattern, else the
// subtree topic of the node path (depth 1) its literal prefix lies under,
// or of the root when the prefix is the root. A pattern with a wildcard
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
	return subtreeTopic(ancestorAt(pt.Prefix(), maxSubtreeDepth)), nil
}

// parseTopic parses a gossipsub topic name of this package into the path
// it is about and whether it is a subtree topic. A subtree topic deeper
// than a node path is not one of this package's.
func parseTopic(name string) (p paths.Path, subtree, ok bool) {
	rest, ok := strings.CutPrefix(name, TopicPrefix)
	if !ok {
		return paths.Path{}, false, false
	}
	rest, subtree = strings.CutSuffix(rest, subtreeSuffix)
	p, err := paths.Parse(rest)
	if err != nil || subtree && p.Depth() > maxSubtreeDepth {
		return paths.Path{}, false, false
	}
	return p, subtree, true
}

// topicCarries reports whether a publication to p may travel on the
// gossipsub topic name: name is p's exact topic, or the subtree topic of
// p's root or of its node path. It does not allocate.
func topicCarries(name string, p paths.Path) bool {
	rest, ok := strings.CutPrefix(name, TopicPrefix)
	if !ok {
		return false
	}
	if rest == p.String() {
		return true
	}
	base, ok := strings.CutSuffix(rest, subtreeSuffix)
	if !ok {
		return false
	}
	for d := min(p.Depth(), maxSubtreeDepth); d >= 0; d-- {
		if base == ancestorAt(p, d).String() {
			return true
		}
	}
	return false
}
