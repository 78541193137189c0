// Command benchtable reads `go test -bench` output on stdin and prints the results as a table,
// next to its target in docs/design.md for each benchmark.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// targets are the performance targets of docs/design.md, by benchmark name.
var targets = map[string]string{
	"BenchmarkFanOut1000Cells":           "< 2 s per change, 1 push",
	"BenchmarkNoopReconcile1000Cells":    "0 commits, 0 pushes",
	"BenchmarkFullRender200Apps100Cells": "< 30 s, < 1 GiB heap",
	"BenchmarkIdlePoll":                  "1 ref listing, no fetch, < 5 ms CPU",
	"BenchmarkApply100KnativeServices":   "< 5 s",
	"BenchmarkAgentRSS100Services":       "< 60 MiB peak RSS, ≤ 1.7 s to 100 Services",
	"BenchmarkPushToStatus":              "< 6 s median (3 cells, 2 s poll)",
	"BenchmarkFleet/1000Cells":           "two-step canary completes; ≤ 1 KB per idle poll, ≤ 8 KB per heartbeat",
	"BenchmarkFleet/10000Cells":          "< 60 s, < 512 MiB heap (the fleet-scale issue's target; CELLSYNC_FLEET_CELLS=10000)",
}

// earlier are figures measured here before a change, printed beside the new ones so a reader
// sees what moved. They are history, labelled as such, never compared against.
var earlier = map[string]string{
	"BenchmarkAgentRSS100Services": "before the hostile-branch work: ~75 MiB RSS, 3.0 s to 100 Services; before the shipped build flags and parallel writes: 70-71 MiB, 0.8-2.5 s (Flux kustomize-controller on the same branch: 118 MiB, 3.4 s)",
}

func main() {
	type row struct{ name, n, time, extra, target, before string }
	var rows []row
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		r := row{name: name, n: f[1], target: targets[name], before: earlier[name]}
		var extra []string
		for i := 2; i+1 < len(f); i += 2 {
			v, unit := f[i], f[i+1]
			if unit == "ns/op" {
				ns, _ := strconv.ParseFloat(v, 64)
				r.time = time.Duration(ns).Round(time.Microsecond).String()
				continue
			}
			if unit == "B/op" {
				b, _ := strconv.ParseFloat(v, 64)
				extra = append(extra, fmt.Sprintf("%.1f MiB alloc/op", b/(1<<20)))
				continue
			}
			extra = append(extra, v+" "+unit)
		}
		r.extra = strings.Join(extra, ", ")
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results on stdin")
		os.Exit(1)
	}
	fmt.Println()
	fmt.Println("| benchmark | runs | time/op | measured | earlier | target |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", strings.TrimPrefix(r.name, "Benchmark"), r.n, r.time, r.extra, r.before, r.target)
	}
}
