// A SPIFFE Workload API client made with go-spiffe, the reference Go library, for
// tests/it/workload_api.rs: it fetches the X.509 context from the socket in
// SPIFFE_ENDPOINT_SOCKET, then watches it for the given number of seconds, and prints one JSON
// object: the default SVID's ID and leaf serial, whether its key matches, the trust domain
// bundle's size, and the leaf serial of every update the watch saw.
package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

type watcher struct {
	serials []string
	errors  []string
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	w.serials = append(w.serials, c.DefaultSVID().Certificates[0].SerialNumber.Text(16))
}

func (w *watcher) OnX509ContextWatchError(err error) {
	if err != context.DeadlineExceeded && err != context.Canceled {
		w.errors = append(w.errors, err.Error())
	}
}

func main() {
	seconds, _ := strconv.Atoi(os.Args[1])
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+20)*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx)
	if err != nil {
		fail(err)
	}
	defer client.Close()
	x, err := client.FetchX509Context(ctx)
	if err != nil {
		fail(err)
	}
	svid := x.DefaultSVID()
	leaf := svid.Certificates[0]
	pub, _ := x509.MarshalPKIXPublicKey(svid.PrivateKey.Public().(crypto.PublicKey))
	leafPub, _ := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	td, _ := spiffeid.TrustDomainFromString("example.org")
	bundle, err := x.Bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		fail(err)
	}
	w := &watcher{}
	watchCtx, stop := context.WithTimeout(ctx, time.Duration(seconds)*time.Second)
	defer stop()
	_ = client.WatchX509Context(watchCtx, w)
	out, _ := json.Marshal(map[string]any{
		"spiffe_id":   svid.ID.String(),
		"serial":      leaf.SerialNumber.Text(16),
		"key_matches": string(pub) == string(leafPub),
		"authorities": len(bundle.X509Authorities()),
		"streamed":    w.serials,
		"errors":      w.errors,
	})
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
