package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ApplierServiceAccount is the agent's default ServiceAccount for CellSyncs that name none.
const ApplierServiceAccount = "cellsync-applier"

// GrantApplier gives the agent's default ServiceAccount in agentNS what the shipped
// config/agent/rbac/applier_role.yaml grants, in each cell namespace: the ClusterRole as shipped,
// the ServiceAccount, and one RoleBinding per namespace, as the docs tell a member admin to do.
func GrantApplier(ctx context.Context, cfg *rest.Config, agentNS string, namespaces ...string) error {
	c, err := client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "config", "agent", "rbac", "applier_role.yaml"))
	if err != nil {
		return err
	}
	objs, err := DecodeManifests(b)
	if err != nil {
		return err
	}
	for _, u := range objs {
		if u.GetKind() != "ClusterRole" {
			continue
		}
		if err := c.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("failed to create the shipped applier ClusterRole: %w", err)
		}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: agentNS, Name: ApplierServiceAccount}}
	if err := c.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	for _, ns := range namespaces {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ApplierServiceAccount + "-" + agentNS},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ApplierServiceAccount},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: agentNS, Name: ApplierServiceAccount}},
		}
		if err := c.Create(ctx, rb); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}
