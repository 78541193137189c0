// Package gitauth is the Git code the hub and the agent share: credentials from a Secret (HTTP
// basic auth, bearer tokens, SSH keys checked against known_hosts), commit-signing keys, URL
// redaction, and one classification of Git errors, so that both sides say the same thing about a
// refused credential. It imports nothing from either side.
package gitauth
