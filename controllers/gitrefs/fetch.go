package gitrefs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// maxSectionLines bounds the lines of a fetch response's sections before its pack.
const maxSectionLines = 1024

// Fetch asks the server for one commit, depth 1, with Git protocol v2's fetch command, and
// streams the pack it sends into pack (the caller's bounded pack writer, which it closes). No ref
// is advertised: the request and its answer cost the same whatever the number of refs in the
// repository, where go-git v5's fetch starts with the full advertisement. It returns the
// commits the server marked shallow. Call it only for a server that answered a listing with v2.
func Fetch(ctx context.Context, url string, auth transport.AuthMethod, want string, pack io.Writer) ([]plumbing.Hash, error) {
	return FetchCommits(ctx, url, auth, []string{want}, pack)
}

// FetchCommits is Fetch for several commits in one request and one pack: the hub fetches every
// status report that moved in a repository at once.
func FetchCommits(ctx context.Context, url string, auth transport.AuthMethod, wants []string, pack io.Writer) ([]plumbing.Hash, error) {
	if len(wants) == 0 {
		return nil, errors.New("a fetch needs at least one commit")
	}
	args := []string{"ofs-delta", "no-progress", "deepen 1"}
	for _, want := range wants {
		if !plumbing.IsHash(want) {
			return nil, fmt.Errorf("not a commit hash: %q", want)
		}
		args = append(args, "want "+want)
	}
	args = append(args, "done")
	base := strings.TrimSuffix(url, "/")
	res, err := command(ctx, base, auth, []string{"command=fetch", "agent=git/cellsync"}, args)
	if err != nil {
		return nil, err
	}
	defer drain(res)
	s := &pktReader{r: bufio.NewReader(res.Body)}
	var shallow []plumbing.Hash
	// Sections come before the pack: shallow-info (with deepen), perhaps others; each ends with a
	// delim-pkt, and the pack's section is last.
	section := ""
	// A shallow line per commit asked for, and a few more.
	maxLines := maxSectionLines + len(wants)
	for lines := 0; ; lines++ {
		if lines > maxLines {
			return nil, fmt.Errorf("the fetch answer from %s has no pack after %d lines", base, maxLines)
		}
		payload, kind, err := s.next()
		if err != nil {
			return nil, fmt.Errorf("reading the fetch answer from %s: %w", base, err)
		}
		line := strings.TrimSuffix(string(payload), "\n")
		switch {
		case kind == pktDelim:
			section = "" // the end of a section
		case kind != pktData:
			return nil, fmt.Errorf("the fetch answer from %s ended before its pack", base)
		case line == "packfile":
			return shallow, readPack(s, pack, base)
		case section == "":
			section = line
			if strings.HasPrefix(line, "ERR ") {
				return nil, fmt.Errorf("the Git server refused the fetch: %s", strings.TrimPrefix(line, "ERR "))
			}
		case section == "shallow-info" && strings.HasPrefix(line, "shallow "):
			h := strings.TrimPrefix(line, "shallow ")
			if !plumbing.IsHash(h) {
				return nil, fmt.Errorf("unexpected line in the fetch answer: %.80q", line)
			}
			shallow = append(shallow, plumbing.NewHash(h))
		}
	}
}

// readPack copies the pack's side-band stream (band 1) into pack until the flush-pkt; band 3 is
// the server's error, band 2 its progress.
func readPack(s *pktReader, pack io.Writer, base string) error {
	for {
		b, kind, err := s.next()
		switch {
		case err != nil:
			return fmt.Errorf("reading the pack from %s: %w", base, err)
		case kind == pktFlush:
			return nil // the pack is whole
		case kind != pktData || len(b) == 0:
			return errors.New("unexpected marker in the pack stream")
		case b[0] == 1:
			if _, err := pack.Write(b[1:]); err != nil {
				return err
			}
		case b[0] == 3:
			return fmt.Errorf("the Git server failed the fetch: %s", strings.TrimSpace(string(b[1:])))
		}
	}
}

// pkt-line kinds: Git protocol v2 has special packets go-git v5's scanner does not read.
const (
	pktData = iota
	pktFlush
	pktDelim
	pktEnd
)

// pktReader reads pkt-lines, special packets included.
type pktReader struct {
	r   *bufio.Reader
	buf [65520]byte
}

func (p *pktReader) next() ([]byte, int, error) {
	var head [4]byte
	if _, err := io.ReadFull(p.r, head[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, 0, err
	}
	n, err := strconv.ParseUint(string(head[:]), 16, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("bad pkt-line length %q", head[:])
	}
	switch {
	case n == 0:
		return nil, pktFlush, nil
	case n == 1:
		return nil, pktDelim, nil
	case n == 2:
		return nil, pktEnd, nil
	case n < 4 || int(n) > len(p.buf):
		return nil, 0, fmt.Errorf("bad pkt-line length %d", n)
	}
	b := p.buf[:n-4]
	if _, err := io.ReadFull(p.r, b); err != nil {
		return nil, 0, err
	}
	if bytes.HasPrefix(b, []byte("ERR ")) {
		return nil, 0, fmt.Errorf("the Git server refused the fetch: %s", strings.TrimSpace(string(b[4:])))
	}
	return b, pktData, nil
}
