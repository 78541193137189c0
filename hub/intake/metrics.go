package intake

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// parallelReads is how many repositories a poll lists (and reads what moved in) at once.
const parallelReads = 4

// PollDuration is how long intake polls take, from the start of the listing of the first
// repository to the last report taken. A poll must fit well inside --status-interval: one that
// does not delays every report by the overrun.
var PollDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
	Name:    "cellsync_hub_intake_poll_duration_seconds",
	Help:    "Duration of the intake's polls of the status repositories.",
	Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
})

// LastPollDuration is the duration of the last poll, in seconds.
var LastPollDuration = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "cellsync_hub_intake_last_poll_duration_seconds",
	Help: "Duration of the intake's last poll of the status repositories.",
})

// PollRepositories is how many repositories the last poll read: the hub's own and each status
// repository a Cell names.
var PollRepositories = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "cellsync_hub_intake_repositories",
	Help: "Repositories the intake's last poll read (the hub's own and the status repositories).",
})

func init() {
	metrics.Registry.MustRegister(PollDuration, LastPollDuration, PollRepositories)
}

func observe(start time.Time, repositories int) {
	d := time.Since(start).Seconds()
	PollDuration.Observe(d)
	LastPollDuration.Set(d)
	PollRepositories.Set(float64(repositories))
}
