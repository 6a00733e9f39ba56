// Package testenv runs the local kube-apiserver and etcd (package localapi)
// around a package's tests.
//
// A package starts one control plane for all its tests:
//
//	func TestMain(m *testing.M) {
//		goleak.VerifyTestMain(testenv.Main(m), testenv.IgnoredGoroutines()...)
//	}
//
// and each integration test asks for it with Config, which skips the test when
// the binaries are absent, except under CI=true, where Main fails the package
// instead.
package testenv

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leaselock/leaselock/internal/localapi"
	"github.com/leaselock/leaselock/resourcelock"
)

// InCI reports whether the tests run in CI ($CI is true, 1 or another true
// value of strconv.ParseBool), where a missing binary is a failure, not a
// reason to skip.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

var (
	inMain   bool
	start    sync.Once
	server   *localapi.Server
	config   *rest.Config
	startErr error
)

type mainRunner struct{ m *testing.M }

// Main wraps m so that the package's tests share one control plane, started
// by the first test that asks for it (Config) and stopped after the last: a
// run that selects no integration test (a fuzz worker, -run of a unit test)
// starts none. Without the binaries the tests that call Config skip, and
// under CI=true the package fails.
func Main(m *testing.M) goleak.TestingM { return mainRunner{m} }

func (r mainRunner) Run() int {
	inMain = true
	// Quiet, and no warning that no logger was set: the library logs
	// through log.FromContext. The sink counts its uses, for
	// RuntimeLogCalls.
	logf.SetLogger(logr.New(runtimeLog{}))
	if _, err := localapi.AssetsDir(); err != nil && InCI() {
		fmt.Fprintf(os.Stderr, "FAIL: in CI (CI is set) and the API server is not available: %v\n", err)
		return 1
	}
	code := r.m.Run()
	settle()
	if server != nil {
		if err := server.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop: %v\n", err)
			return 1
		}
	}
	return code
}

// settle waits out the watches that lockers keep open for
// resourcelock.WatchLinger after their last waiter left: they close on their
// own, and goleak should find any goroutine that does not.
func settle() { time.Sleep(resourcelock.WatchLinger + 500*time.Millisecond) }

// Config returns the config of the package's control plane, starting it on
// the first call. It skips t, with one line saying how to get the binaries,
// when they are absent, and fails t under CI=true. Binaries that are there
// but fail to start fail t everywhere: that is a broken setup, not a missing
// one, and a run that skipped every integration test would pass for it.
func Config(t testing.TB) *rest.Config {
	t.Helper()
	if !inMain {
		t.Fatal("testenv: Config called without testenv.Main in TestMain")
	}
	if _, err := localapi.AssetsDir(); err != nil {
		if InCI() {
			t.Fatalf("in CI (CI is set) and the API server is not available: %v", err)
		}
		t.Skip(err)
	}
	start.Do(func() {
		server, startErr = localapi.Start()
		if startErr == nil {
			config = server.Config
		}
	})
	if startErr != nil {
		t.Fatalf("testenv: start the local API server: %v", startErr)
	}
	return rest.CopyConfig(config)
}

// ServerVersion returns the release of the package's kube-apiserver, as
// its /version tells it, for a test that asserts what one release does and
// must say what another does instead. It fails t for a server that does not
// tell its release (an unstamped build says v0.0.0-master): a test could
// then only guess.
func ServerVersion(t testing.TB) *version.Version {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(Config(t))
	if err != nil {
		t.Fatalf("testenv: discovery client: %v", err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		t.Fatalf("testenv: server version: %v", err)
	}
	v, err := version.ParseSemantic(info.GitVersion)
	if err != nil || v.Major() == 0 {
		t.Fatalf("testenv: the API server tells no release (%q): build it with `make envtest-bins`, which stamps it", info.GitVersion)
	}
	return v
}

// UserConfig returns a config for a user with no RBAC permissions of its
// own, for tests of what a forbidden request does.
func UserConfig(t testing.TB, name string) *rest.Config {
	t.Helper()
	Config(t)
	user, err := server.Env().AddUser(envtest.User{Name: name}, config)
	if err != nil {
		t.Fatalf("testenv: add user %s: %v", name, err)
	}
	cfg := user.Config()
	cfg.QPS, cfg.Burst = -1, -1
	return cfg
}

// IgnoredGoroutines are the goroutines that outlive every test by design:
// klog's flush daemon, started when the package is loaded.
func IgnoredGoroutines() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	}
}

// Client returns a client for the package's control plane (see Config), with
// client-go's scheme, which knows Leases and ConfigMaps.
func Client(t testing.TB) client.WithWatch {
	t.Helper()
	c, err := client.NewWithWatch(Config(t), client.Options{})
	if err != nil {
		t.Fatalf("testenv: new client: %v", err)
	}
	return c
}

// Namespace creates a namespace of t's own, and fails t at cleanup if any
// Lease is left in it: every test ends with no Lease behind.
func Namespace(t testing.TB, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "leaselock-test-"}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatalf("testenv: create namespace: %v", err)
	}
	t.Cleanup(func() {
		var leases coordinationv1.LeaseList
		if err := c.List(context.Background(), &leases, client.InNamespace(ns.Name)); err != nil {
			t.Errorf("testenv: list Leases left in %s: %v", ns.Name, err)
			return
		}
		for _, l := range leases.Items {
			t.Errorf("Lease %s/%s left behind, held by %q", l.Namespace, l.Name, ptr.Deref(l.Spec.HolderIdentity, ""))
		}
	})
	return ns.Name
}
