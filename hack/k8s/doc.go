// Package k8s only exists so that the wrapper module has a package; the
// binaries are built with `go build k8s.io/kubernetes/cmd/...` (see hack/cluster).
package k8s
