package gitrefs

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// What a server answers a push decides its outcome: a refusal before the pack is read, or
// credentials that fail the push before it is sent, return at once and leave no encoder running, and an endless or broken report is an error after a
// bounded read.
func TestReceivePack(t *testing.T) {
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter, r *http.Request)
		err    string
		target error
		auth   transport.AuthMethod
	}{
		{name: "accepted", answer: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, pkt("unpack ok\n", "ok refs/heads/cells/a\n", ""))
		}},
		{name: "rejected ref", answer: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, pkt("unpack ok\n", "ng refs/heads/cells/a non-fast-forward\n", ""))
		}, err: "non-fast-forward"},
		{name: "refused before the pack", answer: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusForbidden)
		}, target: transport.ErrAuthorizationFailed},
		{name: "endless report", answer: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, pkt("unpack ok\n"))
			line := pkt("ok refs/heads/cells/" + strings.Repeat("a", 200) + "\n")
			for range (maxReport / len(line)) + 10 {
				if _, err := io.WriteString(w, line); err != nil {
					return
				}
			}
		}, err: "reading the push's report"},
		{name: "credentials that cannot go over HTTP", answer: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
		}, auth: sshOnlyAuth{}, err: "cannot be used with an HTTP URL"},
		{name: "garbage report", answer: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, "<html>proxy error</html>")
		}, err: "reading the push's report"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/repo/git-receive-pack" || r.Header.Get("Content-Type") != receivePackRequest || r.Header.Get("Git-Protocol") != "" {
					http.Error(w, "unexpected request", http.StatusTeapot)
					return
				}
				tc.answer(w, r)
			}))
			defer srv.Close()
			req := packp.NewReferenceUpdateRequest()
			_ = req.Capabilities.Set("report-status")
			req.Commands = []*packp.Command{{Name: "refs/heads/cells/a", Old: plumbing.ZeroHash, New: plumbing.NewHash(hash)}}
			// A pack far larger than any answer: its writer must be ended by the push's end.
			pack, w := io.Pipe()
			done := make(chan error, 1)
			go func() {
				chunk := make([]byte, 64<<10)
				var err error
				for range 4096 { // 256 MiB
					if _, err = w.Write(chunk); err != nil {
						break
					}
				}
				_ = w.Close()
				done <- err
			}()
			req.Packfile = pack
			_, err := ReceivePack(context.Background(), srv.URL+"/repo", tc.auth, req)
			switch {
			case tc.err == "" && tc.target == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %v, want an error containing %q", err, tc.err)
			case tc.target != nil && !errors.Is(err, tc.target):
				t.Fatalf("got %v, want %v", err, tc.target)
			}
			// The request's encoder ends with the push, while the pack's writer still has data
			// to give it; then the caller closes the pack (gitstore does), which ends the writer.
			deadline := time.Now().Add(10 * time.Second)
			for {
				var b strings.Builder
				_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
				if !strings.Contains(b.String(), "gitrefs.ReceivePack.func") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the request's encoder is left running:\n%s", b.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			_ = pack.Close()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the pack's writer is still writing after the push ended")
			}
		})
	}
}

// sshOnlyAuth is credentials of a kind HTTP cannot carry: the push fails before any request.
type sshOnlyAuth struct{}

func (sshOnlyAuth) Name() string   { return "ssh-only" }
func (sshOnlyAuth) String() string { return "ssh-only" }
