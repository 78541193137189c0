// Package analysis checks AnalysisTemplates on the hub, before anything reaches Git (PromQL
// parsed with Prometheus's own parser, threshold ranges, the hosts HTTP checks may reach), and
// renders a step's templates for one cell into the Analysis file the cell's agent measures.
package analysis
