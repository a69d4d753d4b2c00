// Command webhook is vane's one binary: the admission webhook that holds the
// native rollout of opted-in Deployments and the controller that runs their
// canary releases.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/canary"
	"github.com/vane-io/vane/internal/certs"
	"github.com/vane-io/vane/internal/mutate"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vane:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr   = flag.String("metrics-bind-address", ":8080", "address of the /metrics endpoint; 0 disables it")
		probeAddr     = flag.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
		pprofAddr     = flag.String("pprof-bind-address", "", "address of net/http/pprof's /debug/pprof/ endpoints; empty disables them")
		webhookHost   = flag.String("webhook-host", "", "address the webhook server listens on (all interfaces when empty)")
		webhookPort   = flag.Int("webhook-port", 9443, "port of the webhook server")
		certDir       = flag.String("cert-dir", "/tmp/vane-webhook-certs", "directory of tls.crt and tls.key: provided (e.g. by cert-manager), or where generated ones are kept without --cert-secret")
		selfSigned    = flag.String("self-signed-hosts", "", "comma-separated hosts (DNS names or IPs): generate and renew a CA and serving certificate for them")
		certSecret    = flag.String("cert-secret", "", "NAMESPACE/NAME of the Secret that keeps the generated certificate, shared by all replicas (with --self-signed-hosts)")
		certValidity  = flag.Duration("cert-validity", 365*24*time.Hour, "validity of generated serving certificates; renewed at half")
		certInterval  = flag.Duration("cert-check-interval", time.Hour, "how often the generated certificate is checked for renewal")
		webhookCfg    = flag.String("webhook-config-name", "", "MutatingWebhookConfiguration whose caBundle is kept on the generated CA (with --self-signed-hosts)")
		leaderElect   = flag.Bool("leader-elect", false, "elect a leader, so that only one replica runs releases")
		leaderNS      = flag.String("leader-election-namespace", "", "namespace of the leader election lease (the pod's namespace in a cluster)")
		leaseDuration = flag.Duration("leader-elect-lease-duration", 15*time.Second, "how long a lost leader's lease blocks the others")
		renewDeadline = flag.Duration("leader-elect-renew-deadline", 10*time.Second, "how long the leader tries to renew before it gives up")
		retryPeriod   = flag.Duration("leader-elect-retry-period", 2*time.Second, "how often candidates try to take the lease")
		workers       = flag.Int("max-concurrent-reconciles", 10, "how many releases are reconciled at once (each one by one); a reconcile waits mostly on the API server")
	)
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := networkingv1.AddToScheme(scheme); err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	webhookOpts := webhook.Options{Host: *webhookHost, Port: *webhookPort, CertDir: *certDir}
	var rotator *certs.Rotator
	if *selfSigned != "" {
		rotator = &certs.Rotator{
			Store:         &certs.DirStore{Dir: *certDir},
			Client:        direct,
			Hosts:         strings.Split(*selfSigned, ","),
			Validity:      *certValidity,
			Interval:      *certInterval,
			WebhookConfig: *webhookCfg,
		}
		if *certSecret != "" {
			ns, name, ok := strings.Cut(*certSecret, "/")
			if !ok {
				return fmt.Errorf("--cert-secret %q: want NAMESPACE/NAME", *certSecret)
			}
			rotator.Store = &certs.SecretStore{Client: direct, Namespace: ns, Name: name}
		}
		if err := rotator.Ensure(ctx); err != nil {
			return fmt.Errorf("webhook certificate: %w", err)
		}
		webhookOpts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = rotator.GetCertificate }}
		log.Info("Webhook certificate ready", "hosts", rotator.Hosts, "mutatingWebhookConfiguration", *webhookCfg)
	}
	// The cache holds only Deployments labelled vane.io/canary (opted-in
	// ones and the canaries vane creates), so memory does not grow with
	// the cluster's other Deployments.
	labelled, err := labels.Parse(api.LabelCanary)
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cache.Options{ByObject: map[client.Object]cache.ByObject{&appsv1.Deployment{}: {Label: labelled}}},
		Metrics:                 metricsserver.Options{BindAddress: *metricsAddr},
		HealthProbeBindAddress:  *probeAddr,
		PprofBindAddress:        *pprofAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "vane.io",
		LeaderElectionNamespace: *leaderNS,
		// A leader that stops cleanly hands over at once.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 leaseDuration,
		RenewDeadline:                 renewDeadline,
		RetryPeriod:                   retryPeriod,
		WebhookServer:                 webhook.NewServer(webhookOpts),
	})
	if err != nil {
		return fmt.Errorf("new manager: %w", err)
	}
	mgr.GetWebhookServer().Register(mutate.Path, &webhook.Admission{Handler: mutate.NewHandler(scheme)})
	if err := (&canary.Reconciler{Client: client.WithFieldOwner(mgr.GetClient(), "vane"), Reader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("vane"), Workers: *workers}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up reconciler: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	if rotator != nil {
		if err := mgr.Add(rotator); err != nil {
			return err
		}
	}
	log.Info("Starting", "webhookPort", *webhookPort)
	return mgr.Start(ctx)
}
