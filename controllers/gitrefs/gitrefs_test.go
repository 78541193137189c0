package gitrefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

func pkt(lines ...string) string {
	var b strings.Builder
	for _, l := range lines {
		if l == "" {
			b.WriteString("0000")
			continue
		}
		fmt.Fprintf(&b, "%04x%s", len(l)+4, l)
	}
	return b.String()
}

const hash = "0123456789abcdef0123456789abcdef01234567"

// What a server answers decides the listing; a hostile or broken one gets a clear error, and
// never more than a bounded read.
func TestList(t *testing.T) {
	v2caps := pkt("# service=git-upload-pack\n", "", "version 2\n", "agent=git/2.39\n", "ls-refs=unborn\n", "fetch=shallow\n", "")
	tests := []struct {
		name     string
		get      func(w http.ResponseWriter)
		post     func(w http.ResponseWriter, body string)
		want     map[string]string
		protocol Protocol
		err      string
		is       error
	}{
		{name: "v2", get: func(w http.ResponseWriter) { io.WriteString(w, v2caps) },
			post: func(w http.ResponseWriter, body string) {
				if !strings.Contains(body, "command=ls-refs") || !strings.Contains(body, "ref-prefix refs/heads/cells/a\n") {
					http.Error(w, "bad request "+body, http.StatusBadRequest)
					return
				}
				io.WriteString(w, pkt(hash+" refs/heads/cells/a\n", hash+" refs/heads/cells/ab\n", ""))
			},
			want: map[string]string{"refs/heads/cells/a": hash, "refs/heads/cells/ab": hash}, protocol: V2},
		{name: "v0 with capabilities", get: func(w http.ResponseWriter) {
			io.WriteString(w, pkt("# service=git-upload-pack\n", "", hash+" HEAD\x00multi_ack side-band-64k\n", hash+" refs/heads/cells/a\n", hash+" refs/heads/main\n", ""))
		}, want: map[string]string{"refs/heads/cells/a": hash}, protocol: V0},
		{name: "empty repository", get: func(w http.ResponseWriter) {
			io.WriteString(w, pkt("# service=git-upload-pack\n", "", "0000000000000000000000000000000000000000 capabilities^{}\x00agent=git\n", ""))
		}, want: map[string]string{}, protocol: V0},
		{name: "unauthorized", get: func(w http.ResponseWriter) { w.WriteHeader(http.StatusUnauthorized) }, is: transport.ErrAuthenticationRequired},
		{name: "forbidden", get: func(w http.ResponseWriter) { w.WriteHeader(http.StatusForbidden) }, is: transport.ErrAuthorizationFailed},
		{name: "not found", get: func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) }, is: transport.ErrRepositoryNotFound},
		{name: "not a ref line", get: func(w http.ResponseWriter) {
			io.WriteString(w, pkt("# service=git-upload-pack\n", "", "<html>hello</html>\n", ""))
		}, err: "unexpected line in a ref listing"},
		{name: "v2 without ls-refs", get: func(w http.ResponseWriter) {
			io.WriteString(w, pkt("# service=git-upload-pack\n", "", "version 2\n", "fetch\n", ""))
		}, err: "without ls-refs"},
		{name: "bad pkt-line", get: func(w http.ResponseWriter) { io.WriteString(w, "zzzz") }, err: "empty ref advertisement"},
		{name: "endless advertisement", get: func(w http.ResponseWriter) {
			io.WriteString(w, pkt("# service=git-upload-pack\n", ""))
			line := pkt(hash + " refs/heads/other/x\n")
			for range maxAdvertisement/len(line) + 10 {
				if _, err := io.WriteString(w, line); err != nil {
					return
				}
			}
		}, err: "reading the ref advertisement"},
		{name: "advertisement without its end", get: func(w http.ResponseWriter) {
			io.WriteString(w, pkt("# service=git-upload-pack\n", "", hash+" refs/heads/cells/a\n"))
		}, err: "ended before its end marker"},
		{name: "ls-refs without its end", get: func(w http.ResponseWriter) { io.WriteString(w, v2caps) },
			post: func(w http.ResponseWriter, _ string) { io.WriteString(w, pkt(hash+" refs/heads/cells/a\n")) }, err: "ended before its end marker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Git-Protocol") != "version=2" {
					t.Errorf("%s without Git-Protocol: version=2", r.URL)
				}
				if r.Method == http.MethodGet {
					tt.get(w)
					return
				}
				b, _ := io.ReadAll(r.Body)
				tt.post(w, string(b))
			}))
			defer srv.Close()
			refs, proto, err := List(context.Background(), srv.URL+"/repo.git", nil, "refs/heads/cells/a")
			switch {
			case tt.is != nil:
				if !errors.Is(err, tt.is) {
					t.Fatalf("err = %v, want %v", err, tt.is)
				}
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
			default:
				if err != nil || proto != tt.protocol || fmt.Sprint(refs) != fmt.Sprint(tt.want) {
					t.Fatalf("refs %v over %v, %v; want %v over %v", refs, proto, err, tt.want, tt.protocol)
				}
			}
		})
	}
}
