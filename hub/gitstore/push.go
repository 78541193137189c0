package gitstore

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"

	"github.com/cellsync/cellsync/controllers/gitauth"
)

// errStale says the server's branch heads moved since we read them.
type errStale struct{ ref plumbing.ReferenceName }

func (e errStale) Error() string {
	return fmt.Sprintf("non-fast-forward update: %s moved on the server (stale info)", e.ref)
}

// push updates the refs in one receive-pack session with the given pack: atomic when the server
// supports it, and only if every ref is still where the commands expect it. It takes no lock.
func (s *Store) push(ctx context.Context, auth transport.AuthMethod, cmds []*packp.Command, pack []byte) error {
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
	req.Packfile = io.NopCloser(bytes.NewReader(pack))
	report, err := sess.ReceivePack(ctx, req)
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
