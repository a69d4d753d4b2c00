// Command kubectl-vane is vane's kubectl plugin: it shows releases and asks
// for promote, abort and retry through the same annotation a person could
// set by hand (vane.io/action), so it never does anything kubectl cannot.
//
//	kubectl vane list
//	kubectl vane status NAME [--watch]
//	kubectl vane promote NAME [--full]
//	kubectl vane abort NAME
//	kubectl vane retry NAME
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/internal/api"
)

const usage = `kubectl vane: canary releases of plain Deployments

  kubectl vane list                     releases in the namespace, with their phase
  kubectl vane status NAME [--watch]    where a release stands (--watch: until it ends)
  kubectl vane promote NAME [--full]    end the current pause (--full: skip all remaining steps)
  kubectl vane abort NAME               all traffic to stable now, canary removed
  kubectl vane retry NAME               start an aborted release again from step 0

Flags: -n/--namespace, --kubeconfig, --context
`

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// run parses the command line and runs one command.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("kubectl-vane", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var ns, kubeconfig, kubecontext string
	var watch, full bool
	fs.StringVar(&ns, "namespace", "", "namespace (default: the kubeconfig's)")
	fs.StringVar(&ns, "n", "", "namespace")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file")
	fs.StringVar(&kubecontext, "context", "", "kubeconfig context")
	fs.BoolVar(&watch, "watch", false, "status: redraw until the release ends")
	fs.BoolVar(&watch, "w", false, "status: redraw until the release ends")
	fs.BoolVar(&full, "full", false, "promote: skip all remaining steps")
	cmd, rest := "", []string{}
	// Flags may come before or after the command and its name.
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return fmt.Errorf("%w\n\n%s", err, usage)
		}
		if fs.NArg() == 0 {
			break
		}
		if cmd == "" {
			cmd = fs.Arg(0)
		} else {
			rest = append(rest, fs.Arg(0))
		}
		args = fs.Args()[1:]
	}
	if cmd == "" || cmd == "help" {
		fmt.Fprint(out, usage)
		return nil
	}
	c, namespace, err := connect(kubeconfig, kubecontext, ns)
	if err != nil {
		return err
	}
	name := func() (string, error) {
		if len(rest) != 1 {
			return "", fmt.Errorf("%s needs the name of one Deployment\n\n%s", cmd, usage)
		}
		return rest[0], nil
	}
	switch cmd {
	case "list":
		return list(ctx, c, namespace, out)
	case "status":
		n, err := name()
		if err != nil {
			return err
		}
		if watch {
			return watchStatus(ctx, c, namespace, n, out, 200*time.Millisecond)
		}
		v, err := load(ctx, c, namespace, n)
		if err != nil {
			return err
		}
		fmt.Fprint(out, v.render(time.Now()))
		return nil
	case "promote", "abort", "retry":
		n, err := name()
		if err != nil {
			return err
		}
		action := api.Action(cmd)
		if cmd == "promote" && full {
			action = api.ActionPromoteFull
		}
		if err := request(ctx, c, namespace, n, action); err != nil {
			return err
		}
		fmt.Fprintf(out, "deployment.apps/%s: %s requested (%s=%s)\n", n, action, api.AnnotationAction, action)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n\n%s", cmd, usage)
	}
}

// connect builds a client from the kubeconfig, as kubectl does.
func connect(kubeconfig, kubecontext, ns string) (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubecontext})
	rest, err := cfg.ClientConfig()
	if err != nil {
		return nil, "", err
	}
	if ns == "" {
		if ns, _, err = cfg.Namespace(); err != nil {
			return nil, "", err
		}
	}
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), networkingv1.AddToScheme(scheme)); err != nil {
		return nil, "", err
	}
	c, err := client.New(rest, client.Options{Scheme: scheme})
	return c, ns, err
}
