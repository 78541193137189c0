package render

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// splitTraffic rewrites the Knative Service's traffic for a canary step. A split whose stable
// revision is the canary itself (nothing to compare against) keeps 100 % on the revision.
func splitTraffic(objs []object, canary string, split TrafficSplit) error {
	if split.CanaryPercent < 0 || split.CanaryPercent > 100 {
		return invalid(hubv1alpha1.ReasonInvalidSpec, "canary traffic %d%% is not between 0 and 100", split.CanaryPercent)
	}
	for _, o := range objs {
		if kindOf(o.obj) != "Service" || o.obj["apiVersion"] != servingv1.SchemeGroupVersion.String() {
			continue
		}
		spec, _ := o.obj["spec"].(map[string]any)
		if spec == nil {
			return fmt.Errorf("the Knative Service has no spec")
		}
		if split.StableRevision == "" || split.StableRevision == canary {
			spec["traffic"] = []any{target(canary, 100, "")}
		} else {
			spec["traffic"] = []any{
				target(split.StableRevision, 100-split.CanaryPercent, TagStable),
				target(canary, split.CanaryPercent, TagCanary),
			}
		}
		svc := &servingv1.Service{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.obj, svc); err != nil {
			return err
		}
		return validateKnative(svc)
	}
	return invalid(hubv1alpha1.ReasonInvalidSpec, "a canary step needs a Knative cell; this cell renders no Knative Service")
}

func target(revision string, percent int64, tag string) map[string]any {
	t := map[string]any{"revisionName": revision, "percent": percent, "latestRevision": false}
	if tag != "" {
		t["tag"] = tag
	}
	return t
}

// HasSplit reports whether a rendered file is a Knative Service whose traffic is split for a
// canary step (it routes to a revision tagged canary). Other objects have no split.
func HasSplit(content []byte) (bool, error) {
	svc := &servingv1.Service{}
	if err := yaml.Unmarshal(content, svc); err != nil {
		return false, err
	}
	if svc.Kind != "Service" || svc.APIVersion != servingv1.SchemeGroupVersion.String() {
		return false, nil
	}
	for _, t := range svc.Spec.Traffic {
		if t.Tag == TagCanary {
			return true, nil
		}
	}
	return false, nil
}
