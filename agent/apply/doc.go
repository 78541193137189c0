// Package apply puts a cell's objects into the member cluster: a server-side dry-run of every
// object before any is written, a staged server-side apply with fluxcd/pkg/ssa (CRDs and
// namespaces first), pruning of exactly the previous inventory's objects that are gone, and a
// health wait: kstatus for ordinary objects, the Ready condition for Knative Services.
package apply
