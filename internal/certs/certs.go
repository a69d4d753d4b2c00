// Package certs gives the webhook a serving certificate when none is
// provided: a CA and a certificate for the webhook's hosts, kept in a store
// shared by the replicas (a Secret, or a directory when run on a host),
// renewed before they expire, served from memory, with the CA kept in the
// MutatingWebhookConfiguration's caBundle.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Bundle is a CA and a serving certificate it signed, PEM-encoded.
type Bundle struct {
	CACert, CAKey []byte
	Cert, Key     []byte
}

// CAValidity is how long a generated CA lasts. The CA is the part the API
// server trusts (caBundle), so it changes as rarely as possible; serving
// certificates are renewed under it.
const CAValidity = 10 * 365 * 24 * time.Hour

// Renew returns b with what is missing, past half its validity, or issued
// for other hosts replaced, and reports whether anything changed. A new CA
// means a new serving certificate.
func Renew(b Bundle, hosts []string, now time.Time, validity time.Duration) (Bundle, bool, error) {
	if len(hosts) == 0 {
		return b, false, errors.New("no hosts for the serving certificate")
	}
	changed := false
	ca, caKey, err := parse(b.CACert, b.CAKey)
	if err != nil || renewDue(ca, now) {
		if b.CACert, b.CAKey, err = newCA(now); err != nil {
			return b, false, err
		}
		if ca, caKey, err = parse(b.CACert, b.CAKey); err != nil {
			return b, false, err
		}
		b.Cert, changed = nil, true
	}
	cert, _, err := parse(b.Cert, b.Key)
	if err != nil || renewDue(cert, now) || !covers(cert, hosts) || cert.CheckSignatureFrom(ca) != nil || longer(cert, validity) {
		if b.Cert, b.Key, err = newServing(ca, caKey, hosts, now, validity); err != nil {
			return b, false, err
		}
		changed = true
	}
	return b, changed, nil
}

// TLS returns the serving certificate for a tls.Config.
func (b Bundle) TLS() (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(b.Cert, b.Key)
	return &c, err
}

// renewDue: past half of its validity (so that every replica, checking at
// intervals much shorter than that, sees the new one before the old expires).
func renewDue(c *x509.Certificate, now time.Time) bool {
	return now.After(c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2))
}

// longer: issued for longer than validity now asks (it was lowered).
func longer(c *x509.Certificate, validity time.Duration) bool {
	return c.NotAfter.Sub(c.NotBefore) > validity+2*time.Minute
}

func covers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func parse(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("missing")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	return cert, key, err
}

func newCA(now time.Time) ([]byte, []byte, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "vane-webhook-ca"},
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	return issue(tmpl, nil, nil, now, CAValidity)
}

func newServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, now time.Time, validity time.Duration) ([]byte, []byte, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return issue(tmpl, ca, caKey, now, validity)
}

// issue signs tmpl with the CA (itself when ca is nil) and returns the
// certificate and a new key, PEM-encoded.
func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time, validity time.Duration) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	// A minute of slack for clocks a little behind ours.
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Minute), now.Add(validity)
	if ca == nil {
		ca, caKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}
