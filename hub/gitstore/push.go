package gitstore

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1" //nolint:gosec // Git's pack trailer is SHA-1 by definition.
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
)

// recorder wraps the object storage and remembers every object the store writes, so that a
// push sends exactly those. go-git's own push walks the history of every branch to find what the
// server lacks, which grows with history; the store already knows.
type recorder struct {
	storer.EncodedObjectStorer
	unpushed map[plumbing.Hash]struct{}
}

func (r *recorder) SetEncodedObject(o plumbing.EncodedObject) (plumbing.Hash, error) {
	h, err := r.EncodedObjectStorer.SetEncodedObject(o)
	if err == nil {
		r.unpushed[h] = struct{}{}
	}
	return h, err
}

// errStale says the server's branch heads moved since we read them.
type errStale struct{ ref plumbing.ReferenceName }

func (e errStale) Error() string {
	return fmt.Sprintf("non-fast-forward update: %s moved on the server (stale info)", e.ref)
}

// push updates the refs in one receive-pack session: atomic when the server supports it, and
// only if every ref is still where the commands expect it.
func (s *Store) push(ctx context.Context, auth transport.AuthMethod, cmds []*packp.Command) error {
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
	pack, err := s.encodePack()
	if err != nil {
		return err
	}
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
	s.objects.unpushed = map[plumbing.Hash]struct{}{}
	return nil
}

// encodePack writes a version 2 packfile of every unpushed object, undeltified: the objects
// are small YAML files and trees, and a fast zlib level keeps the cost per object low.
func (s *Store) encodePack() ([]byte, error) {
	hashes := make([]plumbing.Hash, 0, len(s.objects.unpushed))
	for h := range s.objects.unpushed {
		hashes = append(hashes, h)
	}
	sort.Slice(hashes, func(i, j int) bool { return bytes.Compare(hashes[i][:], hashes[j][:]) < 0 })
	var buf bytes.Buffer
	sum := sha1.New() //nolint:gosec // see import
	w := io.MultiWriter(&buf, sum)
	var hdr [12]byte
	copy(hdr[:4], "PACK")
	binary.BigEndian.PutUint32(hdr[4:8], 2)
	binary.BigEndian.PutUint32(hdr[8:12], uint32(len(hashes)))
	_, _ = w.Write(hdr[:])
	zw, _ := zlib.NewWriterLevel(nil, zlib.BestSpeed)
	for _, h := range hashes {
		o, err := s.objects.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return nil, fmt.Errorf("failed to read object %s for the push: %w", h, err)
		}
		_, _ = w.Write(objectHeader(o.Type(), o.Size()))
		r, err := o.Reader()
		if err != nil {
			return nil, err
		}
		zw.Reset(w)
		_, err = io.Copy(zw, r)
		_ = r.Close()
		if err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
	}
	buf.Write(sum.Sum(nil))
	return buf.Bytes(), nil
}

// objectHeader is a pack entry's type and size: 3 bits of type and 4 of size in the first byte,
// then 7 bits of size per byte while the high bit is set.
func objectHeader(t plumbing.ObjectType, size int64) []byte {
	b := byte(t)<<4 | byte(size&0x0f)
	size >>= 4
	out := make([]byte, 0, 10)
	for size > 0 {
		out = append(out, b|0x80)
		b = byte(size & 0x7f)
		size >>= 7
	}
	return append(out, b)
}
