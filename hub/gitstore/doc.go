// Package gitstore writes cell branches. It keeps an in-memory clone (no work tree), builds
// blobs, trees and commits directly, signs commits when given a key, and pushes every changed
// branch in one atomic push. An unchanged tree makes no commit and no push. A push that loses a
// race (non-fast-forward) is retried after re-reading the remote, with bounded jittered backoff.
package gitstore
