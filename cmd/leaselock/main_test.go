package main

// The harness of the tests that run the built binary against the local API
// server, as real processes.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/exampletest"
	"github.com/leaselock/leaselock/internal/testenv"
)

// binDir holds the binary that the tests build once.
var binDir string

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(countSignals())
	}
	dir, err := os.MkdirTemp("", "leaselock-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	goleak.VerifyTestMain(removing{testenv.Main(m), dir}, testenv.IgnoredGoroutines()...)
}

// removing removes dir after the tests ran.
type removing struct {
	m   goleak.TestingM
	dir string
}

func (r removing) Run() int {
	defer os.RemoveAll(r.dir)
	return r.m.Run()
}

var (
	buildOnce sync.Once
	built     string
)

// cluster is the package's control plane, seen by a test: an admin client,
// a fresh namespace, and a kubeconfig whose context has that namespace.
type cluster struct {
	c          client.WithWatch
	ns         string
	kubeconfig string
}

// newCluster starts (or joins) the local API server, and builds the binary
// once: it skips t when the API server's binaries are absent, except in CI.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	cfg := testenv.Config(t)
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	buildOnce.Do(func() { built = exampletest.BuildTo(t, filepath.Join(binDir, "leaselock")) })
	if built == "" {
		t.Fatal("the build of leaselock failed in an earlier test")
	}
	return &cluster{c: c, ns: ns, kubeconfig: testenv.KubeConfig(t, cfg, ns)}
}

// invocation is a leaselock process that a test started.
type invocation struct {
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	exited chan struct{}
	code   int
}

// start starts leaselock with args against the cluster, with stdin if it
// is not nil. The process is killed at the end of the test if it still
// runs.
func (k *cluster) start(t *testing.T, stdin string, args ...string) *invocation {
	t.Helper()
	p := &invocation{exited: make(chan struct{})}
	p.cmd = exec.Command(built, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	p.cmd.Env = append(os.Environ(), "KUBECONFIG=", "POD_NAME=")
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if stdin != "" {
		p.cmd.Stdin = strings.NewReader(stdin)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = 128 + int(ws.Signal())
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// run runs leaselock with args to its end, and returns its exit code,
// stdout and stderr.
func (k *cluster) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	p := k.start(t, "", args...)
	code := p.wait(t, time.Minute)
	return code, p.stdout.String(), p.stderr.String()
}

// wait returns the process's exit code, and fails t when it has not exited
// within d.
func (p *invocation) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(d):
		t.Fatalf("leaselock %q still runs after %v\nstdout: %s\nstderr: %s", p.cmd.Args[1:], d, p.stdout.String(), p.stderr.String())
		return -1
	}
}

// lease returns the Lease of lock name, nil when there is none.
func (k *cluster) lease(t *testing.T, name string) *coordinationv1.Lease {
	t.Helper()
	var lease coordinationv1.Lease
	err := k.c.Get(context.Background(), client.ObjectKey{Namespace: k.ns, Name: name}, &lease)
	if client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	if err != nil {
		return nil
	}
	return &lease
}

// waitForHolder waits until lock name is held, and returns its Lease.
func (k *cluster) waitForHolder(t *testing.T, name string) *coordinationv1.Lease {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if lease := k.lease(t, name); lease != nil {
			return lease
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("lock %s not held after 30s", name)
	return nil
}

// takeOver writes holder into the Lease of lock name, as another process
// taking it by force would, retrying on the Conflicts of the holder's
// renewals.
func (k *cluster) takeOver(t *testing.T, name, holder string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l := k.lease(t, name)
		if l == nil {
			return fmt.Errorf("lock %s is free", name)
		}
		l.Spec.HolderIdentity = &holder
		return k.c.Update(context.Background(), l)
	})
	if err != nil {
		t.Fatalf("take lock %s over: %v", name, err)
	}
}

// assertNoLease fails t when any Lease is left in the namespace.
func (k *cluster) assertNoLease(t *testing.T) {
	t.Helper()
	var list coordinationv1.LeaseList
	if err := k.c.List(context.Background(), &list, client.InNamespace(k.ns)); err != nil {
		t.Fatal(err)
	}
	for _, l := range list.Items {
		t.Errorf("Lease %s left, held by %v", l.Name, *l.Spec.HolderIdentity)
	}
}

// syncBuffer is a bytes.Buffer that a process writes while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
