// Command webhook is vane's one binary: the admission webhook that holds the
// native rollout of opted-in Deployments and the controller that runs their
// canary releases.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/canary"
	"github.com/vane-io/vane/internal/certs"
	"github.com/vane-io/vane/internal/members"
	"github.com/vane-io/vane/internal/mutate"
)

// options are the command-line flags.
type options struct {
	metricsAddr, probeAddr       string
	pprofAddr                    string
	webhookHost                  string
	webhookPort                  int
	certDir, selfSigned          string
	certSecret, webhookConfig    string
	certValidity, certInterval   time.Duration
	leaderElect                  bool
	leaderNamespace              string
	leaseDuration, renewDeadline time.Duration
	retryPeriod                  time.Duration
	workers                      int
	clusterName, remoteSecrets   string
	zap                          zap.Options
}

func parseFlags() *options {
	o := &options{}
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the /metrics endpoint; 0 disables it")
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.StringVar(&o.pprofAddr, "pprof-bind-address", "", "address of net/http/pprof's /debug/pprof/ endpoints; empty disables them")
	flag.StringVar(&o.webhookHost, "webhook-host", "", "address the webhook server listens on (all interfaces when empty)")
	flag.IntVar(&o.webhookPort, "webhook-port", 9443, "port of the webhook server")
	flag.StringVar(&o.certDir, "cert-dir", "/tmp/vane-webhook-certs", "directory of tls.crt and tls.key: provided (e.g. by cert-manager), or where generated ones are kept without --cert-secret")
	flag.StringVar(&o.selfSigned, "self-signed-hosts", "", "comma-separated hosts (DNS names or IPs): generate and renew a CA and serving certificate for them")
	flag.StringVar(&o.certSecret, "cert-secret", "", "NAMESPACE/NAME of the Secret that keeps the generated certificate, shared by all replicas (with --self-signed-hosts)")
	flag.DurationVar(&o.certValidity, "cert-validity", 365*24*time.Hour, "validity of generated serving certificates; renewed at half")
	flag.DurationVar(&o.certInterval, "cert-check-interval", time.Hour, "how often the generated certificate is checked for renewal")
	flag.StringVar(&o.webhookConfig, "webhook-config-name", "", "MutatingWebhookConfiguration whose caBundle is kept on the generated CA (with --self-signed-hosts)")
	flag.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader, so that only one replica runs releases")
	flag.StringVar(&o.leaderNamespace, "leader-election-namespace", "", "namespace of the leader election lease (the pod's namespace in a cluster)")
	flag.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a lost leader's lease blocks the others")
	flag.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader tries to renew before it gives up")
	flag.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second, "how often candidates try to take the lease")
	// 10, as Argo Rollouts' --rollout-threads: a reconcile waits mostly on
	// the API server, so one worker makes releases queue behind each other.
	flag.IntVar(&o.workers, "max-concurrent-reconciles", 10, "how many releases are reconciled at once (each one by one)")
	flag.StringVar(&o.clusterName, "cluster-name", "primary", "name of the cluster vane runs in, as releases that span clusters show it")
	flag.StringVar(&o.remoteSecrets, "remote-secrets-namespace", "", "namespace of the remote Secrets (labelled istio/multiCluster=true, one kubeconfig per member cluster) whose clusters take part in releases; empty: vane's own cluster only")
	o.zap.BindFlags(flag.CommandLine)
	flag.Parse()
	return o
}

func main() {
	o := parseFlags()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	if err := run(ctrl.SetupSignalHandler(), o); err != nil {
		fmt.Fprintln(os.Stderr, "vane:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), networkingv1.AddToScheme(scheme)); err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	rotator, err := certificates(ctx, cfg, scheme, o)
	if err != nil {
		return err
	}
	mgr, err := newManager(cfg, scheme, o, rotator)
	if err != nil {
		return err
	}
	mgr.GetWebhookServer().Register(mutate.Path, &webhook.Admission{Handler: mutate.NewHandler()})
	reconciler := &canary.Reconciler{
		Client:      client.WithFieldOwner(mgr.GetClient(), "vane"),
		Reader:      mgr.GetAPIReader(),
		Recorder:    mgr.GetEventRecorder("vane"),
		ClusterName: o.clusterName,
		Workers:     o.workers,
	}
	if err := reconciler.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up reconciler: %w", err)
	}
	if o.remoteSecrets != "" {
		watch := func(name string, c cluster.Cluster) error {
			if rotator != nil {
				go injectMember(ctx, rotator, scheme, name, c)
			}
			return reconciler.WatchCluster(name, c)
		}
		registry := &members.Registry{Namespace: o.remoteSecrets, Self: o.clusterName, Scheme: scheme, Cache: deploymentCache(), Watch: watch, Changed: reconciler.ClustersChanged}
		reconciler.Members = registry.Clusters
		if err := registry.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up member clusters: %w", err)
		}
	}
	if err := errors.Join(
		mgr.AddHealthzCheck("ping", healthz.Ping),
		mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()),
	); err != nil {
		return err
	}
	if rotator != nil {
		if err := mgr.Add(rotator); err != nil {
			return err
		}
	}
	ctrl.Log.WithName("setup").Info("Starting", "webhookPort", o.webhookPort, "leaderElection", o.leaderElect)
	return mgr.Start(ctx)
}

// injectMember keeps the member's MutatingWebhookConfiguration on vane's
// CA, retrying for a while if the member does not answer yet.
func injectMember(ctx context.Context, rotator *certs.Rotator, scheme *runtime.Scheme, name string, c cluster.Cluster) {
	log := ctrl.Log.WithName("members").WithValues("cluster", name)
	direct, err := client.New(c.GetConfig(), client.Options{Scheme: scheme})
	if err != nil {
		log.Error(err, "Member webhook caBundle not injected")
		return
	}
	err = wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: time.Second, Factor: 2, Steps: 8, Cap: time.Minute}, func(ctx context.Context) (bool, error) {
		return rotator.InjectInto(ctx, direct) == nil, nil
	})
	if err != nil {
		log.Error(err, "Member webhook caBundle not injected")
		return
	}
	log.Info("Member webhook caBundle injected")
}

// certificates sets up the generated webhook certificate (with
// --self-signed-hosts): one pass now, so the webhook serves from its first
// request, then the manager runs the Rotator. nil when certificates are
// provided in --cert-dir.
func certificates(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, o *options) (*certs.Rotator, error) {
	if o.selfSigned == "" {
		return nil, nil
	}
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	r := &certs.Rotator{
		Store:         &certs.DirStore{Dir: o.certDir},
		Client:        direct,
		Hosts:         strings.Split(o.selfSigned, ","),
		Validity:      o.certValidity,
		Interval:      o.certInterval,
		WebhookConfig: o.webhookConfig,
	}
	if o.certSecret != "" {
		ns, name, ok := strings.Cut(o.certSecret, "/")
		if !ok {
			return nil, fmt.Errorf("--cert-secret %q: want NAMESPACE/NAME", o.certSecret)
		}
		r.Store = &certs.SecretStore{Client: direct, Namespace: ns, Name: name}
	}
	if err := r.Ensure(ctx); err != nil {
		return nil, fmt.Errorf("webhook certificate: %w", err)
	}
	ctrl.Log.WithName("setup").Info("Webhook certificate ready", "hosts", r.Hosts, "mutatingWebhookConfiguration", o.webhookConfig)
	return r, nil
}

// deploymentCache is the cache of vane's cluster and of every member: only
// Deployments labelled vane.io/canary (opted-in ones and the canaries vane
// creates), so memory does not grow with the cluster's other Deployments.
func deploymentCache() cache.Options {
	labelled := labels.SelectorFromSet(nil)
	if req, err := labels.NewRequirement(api.LabelCanary, selection.Exists, nil); err == nil {
		labelled = labelled.Add(*req)
	}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{&appsv1.Deployment{}: {Label: labelled}}}
}

func newManager(cfg *rest.Config, scheme *runtime.Scheme, o *options, rotator *certs.Rotator) (ctrl.Manager, error) {
	webhookOpts := webhook.Options{Host: o.webhookHost, Port: o.webhookPort, CertDir: o.certDir}
	if rotator != nil {
		webhookOpts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = rotator.GetCertificate }}
	}
	cacheOpts := deploymentCache()
	if o.remoteSecrets != "" {
		// Only the remote Secrets: vane may list Secrets in its namespace,
		// and keeps none but these.
		cacheOpts.ByObject[&corev1.Secret{}] = cache.ByObject{
			Namespaces: map[string]cache.Config{o.remoteSecrets: {}},
			Label:      labels.SelectorFromSet(labels.Set{members.LabelMultiCluster: "true"}),
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cacheOpts,
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		PprofBindAddress:        o.pprofAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "vane.io",
		LeaderElectionNamespace: o.leaderNamespace,
		// A leader that stops cleanly hands over at once.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &o.leaseDuration,
		RenewDeadline:                 &o.renewDeadline,
		RetryPeriod:                   &o.retryPeriod,
		WebhookServer:                 webhook.NewServer(webhookOpts),
	})
	if err != nil {
		return nil, fmt.Errorf("new manager: %w", err)
	}
	return mgr, nil
}
