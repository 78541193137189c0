// Package rollout is the rollout engine, a pure plan. Decide takes a Rollout's last status, the
// app, the cells it is placed on, the RolloutSteps waiting, the cells' reports and the time, and
// returns the next status with the actions that make it true: the Git write (the cells the
// rollout holds, or every placed cell plainly), an undo's template, the RolloutSteps' outcomes,
// the next automatic step, and events. Under it are the parts a decision is made of: which
// cells a step masks (by name, selector, count or percent of the placement), whether a strategy
// is valid, and whether a step's gate is passed (exact commit, Ready, fresh heartbeat, the
// step's analysis, a policy for stale cells and a failure threshold). All at once is the
// one-step strategy of the same engine. The package reads no cluster, no Git and no clock;
// controllers/hub gathers the facts and carries the plans out.
package rollout
