package certs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Store keeps a Bundle where every replica finds it. Load returns an empty
// bundle when there is none yet, and a version to pass to Save, which
// fails with ErrConflict when another replica saved in between.
type Store interface {
	Load(ctx context.Context) (Bundle, string, error)
	Save(ctx context.Context, b Bundle, version string) error
}

// ErrConflict means another writer saved first: load again.
var ErrConflict = errors.New("certificate store changed meanwhile")

// Keys of the bundle in a Secret, and file names in a directory (tls.crt
// and tls.key as controller-runtime and cert-manager name them).
const (
	CACertKey = "ca.crt"
	CAKeyKey  = "ca.key"
	CertKey   = "tls.crt"
	KeyKey    = "tls.key"
)

// SecretStore keeps the bundle in a Secret (created on first save).
type SecretStore struct {
	Client          client.Client
	Namespace, Name string
}

var _ Store = (*SecretStore)(nil)

// Load implements Store.
func (s *SecretStore) Load(ctx context.Context) (Bundle, string, error) {
	sec := &corev1.Secret{}
	err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name}, sec)
	if apierrors.IsNotFound(err) {
		return Bundle{}, "", nil
	}
	if err != nil {
		return Bundle{}, "", fmt.Errorf("get secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	d := sec.Data
	return Bundle{CACert: d[CACertKey], CAKey: d[CAKeyKey], Cert: d[CertKey], Key: d[KeyKey]}, sec.ResourceVersion, nil
}

// Save implements Store.
func (s *SecretStore) Save(ctx context.Context, b Bundle, version string) error {
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: version},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{CACertKey: b.CACert, CAKeyKey: b.CAKey, CertKey: b.Cert, KeyKey: b.Key},
	}
	var err error
	if version == "" {
		err = s.Client.Create(ctx, sec)
	} else {
		err = s.Client.Update(ctx, sec)
	}
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("save secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// DirStore keeps the bundle as files in a directory, for one process on a
// host. The version is the serving certificate's content.
type DirStore struct{ Dir string }

var _ Store = (*DirStore)(nil)

// Load implements Store.
func (s *DirStore) Load(context.Context) (Bundle, string, error) {
	var b Bundle
	for _, f := range []struct {
		name string
		into *[]byte
	}{{CACertKey, &b.CACert}, {CAKeyKey, &b.CAKey}, {CertKey, &b.Cert}, {KeyKey, &b.Key}} {
		data, err := os.ReadFile(filepath.Join(s.Dir, f.name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return Bundle{}, "", err
		}
		*f.into = data
	}
	return b, string(b.Cert), nil
}

// Save implements Store.
func (s *DirStore) Save(_ context.Context, b Bundle, _ string) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{CACertKey: b.CACert, CAKeyKey: b.CAKey, CertKey: b.Cert, KeyKey: b.Key} {
		tmp := filepath.Join(s.Dir, name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(s.Dir, name)); err != nil {
			return err
		}
	}
	return nil
}
