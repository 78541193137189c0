package gitstore

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1" //nolint:gosec // Git's pack trailer is SHA-1 by definition.
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/memory"
)

// objects is the hub's clone: every object the store fetched or wrote, in memory, safe for
// concurrent use on its own lock, which is held for map work only. It records the objects the
// store writes (not the ones it fetches), so that a push sends exactly those: go-git's own push
// walks the history of every branch to find what the server lacks, which grows with history;
// the store already knows.
type objects struct {
	mu       sync.RWMutex
	m        *memory.ObjectStorage
	unpushed map[plumbing.Hash]struct{}
	// index caches the flattened tree of commits seen recently.
	index map[plumbing.Hash]flatTree
}

var _ storer.EncodedObjectStorer = (*objects)(nil)

func newObjects() *objects {
	return &objects{m: &memory.NewStorage().ObjectStorage, unpushed: map[plumbing.Hash]struct{}{}, index: map[plumbing.Hash]flatTree{}}
}

func (o *objects) NewEncodedObject() plumbing.EncodedObject { return &plumbing.MemoryObject{} }

// SetEncodedObject stores an object the store wrote: the next push sends it.
func (o *objects) SetEncodedObject(obj plumbing.EncodedObject) (plumbing.Hash, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	h, err := o.m.SetEncodedObject(obj)
	if err == nil {
		o.unpushed[h] = struct{}{}
	}
	return h, err
}

// adopt stores the objects of a fetch: the server has them.
func (o *objects) adopt(from *memory.ObjectStorage) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, obj := range from.Objects {
		_, _ = o.m.SetEncodedObject(obj)
	}
}

func (o *objects) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.m.EncodedObject(t, h)
}

func (o *objects) IterEncodedObjects(t plumbing.ObjectType) (storer.EncodedObjectIter, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var list []plumbing.EncodedObject
	for _, obj := range o.m.Objects {
		if t == plumbing.AnyObject || obj.Type() == t {
			list = append(list, obj)
		}
	}
	return storer.NewEncodedObjectSliceIter(list), nil
}

func (o *objects) HasEncodedObject(h plumbing.Hash) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.m.HasEncodedObject(h)
}

func (o *objects) has(h plumbing.Hash) bool { return o.HasEncodedObject(h) == nil }

func (o *objects) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.m.EncodedObjectSize(h)
}

func (o *objects) AddAlternate(string) error {
	return errors.New("the hub's clone has no alternates")
}

// size is how many objects the clone holds, and how many of them are not pushed yet.
func (o *objects) size() (all, unpushed int) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return len(o.m.Objects), len(o.unpushed)
}

// unpushedObjects takes every unpushed object, in hash order, for a pack: once the push lands,
// pushed drops their hashes. A stored object never changes, so the pack is written after the
// lock is released.
func (o *objects) unpushedObjects() ([]plumbing.Hash, []plumbing.EncodedObject, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	hashes := make([]plumbing.Hash, 0, len(o.unpushed))
	for h := range o.unpushed {
		hashes = append(hashes, h)
	}
	sort.Slice(hashes, func(i, j int) bool { return bytes.Compare(hashes[i][:], hashes[j][:]) < 0 })
	objs := make([]plumbing.EncodedObject, len(hashes))
	for i, h := range hashes {
		obj, err := o.m.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return nil, nil, fmt.Errorf("failed to read object %s for the push: %w", h, err)
		}
		objs[i] = obj
	}
	return hashes, objs, nil
}

// writePack writes a version 2 packfile of objs to w, undeltified (the objects are small YAML
// files and trees, and a fast zlib level keeps the cost per object low). It streams: what it
// holds at a time is one object's compression, whatever the size of the pack.
func writePack(w io.Writer, objs []plumbing.EncodedObject) error {
	sum := sha1.New() //nolint:gosec // see import
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 64<<10)
	var hdr [12]byte
	copy(hdr[:4], "PACK")
	binary.BigEndian.PutUint32(hdr[4:8], 2)
	binary.BigEndian.PutUint32(hdr[8:12], uint32(len(objs)))
	_, _ = bw.Write(hdr[:])
	zw, _ := zlib.NewWriterLevel(nil, zlib.BestSpeed)
	for _, obj := range objs {
		if _, err := bw.Write(objectHeader(obj.Type(), obj.Size())); err != nil {
			return err
		}
		r, err := obj.Reader()
		if err != nil {
			return err
		}
		zw.Reset(bw)
		_, err = io.Copy(zw, r)
		_ = r.Close()
		if err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(sum.Sum(nil))
	return err
}

// pushed drops objects the server now has from the unpushed set.
func (o *objects) pushed(hashes []plumbing.Hash) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, h := range hashes {
		delete(o.unpushed, h)
	}
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
