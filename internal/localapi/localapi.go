// Package localapi starts the local kube-apiserver and etcd (controller-runtime's
// envtest, with the binaries `make envtest-bins` builds into bin/k8s/VERSION) that this
// project's tests, benchmarks and examples run against.
package localapi

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Binaries are the programs envtest needs in the assets folder.
var Binaries = []string{"kube-apiserver", "etcd"}

// HowToGet is the one line that says how to get the binaries.
const HowToGet = "run `make envtest-bins` (or `make test`) to build kube-apiserver and etcd into bin/k8s/VERSION"

// AssetsDir returns the folder that holds kube-apiserver and etcd:
// $KUBEBUILDER_ASSETS when set, else the newest release's folder in bin/k8s
// (bin/k8s/v1.37.2, say; the Makefile builds one per supported release) in
// the nearest parent folder of the working directory that has one. It
// returns an error naming the folder and what is missing when a binary is
// absent.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = newestRelease(findUp(filepath.Join("bin", "k8s")))
	}
	if dir == "" {
		return "", fmt.Errorf("no bin/k8s/VERSION above the working directory and KUBEBUILDER_ASSETS is not set: %s", HowToGet)
	}
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s not found in %s: %s", b, dir, HowToGet)
		}
	}
	return dir, nil
}

// newestRelease returns the folder of the newest release in dir, whose
// folders are named by release (v1.34.4, v1.37.2), or "" when it has none.
// A folder without both binaries (a build that was cut short) is passed
// over.
func newestRelease(dir string) string {
	if dir == "" {
		return ""
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var newest *version.Version
	var name string
	for _, e := range entries {
		v, err := version.ParseSemantic(e.Name())
		if err != nil || !e.IsDir() || !strings.HasPrefix(e.Name(), "v") || !hasBinaries(filepath.Join(dir, e.Name())) {
			continue
		}
		if newest == nil || v.GreaterThan(newest) {
			newest, name = v, e.Name()
		}
	}
	if newest == nil {
		return ""
	}
	return filepath.Join(dir, name)
}

// hasBinaries reports whether dir holds every one of Binaries.
func hasBinaries(dir string) bool {
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return false
		}
	}
	return true
}

func findUp(rel string) string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err == nil && fi.IsDir() {
			return filepath.Join(dir, rel)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ""
		}
		if filepath.Dir(dir) == dir {
			return ""
		}
	}
}

// exitWithParentEnv names, for the server binaries that hack/tools builds,
// the process whose end should end them.
const exitWithParentEnv = "LEASELOCK_EXIT_WITH_PARENT"

// Server is a running local control plane.
type Server struct {
	env *envtest.Environment
	// Config is for an admin user, without client-side rate limits: the
	// callers run many clients at once, and client-go's default of 5 requests
	// per second would measure its rate limiter, not the lock.
	Config *rest.Config
	// KubeConfig is Config as a kubeconfig file, for other processes.
	KubeConfig []byte
}

// Start starts kube-apiserver and etcd from AssetsDir.
func Start() (*Server, error) {
	dir, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	// Never the cluster of the caller's kubeconfig, whatever
	// USE_EXISTING_CLUSTER says: the tests and the demo write and delete.
	env := &envtest.Environment{
		BinaryAssetsDirectory: dir, UseExistingCluster: ptr.To(false),
		// envtest's 20s is tight where two test packages and the examples
		// each start one on two cores while race builds compile.
		ControlPlaneStartTimeout: time.Minute,
	}
	// The kube-apiserver and etcd that make test builds exit when this
	// process does, however it ends: envtest starts them in process groups
	// of their own, which a Ctrl-C, a panic or a test timeout never reach.
	if err := os.Setenv(exitWithParentEnv, strconv.Itoa(os.Getpid())); err != nil {
		return nil, err
	}
	cfg, err := env.Start()
	if err != nil {
		// envtest may have started etcd and kube-apiserver before it failed
		// (their own process groups: a Ctrl-C does not reach them).
		return nil, errors.Join(fmt.Errorf("start kube-apiserver and etcd from %s: %w", dir, err), env.Stop())
	}
	cfg.QPS, cfg.Burst = -1, -1
	return &Server{env: env, Config: cfg, KubeConfig: env.KubeConfig}, nil
}

// Stop stops the control plane.
func (s *Server) Stop() error { return s.env.Stop() }

// Env returns the envtest environment, for users and restarts.
func (s *Server) Env() *envtest.Environment { return s.env }

// Cluster is where an example runs: a cluster named by a kubeconfig, or a
// local control plane started for the run.
type Cluster struct {
	// Config is for the cluster's user, without client-side rate limits.
	Config *rest.Config
	// KubeconfigPath is a kubeconfig file for other processes, or "" when
	// they find it as this one did, in $KUBECONFIG.
	KubeconfigPath string
	// Local reports whether Connect started the control plane.
	Local bool

	server *Server
	tmp    string
}

// Connect returns the cluster named by kubeconfig, else by $KUBECONFIG, and
// when both are empty starts a local control plane, printing progress lines to
// progress. Close ends what Connect started.
func Connect(kubeconfig string, progress io.Writer) (*Cluster, error) {
	if kubeconfig != "" || os.Getenv("KUBECONFIG") != "" {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = kubeconfig
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig: %w", err)
		}
		cfg.QPS, cfg.Burst = -1, -1
		return &Cluster{Config: cfg, KubeconfigPath: kubeconfig}, nil
	}
	dir, err := AssetsDir()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig and no KUBECONFIG, and no local API server to start: %w", err)
	}
	fmt.Fprintf(progress, ">> starting a local kube-apiserver and etcd from %s\n", dir)
	began := time.Now()
	srv, err := Start()
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "leaselock-kubeconfig-*")
	if err == nil {
		_, err = f.Write(srv.KubeConfig)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		if f != nil {
			err = errors.Join(err, os.Remove(f.Name()))
		}
		return nil, errors.Join(fmt.Errorf("write kubeconfig: %w", err), srv.Stop())
	}
	fmt.Fprintf(progress, ">> local API server ready at %s after %v\n", srv.Config.Host, time.Since(began).Round(100*time.Millisecond))
	return &Cluster{Config: srv.Config, KubeconfigPath: f.Name(), Local: true, server: srv, tmp: f.Name()}, nil
}

// Close stops the local control plane, if Connect started one.
func (c *Cluster) Close() error {
	if c.server == nil {
		return nil
	}
	return errors.Join(c.server.Stop(), os.Remove(c.tmp))
}
