package rollout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// StatusCells bounds the cells a Rollout's status lists. A rollout over more cells keeps what
// it must remember of each (the cell table: canary, weight, last-known-good commit, stable
// revision, expected commit) in Git instead, and its status points at that commit.
const StatusCells = 1000

// TableShards is how many files a cell table is split into, by a hash of the cell's name: a
// step that touches some cells rewrites only their shards, and no shard nears the hub's
// per-object fetch limit below about a million cells.
const TableShards = 256

// maxTableFile bounds one shard as the hub reads it back.
const maxTableFile = 4 << 20

// tableEntry is what a rollout remembers of one cell between decisions. Everything else in a
// RolloutCell is read from the reports at every decision.
type tableEntry struct {
	Cell           string `json:"cell"`
	Canary         bool   `json:"canary,omitempty"`
	Weight         int32  `json:"weight,omitempty"`
	StableRevision string `json:"stableRevision,omitempty"`
	LastKnownGood  string `json:"lastKnownGood,omitempty"`
	ExpectedCommit string `json:"expectedCommit,omitempty"`
	// ExpectedSince is RFC 3339, as in the API.
	ExpectedSince string `json:"expectedSince,omitempty"`
	AnalysisID    string `json:"analysisID,omitempty"`
}

func entryOf(c hubv1alpha1.RolloutCell) (tableEntry, bool) {
	e := tableEntry{Cell: c.Cell, Canary: c.Canary, Weight: c.Weight, StableRevision: c.StableRevision,
		LastKnownGood: c.LastKnownGood, ExpectedCommit: c.ExpectedCommit}
	if c.ExpectedSince != nil {
		b, _ := c.ExpectedSince.MarshalJSON()
		e.ExpectedSince = strings.Trim(string(b), `"`)
	}
	if c.Analysis != nil {
		e.AnalysisID = c.Analysis.ID
	}
	return e, e != tableEntry{Cell: c.Cell}
}

// Table is the part of a rollout's cell table that must outlive a decision, encoded as shard
// files by path, and how many cells it holds: only cells the rollout holds or waits for
// appear. Nil when there is nothing to remember.
func Table(cells []hubv1alpha1.RolloutCell) (map[string][]byte, int) {
	shards := map[string][]tableEntry{}
	n := 0
	for _, c := range cells {
		if e, ok := entryOf(c); ok {
			p := shardOf(c.Cell)
			shards[p] = append(shards[p], e)
			n++
		}
	}
	if len(shards) == 0 {
		return nil, 0
	}
	out := make(map[string][]byte, len(shards))
	for p, es := range shards {
		sort.Slice(es, func(i, j int) bool { return es[i].Cell < es[j].Cell })
		var b bytes.Buffer
		for _, e := range es {
			line, _ := json.Marshal(e)
			b.Write(line)
			b.WriteByte('\n')
		}
		out[p] = b.Bytes()
	}
	return out, n
}

// TableDir is the directory of a cell table's shards in its branch.
const TableDir = "cells"

func shardOf(cell string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(cell))
	return fmt.Sprintf("%s/%02x.jsonl", TableDir, h.Sum32()%TableShards)
}

// TableError says a cell table read back from Git is not one the hub wrote.
type TableError struct{ Message string }

func (e *TableError) Error() string { return e.Message }

// Remember folds a cell table read back from Git into a status: each entry's fields replace
// the cell's in the list (appending the cells the status did not list). The files are checked
// as hostile input: the shard names, sizes, one entry per cell in its own shard, and commit
// hashes where commits belong; nothing is folded in unless all of it is sound.
func Remember(st *hubv1alpha1.RolloutStatus, files map[string][]byte) error {
	var entries []tableEntry
	seen := map[string]bool{}
	for p, b := range files {
		if !strings.HasPrefix(p, TableDir+"/") {
			continue
		}
		if len(b) > maxTableFile {
			return &TableError{Message: fmt.Sprintf("%s is %d bytes, above the limit of %d", p, len(b), maxTableFile)}
		}
		for n, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			var e tableEntry
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&e); err != nil {
				return &TableError{Message: fmt.Sprintf("%s line %d: %v", p, n+1, err)}
			}
			if err := e.check(p, seen); err != nil {
				return &TableError{Message: fmt.Sprintf("%s line %d: %v", p, n+1, err)}
			}
			entries = append(entries, e)
		}
	}
	index := make(map[string]int, len(st.Cells))
	for i, c := range st.Cells {
		index[c.Cell] = i
	}
	for _, e := range entries {
		i, ok := index[e.Cell]
		if !ok {
			st.Cells = append(st.Cells, hubv1alpha1.RolloutCell{Cell: e.Cell})
			i = len(st.Cells) - 1
		}
		c := &st.Cells[i]
		c.Canary, c.Weight, c.StableRevision, c.LastKnownGood, c.ExpectedCommit = e.Canary, e.Weight, e.StableRevision, e.LastKnownGood, e.ExpectedCommit
		c.ExpectedSince = nil
		if e.ExpectedSince != "" {
			c.ExpectedSince = &metav1.Time{}
			_ = c.ExpectedSince.UnmarshalJSON([]byte(`"` + e.ExpectedSince + `"`))
		}
		// A listed cell keeps the verdicts the status shows for the same analysis; the others
		// start again from Running, and the next judgement fills them in.
		switch {
		case e.AnalysisID == "":
			c.Analysis = nil
		case c.Analysis == nil || c.Analysis.ID != e.AnalysisID:
			c.Analysis = &hubv1alpha1.CellAnalysis{ID: e.AnalysisID, Phase: hubv1alpha1.AnalysisRunning}
		}
	}
	sort.Slice(st.Cells, func(i, j int) bool { return st.Cells[i].Cell < st.Cells[j].Cell })
	return nil
}

func (e tableEntry) check(shard string, seen map[string]bool) error {
	if errs := validation.IsDNS1123Label(e.Cell); len(errs) > 0 {
		return fmt.Errorf("cell %q: %s", e.Cell, strings.Join(errs, "; "))
	}
	if seen[e.Cell] {
		return fmt.Errorf("cell %s appears twice", e.Cell)
	}
	seen[e.Cell] = true
	if shardOf(e.Cell) != shard {
		return fmt.Errorf("cell %s belongs in %s", e.Cell, shardOf(e.Cell))
	}
	if e.Weight < 0 || e.Weight > 100 {
		return fmt.Errorf("cell %s: weight %d is outside 0-100", e.Cell, e.Weight)
	}
	if e.LastKnownGood != "" && e.LastKnownGood != LastKnownGoodNone && !isCommit(e.LastKnownGood) {
		return fmt.Errorf("cell %s: last-known-good %q is not a commit hash", e.Cell, e.LastKnownGood)
	}
	if e.ExpectedCommit != "" && !isCommit(e.ExpectedCommit) {
		return fmt.Errorf("cell %s: expected commit %q is not a commit hash", e.Cell, e.ExpectedCommit)
	}
	if e.ExpectedSince != "" {
		var t metav1.Time
		if err := t.UnmarshalJSON([]byte(`"` + e.ExpectedSince + `"`)); err != nil {
			return fmt.Errorf("cell %s: expectedSince %q: %v", e.Cell, e.ExpectedSince, err)
		}
	}
	for _, s := range []string{e.StableRevision, e.AnalysisID} {
		if len(s) > 253 {
			return fmt.Errorf("cell %s: a name of %d characters", e.Cell, len(s))
		}
	}
	return nil
}

func isCommit(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
