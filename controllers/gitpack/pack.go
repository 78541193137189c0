// Package gitpack bounds what a Git fetch may bring, for the agent (cell branches) and the hub
// (status reports) alike: an incoming pack is spooled to disk and cut off as it streams past a
// byte limit, then read once, object header by object header, with bounded memory, and refused
// whole when it holds too many objects or any object (or delta result) larger than a limit.
// Only a pack within the limits reaches the repository's storage.
package gitpack

import (
	"bufio"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// Limits bound one fetch.
type Limits struct {
	// PackBytes cuts the download off as it streams.
	PackBytes int64
	// ObjectBytes bounds every object, and every object a delta builds.
	ObjectBytes int64
	// Objects bounds the objects of one pack.
	Objects uint32
	// Who and What name the fetching side and what it fetched, in messages ("the agent",
	// "the branch").
	Who, What string
}

// LimitError is a fetch refused for its size; nothing of it was stored.
type LimitError struct{ Message string }

func (e *LimitError) Error() string { return e.Message }

// Writer is the guarded pack writer a storage returns from its PackfileWriter: it spools the
// incoming pack in tmpDir ("" for the system's), and its Close checks the pack against the
// limits and only then stores it into into.
func Writer(into storer.Storer, l Limits, tmpDir string) (io.WriteCloser, error) {
	f, err := os.CreateTemp(tmpDir, "incoming-*.pack")
	if err != nil {
		return nil, err
	}
	return &packGuard{file: f, store: into, limits: l}, nil
}

// packGuard spools the incoming pack to disk, refusing it the moment it grows past the byte
// limit, and on Close checks every object's size before handing the pack to the storage.
type packGuard struct {
	file    *os.File
	store   storer.Storer
	limits  Limits
	written int64
	err     error
}

func (p *packGuard) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.written += int64(len(b)); p.written > p.limits.PackBytes {
		p.err = &LimitError{Message: fmt.Sprintf("the fetch was cut off at %d bytes: %s's pack is larger than the %d bytes %s accepts", p.limits.PackBytes, p.limits.What, p.limits.PackBytes, p.limits.Who)}
		return 0, p.err
	}
	return p.file.Write(b)
}

func (p *packGuard) Close() error {
	defer func() {
		_ = p.file.Close()
		_ = os.Remove(p.file.Name())
	}()
	if p.err != nil {
		return p.err
	}
	if _, err := p.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := checkPack(bufio.NewReaderSize(p.file, 32<<10), p.limits); err != nil {
		return err
	}
	if _, err := p.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	// A storage with a pack writer of its own (on disk) takes the pack as it is; another (in
	// memory) parses it.
	return packfile.UpdateObjectStorage(p.store, p.file)
}

// Object types of the pack format.
const (
	objOfsDelta = 6
	objRefDelta = 7
)

var typeNames = map[byte]string{1: "commit", 2: "tree", 3: "blob", 4: "tag", objOfsDelta: "delta", objRefDelta: "delta"}

// checkPack reads a pack's object headers and inflates each object into nothing, counting:
// no object (or delta result) may be larger than MaxObjectBytes, whatever its compressed size.
func checkPack(r *bufio.Reader, l Limits) error {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("the fetched pack is truncated: %w", err)
	}
	if string(hdr[:4]) != "PACK" {
		return errors.New("the server sent something that is not a Git pack")
	}
	count := binary.BigEndian.Uint32(hdr[8:])
	if count > l.Objects {
		return &LimitError{Message: fmt.Sprintf("%s's pack holds %d objects; %s accepts at most %d", l.What, count, l.Who, l.Objects)}
	}
	for i := uint32(0); i < count; i++ {
		typ, size, err := objectHeader(r)
		if err != nil {
			return err
		}
		if typ == 0 || typ == 5 || typ > objRefDelta {
			return fmt.Errorf("the fetched pack has an object of unknown type %d", typ)
		}
		if size > l.ObjectBytes {
			return &LimitError{Message: fmt.Sprintf("%s holds a %s of %d bytes; %s accepts at most %d bytes per object (refused from its header, nothing of it was read)", l.What, typeNames[typ], size, l.Who, l.ObjectBytes)}
		}
		if err := skipBase(r, typ); err != nil {
			return err
		}
		if err := inflateChecked(r, typ, size, l); err != nil {
			return err
		}
	}
	return nil
}

// objectHeader reads an object's type and inflated size.
func objectHeader(r *bufio.Reader) (byte, int64, error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, 0, fmt.Errorf("the fetched pack is truncated: %w", err)
	}
	typ := (b >> 4) & 7
	size := int64(b & 0x0f)
	shift := uint(4)
	for b&0x80 != 0 {
		if b, err = r.ReadByte(); err != nil {
			return 0, 0, fmt.Errorf("the fetched pack is truncated: %w", err)
		}
		if shift > 56 {
			return 0, 0, errors.New("the fetched pack has an object header that does not end")
		}
		size |= int64(b&0x7f) << shift
		shift += 7
	}
	return typ, size, nil
}

// skipBase skips a delta's base reference.
func skipBase(r *bufio.Reader, typ byte) error {
	switch typ {
	case objRefDelta:
		_, err := r.Discard(20)
		return err
	case objOfsDelta:
		for i := 0; ; i++ {
			b, err := r.ReadByte()
			if err != nil {
				return err
			}
			if b&0x80 == 0 {
				return nil
			}
			if i > 9 {
				return errors.New("the fetched pack has a delta offset that does not end")
			}
		}
	}
	return nil
}

// inflateChecked inflates one object into nothing, and for a delta reads the size of the object
// it makes, which must be within the limit too.
func inflateChecked(r *bufio.Reader, typ byte, size int64, l Limits) error {
	z, err := zlib.NewReader(r)
	if err != nil {
		return fmt.Errorf("the fetched pack has a corrupt object: %w", err)
	}
	defer func() { _ = z.Close() }()
	limited := io.LimitReader(z, size+1)
	if typ == objOfsDelta || typ == objRefDelta {
		br := bufio.NewReader(limited)
		if _, err := binary.ReadUvarint(br); err != nil { // the base's size
			return fmt.Errorf("the fetched pack has a corrupt delta: %w", err)
		}
		target, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("the fetched pack has a corrupt delta: %w", err)
		}
		if target > uint64(l.ObjectBytes) {
			return &LimitError{Message: fmt.Sprintf("%s holds an object of %d bytes (built from a delta); %s accepts at most %d bytes per object", l.What, target, l.Who, l.ObjectBytes)}
		}
		limited = br
	}
	n, err := io.Copy(io.Discard, limited)
	if err != nil {
		return fmt.Errorf("the fetched pack has a corrupt object: %w", err)
	}
	if typ != objOfsDelta && typ != objRefDelta && n != size {
		return fmt.Errorf("the fetched pack has an object whose header says %d bytes but holds %d", size, n)
	}
	return nil
}
