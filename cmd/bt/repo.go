package main

import (
	"blocktree.dev/bt/repo"
)

// repoDir is the repo the command works on: --repo, $BT_REPO or the default.
func (g *globals) repoDir() (string, error) {
	if g.repo != "" {
		return g.repo, nil
	}
	return repo.DefaultDir()
}

func (g *globals) openRepo() (*repo.Repo, error) {
	dir, err := g.repoDir()
	if err != nil {
		return nil, err
	}
	return repo.Open(dir)
}
