package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// MaxAnswer bounds what one measurement reads: a Prometheus answer or an HTTP check's body.
const MaxAnswer = 1 << 20

// MeasureTimeout bounds one measurement.
const MeasureTimeout = 5 * time.Second

// Inconclusive is a measurement that could not decide: nothing answered, or the answer held
// no single value.
type Inconclusive struct{ Message string }

func (e *Inconclusive) Error() string { return e.Message }

// Measurer takes measurements in a cell.
type Measurer interface {
	// Query returns the single value a PromQL query has at Prometheus's present.
	Query(ctx context.Context, query string) (float64, error)
	// Get fetches an HTTP check's URL: its status and (bounded) body.
	Get(ctx context.Context, url string) (int, []byte, error)
}

// Cell measures against a cell's Prometheus (none when Address is empty) and its Services.
type Cell struct {
	// Address is the Prometheus HTTP API's base URL.
	Address string
	// HTTP is the client for Prometheus and HTTP checks (a bounded default when nil).
	HTTP *http.Client
}

func (c *Cell) client() *http.Client {
	base := c.HTTP
	if base == nil {
		base = &http.Client{Timeout: MeasureTimeout}
	}
	cp := *base
	rt := cp.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	cp.Transport = boundedTransport{rt}
	// A check may not be redirected to another host.
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

// Query asks Prometheus at its own present, so that a skew between the agent's clock and
// Prometheus' changes nothing.
func (c *Cell) Query(ctx context.Context, query string) (float64, error) {
	if c.Address == "" {
		return 0, &Inconclusive{Message: "the CellSync names no Prometheus (spec.analysis.prometheus.address)"}
	}
	cl, err := promapi.NewClient(promapi.Config{Address: c.Address, Client: c.client()})
	if err != nil {
		return 0, &Inconclusive{Message: fmt.Sprintf("invalid Prometheus address: %v", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, MeasureTimeout)
	defer cancel()
	v, _, _, err := promv1.NewAPI(cl).Query(ctx, query, time.Time{})
	if err != nil {
		return 0, &Inconclusive{Message: fmt.Sprintf("Prometheus did not answer the query: %s", bound(err.Error()))}
	}
	switch x := v.(type) {
	case model.Vector:
		switch len(x) {
		case 0:
			return 0, &Inconclusive{Message: "the query returned no data"}
		case 1:
			return value(float64(x[0].Value))
		default:
			return 0, &Inconclusive{Message: fmt.Sprintf("the query returned %d series; it must return one", len(x))}
		}
	case *model.Scalar:
		return value(float64(x.Value))
	default:
		return 0, &Inconclusive{Message: fmt.Sprintf("the query returned a %s; it must return one sample", v.Type())}
	}
}

func value(f float64) (float64, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, &Inconclusive{Message: fmt.Sprintf("the query returned %g", f)}
	}
	return f, nil
}

// Get fetches an HTTP check's URL.
func (c *Cell) Get(ctx context.Context, url string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, MeasureTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return 0, nil, &Inconclusive{Message: fmt.Sprintf("%s did not answer: %s", url, bound(err.Error()))}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, &Inconclusive{Message: fmt.Sprintf("reading the answer of %s: %s", url, bound(err.Error()))}
	}
	return resp.StatusCode, body, nil
}

// boundedTransport cuts every answer at MaxAnswer bytes (an error past it, not a silent cut).
type boundedTransport struct{ http.RoundTripper }

func (b boundedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := b.RoundTripper.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: MaxAnswer}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("the answer is larger than %d bytes", MaxAnswer)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.ReadCloser.Read(p)
	l.left -= int64(n)
	return n, err
}

// judge measures one metric once.
func judge(ctx context.Context, m agentv1alpha1.AnalysisMetric, meas Measurer, now time.Time) agentv1alpha1.Measurement {
	out := agentv1alpha1.Measurement{Time: metaTime(now)}
	var v float64
	var err error
	switch {
	case m.Prometheus != nil:
		v, err = meas.Query(ctx, m.Prometheus.Query)
	case m.HTTP != nil:
		v, err = httpCheck(ctx, m, meas)
	default:
		err = fmt.Errorf("the metric has neither a prometheus query nor an http check")
	}
	var inc *Inconclusive
	switch {
	case errors.As(err, &inc):
		out.Phase, out.Message = agentv1alpha1.AnalysisInconclusive, inc.Message
		return out
	case err != nil:
		out.Phase, out.Message = agentv1alpha1.AnalysisFailed, bound(err.Error())
		return out
	}
	if m.HTTP != nil && m.HTTP.JSONField == "" {
		out.Phase, out.Message = agentv1alpha1.AnalysisSuccessful, fmt.Sprintf("answered %d", int(v))
		return out
	}
	out.Value = &v
	out.Phase, out.Message = inRange(v, m.ThresholdRange)
	return out
}

func inRange(v float64, r agentv1alpha1.ThresholdRange) (string, string) {
	s := strconv.FormatFloat(v, 'g', 4, 64)
	switch {
	case r.Min != nil && v < *r.Min:
		return agentv1alpha1.AnalysisFailed, fmt.Sprintf("%s is below the minimum %g", s, *r.Min)
	case r.Max != nil && v > *r.Max:
		return agentv1alpha1.AnalysisFailed, fmt.Sprintf("%s is above the maximum %g", s, *r.Max)
	}
	return agentv1alpha1.AnalysisSuccessful, fmt.Sprintf("%s is within the range", s)
}

// httpCheck returns the JSON field's value, or the status when the check names no field.
func httpCheck(ctx context.Context, m agentv1alpha1.AnalysisMetric, meas Measurer) (float64, error) {
	want := int(m.HTTP.ExpectedStatus)
	if want == 0 {
		want = http.StatusOK
	}
	status, body, err := meas.Get(ctx, m.HTTP.URL)
	if err != nil {
		return 0, err
	}
	if status != want {
		return 0, fmt.Errorf("%s answered %d, want %d", m.HTTP.URL, status, want)
	}
	if m.HTTP.JSONField == "" {
		return float64(status), nil
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return 0, fmt.Errorf("%s did not answer JSON: %s", m.HTTP.URL, bound(err.Error()))
	}
	for _, k := range strings.Split(m.HTTP.JSONField, ".") {
		obj, ok := doc.(map[string]any)
		if !ok {
			return 0, fmt.Errorf("%s: the answer has no field %s", m.HTTP.URL, m.HTTP.JSONField)
		}
		if doc, ok = obj[k]; !ok {
			return 0, fmt.Errorf("%s: the answer has no field %s", m.HTTP.URL, m.HTTP.JSONField)
		}
	}
	f, ok := doc.(float64)
	if !ok {
		return 0, fmt.Errorf("%s: field %s is not a number", m.HTTP.URL, m.HTTP.JSONField)
	}
	return f, nil
}

// bound keeps a message that quotes something from outside short.
func bound(s string) string {
	const most = 300
	if len(s) > most {
		return s[:most] + "…"
	}
	return s
}
