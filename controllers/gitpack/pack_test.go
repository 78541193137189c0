package gitpack

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// packObject writes one pack entry: the type-and-size header, a base reference for deltas, and
// the zlib-compressed body.
func packObject(typ byte, size int, body []byte) []byte {
	var b bytes.Buffer
	c := byte(typ<<4) | byte(size&0x0f)
	size >>= 4
	for size > 0 {
		b.WriteByte(c | 0x80)
		c = byte(size & 0x7f)
		size >>= 7
	}
	b.WriteByte(c)
	if typ == objRefDelta {
		b.Write(make([]byte, 20))
	}
	z := zlib.NewWriter(&b)
	_, _ = z.Write(body)
	_ = z.Close()
	return b.Bytes()
}

func pack(count uint32, objects ...[]byte) *bufio.Reader {
	var b bytes.Buffer
	b.WriteString("PACK")
	_ = binary.Write(&b, binary.BigEndian, uint32(2))
	_ = binary.Write(&b, binary.BigEndian, count)
	for _, o := range objects {
		b.Write(o)
	}
	b.Write(make([]byte, 20)) // the trailer checksum; checkPack does not read it
	return bufio.NewReader(&b)
}

func uvarint(v uint64) []byte { return binary.AppendUvarint(nil, v) }

// The guard judges sizes from headers: a blob whose header says more than the limit is refused
// whatever its compressed bytes hold, and so is a small delta that would build a large object.
func TestCheckPackRefusesFromHeaders(t *testing.T) {
	limits := Limits{PackBytes: 64 << 20, ObjectBytes: 4 << 20, Objects: 41000, Who: "the agent", What: "the branch"}
	small := []byte("apiVersion: v1\n")
	tests := []struct {
		name    string
		pack    *bufio.Reader
		refused string // "" passes
	}{
		{name: "small blob", pack: pack(1, packObject(3, len(small), small))},
		{name: "blob header over the limit", pack: pack(1, packObject(3, int(limits.ObjectBytes)+1, small)), refused: "a blob of 4194305 bytes"},
		{name: "delta building a large object", pack: pack(1, packObject(objRefDelta, 8, append(uvarint(10), uvarint(8<<20)...))), refused: "built from a delta"},
		{name: "too many objects", pack: pack(limits.Objects + 1), refused: "holds 41001 objects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPack(tt.pack, limits)
			var limit *LimitError
			switch {
			case tt.refused == "" && err != nil:
				t.Fatalf("refused a good pack: %v", err)
			case tt.refused != "" && (!errors.As(err, &limit) || !strings.Contains(err.Error(), tt.refused)):
				t.Fatalf("want a LimitError containing %q, got %v", tt.refused, err)
			}
		})
	}
	if err := checkPack(bufio.NewReader(strings.NewReader("NOPE")), limits); err == nil {
		t.Fatal("a truncated stream passed")
	}
}
