package gitauth

import (
	"errors"
	"net/url"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

// AuthError means the Git server refused our credentials, or we refused its host key: a person
// must fix the Secret.
type AuthError struct{ Err error }

func (e *AuthError) Error() string {
	var hk *HostKeyError
	if errors.As(e.Err, &hk) {
		return "git: " + e.Err.Error()
	}
	return "git server refused the credentials (check the Git credentials Secret): " + e.Err.Error()
}
func (e *AuthError) Unwrap() error { return e.Err }

// UnavailableError means the Git server could not be reached or did not answer; retry later.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "git server unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// ConfigError means Git cannot work as configured (a missing repository, a bad key).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Classify sorts a transport error into the kinds above, with credentials scrubbed from the
// message. Errors that are already classified pass through.
func Classify(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	var (
		a *AuthError
		u *UnavailableError
		c *ConfigError
	)
	if errors.As(err, &a) || errors.As(err, &u) || errors.As(err, &c) {
		return err
	}
	clean := &redacted{msg: Redact(err.Error(), rawURL), err: err}
	var hk *HostKeyError
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		errors.As(err, &hk), strings.Contains(err.Error(), "unable to authenticate"):
		return &AuthError{Err: clean}
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return &ConfigError{Err: clean}
	default:
		return &UnavailableError{Err: clean}
	}
}

// redacted keeps the chain for errors.As while its message has no credentials.
type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.err }

// Redact removes any user information of the URL from a message.
func Redact(msg, rawURL string) string {
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
	if !strings.Contains(rawURL, "://") {
		return rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparseable URL>"
	}
	u.User = nil
	return u.String()
}
