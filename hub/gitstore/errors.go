package gitstore

import (
	"strings"

	"github.com/cellsync/cellsync/controllers/gitauth"
)

// The error kinds of the store are the ones the agent uses too, so both sides classify a refused
// credential the same way.
type (
	// AuthError means the Git server refused our credentials: a person must fix the Secret.
	AuthError = gitauth.AuthError
	// UnavailableError means the Git server could not be reached; retry later.
	UnavailableError = gitauth.UnavailableError
	// ConfigError means the store cannot work as configured (bad key, missing repository).
	ConfigError = gitauth.ConfigError
)

func classify(err error, rawURL string) error { return gitauth.Classify(err, rawURL) }

// isRejected says a push lost a race: a ref moved on the server since it was read. Git says so
// in several ways, "atomic transaction failed" among them when another push landed between
// this push's advertisement and its update.
func isRejected(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "non-fast-forward") || strings.Contains(s, "failed to update ref") ||
		strings.Contains(s, "fetch first") || strings.Contains(s, "stale info") || strings.Contains(s, "atomic push failed") ||
		strings.Contains(s, "atomic transaction failed")
}
