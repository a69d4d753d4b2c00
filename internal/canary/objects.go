package canary

import (
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/internal/api"
)

// CanaryName is the name of a Deployment's canary.
func CanaryName(d *appsv1.Deployment) string { return d.Name + api.CanarySuffix }

// desiredCanary builds the canary of d: d's current template and selector,
// both extended with the canary role label so the canary never selects the
// stable pods, owned by d so it goes when d goes. It is labelled
// vane.io/canary=canary, not enabled, so neither the webhook nor the
// reconciler ever treats it as a release.
func desiredCanary(d *appsv1.Deployment, replicas int32) *appsv1.Deployment {
	labels := maps.Clone(d.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[api.LabelCanary] = api.LabelCanaryCanary
	labels[api.LabelRole] = api.RoleCanary

	selector := d.Spec.Selector.DeepCopy()
	if selector.MatchLabels == nil {
		selector.MatchLabels = map[string]string{}
	}
	selector.MatchLabels[api.LabelRole] = api.RoleCanary

	template := d.Spec.Template.DeepCopy()
	if template.Labels == nil {
		template.Labels = map[string]string{}
	}
	template.Labels[api.LabelRole] = api.RoleCanary

	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name:            CanaryName(d),
			Namespace:       d.Namespace,
			Labels:          labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas:                &replicas,
			Selector:                selector,
			Template:                *template,
			Strategy:                d.Spec.Strategy,
			MinReadySeconds:         d.Spec.MinReadySeconds,
			ProgressDeadlineSeconds: d.Spec.ProgressDeadlineSeconds,
			RevisionHistoryLimit:    d.Spec.RevisionHistoryLimit,
		},
	}
}

// canaryMatches reports whether the canary runs want's template at want's size.
func canaryMatches(cur, want *appsv1.Deployment) bool {
	return *cur.Spec.Replicas == *want.Spec.Replicas && equality.Semantic.DeepEqual(cur.Spec.Template, want.Spec.Template)
}

// rolledOut reports that d has rolled out its current spec: every replica
// updated and available, the old ones gone.
func rolledOut(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return !d.Spec.Paused && s.ObservedGeneration >= d.Generation &&
		s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
}
