package hub

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// AppRenders counts the renders of an app that went to Git (one store update over the cell
// branches, whether or not a tree changed), by app. A render that the app's inputs did not call
// for is work the hub did for nothing: a Cell the app is not placed on must cause none.
var AppRenders = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cellsync_hub_app_renders_total",
	Help: "Renders of an app into the cell branches (store updates), by app.",
}, []string{"namespace", "name"})

// RenderedBranches counts the cell branches a render of an app visited, by app: the branches of
// the cells it is placed on and of those it left, not the fleet (except the first render after
// a start, and each resync, which look at every cell branch).
var RenderedBranches = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cellsync_hub_app_render_branches_total",
	Help: "Cell branches visited by renders of an app, by app.",
}, []string{"namespace", "name"})

func init() {
	metrics.Registry.MustRegister(AppRenders, RenderedBranches)
}
