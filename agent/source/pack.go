package source

import (
	"bufio"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/cellsync/cellsync/agent/manifests"
)

// Fetch limits: a pack is cut off as it streams once it passes MaxPackBytes, and refused whole
// when any object in it would inflate past MaxObjectBytes, judged from the object headers.
const (
	MaxPackBytes   = 64 << 20
	MaxObjectBytes = manifests.MaxFileBytes
	maxPackObjects = 4*manifests.MaxFiles + 1000
)

// LimitError is a fetch the agent refused for its size; nothing of it was stored.
type LimitError struct{ Message string }

func (e *LimitError) Error() string { return e.Message }

// guardedStorage is the mirror's storage with a fetch guard in front of its pack writer: a pack
// reaches the mirror only after it was read once, object header by object header, with
// bounded memory, and found within the limits.
type guardedStorage struct {
	*filesystem.Storage
	tmpDir string
}

var _ storer.PackfileWriter = (*guardedStorage)(nil)

func (g *guardedStorage) PackfileWriter() (io.WriteCloser, error) {
	f, err := os.CreateTemp(g.tmpDir, "incoming-*.pack")
	if err != nil {
		return nil, err
	}
	return &packGuard{file: f, store: g.Storage}, nil
}

// packGuard spools the incoming pack to disk, refusing it the moment it grows past
// MaxPackBytes, and on Close checks every object's size before handing the pack to go-git.
type packGuard struct {
	file    *os.File
	store   *filesystem.Storage
	written int64
	err     error
}

func (p *packGuard) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.written += int64(len(b)); p.written > MaxPackBytes {
		p.err = &LimitError{Message: fmt.Sprintf("the fetch was cut off at %d bytes: the branch's pack is larger than the %d bytes the agent accepts", MaxPackBytes, MaxPackBytes)}
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
	if err := checkPack(bufio.NewReaderSize(p.file, 32<<10)); err != nil {
		return err
	}
	if _, err := p.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	w, err := p.store.PackfileWriter()
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, p.file); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

// Object types of the pack format.
const (
	objOfsDelta = 6
	objRefDelta = 7
)

var typeNames = map[byte]string{1: "commit", 2: "tree", 3: "blob", 4: "tag", objOfsDelta: "delta", objRefDelta: "delta"}

// checkPack reads a pack's object headers and inflates each object into nothing, counting:
// no object (or delta result) may be larger than MaxObjectBytes, whatever its compressed size.
func checkPack(r *bufio.Reader) error {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("the fetched pack is truncated: %w", err)
	}
	if string(hdr[:4]) != "PACK" {
		return errors.New("the server sent something that is not a Git pack")
	}
	count := binary.BigEndian.Uint32(hdr[8:])
	if count > maxPackObjects {
		return &LimitError{Message: fmt.Sprintf("the branch's pack holds %d objects; the agent accepts at most %d", count, maxPackObjects)}
	}
	for i := uint32(0); i < count; i++ {
		typ, size, err := objectHeader(r)
		if err != nil {
			return err
		}
		if typ == 0 || typ == 5 || typ > objRefDelta {
			return fmt.Errorf("the fetched pack has an object of unknown type %d", typ)
		}
		if size > MaxObjectBytes {
			return &LimitError{Message: fmt.Sprintf("the branch holds a %s of %d bytes; the agent accepts at most %d bytes per object (refused from its header, nothing of it was read)", typeNames[typ], size, MaxObjectBytes)}
		}
		if err := skipBase(r, typ); err != nil {
			return err
		}
		if err := inflateChecked(r, typ, size); err != nil {
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
func inflateChecked(r *bufio.Reader, typ byte, size int64) error {
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
		if target > MaxObjectBytes {
			return &LimitError{Message: fmt.Sprintf("the branch holds an object of %d bytes (built from a delta); the agent accepts at most %d bytes per object", target, MaxObjectBytes)}
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
