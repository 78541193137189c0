// Package status decides how every hub object stands, in one place per kind: pure functions of
// what the hub observed (the object, the agents' reports as a view, a gate, an error) and a
// given time. They read no client and no clock, so each is table-tested with a fake clock and
// gives the same answer for as long as the state does not change. The controllers in
// controllers/hub gather the facts, call these functions, and patch what they return through
// controllers/outcome.
package status
