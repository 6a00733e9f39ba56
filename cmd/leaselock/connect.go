package main

// Where the commands work, found as kubectl finds it: the cluster and the
// namespace of the locks; whether the cluster answers; and the log.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/textlogger"

	"github.com/leaselock/leaselock/resourcelock"
)

// reachTimeout bounds the request that checks the API server answers,
// unless --request-timeout sets a bound.
const reachTimeout = 10 * time.Second

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

// reach checks, with one request (GET /version) bounded by --request-timeout
// or reachTimeout, that the API server of cfg answers and does not refuse
// its credentials (any other answer will do): a waiter would otherwise retry a server it cannot reach for
// as long as it waits for the lock, without a word.
func reach(ctx context.Context, cfg *rest.Config) error {
	timeout := reachTimeout
	if cfg.Timeout > 0 {
		timeout = cfg.Timeout
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = dc.RESTClient().Get().AbsPath("/version").Do(ctx).Error()
	var status apierrors.APIStatus
	switch {
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("the API server at %s refused the credentials: %w", cfg.Host, err)
	case err == nil || errors.As(err, &status):
		// It answered: a server or proxy may forbid /version and still
		// serve Leases.
		return nil
	}
	return fmt.Errorf("the API server at %s does not answer: %w", cfg.Host, err)
}

// logger logs to stderr, in klog's format, one level below -v: stderr is
// the command's too, so by default leaselock logs only its errors, and -v 1
// adds the library's notices (a server older than 1.35, a client that
// polls), -v 2 each lock taken and released.
func (g *globals) logger() logr.Logger {
	return textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(g.verbosity-1), textlogger.Output(g.streams.ErrOut)))
}
