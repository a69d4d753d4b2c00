// Package certs gives the webhook a serving certificate when none is
// provided: a self-signed CA and a certificate for the webhook's hosts,
// written to the certificate directory, and the CA injected into the
// MutatingWebhookConfiguration's caBundle.
package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// File names in the certificate directory, as controller-runtime's webhook
// server reads them.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
)

// validity of generated certificates; they are renewed when less than a
// third is left.
const validity = 365 * 24 * time.Hour

// EnsureSelfSigned makes sure dir holds a serving certificate for hosts (DNS
// names or IPs) signed by a CA in the same dir, generating both when missing,
// expiring or issued for other hosts. It returns the CA in PEM.
func EnsureSelfSigned(dir string, hosts []string) ([]byte, error) {
	if ca, ok := current(dir, hosts); ok {
		return ca, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "vane-webhook-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		CAFile:   caPEM,
		CertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	// The key is written last: the webhook server's watcher reloads on it.
	for _, name := range []string{CAFile, CertFile, KeyFile} {
		if err := writeAtomic(filepath.Join(dir, name), files[name]); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

// current returns the CA when dir already holds a certificate for hosts with
// more than a third of its validity left.
func current(dir string, hosts []string) ([]byte, bool) {
	ca, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, false
	}
	crt, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, false
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil {
		return nil, false
	}
	block, _ := pem.Decode(crt)
	if block == nil {
		return nil, false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || time.Until(cert.NotAfter) < validity/3 {
		return nil, false
	}
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return nil, false
		}
	}
	return ca, true
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

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
