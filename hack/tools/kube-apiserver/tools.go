//go:build tools

// Package tools pins kube-apiserver so that `go build` in this module builds
// it at the version named in go.mod.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
