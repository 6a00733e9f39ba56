// Package testenv runs the local kube-apiserver and etcd (controller-runtime's
// envtest, with the binaries `make envtest-bins` builds into bin/k8s) for this
// project's integration tests, benchmarks and examples.
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
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Binaries are the programs envtest needs in the assets directory.
var Binaries = []string{"kube-apiserver", "etcd"}

// HowToGet is the one line that says how to get the binaries.
const HowToGet = "run `make envtest-bins` (or `make test`) to build kube-apiserver and etcd into bin/k8s"

// AssetsDir returns the folder that holds kube-apiserver and etcd:
// $KUBEBUILDER_ASSETS when set, else bin/k8s in the nearest parent folder of
// the working directory that has one. It returns an error naming the folder
// and what is missing when a binary is absent.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = findUp(filepath.Join("bin", "k8s"))
	}
	if dir == "" {
		return "", fmt.Errorf("testenv: no bin/k8s above the working directory and KUBEBUILDER_ASSETS is not set: %s", HowToGet)
	}
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("testenv: %s not found in %s: %s", b, dir, HowToGet)
		}
	}
	return dir, nil
}

func findUp(rel string) string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(filepath.Join(dir, rel)); err == nil && fi.IsDir() {
			return filepath.Join(dir, rel)
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ""
		}
		if filepath.Dir(dir) == dir {
			return ""
		}
	}
}

// Start starts a control plane from AssetsDir and returns it with a config
// for an admin user. Stop it with env.Stop.
func Start() (*envtest.Environment, *rest.Config, error) {
	dir, err := AssetsDir()
	if err != nil {
		return nil, nil, err
	}
	env := &envtest.Environment{BinaryAssetsDirectory: dir}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("testenv: start kube-apiserver and etcd from %s: %w", dir, err)
	}
	// Tests run many clients at once; client-go's default of 5 requests per
	// second would measure the client's rate limiter, not the lock.
	cfg.QPS, cfg.Burst = -1, -1
	return env, cfg, nil
}

// InCI reports whether the tests run in CI, where a missing binary is a
// failure, not a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

var (
	env      *envtest.Environment
	config   *rest.Config
	startErr error
)

type mainRunner struct{ m *testing.M }

// Main wraps m so that its Run starts a control plane before the package's
// tests and stops it after them. Without the binaries the tests that call
// Config skip, and under CI=true the package fails.
func Main(m *testing.M) goleak.TestingM { return mainRunner{m} }

func (r mainRunner) Run() int {
	e, cfg, err := Start()
	if err != nil {
		if InCI() {
			fmt.Fprintf(os.Stderr, "FAIL: CI=true and the API server is not available: %v\n", err)
			return 1
		}
		startErr = err
		return r.m.Run()
	}
	env, config = e, cfg
	code := r.m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stop: %v\n", err)
		return 1
	}
	return code
}

// Config returns the config of the package's control plane, started by Main.
// It skips t, with one line saying how to get the binaries, when they are
// absent.
func Config(t testing.TB) *rest.Config {
	t.Helper()
	if config == nil {
		if startErr == nil {
			t.Fatal("testenv: Config called without testenv.Main in TestMain")
		}
		t.Skip(startErr)
	}
	return rest.CopyConfig(config)
}

// UserConfig returns a config for a user with no RBAC permissions of its
// own, for tests of what a forbidden request does.
func UserConfig(t testing.TB, name string) *rest.Config {
	t.Helper()
	Config(t)
	user, err := env.AddUser(envtest.User{Name: name}, config)
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
