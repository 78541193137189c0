package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Decoding limits. A branch is hostile until proven otherwise: no document may cost more than a
// small, fixed multiple of its bytes, whatever its anchors and aliases say.
const (
	// MaxNodesPerDocument bounds one document's nodes, aliases expanded.
	MaxNodesPerDocument = 100_000
	// MaxDepth bounds the nesting of one document.
	MaxDepth = 64
)

// budget counts decoded nodes across a whole branch.
type budget struct {
	left int
}

func (b *budget) take(n int) error {
	if b.left -= n; b.left < 0 {
		return errors.New("the branch decodes to more values than the agent accepts")
	}
	return nil
}

// DecodeDocuments decodes a YAML (or JSON) stream into plain JSON-compatible values: maps with
// string keys, slices, string, bool, int64, float64 and nil, as Unstructured expects. Aliases are
// expanded against a node budget, nesting is bounded, and duplicate keys are refused.
func DecodeDocuments(data []byte) ([]map[string]any, error) {
	b := &budget{left: MaxBranchNodes}
	return decodeDocuments(data, b)
}

func decodeDocuments(data []byte, b *budget) ([]map[string]any, error) {
	// Refuse before parsing what would parse into too many nodes: every node after the first is
	// introduced by one of these bytes, so twice their count bounds the node count.
	if est := 2*countAny(data, ",:-[{\n") + 2; est > 2*MaxNodesPerDocument {
		return nil, fmt.Errorf("the file has too many values to decode (about %d; at most %d per document)", est/2, MaxNodesPerDocument)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []map[string]any
	for i := 1; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %v", i, err)
		}
		c := &converter{left: MaxNodesPerDocument, budget: b}
		v, err := c.value(&n, 0)
		if err != nil {
			return nil, fmt.Errorf("document %d: %v", i, err)
		}
		if err := b.take(MaxNodesPerDocument - c.left); err != nil {
			return nil, err
		}
		switch m := v.(type) {
		case nil:
			continue // an empty document
		case map[string]any:
			out = append(out, m)
		default:
			return nil, fmt.Errorf("document %d is a %T, not an object", i, v)
		}
	}
}

func countAny(b []byte, chars string) int {
	n := 0
	for _, c := range []byte(chars) {
		n += bytes.Count(b, []byte{c})
	}
	return n
}

type converter struct {
	left   int
	budget *budget
}

func (c *converter) value(n *yaml.Node, depth int) (any, error) {
	if c.left--; c.left < 0 {
		return nil, fmt.Errorf("more than %d values once aliases are expanded (an alias bomb?)", MaxNodesPerDocument)
	}
	if depth > MaxDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", MaxDepth)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return c.value(n.Content[0], depth)
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, fmt.Errorf("line %d: unknown alias", n.Line)
		}
		return c.value(n.Alias, depth+1)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, item := range n.Content {
			v, err := c.value(item, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		return c.mapping(n, depth)
	case yaml.ScalarNode:
		return scalar(n)
	default:
		return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
	}
}

func (c *converter) mapping(n *yaml.Node, depth int) (map[string]any, error) {
	out := make(map[string]any, len(n.Content)/2)
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: a mapping key must be a plain value", k.Line)
		}
		if _, dup := out[k.Value]; dup {
			return nil, fmt.Errorf("line %d: key %q appears twice", k.Line, k.Value)
		}
		val, err := c.value(v, depth+1)
		if err != nil {
			return nil, err
		}
		out[k.Value] = val
	}
	// Merge keys (<<: *base) fill in what the mapping does not set itself.
	for _, m := range merges {
		v, err := c.value(m, depth+1)
		if err != nil {
			return nil, err
		}
		var sources []any
		switch t := v.(type) {
		case map[string]any:
			sources = []any{t}
		case []any:
			sources = t
		default:
			return nil, fmt.Errorf("line %d: a merge key needs a mapping", m.Line)
		}
		for _, s := range sources {
			sm, ok := s.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("line %d: a merge key needs mappings", m.Line)
			}
			for k, v := range sm {
				if _, set := out[k]; !set {
					out[k] = v
				}
			}
		}
	}
	return out, nil
}

// scalar resolves a scalar as YAML 1.2's core schema does (what sigs.k8s.io/yaml yields after
// its JSON round trip): numbers become int64 or float64, timestamps and binaries stay strings.
func scalar(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return nil, fmt.Errorf("line %d: %v", n.Line, err)
		}
		return b, nil
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			return i, nil
		}
		var f float64
		if err := n.Decode(&f); err != nil {
			return nil, fmt.Errorf("line %d: %v", n.Line, err)
		}
		return f, nil
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return nil, fmt.Errorf("line %d: %v", n.Line, err)
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("line %d: %s is not a number JSON can hold", n.Line, n.Value)
		}
		return f, nil
	case "!!str", "!!timestamp", "!!binary":
		return n.Value, nil
	default:
		if strings.HasPrefix(n.Tag, "!!") {
			return nil, fmt.Errorf("line %d: unsupported tag %s", n.Line, n.Tag)
		}
		return n.Value, nil // a local tag (!foo) does not change the value
	}
}
