// Command traffic is a proxyless gRPC client of the local mesh: grpc-go's
// xDS resolver gets listeners, routes, clusters and endpoints straight from
// istiod (no sidecar), so every request goes where the VirtualService's
// weights and header routes send it. It calls grpc.health.v1.Health/Check on
// the backends of hack/mesh/podrunner, which answer with their pod name and
// version label, and prints the split per version.
//
//	traffic -target dubbo3-provider.default:20880 -n 10000        # split of 10,000 requests
//	traffic -target dubbo3-provider.default:20880                 # live line until Ctrl-C
//	traffic -target dubbo3-provider.default:20880 -H x-lane:canary -n 1000 -json
//	traffic -target ... -json -interval 20ms                      # one JSON line per window
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ",") }
func (h *headers) Set(s string) error { *h = append(*h, s); return nil }

// window is what a period of requests gave.
type window struct {
	// T is the end of the window, Unix milliseconds.
	T        int64          `json:"t"`
	Total    int            `json:"total"`
	Failed   int            `json:"failed"`
	Versions map[string]int `json:"versions"`
	Pods     map[string]int `json:"pods,omitempty"`
	Errors   map[string]int `json:"errors,omitempty"`
	byPod    bool
}

type counter struct {
	mu sync.Mutex
	w  window
}

func (c *counter) reset(byPod bool) window {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.w
	c.w = window{Versions: map[string]int{}, Errors: map[string]int{}, byPod: byPod}
	if byPod {
		c.w.Pods = map[string]int{}
	}
	return w
}

func (c *counter) add(version, pod string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w.Total++
	if err != nil {
		c.w.Failed++
		c.w.Errors[status.Code(err).String()+": "+status.Convert(err).Message()]++
		return
	}
	c.w.Versions[version]++
	if c.w.byPod {
		c.w.Pods[pod]++
	}
}

func main() {
	target := flag.String("target", "", "service as NAME.NAMESPACE:PORT (or a full xds:/// URI)")
	xds := flag.String("xds", envOr("VANE_ISTIOD_XDS", "127.0.0.1:15010"), "istiod's plaintext xDS address")
	n := flag.Int("n", 0, "send this many requests and print the split; 0 runs until interrupted")
	conc := flag.Int("c", 4, "concurrent requests")
	interval := flag.Duration("interval", 500*time.Millisecond, "continuous mode: print the split of each interval")
	asJSON := flag.Bool("json", false, "print JSON counts (one line per interval in continuous mode)")
	byPod := flag.Bool("pods", false, "count per pod too")
	timeout := flag.Duration("timeout", 2*time.Second, "per-request deadline")
	duration := flag.Duration("d", 0, "continuous mode: stop after this long")
	var hdrs headers
	flag.Var(&hdrs, "H", "request header NAME:VALUE (repeatable), e.g. -H lane:test-v2")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "traffic: -target NAME.NAMESPACE:PORT is required")
		os.Exit(2)
	}

	uri := *target
	if !strings.Contains(uri, "://") {
		host, port, ok := strings.Cut(uri, ":")
		if !ok {
			fmt.Fprintln(os.Stderr, "traffic: -target needs a port")
			os.Exit(2)
		}
		if strings.Count(host, ".") == 1 {
			host += ".svc.cluster.local"
		}
		uri = "xds:///" + host + ":" + port
	}
	if err := bootstrap(*xds); err != nil {
		fmt.Fprintln(os.Stderr, "traffic:", err)
		os.Exit(1)
	}
	conn, err := grpc.NewClient(uri, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "traffic:", err)
		os.Exit(1)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)

	var md metadata.MD
	for _, h := range hdrs {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintf(os.Stderr, "traffic: -H %q: want NAME:VALUE\n", h)
			os.Exit(2)
		}
		md = metadata.Join(md, metadata.Pairs(strings.TrimSpace(k), strings.TrimSpace(v)))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	// Wait for the first xDS answer so a fresh client does not count its
	// own start-up as failures.
	if err := warmUp(ctx, client, md, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "traffic: no answer from", uri+":", err)
		os.Exit(1)
	}

	c := &counter{}
	c.reset(*byPod)
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if *n > 0 && sent.Add(1) > int64(*n) {
					return
				}
				version, pod, err := call(ctx, client, md, *timeout)
				if err != nil && stopping(ctx) {
					return // interrupted or -d over, not failed
				}
				c.add(version, pod, err)
			}
		}()
	}

	if *n > 0 {
		wg.Wait()
		w := c.reset(*byPod)
		w.T = time.Now().UnixMilli()
		if *asJSON {
			out, _ := json.Marshal(w)
			fmt.Println(string(out))
		} else {
			fmt.Println(line(w))
		}
		if w.Failed > 0 {
			os.Exit(1)
		}
		return
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	failed := 0
	for {
		select {
		case <-tick.C:
		case <-done:
		}
		w := c.reset(*byPod)
		w.T = time.Now().UnixMilli()
		failed += w.Failed
		if *asJSON {
			out, _ := json.Marshal(w)
			fmt.Println(string(out))
		} else {
			fmt.Printf("\r\033[K%s  (failed so far: %d)", line(w), failed)
		}
		select {
		case <-done:
			if !*asJSON {
				fmt.Println()
			}
			return
		default:
		}
	}
}

// stopping: the run is over (Ctrl-C, or the -d deadline, which grpc may
// report a moment before the context itself says so).
func stopping(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func call(ctx context.Context, client healthpb.HealthClient, md metadata.MD, timeout time.Duration) (version, pod string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	var h metadata.MD
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&h)); err != nil {
		return "", "", err
	}
	return first(h, "version"), first(h, "pod"), nil
}

func warmUp(ctx context.Context, client healthpb.HealthClient, md metadata.MD, timeout time.Duration) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, err := call(ctx, client, md, timeout)
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return "?"
}

// line is the live split, like the seed's hello.sh: each version's share.
func line(w window) string {
	vs := make([]string, 0, len(w.Versions))
	for v := range w.Versions {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	var b strings.Builder
	fmt.Fprintf(&b, "%6d requests:", w.Total)
	for _, v := range vs {
		fmt.Fprintf(&b, "  %s %5.1f%% %s", v, pct(w.Versions[v], w.Total), bar(w.Versions[v], w.Total))
	}
	if w.Failed > 0 {
		fmt.Fprintf(&b, "  FAILED %d", w.Failed)
		for e, k := range w.Errors {
			fmt.Fprintf(&b, " [%d× %s]", k, e)
		}
	}
	return b.String()
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func bar(a, b int) string {
	if b == 0 {
		return ""
	}
	return strings.Repeat("#", (20*a+b/2)/b)
}

// bootstrap points grpc's xDS client at istiod. GENERATOR=grpc makes istiod
// answer with the resources grpc understands (it sends Envoy's otherwise);
// the node id names a "sidecar" in the default namespace.
func bootstrap(xds string) error {
	if os.Getenv("GRPC_XDS_BOOTSTRAP") != "" || os.Getenv("GRPC_XDS_BOOTSTRAP_CONFIG") != "" {
		return nil
	}
	ns := envOr("POD_NAMESPACE", "default")
	cfg := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xds,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{
			"id":       fmt.Sprintf("sidecar~127.0.0.1~traffic-%d.%s~%s.svc.cluster.local", os.Getpid(), ns, ns),
			"metadata": map[string]any{"GENERATOR": "grpc", "NAMESPACE": ns},
			"locality": map[string]any{},
		},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	// grpc reads GRPC_XDS_BOOTSTRAP_CONFIG when its packages initialise, so
	// the bootstrap goes in through the environment of a fresh exec of us.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(self, os.Args, append(os.Environ(), "GRPC_XDS_BOOTSTRAP_CONFIG="+string(b)))
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
