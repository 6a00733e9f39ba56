package main

// Where the commands work: the cluster and the namespace of the locks, found
// as kubectl finds them.

import (
	"fmt"

	"k8s.io/client-go/rest"

	"github.com/leaselock/leaselock/resourcelock"
)

// target returns the REST config and the namespace of the locks, as kubectl
// finds them: the cluster from --kubeconfig, $KUBECONFIG or ~/.kube/config,
// else the Pod's ServiceAccount; the namespace from -n, else the kubeconfig
// context's, else the Pod's own, else "default". It sends no request, and
// rejects an invalid namespace.
func (g *globals) target() (*rest.Config, string, error) {
	loader := g.kube.ToRawKubeConfigLoader()
	ns, _, err := loader.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("namespace: %w", err)
	}
	if err := resourcelock.ValidateNamespace(ns); err != nil {
		return nil, "", err
	}
	cfg, err := g.kube.ToRESTConfig()
	if err != nil {
		return nil, "", err
	}
	return cfg, ns, nil
}
