// Command podrunner makes kwok's fake pods answer: for every Ready pod on the
// mesh node (whose podCIDR is in 127.0.0.0/8) it serves gRPC on the pod IP
// and each TCP container port, and mirrors the pod into a WorkloadEntry so
// istiod learns the endpoint (the API server refuses loopback addresses in
// EndpointSlices, so the endpoint controller cannot publish them).
//
// Every server answers grpc.health.v1.Health/Check with SERVING and the
// response headers `pod` (the pod's name) and `version` (its version label).
//
// A pod that goes away is first removed from the mesh (WorkloadEntry
// deleted), then kept serving for -drain so that clients still holding the
// old endpoint list finish on it, then stopped gracefully. kwok hands a
// freed IP to the next pod at once: if a new pod gets the address while the
// old one drains, the server stays and answers as the new pod.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

var workloadEntries = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "workloadentries"}

// identity is who answers on an address: a pod's name and version label.
type identity struct{ pod, version string }

// server is one address (pod IP and port). It outlives the pod that got it:
// kwok hands a freed IP to the next pod at once, while the old pod is still
// draining, so the address answers as whichever pod holds it now.
type server struct {
	addr  string
	grpc  *grpc.Server
	owner atomic.Pointer[identity]
}

type backend struct {
	key   string
	ip    string
	id    *identity
	addrs []*server
}

type runner struct {
	dyn   dynamic.Interface
	drain time.Duration

	mu       sync.Mutex
	backends map[string]*backend // by namespace/name
	servers  map[string]*server  // by address
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	node := flag.String("node", "kwok-mesh-0", "serve the pods of this node")
	drain := flag.Duration("drain", 3*time.Second, "how long a removed pod keeps serving after its WorkloadEntry is deleted")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs := kubernetes.NewForConfigOrDie(cfg)
	r := &runner{dyn: dynamic.NewForConfigOrDie(cfg), drain: *drain, backends: map[string]*backend{}, servers: map[string]*server{}}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", *node).String()
	}))
	inf := f.Core().V1().Pods().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.sync(ctx, o.(*corev1.Pod)) },
		UpdateFunc: func(_, o any) { r.sync(ctx, o.(*corev1.Pod)) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if p, ok := o.(*corev1.Pod); ok {
				r.remove(p.Namespace + "/" + p.Name)
			}
		},
	})
	f.Start(ctx.Done())
	log.Printf("podrunner: serving the pods of node %s", *node)
	<-ctx.Done()
	r.mu.Lock()
	for _, s := range r.servers {
		s.grpc.Stop()
	}
	r.mu.Unlock()
}

func ready(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (r *runner) sync(ctx context.Context, p *corev1.Pod) {
	key := p.Namespace + "/" + p.Name
	if !ready(p) {
		r.remove(key)
		return
	}
	r.mu.Lock()
	_, running := r.backends[key]
	r.mu.Unlock()
	if running {
		return
	}
	ip := net.ParseIP(p.Status.PodIP)
	if ip == nil || !ip.IsLoopback() {
		return
	}
	b := &backend{key: key, ip: p.Status.PodIP, id: &identity{pod: p.Name, version: p.Labels["version"]}}
	r.mu.Lock()
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Protocol != "" && port.Protocol != corev1.ProtocolTCP {
				continue
			}
			addr := net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port.ContainerPort)))
			s := r.servers[addr]
			if s == nil {
				var err error
				if s, err = serve(addr); err != nil {
					log.Printf("%s: %v", key, err)
					continue
				}
				r.servers[addr] = s
			}
			s.owner.Store(b.id)
			b.addrs = append(b.addrs, s)
		}
	}
	if len(b.addrs) > 0 {
		r.backends[key] = b
	}
	r.mu.Unlock()
	if len(b.addrs) == 0 {
		return
	}
	// Serving first, then published: istiod never hands out an endpoint
	// that does not answer yet.
	if err := r.publish(ctx, p); err != nil {
		log.Printf("%s: WorkloadEntry: %v", key, err)
	}
	log.Printf("%s: serving on %s (version %s)", key, p.Status.PodIP, p.Labels["version"])
}

func (r *runner) remove(key string) {
	r.mu.Lock()
	b, ok := r.backends[key]
	delete(r.backends, key)
	r.mu.Unlock()
	if !ok {
		return
	}
	ns, name, _ := cutKey(key)
	err := r.dyn.Resource(workloadEntries).Namespace(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		log.Printf("%s: deleting WorkloadEntry: %v", key, err)
	}
	log.Printf("%s: unpublished; draining for %s", key, r.drain)
	go func() {
		time.Sleep(r.drain)
		r.mu.Lock()
		var stop []*server
		for _, s := range b.addrs {
			// Still ours: nobody took the address over while we drained.
			if s.owner.CompareAndSwap(b.id, nil) {
				delete(r.servers, s.addr)
				stop = append(stop, s)
			}
		}
		r.mu.Unlock()
		for _, s := range stop {
			s.grpc.GracefulStop()
		}
		log.Printf("%s: stopped (%d of %d addresses; the others have a new pod)", key, len(stop), len(b.addrs))
	}()
}

func cutKey(k string) (ns, name string, ok bool) {
	for i := range k {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return "", k, false
}

// publish creates the pod's WorkloadEntry: same labels (so the Service's
// selector and the DestinationRule's subsets pick it), the pod IP, owned by
// the pod (garbage-collected with it if podrunner is not running).
func (r *runner) publish(ctx context.Context, p *corev1.Pod) error {
	labels := map[string]any{}
	for k, v := range p.Labels {
		labels[k] = v
	}
	we := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "WorkloadEntry",
		"metadata": map[string]any{
			"name":      p.Name,
			"namespace": p.Namespace,
			"labels":    map[string]any{"app.kubernetes.io/managed-by": "vane-podrunner"},
			"ownerReferences": []any{map[string]any{
				"apiVersion": "v1", "kind": "Pod", "name": p.Name, "uid": string(p.UID),
			}},
		},
		"spec": map[string]any{
			"address": p.Status.PodIP,
			"labels":  labels,
		},
	}}
	if sa := p.Spec.ServiceAccountName; sa != "" {
		we.Object["spec"].(map[string]any)["serviceAccount"] = sa
	}
	_, err := r.dyn.Resource(workloadEntries).Namespace(p.Namespace).Create(ctx, we, metav1.CreateOptions{FieldManager: "vane-podrunner"})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// serve answers Health/Check on addr with the current owner's pod name and
// version in the response headers.
func serve(addr string) (*server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s := &server{addr: addr}
	s.grpc = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if id := s.owner.Load(); id != nil {
			_ = grpc.SetHeader(ctx, metadata.Pairs("pod", id.pod, "version", id.version))
		}
		return h(ctx, req)
	}))
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, hs)
	go func() { _ = s.grpc.Serve(lis) }()
	return s, nil
}
