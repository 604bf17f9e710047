// Command cert-manager-controller runs cert-manager's own controllers for the CA issuer, built from
// the packages of cert-manager's main module (github.com/cert-manager/cert-manager, which the Go
// module proxy serves; the module of its controller binary, .../cmd/controller, it does not). It
// wires them the way cert-manager's controller binary does: one ContextFactory, each controller
// by its registered name, the shared informers started once the controllers are built.
//
// pillion's tests run it against the test control plane: a ClusterIssuer of kind CA is made
// Ready by the clusterissuers controller, and the CertificateRequests pillion creates are signed
// by the certificaterequests-issuer-ca controller. Approval is left to the test (as
// approver-policy would do it) unless -approve is given, which runs cert-manager's own approver.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	clusterResourceNamespace := flag.String("cluster-resource-namespace", "cert-manager",
		"where the Secrets of ClusterIssuers are")
	approve := flag.Bool("approve", false, "run cert-manager's own approver as well")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := controllerpkg.ContextOptions{
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   50,
		KubernetesAPIBurst: 100,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: *clusterResourceNamespace,
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
		SchedulerOptions: controllerpkg.SchedulerOptions{MaxConcurrentChallenges: 60},
	}
	factory, err := controllerpkg.NewContextFactory(ctx, opts)
	if err != nil {
		fail("building the controller context: %v", err)
	}
	names := []string{"issuers", "clusterissuers", "certificaterequests-issuer-ca"}
	if *approve {
		names = append(names, "certificaterequests-approver")
	}
	var controllers []controllerpkg.Interface
	for _, name := range names {
		construct, ok := controllerpkg.Known()[name]
		if !ok {
			fail("no controller %q is registered", name)
		}
		c, err := construct(factory)
		if err != nil {
			fail("constructing %s: %v", name, err)
		}
		controllers = append(controllers, c)
	}
	// The informers are shared by every Context the factory builds; start them once the
	// controllers have asked for theirs.
	shared, err := factory.Build()
	if err != nil {
		fail("building a context: %v", err)
	}
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())
	for i, c := range controllers {
		go func(name string, c controllerpkg.Interface) {
			if err := c.Run(2, ctx); err != nil {
				fail("%s: %v", name, err)
			}
		}(names[i], c)
	}
	fmt.Fprintf(os.Stderr, "cert-manager controllers running: %v\n", names)
	<-ctx.Done()
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cert-manager-controller: "+format+"\n", args...)
	os.Exit(1)
}
