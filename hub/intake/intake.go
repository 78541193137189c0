// Package intake brings the agents' reports into the hub: it lists the status/<cell> refs in one
// call, fetches only those that moved, keeps the parsed reports in memory, and tells the Cell
// and ServerlessApp controllers which objects to look at again. It never writes status itself.
package intake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/yaml"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/hub/gitstore"
)

// Entry is the last report read for a cell.
type Entry struct {
	// Commit is the status ref's commit the report was read from.
	Commit string
	Report agentv1alpha1.StatusReport
	// Seen is when the hub, on its own clock, first read the report's heartbeat: staleness is
	// judged from it, never from the agent's clock.
	Seen time.Time
}

// Rejection is a report the hub would not trust: unsigned, or signed by a key the Cell does
// not list. The cell's last trusted report stays in force.
type Rejection struct {
	Commit  string
	Reason  string
	Message string
}

// Reports is the shared, in-memory view of every cell's last report.
type Reports struct {
	mu       sync.RWMutex
	byCell   map[string]Entry
	rejected map[string]Rejection
	// polledAt is when the last poll that read every status ref completed (the hub's clock).
	polledAt time.Time
}

// PolledAt is when the intake last completed a poll of every status ref, on the hub's clock:
// every staleness judgement is made at this time, so a hub that polls late never sees a cell
// as stale because of its own delay, and every controller judges a cell alike.
func (r *Reports) PolledAt() time.Time {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.polledAt
}

// Polled records a completed poll.
func (r *Reports) Polled(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.polledAt = at
}

// each calls f for every cell's report.
func (r *Reports) each(f func(cell string, e Entry)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for cell, e := range r.byCell {
		f(cell, e)
	}
}

// NewReports returns an empty view.
func NewReports() *Reports {
	return &Reports{byCell: map[string]Entry{}, rejected: map[string]Rejection{}}
}

// Rejected returns the cell's last untrusted report, while no trusted one came after it.
func (r *Reports) Rejected(cell string) (Rejection, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rej, ok := r.rejected[cell]
	return rej, ok
}

func (r *Reports) reject(cell string, rej Rejection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejected[cell] = rej
}

func (r *Reports) clearRejection(cell string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.rejected, cell)
}

// Get returns the cell's last report.
func (r *Reports) Get(cell string) (Entry, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.byCell[cell]
	return e, ok
}

// Put records a cell's report and returns the one it replaces.
func (r *Reports) Put(cell string, e Entry) (previous Entry, had bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	previous, had = r.byCell[cell]
	r.byCell[cell] = e
	delete(r.rejected, cell)
	return previous, had
}

// Intake polls the status refs.
type Intake struct {
	// Store reads the status refs of the hub's own repository. It should be a store of its own,
	// not the one that writes cell branches: reads then never wait on a write's lock.
	Store *gitstore.Store
	// StatusRepos names the other repositories cells report to (a Cell's spec.statusURL), each
	// with its cells; nil means none. A cell's report is read only from its own repository.
	StatusRepos func(ctx context.Context) (map[string][]string, error)
	// StoreFor opens the store that reads a status repository.
	StoreFor func(url string) (*gitstore.Store, error)

	Reports  *Reports
	Interval time.Duration
	// StaleAfter is the hub's heartbeat threshold. A report that only renews a fresh heartbeat
	// tells the apps nothing new, so it wakes only its Cell; 0 wakes the apps on every report.
	StaleAfter time.Duration
	// Cells, Apps and Rollouts receive the objects whose status may have changed (a Rollout
	// has its app's name).
	Cells    chan event.GenericEvent
	Apps     chan event.GenericEvent
	Rollouts chan event.GenericEvent
	// Keys returns the armored public keys a cell's reports must be signed with (its Cell's
	// spec.reportKeys); none means reports are taken unsigned.
	Keys func(ctx context.Context, cell string) ([]string, error)
	// Now is the hub's clock (time.Now when nil).
	Now func() time.Time

	// checked is the status commit and keys each cell was last judged with.
	checked map[string]string
	// stale is each cell's staleness at the last poll.
	stale map[string]bool
	// woken are the cells this poll has woken already.
	woken map[string]bool
	// stores are the open stores of the status repositories, by URL.
	stores map[string]*gitstore.Store
}

// source is one repository a poll reads reports from, and the cells it reads there.
type source struct {
	url   string
	store *gitstore.Store
	// mine says whether a cell reports to this repository.
	mine func(cell string) bool
	// cells are a status repository's cells (none for the hub's own).
	cells []string
	// err says why the repository cannot be opened (a URL with a password in it, say).
	err error
}

// sources are the repositories to read this poll: the hub's own for every cell that reports
// there, and each status repository for its cells.
func (i *Intake) sources(ctx context.Context) ([]source, error) {
	var repos map[string][]string
	if i.StatusRepos != nil {
		var err error
		if repos, err = i.StatusRepos(ctx); err != nil {
			return nil, err
		}
	}
	if i.stores == nil {
		i.stores = map[string]*gitstore.Store{}
	}
	elsewhere := map[string]bool{}
	var out []source
	for _, url := range slices.Sorted(maps.Keys(repos)) {
		cells := map[string]bool{}
		for _, c := range repos[url] {
			cells[c], elsewhere[c] = true, true
		}
		src := source{url: url, store: i.stores[url], mine: func(c string) bool { return cells[c] }, cells: repos[url]}
		if src.store == nil {
			if src.store, src.err = i.StoreFor(url); src.err == nil {
				i.stores[url] = src.store
			}
		}
		out = append(out, src)
	}
	for url := range i.stores {
		if _, ok := repos[url]; !ok {
			delete(i.stores, url) // no cell reports there any more
		}
	}
	return append([]source{{store: i.Store, mine: func(c string) bool { return !elsewhere[c] }}}, out...), nil
}

// New returns an intake with buffered event channels.
func New(store *gitstore.Store, reports *Reports, interval time.Duration) *Intake {
	return &Intake{Store: store, Reports: reports, Interval: interval,
		Cells: make(chan event.GenericEvent, 1024), Apps: make(chan event.GenericEvent, 1024),
		Rollouts: make(chan event.GenericEvent, 1024)}
}

// NeedLeaderElection: only the leader reads reports, as only it writes status.
func (i *Intake) NeedLeaderElection() bool { return true }

// Start polls until ctx ends.
func (i *Intake) Start(ctx context.Context) error {
	t := time.NewTicker(i.Interval)
	defer t.Stop()
	for {
		i.Poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Poll reads the reports that changed since the last poll, and wakes what they touch: a report
// wakes its Cell, and the apps and rollouts it names unless it only renews the heartbeat; a cell
// whose staleness flips at this poll wakes the same.
func (i *Intake) Poll(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx).WithName("intake")
	if i.checked == nil {
		i.checked, i.stale = map[string]string{}, map[string]bool{}
	}
	now, start := i.now(), time.Now()
	i.woken = map[string]bool{}
	sources, err := i.sources(ctx)
	if err != nil {
		log.Info("Failed to list the status repositories; retrying at the next poll", "error", err.Error())
		return
	}
	defer observe(start, len(sources))
	// The repositories are listed, and what moved fetched, a few at a time; what was read is
	// then taken in order, so that a poll judges as one reader would.
	reads := make([]moved, len(sources))
	var wg sync.WaitGroup
	slots := make(chan struct{}, parallelReads)
	for k, src := range sources {
		if src.err != nil {
			reads[k].err = src.err
			continue
		}
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			reads[k] = i.readMoved(ctx, src)
		}()
	}
	wg.Wait()
	for k, src := range sources {
		err := reads[k].err
		if err == nil {
			i.take(ctx, reads[k], now)
		}
		if src.url == "" && err != nil {
			// The hub's own repository: staleness stays as the last complete poll judged it,
			// the hub cannot tell.
			log.Info("Failed to read status reports; retrying at the next poll", "error", err.Error())
			return
		}
		if src.url != "" {
			// A status repository that cannot be read holds up no other cell: its cells say
			// why no report of theirs is read, and turn stale like any cell not heard from.
			i.unreadable(src, err)
		}
	}
	i.Reports.Polled(now)
	i.Reports.each(func(cell string, e Entry) {
		stale := View(e, true, now, i.StaleAfter).Stale
		if stale != i.stale[cell] {
			i.stale[cell] = stale
			i.wakeCell(cell)
			i.wakeApps(e.Report)
		}
	})
}

// moved is what one repository's listing found moved: the files read, and the keys each
// cell's was judged with.
type moved struct {
	files  map[string]gitstore.BranchFile
	keysOf map[string][]string
	err    error
}

// readMoved lists one repository and reads the reports that moved in it: a head already judged
// (with the cell's keys of now) and a cell that reports elsewhere are neither fetched nor read.
// Polls run it for several repositories at once: it only reads what the intake holds.
func (i *Intake) readMoved(ctx context.Context, src source) moved {
	log := ctrl.LoggerFrom(ctx).WithName("intake")
	keysOf := map[string][]string{}
	known := func(branch, commit string) bool {
		cell := strings.TrimPrefix(branch, agentv1alpha1.StatusRefPrefix)
		if !src.mine(cell) {
			return true
		}
		keys, err := i.keys(ctx, cell)
		if err != nil {
			log.Info("Failed to read the cell's report keys; retrying at the next poll", "cell", cell, "error", err.Error())
			return true
		}
		keysOf[cell] = keys
		return i.checked[cell] == judged(commit, keys)
	}
	files, err := src.store.ReadMoved(ctx, agentv1alpha1.StatusRefPrefix, agentv1alpha1.StatusReportFile, known)
	return moved{files: files, keysOf: keysOf, err: err}
}

// take judges the reports one repository's listing read, and wakes what they touch.
func (i *Intake) take(ctx context.Context, m moved, now time.Time) {
	log := ctrl.LoggerFrom(ctx).WithName("intake")
	files, keysOf := m.files, m.keysOf
	for branch, f := range files {
		cell := strings.TrimPrefix(branch, agentv1alpha1.StatusRefPrefix)
		if f.Refused != "" {
			// Too large to fetch: no report of it is read; every other cell's is, as usual.
			i.refuse(cell, f)
			continue
		}
		keys := keysOf[cell]
		i.checked[cell] = judged(f.Commit, keys)
		if len(keys) > 0 {
			if _, err := f.VerifySignature(keys); err != nil {
				i.Reports.reject(cell, rejection(f.Commit, err))
				log.Info("Ignoring an untrusted status report", "ref", branch, "error", err.Error())
				i.wakeCell(cell)
				continue
			}
		}
		var rep agentv1alpha1.StatusReport
		if err := yaml.Unmarshal(f.Content, &rep); err != nil || rep.Kind != agentv1alpha1.StatusReportKind {
			log.Info("Ignoring an unreadable status report", "ref", branch, "error", errString(err))
			continue
		}
		if rep.Cell != cell {
			log.Info("Ignoring a status report for another cell", "ref", branch, "cell", rep.Cell)
			continue
		}
		prev, had := i.Reports.Get(cell)
		seen := now
		if had && !rep.HeartbeatTime.After(prev.Report.HeartbeatTime.Time) {
			seen = prev.Seen // no newer heartbeat: the cell is no fresher than before
		}
		i.Reports.Put(cell, Entry{Commit: f.Commit, Report: rep, Seen: seen})
		i.wakeCell(cell)
		if had && i.heartbeatOnly(prev.Report, rep) {
			continue
		}
		i.wakeApps(prev.Report, rep)
	}
}

// unreadable names, on each cell of a status repository, that the repository cannot be read
// (err), or clears that once it can.
func (i *Intake) unreadable(src source, err error) {
	for _, cell := range src.cells {
		rej, had := i.Reports.Rejected(cell)
		switch {
		case err != nil:
			msg := fmt.Sprintf("Its status repository %s cannot be read, so no report of the cell is: %v", gitauth.RedactURL(src.url), err)
			if !had || rej.Message != msg {
				i.Reports.reject(cell, Rejection{Reason: hubv1alpha1.ReasonGitUnavailable, Message: msg})
				i.wakeCell(cell)
			}
		case had && rej.Reason == hubv1alpha1.ReasonGitUnavailable:
			i.Reports.clearRejection(cell)
			i.wakeCell(cell)
		}
	}
}

// refuse names a status ref whose head the store refused for its size, once per head.
func (i *Intake) refuse(cell string, f gitstore.BranchFile) {
	if rej, ok := i.Reports.Rejected(cell); ok && rej.Commit == f.Commit {
		return
	}
	i.Reports.reject(cell, Rejection{Commit: f.Commit, Reason: hubv1alpha1.ReasonLimitExceeded,
		Message: fmt.Sprintf("Report %s on the status ref was refused, nothing of it was read: %s", short(f.Commit), f.Refused)})
	i.wakeCell(cell)
}

func (i *Intake) wakeCell(cell string) {
	if i.woken[cell] {
		return
	}
	i.woken[cell] = true
	i.Cells <- event.GenericEvent{Object: &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: cell}}}
}

// wakeApps wakes the apps, and their rollouts, that the reports name.
func (i *Intake) wakeApps(reports ...agentv1alpha1.StatusReport) {
	for _, key := range appsOf(reports...) {
		i.Apps <- event.GenericEvent{Object: &hubv1alpha1.ServerlessApp{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
		i.Rollouts <- event.GenericEvent{Object: &hubv1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
	}
}

// judged is what a report was judged with: its commit and (a digest of) the keys it had to be
// signed with. The intake keeps one per cell: armored keys of a few KB each would make it the
// size of the fleet's keys.
func judged(commit string, keys []string) string {
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
	}
	return commit + "/" + hex.EncodeToString(h.Sum(nil))
}

func (i *Intake) now() time.Time {
	if i.Now == nil {
		return time.Now()
	}
	return i.Now()
}

func (i *Intake) keys(ctx context.Context, cell string) ([]string, error) {
	if i.Keys == nil {
		return nil, nil
	}
	return i.Keys(ctx, cell)
}

func rejection(commit string, err error) Rejection {
	if errors.Is(err, gitauth.ErrUnsigned) {
		return Rejection{Commit: commit, Reason: hubv1alpha1.ReasonUnsignedReport,
			Message: fmt.Sprintf("Report %s on the status ref is not signed, and the Cell lists reportKeys; it was ignored", short(commit))}
	}
	return Rejection{Commit: commit, Reason: hubv1alpha1.ReasonUntrustedReport,
		Message: fmt.Sprintf("Report %s on the status ref is not signed by a key in spec.reportKeys; it was ignored", short(commit))}
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// heartbeatOnly reports whether next only renews prev's heartbeat. Staleness flips are woken
// at the poll that judges them, so a renewal tells the apps nothing.
func (i *Intake) heartbeatOnly(prev, next agentv1alpha1.StatusReport) bool {
	if i.StaleAfter <= 0 {
		return false
	}
	prev.HeartbeatTime, next.HeartbeatTime = metav1.Time{}, metav1.Time{}
	return equality.Semantic.DeepEqual(prev, next)
}

// appsOf names the hub apps either report mentions.
func appsOf(reports ...agentv1alpha1.StatusReport) []client.ObjectKey {
	seen := map[client.ObjectKey]bool{}
	var out []client.ObjectKey
	for _, r := range reports {
		for _, a := range r.Apps {
			k := client.ObjectKey{Namespace: a.AppNamespace, Name: a.App}
			if a.App != "" && !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

func errString(err error) string {
	if err == nil {
		return "not a StatusReport"
	}
	return err.Error()
}
