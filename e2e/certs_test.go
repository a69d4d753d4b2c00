package e2e

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/e2e/framework"
)

// servingSerial is the serial number of the certificate vane's webhook
// presents now.
func servingSerial(t *testing.T) string {
	t.Helper()
	conn, err := tls.Dial("tcp", framework.VaneWebhookAddr(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading the certificate only
	if err != nil {
		t.Fatalf("dial webhook: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func caBundle(t *testing.T, c client.Client) string {
	t.Helper()
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(context.Background(), types.NamespacedName{Name: "vane"}, cfg); err != nil {
		t.Fatal(err)
	}
	return string(cfg.Webhooks[0].ClientConfig.CABundle)
}

// With serving certificates of 10s renewed at half, the certificate is
// rotated several times while admissions keep being answered by vane (a
// fail-open webhook would let them pass unheld: every answer is checked),
// and the CA in caBundle stays the same.
func TestCertificateRotationKeepsAdmissions(t *testing.T) {
	a := givenApp(t, 1, "- setWeight: 50\n")
	framework.RestartVane(t, "--cert-validity=10s", "--cert-check-interval=1s")
	t.Cleanup(func() { framework.RestartVane(t) })
	ca := caBundle(t, a.c.Client)
	serials := map[string]bool{}
	deadline := time.Now().Add(13 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		d := &appsv1.Deployment{}
		d.Namespace, d.Name = a.ns, a.name
		if err := a.c.Client.Patch(context.Background(), d, client.RawPatch(types.JSONPatchType, versionEdit("v2")), client.DryRunAll); err != nil {
			t.Fatalf("dry run %d: %v", n, err)
		}
		if !d.Spec.Paused {
			t.Fatalf("admission %d at %s was not answered by vane (not held)", n, time.Now().Format("15:04:05.000"))
		}
		serials[servingSerial(t)] = true
		time.Sleep(250 * time.Millisecond)
	}
	if len(serials) < 3 {
		t.Errorf("%d serving certificates seen in 13s, want at least 3 (renewed every ~5s)", len(serials))
	}
	if got := caBundle(t, a.c.Client); got != ca {
		t.Error("the CA in caBundle changed during serving-certificate rotation")
	}
}
