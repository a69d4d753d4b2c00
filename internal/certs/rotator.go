package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Rotator keeps the webhook's serving certificate current: every Interval
// it loads the bundle from the Store, renews what is due (saving it for the
// other replicas), serves the certificate from memory and keeps the CA in
// the caBundle of the MutatingWebhookConfiguration WebhookConfig.
type Rotator struct {
	Store         Store
	Client        client.Client
	Hosts         []string
	Validity      time.Duration
	Interval      time.Duration
	WebhookConfig string
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	current atomic.Pointer[tls.Certificate]
	ca      atomic.Pointer[[]byte]
}

// InjectInto sets the current CA in the caBundle of WebhookConfig in
// another cluster (a member's webhook calls the same vane). The CA lives ten
// years; serving certificates renew under it, so once is enough.
func (r *Rotator) InjectInto(ctx context.Context, c client.Client) error {
	ca := r.ca.Load()
	if ca == nil || r.WebhookConfig == "" {
		return nil
	}
	return InjectCABundle(ctx, c, r.WebhookConfig, *ca)
}

var _ manager.LeaderElectionRunnable = (*Rotator)(nil)

// Ensure makes one pass: load, renew if due, save, serve, inject.
func (r *Rotator) Ensure(ctx context.Context) error {
	for range 5 {
		b, version, err := r.Store.Load(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		if r.Now != nil {
			now = r.Now()
		}
		renewed, changed, err := Renew(b, r.Hosts, now, r.Validity)
		if err != nil {
			return err
		}
		if changed {
			if err := r.Store.Save(ctx, renewed, version); errors.Is(err, ErrConflict) {
				continue // another replica renewed first: use theirs
			} else if err != nil {
				return err
			}
			ctrl.LoggerFrom(ctx).Info("Webhook certificate renewed", "hosts", r.Hosts)
		}
		cert, err := renewed.TLS()
		if err != nil {
			return err
		}
		r.current.Store(cert)
		r.ca.Store(&renewed.CACert)
		if r.WebhookConfig == "" {
			return nil
		}
		return InjectCABundle(ctx, r.Client, r.WebhookConfig, renewed.CACert)
	}
	return errors.New("certificate store kept changing; giving up this pass")
}

// Start checks every Interval until ctx ends (a manager.Runnable).
func (r *Rotator) Start(ctx context.Context) error {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.Ensure(ctx); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Webhook certificate check")
			}
		}
	}
}

// NeedLeaderElection is false: every replica serves the webhook.
func (r *Rotator) NeedLeaderElection() bool { return false }

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (r *Rotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := r.current.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no webhook certificate yet")
}

// InjectCABundle sets caBundle on every webhook of the named
// MutatingWebhookConfiguration.
func InjectCABundle(ctx context.Context, c client.Client, name string, caPEM []byte) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, cfg); err != nil {
			return fmt.Errorf("get mutatingwebhookconfiguration %s: %w", name, err)
		}
		changed := false
		for i := range cfg.Webhooks {
			if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, caPEM) {
				cfg.Webhooks[i].ClientConfig.CABundle = slices.Clone(caPEM)
				changed = true
			}
		}
		if !changed {
			return nil
		}
		return c.Update(ctx, cfg)
	})
}
