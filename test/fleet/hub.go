package fleet

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"

	"github.com/cellsync/cellsync/test/testenv"
)

// hubProcess is the hub as shipped: its binary, run as its ServiceAccount under the shipped
// RBAC, in a process of its own, so that its CPU and memory are its own and not the simulated
// agents'. The harness reads its metrics endpoint.
type hubProcess struct {
	p       *testenv.Process
	metrics string
	pprof   string
}

// startHub runs the hub binary against the envtest apiserver with the fleet's flags.
func startHub(cfg *rest.Config, dir, repoURL string, o Options) (*hubProcess, error) {
	metricsPort, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	pprofPort, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	addr, pprofAddr := fmt.Sprintf("127.0.0.1:%d", metricsPort), fmt.Sprintf("127.0.0.1:%d", pprofPort)
	p, err := testenv.StartAsServiceAccount(cfg, "config/rbac", hubNS, "cellsync-hub", "./hub/cmd/hub", filepath.Join(dir, "hub.log"),
		"--namespace="+hubNS, "--git-url="+repoURL, "--git-secret=git", "--workers=4",
		"--status-interval="+o.StatusInterval.String(), "--stale-after="+o.StaleAfter.String(),
		"--leader-elect=false", "--metrics-bind-address="+addr, "--health-probe-bind-address=0", "--pprof-bind-address="+pprofAddr)
	if err != nil {
		return nil, fmt.Errorf("starting the hub: %w", err)
	}
	return &hubProcess{p: p, metrics: "http://" + addr + "/metrics", pprof: "http://" + pprofAddr + "/debug/pprof/"}, nil
}

// sample reads the hub's metrics: its heap (go_memstats_heap_alloc_bytes) and the duration of
// its intake's last poll.
func (h *hubProcess) sample() (heap float64, lastPoll time.Duration, err error) {
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(h.metrics)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		return 0, 0, err
	}
	value := func(name string) float64 {
		if f := families[name]; f != nil && len(f.GetMetric()) > 0 {
			if g := f.GetMetric()[0].GetGauge(); g != nil {
				return g.GetValue()
			}
		}
		return 0
	}
	return value("go_memstats_heap_alloc_bytes"), time.Duration(value("cellsync_hub_intake_last_poll_duration_seconds") * float64(time.Second)), nil
}

// cpu is the hub process's CPU time so far.
func (h *hubProcess) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.p.Cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses: utime and stime are the
	// 12th and 13th of them, in clock ticks (100 a second on Linux).
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// peakRSS is the hub process's peak resident memory (VmHWM).
func (h *hubProcess) peakRSS() uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.p.Cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// logTail is the end of the hub's log, for a failure message.
func (h *hubProcess) logTail() string {
	out := h.p.Output()
	if len(out) > 4000 {
		out = out[len(out)-4000:]
	}
	return out
}

// saveHeapProfile writes the hub's heap profile to $CELLSYNC_FLEET_HEAP_PROFILE, when set: the
// harness calls it at each new peak of the hub's heap, so the file holds the profile nearest the
// highest. `go tool pprof -sample_index=inuse_space -top FILE` reads it.
func (h *hubProcess) saveHeapProfile() {
	path := os.Getenv("CELLSYNC_FLEET_HEAP_PROFILE")
	if path == "" {
		return
	}
	c := http.Client{Timeout: 30 * time.Second}
	res, err := c.Get(h.pprof + "heap")
	if err != nil {
		return
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode == http.StatusOK {
		_ = os.WriteFile(path, b, 0o600)
	}
}
