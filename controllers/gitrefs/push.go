package gitrefs

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

const receivePackRequest = "application/x-git-receive-pack-request"

// maxReport bounds what is read of a push's report: a status line per ref, of a few thousand
// refs, and the server's progress.
const maxReport = 16 << 20

// ReceivePack sends a push (its commands, then its pack, read from req.Packfile) to the server
// over smart HTTP and returns the server's report. The request is streamed: go-git's HTTP
// transport builds the whole request, pack included, in memory before it sends a byte, so a
// push of a large pack held it twice. The caller has read the receive-pack advertisement and set
// req's capabilities from it (packp.NewReferenceUpdateRequestFromCapabilities). Errors are
// go-git's for authentication and missing repositories, so callers classify them as they
// classify go-git's.
func ReceivePack(ctx context.Context, url string, auth transport.AuthMethod, req *packp.ReferenceUpdateRequest) (*packp.ReportStatus, error) {
	body, w := io.Pipe()
	go func() { _ = w.CloseWithError(req.Encode(w)) }()
	// An answer that comes before the request is sent, or a failed request, must not leave the
	// encoder waiting on the pipe.
	defer func() { _ = body.Close() }()
	base := strings.TrimSuffix(url, "/")
	res, err := do(ctx, http.MethodPost, base+"/git-receive-pack", auth, body, receivePackRequest)
	if err != nil {
		return nil, err
	}
	defer drain(res)
	var r io.Reader = io.LimitReader(res.Body, maxReport)
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		r = sideband.NewDemuxer(sideband.Sideband64k, r)
	case req.Capabilities.Supports(capability.Sideband):
		r = sideband.NewDemuxer(sideband.Sideband, r)
	}
	report := packp.NewReportStatus()
	if err := report.Decode(r); err != nil {
		return nil, fmt.Errorf("reading the push's report from %s: %w", base, err)
	}
	return report, report.Error()
}
