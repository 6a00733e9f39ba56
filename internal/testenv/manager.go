package testenv

import (
	"context"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// NewManager returns a manager for cfg that serves no metrics or probes and
// elects no leader, and a function that starts it and returns a function
// that stops it and waits for it; t's cleanup stops it too.
func NewManager(t testing.TB, cfg *rest.Config) (manager.Manager, func() (stop func())) {
	t.Helper()
	mgr, err := manager.New(cfg, manager.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatalf("testenv: new manager: %v", err)
	}
	return mgr, func() func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mgr.Start(ctx) }()
		stop := sync.OnceFunc(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("testenv: manager: %v", err)
			}
		})
		t.Cleanup(stop)
		return stop
	}
}

// StartManager starts a manager as NewManager builds it, and returns it once
// its cache runs.
func StartManager(t testing.TB, cfg *rest.Config) manager.Manager {
	t.Helper()
	mgr, start := NewManager(t, cfg)
	start()
	if !mgr.GetCache().WaitForCacheSync(context.Background()) {
		t.Fatal("testenv: the manager's cache did not start")
	}
	return mgr
}
