package gitrefs

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// What a server answers to a v2 fetch decides what reaches the pack writer: the pack's bytes
// only (band 1), the shallow commits named, and a clear error for a refusal, a failure in the
// middle, an answer with no pack, or one that never ends its sections.
func TestFetch(t *testing.T) {
	band := func(b byte, s string) string { return pkt(string([]byte{b}) + s) }
	endless := strings.Repeat(pkt("acknowledgments\n"), 2000)
	for _, tt := range []struct {
		name, answer, pack, err string
		shallow                 int
	}{
		{"a pack after shallow-info", pkt("shallow-info\n", "shallow "+hash+"\n") + "0001" + pkt("packfile\n") + band(2, "counting\n") + band(1, "PACK") + band(1, "data") + "0000", "PACKdata", "", 1},
		{"a pack alone", pkt("packfile\n") + band(1, "PACK") + "0000", "PACK", "", 0},
		{"refused", pkt("ERR upload-pack: not our ref " + hash + "\n"), "", "refused the fetch: upload-pack: not our ref", 0},
		{"failed in the middle", pkt("packfile\n") + band(1, "PA") + band(3, "out of memory\n") + "0000", "PA", "failed the fetch: out of memory", 0},
		{"cut off", pkt("packfile\n") + band(1, "PACK"), "PACK", "unexpected EOF", 0},
		{"no pack", pkt("shallow-info\n") + "0000", "", "ended before its pack", 0},
		{"sections that never end", endless, "", "has no pack after 1025 lines", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var asked string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b := new(bytes.Buffer)
				_, _ = b.ReadFrom(r.Body)
				asked = b.String()
				_, _ = w.Write([]byte(tt.answer))
			}))
			defer srv.Close()
			var pack bytes.Buffer
			shallow, err := Fetch(context.Background(), srv.URL, nil, hash, &pack)
			if !strings.Contains(asked, "want "+hash) || !strings.Contains(asked, "deepen 1") || !strings.HasPrefix(asked, "0012command=fetch\n") {
				t.Fatalf("the request was %q", asked)
			}
			if pack.String() != tt.pack {
				t.Errorf("pack %q, want %q", pack.String(), tt.pack)
			}
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want it to say %q", err, tt.err)
			}
			if len(shallow) != tt.shallow {
				t.Errorf("%d shallow commits, want %d", len(shallow), tt.shallow)
			}
		})
	}
	if _, err := Fetch(context.Background(), "http://127.0.0.1:1", nil, "not-a-hash", &bytes.Buffer{}); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("a want that is no hash must be refused before any request, got %v", err)
	}
}
