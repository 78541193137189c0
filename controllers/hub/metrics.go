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

func init() {
	metrics.Registry.MustRegister(AppRenders)
}
