// Package rollout is the pure core of canary rollouts: which cells a step masks (by selector,
// count or percent of the placement), whether a strategy is valid, and whether a step's gate is
// passed from the cells' reports (exact commit, Ready, fresh heartbeat, with an explicit policy
// for stale cells and a failure threshold that triggers an abort). It holds no cluster or Git
// state; the controllers feed it.
//
// Status: groundwork for the rollout issue. Nothing calls it yet; the API types (Rollout,
// RolloutStep, spec.strategy) and the controller that drives steps come next.
package rollout
