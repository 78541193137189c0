package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// RequestsPerSecond is how many requests a second the exporter counts for each revision.
const RequestsPerSecond = 100

// Exporter serves synthetic per-revision request counters in the shape Knative's queue-proxy
// exports them (revision_app_request_count with namespace_name, revision_name and
// response_code_class labels), standing in for a data plane that cannot run here: each revision
// the test names receives RequestsPerSecond requests a second, a given share of them 5xx.
type Exporter struct {
	Namespace string

	mu     sync.Mutex
	srv    *http.Server
	addr   string
	revs   map[string]*revision
	closed bool
}

type revision struct {
	errorRate float64
	since     time.Time
	ok, fail  float64 // counted up to since
}

// StartExporter serves the counters of namespace on 127.0.0.1.
func StartExporter(namespace string) (*Exporter, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &Exporter{Namespace: namespace, revs: map[string]*revision{}, addr: l.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", e.serve)
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.srv.Serve(l) }()
	return e, nil
}

// Target is the exporter's host:port, for a scrape config.
func (e *Exporter) Target() string { return e.addr }

// SetErrorRate makes share (0 to 1) of the revision's requests from now on answer 5xx; a
// revision not named before starts counting now.
func (e *Exporter) SetErrorRate(rev string, share float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	r, ok := e.revs[rev]
	if !ok {
		e.revs[rev] = &revision{errorRate: share, since: now}
		return
	}
	r.advance(now)
	r.errorRate = share
}

func (r *revision) advance(now time.Time) {
	n := now.Sub(r.since).Seconds() * RequestsPerSecond
	r.ok += n * (1 - r.errorRate)
	r.fail += n * r.errorRate
	r.since = now
}

func (e *Exporter) serve(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	names := make([]string, 0, len(e.revs))
	for n := range e.revs {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# TYPE revision_app_request_count counter\n")
	now := time.Now()
	for _, n := range names {
		r := e.revs[n]
		r.advance(now)
		for _, c := range []struct {
			class string
			v     float64
		}{{"2xx", r.ok}, {"5xx", r.fail}} {
			fmt.Fprintf(&b, "revision_app_request_count{namespace_name=%q,revision_name=%q,response_code_class=%q} %g\n", e.Namespace, n, c.class, c.v)
		}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write([]byte(b.String()))
}

// Close stops the exporter.
func (e *Exporter) Close() { _ = e.srv.Close() }

// HasPrometheus says whether Debian's prometheus server is installed (.ci/run installs it).
func HasPrometheus() bool {
	_, err := exec.LookPath("prometheus")
	return err == nil
}

// Prometheus is Debian's prometheus server on 127.0.0.1, scraping targets every second.
type Prometheus struct {
	// Address is the base URL of its HTTP API.
	Address string
	dir     string
	cmd     *exec.Cmd
	done    chan struct{}
}

// StartPrometheus starts a server scraping the targets (host:port) every second, with its
// data and log in a folder of its own, and waits until it is ready.
func StartPrometheus(targets ...string) (*Prometheus, error) {
	if !HasPrometheus() {
		return nil, fmt.Errorf("Debian's prometheus is not installed (apt-get install prometheus; .ci/run does)")
	}
	dir, err := os.MkdirTemp("", "cellsync-prometheus-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	quoted := make([]string, len(targets))
	for i, t := range targets {
		quoted[i] = fmt.Sprintf("%q", t)
	}
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n- job_name: queue-proxy\n  static_configs:\n  - targets: [%s]\n", strings.Join(quoted, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting prometheus: %w", err)
	}
	p := &Prometheus{Address: "http://" + addr, dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.Address+"/-/ready", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.done:
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			return nil, fmt.Errorf("prometheus exited: %s", b)
		case <-ctx.Done():
			p.Stop()
			return nil, fmt.Errorf("prometheus was not ready within 60 s")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops the server (its address then refuses connections) and removes its data.
func (p *Prometheus) Stop() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	_ = os.RemoveAll(p.dir)
}

// CellMetrics is a member's own Prometheus, scraping a synthetic queue-proxy exporter, that the
// member's agent measures canary analyses against.
type CellMetrics struct {
	Exporter   *Exporter
	Prometheus *Prometheus
}

// Stop stops the Prometheus server and the exporter.
func (c *CellMetrics) Stop() {
	c.Prometheus.Stop()
	c.Exporter.Close()
}

// StartCellMetrics gives the member its own Prometheus over a synthetic exporter and points the
// member's agent at it, as the cell's owner would: a merge patch of the CellSync's spec alone,
// since the agent writes the CellSync's status meanwhile.
func (m *Member) StartCellMetrics(ctx context.Context) (*CellMetrics, error) {
	exp, err := StartExporter(WorldCellNamespace)
	if err != nil {
		return nil, err
	}
	prom, err := StartPrometheus(exp.Target())
	if err != nil {
		exp.Close()
		return nil, err
	}
	cm := &CellMetrics{Exporter: exp, Prometheus: prom}
	cs := &agentv1alpha1.CellSync{}
	if err := m.Client.Get(ctx, client.ObjectKey{Namespace: WorldHubNamespace, Name: m.Cell}, cs); err != nil {
		cm.Stop()
		return nil, err
	}
	base := cs.DeepCopy()
	cs.Spec.Analysis = &agentv1alpha1.AnalysisSource{Prometheus: &agentv1alpha1.PrometheusSource{Address: prom.Address}}
	if err := m.Client.Patch(ctx, cs, client.MergeFrom(base)); err != nil {
		cm.Stop()
		return nil, err
	}
	return cm, nil
}
