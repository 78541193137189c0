package testenv

import (
	"fmt"

	"github.com/fluxcd/pkg/apis/meta"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConditionsObject is an object with kstatus conditions.
type ConditionsObject interface {
	metav1.Object
	GetConditions() []metav1.Condition
}

// CheckStatusInvariants checks what every cellsync status must hold: Ready present; Stalled
// implies Ready=False; Reconciling and Stalled never both True; observedGeneration at most
// the generation.
func CheckStatusInvariants(obj ConditionsObject, observedGeneration int64) error {
	conds := obj.GetConditions()
	ready := apimeta.FindStatusCondition(conds, meta.ReadyCondition)
	if ready == nil {
		return fmt.Errorf("%s has no Ready condition", obj.GetName())
	}
	stalled := apimeta.IsStatusConditionTrue(conds, meta.StalledCondition)
	if stalled && ready.Status != metav1.ConditionFalse {
		return fmt.Errorf("%s is Stalled but Ready is %s", obj.GetName(), ready.Status)
	}
	if stalled && apimeta.IsStatusConditionTrue(conds, meta.ReconcilingCondition) {
		return fmt.Errorf("%s is both Stalled and Reconciling", obj.GetName())
	}
	if observedGeneration > obj.GetGeneration() {
		return fmt.Errorf("%s observedGeneration %d is ahead of generation %d", obj.GetName(), observedGeneration, obj.GetGeneration())
	}
	return nil
}
