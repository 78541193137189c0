package gitstore

import (
	"errors"
	"net/url"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

// AuthError means the Git server refused our credentials: a person must fix the Secret.
type AuthError struct{ Err error }

func (e *AuthError) Error() string {
	return "git server refused the credentials (check the Git credentials Secret): " + e.Err.Error()
}
func (e *AuthError) Unwrap() error { return e.Err }

// UnavailableError means the Git server could not be reached or did not answer; retry later.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "git server unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// ConfigError means the store cannot work as configured (bad key, missing repository).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// classify sorts a transport error into the kinds above, with credentials scrubbed.
func classify(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	clean := errors.New(redact(err.Error(), rawURL))
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		return &AuthError{Err: clean}
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return &ConfigError{Err: clean}
	default:
		return &UnavailableError{Err: clean}
	}
}

// redact removes any user information of the URL from a message.
func redact(msg, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return msg
	}
	withCreds := u.String()
	u.User = nil
	return strings.ReplaceAll(msg, withCreds, u.String())
}

// RedactURL returns the URL without user information, for logs and status.
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparseable URL>"
	}
	u.User = nil
	return u.String()
}

func isRejected(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "non-fast-forward") || strings.Contains(s, "failed to update ref") ||
		strings.Contains(s, "fetch first") || strings.Contains(s, "stale info") || strings.Contains(s, "atomic push failed")
}
