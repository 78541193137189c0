package gitstore

import (
	"context"
	"maps"
	"strings"
)

// ReadMoved reads file from the head of every branch under prefix that moved: a head the caller
// already knows (known returns true) is neither fetched nor read. It keeps nothing between
// calls: the moved heads are fetched (depth 1) into an empty clone that is dropped when the call
// returns, so memory follows the branches that moved in one call, never the number of calls, and
// no shallow bookkeeping builds up for branches of orphan commits such as the agents' status
// refs. Like every operation of the store, it holds no lock across the network.
func (s *Store) ReadMoved(ctx context.Context, prefix, file string, known func(branch, commit string) bool) (map[string]BranchFile, error) {
	auth, _, err := s.opts.Credentials(ctx)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	s.mu.Lock()
	scratch := &Store{opts: s.opts, objects: newObjects(), refused: maps.Clone(s.refused), lister: s.lister}
	s.mu.Unlock()
	under := func(b string) bool { return strings.HasPrefix(b, prefix) }
	heads, refused, err := scratch.refreshPrefix(ctx, auth, scratch.objects, prefix, under, known)
	if err != nil {
		return nil, err
	}
	// The refusals under prefix are now the scratch clone's.
	s.mu.Lock()
	maps.DeleteFunc(s.refused, func(b string, _ refusal) bool { return under(b) })
	for b, rf := range scratch.refused {
		if under(b) {
			s.refused[b] = rf
		}
	}
	s.mu.Unlock()
	return readEach(scratch.objects, heads, refused, prefix, file, nil)
}
