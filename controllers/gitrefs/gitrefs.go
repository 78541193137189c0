// Package gitrefs lists a remote's refs over smart HTTP with Git protocol v2's ls-refs and a
// ref-prefix, so that a listing costs the same whatever the number of refs in the repository,
// and falls back to the full (protocol v0) advertisement when the server does not speak v2.
// The agent and the hub share it; go-git v5 has no v2 client (docs/proposals/0002-v2-ls-refs.md).
package gitrefs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/pktline"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// Protocol is the Git wire protocol a listing used.
type Protocol int

// The protocols a listing can use.
const (
	// V0 is the full ref advertisement (the server does not speak v2, or the URL is not HTTP).
	V0 Protocol = 0
	// V2 is ls-refs with ref-prefix: only the refs asked for cross the wire.
	V2 Protocol = 2
)

func (p Protocol) String() string {
	if p == V2 {
		return "Git protocol v2 (ls-refs with ref-prefix)"
	}
	return "the full ref advertisement (the server does not speak Git protocol v2)"
}

// maxAdvertisement bounds what a v0 fallback reads: about 100,000 refs.
const maxAdvertisement = 16 << 20

// Supported reports whether url is one gitrefs can list (HTTP or HTTPS); other URLs are listed
// by go-git.
func Supported(url string) bool {
	return strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "https://")
}

// List returns the refs whose full names start with one of prefixes (for example
// "refs/heads/cells/a"), name → hash, and the protocol the server answered with. Errors are
// go-git's (transport.ErrAuthenticationRequired, ErrAuthorizationFailed, ErrRepositoryNotFound),
// so callers classify them as they classify go-git's.
func List(ctx context.Context, url string, auth transport.AuthMethod, prefixes ...string) (map[string]string, Protocol, error) {
	base := strings.TrimSuffix(url, "/")
	res, err := do(ctx, http.MethodGet, base+"/info/refs?service=git-upload-pack", auth, nil, "")
	if err != nil {
		return nil, V0, err
	}
	defer drain(res)
	r := bufio.NewReader(io.LimitReader(res.Body, maxAdvertisement))
	s := pktline.NewScanner(r)
	// Smart HTTP opens with "# service=git-upload-pack" and a flush.
	if !s.Scan() {
		return nil, V0, fmt.Errorf("empty ref advertisement from %s: %v", base, s.Err())
	}
	line := s.Bytes()
	if bytes.HasPrefix(line, []byte("# service=")) {
		if !s.Scan() { // the flush after the service line
			return nil, V0, fmt.Errorf("truncated ref advertisement from %s: %v", base, s.Err())
		}
		if !s.Scan() {
			if s.Err() == nil {
				return nil, V0, transport.ErrEmptyRemoteRepository
			}
			return nil, V0, fmt.Errorf("truncated ref advertisement from %s: %v", base, s.Err())
		}
		line = s.Bytes()
	}
	if string(bytes.TrimSpace(line)) != "version 2" {
		refs, err := readV0(s, line, prefixes)
		return refs, V0, err
	}
	lsRefs := false
	for s.Scan() && len(s.Bytes()) > 0 {
		capability := string(bytes.TrimSpace(s.Bytes()))
		lsRefs = lsRefs || capability == "ls-refs" || strings.HasPrefix(capability, "ls-refs=")
	}
	if err := s.Err(); err != nil {
		return nil, V0, fmt.Errorf("reading the capabilities of %s: %w", base, err)
	}
	if !lsRefs {
		return nil, V0, fmt.Errorf("%s speaks Git protocol v2 without ls-refs", base)
	}
	refs, err := lsRefsRequest(ctx, base, auth, prefixes)
	return refs, V2, err
}

// Lister is List for one server that remembers whether the server speaks v2: once it has
// answered with v2, a listing is the ls-refs command alone, without the capability
// advertisement a discovery starts with. Smart HTTP is stateless, so a v2 command needs no
// request before it, and a poll of a server known to speak v2 is one request instead of two.
// When that request fails for any reason (the server no longer speaks v2, a proxy in front of
// it changed, it failed), the same call discovers afresh with List. Safe for concurrent use;
// the zero value is ready.
type Lister struct{ v2 atomic.Bool }

// List is the package's List, one request when the server spoke v2 last time.
func (l *Lister) List(ctx context.Context, url string, auth transport.AuthMethod, prefixes ...string) (map[string]string, Protocol, error) {
	if l.v2.Load() {
		refs, err := lsRefsRequest(ctx, strings.TrimSuffix(url, "/"), auth, prefixes)
		if err == nil {
			return refs, V2, nil
		}
		if ctx.Err() != nil {
			return nil, V2, ctx.Err()
		}
	}
	refs, proto, err := List(ctx, url, auth, prefixes...)
	if err == nil {
		l.v2.Store(proto == V2)
	}
	return refs, proto, err
}

// command sends one Git protocol v2 command: its capability lines, a delim-pkt, its argument
// lines, a flush-pkt.
func command(ctx context.Context, base string, auth transport.AuthMethod, caps, args []string) (*http.Response, error) {
	var body bytes.Buffer
	e := pktline.NewEncoder(&body)
	for _, l := range caps {
		if err := e.EncodeString(l + "\n"); err != nil {
			return nil, err
		}
	}
	body.WriteString("0001") // delim-pkt: the command's arguments follow
	for _, l := range args {
		if err := e.EncodeString(l + "\n"); err != nil {
			return nil, err
		}
	}
	if err := e.Flush(); err != nil {
		return nil, err
	}
	return do(ctx, http.MethodPost, base+"/git-upload-pack", auth, &body, "application/x-git-upload-pack-request")
}

// lsRefsRequest sends the one ls-refs command.
func lsRefsRequest(ctx context.Context, base string, auth transport.AuthMethod, prefixes []string) (map[string]string, error) {
	args := make([]string, 0, len(prefixes))
	for _, p := range prefixes {
		args = append(args, "ref-prefix "+p)
	}
	res, err := command(ctx, base, auth, []string{"command=ls-refs"}, args)
	if err != nil {
		return nil, err
	}
	defer drain(res)
	s := pktline.NewScanner(bufio.NewReader(io.LimitReader(res.Body, maxAdvertisement)))
	refs := map[string]string{}
	for {
		if !s.Scan() {
			return nil, fmt.Errorf("reading ls-refs from %s: %w", base, truncated(s.Err()))
		}
		if len(s.Bytes()) == 0 { // flush: the end
			return refs, nil
		}
		if err := addRef(refs, s.Bytes(), prefixes); err != nil {
			return nil, err
		}
	}
}

// truncated is the error of a listing that ended before its flush-pkt.
func truncated(err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("the listing ended before its end marker (cut off, or larger than %d MiB)", maxAdvertisement>>20)
}

// readV0 reads a v0 advertisement whose first ref line is first, keeping only the refs asked for.
func readV0(s *pktline.Scanner, first []byte, prefixes []string) (map[string]string, error) {
	refs := map[string]string{}
	line := first
	for {
		if len(line) == 0 { // flush: the end
			return refs, nil
		}
		name, _, _ := bytes.Cut(line, []byte{0}) // capabilities follow the first ref
		if err := addRef(refs, name, prefixes); err != nil {
			return nil, err
		}
		if !s.Scan() {
			return nil, fmt.Errorf("reading the ref advertisement: %w", truncated(s.Err()))
		}
		line = s.Bytes()
	}
}

// addRef parses "<hash> <name>[ attributes]" into refs when the name has one of prefixes.
func addRef(refs map[string]string, line []byte, prefixes []string) error {
	hash, rest, ok := strings.Cut(strings.TrimSuffix(string(line), "\n"), " ")
	if !ok || len(hash) != 40 || !plumbing.IsHash(hash) {
		if strings.HasPrefix(string(line), "0000000000000000000000000000000000000000 capabilities^{}") {
			return nil // an empty repository's v0 advertisement
		}
		return fmt.Errorf("unexpected line in a ref listing: %.80q", line)
	}
	name, _, _ := strings.Cut(rest, " ")
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			refs[name] = hash
			return nil
		}
	}
	return nil
}

func do(ctx context.Context, method, url string, auth transport.AuthMethod, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "git/cellsync")
	switch contentType {
	case receivePackRequest: // receive-pack has no protocol v2
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Accept", "application/x-git-receive-pack-result")
	case "":
		req.Header.Set("Git-Protocol", "version=2")
	default:
		req.Header.Set("Git-Protocol", "version=2")
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Accept", "application/x-git-upload-pack-result")
	}
	if a, ok := auth.(githttp.AuthMethod); ok && a != nil {
		a.SetAuth(req)
	} else if auth != nil {
		return nil, fmt.Errorf("%s credentials cannot be used with an HTTP URL", auth.Name())
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case res.StatusCode == http.StatusOK:
		return res, nil
	case res.StatusCode == http.StatusUnauthorized:
		err = transport.ErrAuthenticationRequired
	case res.StatusCode == http.StatusForbidden:
		err = transport.ErrAuthorizationFailed
	case res.StatusCode == http.StatusNotFound:
		err = transport.ErrRepositoryNotFound
	default:
		err = fmt.Errorf("unexpected HTTP status %d from the Git server", res.StatusCode)
	}
	drain(res)
	return nil, err
}

func drain(res *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	_ = res.Body.Close()
}
