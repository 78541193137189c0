package status

import (
	"fmt"
	"testing"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/placement"
)

// The app's counters cover every placed cell, though its list of cells is bounded: an app on
// 300 cells counts 300 updated and ready, and lists 256.
func TestAppCountsEveryCell(t *testing.T) {
	app := &hubv1alpha1.ServerlessApp{}
	app.Status.Revision = "web-2"
	res := &placement.Result{}
	var cells []hubv1alpha1.CellAppStatus
	for i := range 300 {
		name := fmt.Sprintf("cell-%03d", i)
		res.Cells = append(res.Cells, &hubv1alpha1.Cell{})
		c := hubv1alpha1.CellAppStatus{Cell: name, DesiredRevision: "web-2", Revision: "web-2", Ready: i != 299}
		if i == 298 {
			c.Revision = "web-1" // still on the old revision, ready
		}
		cells = append(cells, c)
	}
	App(app, res, cells)
	if app.Status.UpdatedCells != 299 || app.Status.RolledOutCells != 298 || app.Status.ReadyCells != 299 || len(app.Status.CellStatuses) != hubv1alpha1.MaxStatusCells {
		t.Fatalf("updated %d, rolled out %d, ready %d, listed %d", app.Status.UpdatedCells, app.Status.RolledOutCells, app.Status.ReadyCells, len(app.Status.CellStatuses))
	}
}
