package fleet

import (
	"math"
	"runtime"
	"strings"
)

// agentFrame is in the stack of every allocation the simulated agents make.
const agentFrame = "github.com/cellsync/cellsync/test/fleet.(*agent)."

// heapShares estimates the in-use heap the simulated agents hold and what the rest of the process
// (the hub, its clients and the harness) holds, from the runtime's heap profile: each sampled
// allocation still in use is counted, scaled for the sampling as pprof does, on the agents' side
// when its stack passes through an agent and on the hub's otherwise. Like a heap profile it is as
// of the last garbage collection.
func heapShares() (hub, agents uint64) {
	var records []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		records = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(records, false); ok {
			records = records[:n]
			break
		}
	}
	rate := float64(runtime.MemProfileRate)
	for _, r := range records {
		objects, bytes := r.InUseObjects(), r.InUseBytes()
		if objects <= 0 || bytes <= 0 {
			continue
		}
		// An allocation of average size s is sampled with probability 1-exp(-s/rate).
		avg := float64(bytes) / float64(objects)
		scaled := uint64(float64(bytes) / (1 - math.Exp(-avg/rate)))
		if inAgent(r.Stack()) {
			agents += scaled
		} else {
			hub += scaled
		}
	}
	return hub, agents
}

func inAgent(stack []uintptr) bool {
	frames := runtime.CallersFrames(stack)
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, agentFrame) {
			return true
		}
		if !more {
			return false
		}
	}
}
