// Package analysis measures, in the cell, the canary analysis the hub rendered into the cell's
// branch: PromQL queries against the cell's own Prometheus (the address the cell's owner set on
// the CellSync) and HTTP checks to the app's Services, each measurement judged against its
// threshold range. An unreachable Prometheus or a query without data is inconclusive, never a
// pass. Results go into the cell's status report, bounded.
package analysis
