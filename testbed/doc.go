// Package testbed pins the Kubernetes and etcd releases whose kube-apiserver and etcd the
// integration tests run (tests/it/common/control_plane.rs). It holds no code: go.mod is the pin,
// and scripts/testbed.sh builds the two binaries from the Go module proxy once per machine:
//
//	go build k8s.io/kubernetes/cmd/kube-apiserver
//	go build go.etcd.io/etcd/server/v3
//
// It also copies cert-manager's CRDs (the version is pinned in scripts/testbed.sh) for tests that
// create CertificateRequests against the real API server.
//
// k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging paths in its own
// go.mod; outside its repository they come from the proxy, so the replace lines here pin each
// to the v0.x release that matches the Kubernetes release (1.37.2 -> v0.37.2).
package testbed
