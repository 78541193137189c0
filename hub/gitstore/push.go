package gitstore

import (
	"context"
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"

	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/controllers/gitrefs"
)

// errStale says the server's branch heads moved since we read them.
type errStale struct{ ref plumbing.ReferenceName }

func (e errStale) Error() string {
	return fmt.Sprintf("non-fast-forward update: %s moved on the server (stale info)", e.ref)
}

// push updates the refs in one receive-pack session with a pack of objs: atomic when the server
// supports it, and only if every ref is still where the commands expect it. It takes no lock.
// The pack is written as it is sent, never held whole: over HTTP(S) the request streams
// (gitrefs.ReceivePack), and go-git's other transports stream it already.
func (s *Store) push(ctx context.Context, auth transport.AuthMethod, cmds []*packp.Command, objs []plumbing.EncodedObject) error {
	ep, err := transport.NewEndpoint(s.opts.URL)
	if err != nil {
		return &ConfigError{Err: fmt.Errorf("invalid git URL %q: %w", gitauth.RedactURL(s.opts.URL), err)}
	}
	cl, err := client.NewClient(ep)
	if err != nil {
		return &ConfigError{Err: err}
	}
	sess, err := cl.NewReceivePackSession(ep, auth)
	if err != nil {
		return err
	}
	defer func() { _ = sess.Close() }()
	adv, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		return err
	}
	refs, err := adv.AllReferences()
	if err != nil {
		return err
	}
	for _, c := range cmds {
		cur := plumbing.ZeroHash
		if r, ok := refs[c.Name]; ok {
			cur = r.Hash()
		}
		if cur != c.Old {
			return errStale{ref: c.Name}
		}
	}
	req := packp.NewReferenceUpdateRequestFromCapabilities(adv.Capabilities)
	if adv.Capabilities.Supports(capability.Atomic) {
		_ = req.Capabilities.Set(capability.Atomic)
	}
	req.Commands = cmds
	pack, w := io.Pipe()
	go func() { _ = w.CloseWithError(writePack(w, objs)) }()
	defer func() { _ = pack.Close() }() // ends the writer when the push ends before the pack
	req.Packfile = pack
	var report *packp.ReportStatus
	if gitrefs.Supported(s.opts.URL) {
		report, err = gitrefs.ReceivePack(ctx, s.opts.URL, auth, req)
	} else {
		report, err = sess.ReceivePack(ctx, req)
	}
	if err != nil {
		return err
	}
	if report != nil {
		if err := report.Error(); err != nil {
			return err
		}
	}
	return nil
}
