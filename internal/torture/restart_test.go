package torture_test

import (
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/leaselock/leaselock/internal/localapi"
	"github.com/leaselock/leaselock/internal/testenv"
)

// TestTortureServerRestart stops and starts kube-apiserver while K processes
// of G goroutines increment counters under withlock. Callers see errors or
// waits while it is down; never two holders; and every goroutine writes its
// share once it is back.
//
// The test runs a control plane of its own (see startRestartable): testenv
// does not hand out the one it shares with the other tests, and that one
// would take over 20s to stop.
func TestTortureServerRestart(t *testing.T) {
	restarts := envInt(t, restartsEnv, 1)
	procs := envInt(t, procsEnv, 3)
	goroutines := envInt(t, goroutinesEnv, 3)
	ops := envInt(t, opsEnv, 15)

	env, cfg := startRestartable(t)
	c, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := testenv.Namespace(t, c)
	locks := []string{"torture-restart-a", "torture-restart-b"}
	createCounters(t, c, ns, locks)
	kubeconfig := writeKubeconfig(t, cfg)

	ws := newWorkers(t)
	perProc := map[int]int{}
	for p := range procs {
		ws.start(workerConfig{
			Kubeconfig: kubeconfig, Namespace: ns, Proc: p, Goroutines: goroutines, Ops: ops, Locks: locks,
			LeaseDuration: 3 * time.Second, RetryInterval: 100 * time.Millisecond, NoWatch: p%2 == 1,
		})
		perProc[p] = goroutines
	}
	total := procs * goroutines * ops
	var lastStop time.Time
	for r := range restarts {
		// Restarts spread over the run, the last with a third of the
		// increments (or more) still to write once the server is back.
		want := (r + 1) * total / (restarts + 2)
		if !ws.waitFor(func(rs []record) bool {
			return count(rs, func(r record) bool { return r.Write == wroteYes }) >= want
		}) {
			t.Fatalf("restart %d: the workers ended with fewer than %d increments written", r, want)
		}
		began := time.Now()
		stopped, back := restartAPIServer(t, env)
		lastStop = stopped
		t.Logf("restart %d after %d increments: kube-apiserver took %v to stop (SIGTERM) and was down %v",
			r, want, stopped.Sub(began).Round(time.Millisecond), back.Sub(stopped).Round(time.Millisecond))
		figures.add(func(s *summary) {
			s.restarts++
			s.downtime = append(s.downtime, back.Sub(stopped))
		})
	}
	ws.wait()

	recs := ws.snapshot()
	after := count(recs, func(r record) bool { return r.Write == wroteYes && r.Start > lastStop.UnixNano() })
	failed := count(recs, func(r record) bool { return r.Kind == "op" && r.Err != "" })
	t.Logf("%d withlock calls returned an error around the restarts; %d increments written after the last stop", failed, after)
	if after == 0 {
		t.Errorf("no increment written after the last stop of the API server: the callers did not carry on")
	}
	checkDone(t, recs, ops, perProc)
	for _, l := range locks {
		checkLock(t, c, ns, l, recs, goroutines)
	}
	checkLeases(t, c, ns, nil)
}

// startRestartable starts a control plane that can restart kube-apiserver
// the way a real one restarts, and stops it at the end of t.
//
// It is localapi.Start with two settings of its own. The serving certificate
// lives in a folder of the test's: envtest's APIServer.Stop removes the
// folder it made itself, and Start would then make a new CA that the clients
// do not trust. And kube-apiserver is given a grace period for open watches
// at shutdown (--shutdown-watch-termination-grace-period, 0 by default):
// without it, SIGTERM leaves every watch open until the HTTP server's own
// shutdown timeout (60s), and envtest kills it with SIGKILL after 20s. The
// port stays the same across a restart: envtest keeps SecureServing.Port.
func startRestartable(t *testing.T) (*envtest.Environment, *rest.Config) {
	t.Helper()
	testenv.Config(t) // skips without the binaries, as every test here does
	dir, err := localapi.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: dir, UseExistingCluster: ptr.To(false)}
	api := env.ControlPlane.GetAPIServer()
	api.CertDir = t.TempDir()
	api.Configure().Set("shutdown-watch-termination-grace-period", "2s")
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start a control plane for the restart: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop the control plane: %v", err)
		}
	})
	cfg.QPS, cfg.Burst = -1, -1
	return env, cfg
}

// restartAPIServer stops kube-apiserver (SIGTERM, a graceful shutdown) and
// starts it again on the same port with the same certificate. It returns
// when the server was gone (the process had exited) and when it was back
// (ready). etcd keeps running, so the restarted server finds the Leases and
// counters where they were.
func restartAPIServer(t *testing.T, env *envtest.Environment) (stopped, back time.Time) {
	t.Helper()
	api := env.ControlPlane.APIServer
	if err := api.Stop(); err != nil {
		t.Fatalf("stop kube-apiserver: %v", err)
	}
	stopped = time.Now()
	if err := api.Start(); err != nil {
		t.Fatalf("start kube-apiserver again: %v", err)
	}
	return stopped, time.Now()
}
