package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

var t0 = time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)

func cert(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRenew(t *testing.T) {
	hosts := []string{"vane-webhook.vane-system.svc", "127.0.0.1"}
	day := 24 * time.Hour
	fresh, changed, err := Renew(Bundle{}, hosts, t0, day)
	if err != nil || !changed {
		t.Fatalf("from nothing: changed=%v err=%v", changed, err)
	}
	if err := cert(t, fresh.Cert).CheckSignatureFrom(cert(t, fresh.CACert)); err != nil {
		t.Fatalf("serving certificate not signed by the CA: %v", err)
	}
	for _, h := range hosts {
		if err := cert(t, fresh.Cert).VerifyHostname(h); err != nil {
			t.Errorf("certificate does not cover %s: %v", h, err)
		}
	}
	if _, err := fresh.TLS(); err != nil {
		t.Fatalf("not a usable key pair: %v", err)
	}
	cases := map[string]struct {
		b          Bundle
		hosts      []string
		now        time.Time
		wantChange bool
		wantNewCA  bool
		validity   time.Duration
	}{
		"fresh stays":                  {b: fresh, hosts: hosts, now: t0.Add(time.Hour)},
		"past half is renewed":         {b: fresh, hosts: hosts, now: t0.Add(13 * time.Hour), wantChange: true},
		"another host is renewed":      {b: fresh, hosts: []string{"other.svc"}, now: t0, wantChange: true},
		"a lowered validity renews":    {b: fresh, hosts: hosts, now: t0, wantChange: true, validity: time.Hour},
		"a CA past half is replaced":   {b: fresh, hosts: hosts, now: t0.Add(CAValidity/2 + day), wantChange: true, wantNewCA: true},
		"a lost CA key replaces both":  {b: Bundle{CACert: fresh.CACert, Cert: fresh.Cert, Key: fresh.Key}, hosts: hosts, now: t0, wantChange: true, wantNewCA: true},
		"a garbled certificate renews": {b: Bundle{CACert: fresh.CACert, CAKey: fresh.CAKey, Cert: []byte("x"), Key: fresh.Key}, hosts: hosts, now: t0, wantChange: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			validity := day
			if tc.validity != 0 {
				validity = tc.validity
			}
			got, changed, err := Renew(tc.b, tc.hosts, tc.now, validity)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.wantChange {
				t.Errorf("changed = %v, want %v", changed, tc.wantChange)
			}
			if newCA := !bytes.Equal(got.CACert, fresh.CACert); newCA != tc.wantNewCA {
				t.Errorf("new CA = %v, want %v", newCA, tc.wantNewCA)
			}
			if err := cert(t, got.Cert).CheckSignatureFrom(cert(t, got.CACert)); err != nil {
				t.Errorf("certificate not signed by the bundle's CA: %v", err)
			}
		})
	}
	if _, _, err := Renew(Bundle{}, nil, t0, day); err == nil {
		t.Error("no hosts: no error")
	}
}

func TestDirStoreRoundTrip(t *testing.T) {
	s := &DirStore{Dir: t.TempDir()}
	empty, _, err := s.Load(context.Background())
	if err != nil || empty.Cert != nil {
		t.Fatalf("empty dir: %v %v", empty, err)
	}
	b, _, _ := Renew(Bundle{}, []string{"127.0.0.1"}, t0, time.Hour)
	if err := s.Save(context.Background(), b, ""); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Load(context.Background())
	if err != nil || !bytes.Equal(got.Cert, b.Cert) || !bytes.Equal(got.CAKey, b.CAKey) {
		t.Fatalf("round trip lost data: %v", err)
	}
}

func fakeClient(t *testing.T) client.Client {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "vane"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "deployments.vane.io"}},
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(cfg).Build()
}

// Two replicas starting at once share one CA: the second to save sees the
// conflict and takes the first one's bundle.
func TestRotatorsShareOneSecret(t *testing.T) {
	c := fakeClient(t)
	ctx := context.Background()
	store := &SecretStore{Client: c, Namespace: "vane-system", Name: "vane-webhook-certs"}
	first := &Rotator{Store: store, Client: c, Hosts: []string{"vane-webhook.vane-system.svc"}, Validity: time.Hour, WebhookConfig: "vane"}
	// The second replica loaded before the first saved.
	racing := &racingStore{Store: store}
	second := &Rotator{Store: racing, Client: c, Hosts: first.Hosts, Validity: time.Hour, WebhookConfig: "vane"}
	if err := first.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := second.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if racing.conflicts != 1 {
		t.Errorf("conflicts = %d, want 1 (the second replica's stale save)", racing.conflicts)
	}
	c1, _ := first.GetCertificate(nil)
	c2, _ := second.GetCertificate(nil)
	if !bytes.Equal(c1.Certificate[0], c2.Certificate[0]) {
		t.Error("the replicas serve different certificates")
	}
	saved, _, _ := store.Load(ctx)
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: "vane"}, cfg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cfg.Webhooks[0].ClientConfig.CABundle, saved.CACert) {
		t.Error("caBundle is not the shared CA")
	}
}

// racingStore answers its first Load with an empty bundle, as if it had
// read before another replica saved.
type racingStore struct {
	Store
	loads, conflicts int
}

func (r *racingStore) Load(ctx context.Context) (Bundle, string, error) {
	r.loads++
	if r.loads == 1 {
		return Bundle{}, "", nil
	}
	return r.Store.Load(ctx)
}

func (r *racingStore) Save(ctx context.Context, b Bundle, v string) error {
	err := r.Store.Save(ctx, b, v)
	if errors.Is(err, ErrConflict) {
		r.conflicts++
	}
	return err
}
