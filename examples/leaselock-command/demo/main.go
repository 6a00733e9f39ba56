// Command demo shows what `leaselock run` prevents, with the command itself.
// Several processes at once add one to a counter in a file, many times each,
// with a shell command that reads the file, sleeps 20ms and writes the value
// plus one. First every increment runs under `leaselock run demo-counter`,
// one leaselock process each, then the same increments run without it. At
// the end it prints, for both, the expected and observed count, the updates
// lost and the wall time, and the Leases left. With the lock the increments
// take turns and none is lost; without it two that read the same value write
// the same value, and an increment is lost.
//
// It needs the leaselock binary, built from cmd/leaselock: --leaselock names
// it, and by default it is looked up on the PATH.
//
// With no --kubeconfig and no KUBECONFIG it starts the local API server that
// `make test` uses and stops it at the end; with one it runs against that
// cluster and needs: get on its namespace (and create, if it is absent), and
// in --namespace what leaselock run needs (see rbac.yaml) and list on
// leases, for the Leases left.
//
// Copying it into a module of your own: the local API server comes from
// this repository's internal/localapi, which other modules cannot import.
// Replace localapi.Connect with a rest.Config of your own (ctrl.GetConfig).
//
//	go build -o /tmp/leaselock ./cmd/leaselock
//	go run ./examples/leaselock-command/demo --leaselock /tmp/leaselock --procs 4 --increments 10
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/localapi"
)

const lockName = "demo-counter"

// increment is the shell command of one increment. The sleep between the
// read and the write is where two increments without the lock overlap.
var increment = []string{"sh", "-c", `n=$(cat "$F"); sleep 0.02; echo $((n+1)) > "$F"`}

// exitCodes are what leaselock's own exit codes mean.
var exitCodes = map[int]string{
	75:  "the lock was still held after --wait",
	124: "the lock was lost while the command ran",
	125: "leaselock itself failed",
	126: "the command is not executable",
	127: "the command was not found",
}

type options struct {
	leaselock  string
	procs      int
	increments int
	namespace  string
	kubeconfig string
}

func main() {
	var o options
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	fs.StringVar(&o.leaselock, "leaselock", "leaselock", "the leaselock binary, built from cmd/leaselock; looked up on the PATH unless it has a slash")
	fs.IntVar(&o.procs, "procs", 4, "processes that increment at once")
	fs.IntVar(&o.increments, "increments", 10, "increments each process makes, one after the other")
	fs.StringVar(&o.namespace, "namespace", "leaselock-command-demo", "namespace of the Lease (created if absent)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to use; default $KUBECONFIG, and with neither a local API server is started")
	_ = fs.Parse(os.Args[1:]) // ExitOnError
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one ends the program at once, as it
	// would by default.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		stop()
		os.Exit(1)
	}
}

func (o options) validate() error {
	switch {
	case o.procs < 1:
		return fmt.Errorf("invalid --procs %d: must be at least 1", o.procs)
	case o.increments < 1:
		return fmt.Errorf("invalid --increments %d: must be at least 1", o.increments)
	}
	if msgs := apivalidation.ValidateNamespaceName(o.namespace, false); len(msgs) > 0 {
		return fmt.Errorf("invalid --namespace %q: %s", o.namespace, msgs[0])
	}
	return nil
}

// result is what a mode of the run ended with.
type result struct {
	observed int
	wall     time.Duration
}

// run runs the increments with the lock and without it, and prints the
// summary. It fails when the locked run lost an update or left a Lease.
func run(ctx context.Context, o options) error {
	leaselock, err := exec.LookPath(o.leaselock)
	if err != nil {
		return fmt.Errorf("--leaselock %s: %w (go build -o leaselock ./cmd/leaselock, and pass its path)", o.leaselock, err)
	}
	cluster, err := localapi.Connect(o.kubeconfig, os.Stdout)
	if err != nil {
		return err
	}
	defer cluster.Close()
	c, err := client.New(cluster.Config, client.Options{})
	if err != nil {
		return err
	}
	if err := ensureNamespace(ctx, c, o.namespace); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "leaselock-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	counter := filepath.Join(dir, "counter")

	// leaselock finds the cluster as this program did: in --kubeconfig,
	// in the local API server's kubeconfig, or else in $KUBECONFIG, which
	// it inherits.
	lockRun := []string{leaselock, "run", lockName}
	if cluster.KubeconfigPath != "" {
		lockRun = append(lockRun, "--kubeconfig", cluster.KubeconfigPath)
	}
	lockRun = append(lockRun, "-n", o.namespace, "--")
	locked, lockedErr := runMode(ctx, o, counter, mode{name: "with leaselock", argv: append(lockRun, increment...), locked: true})
	var unlocked result
	var unlockedErr error
	if lockedErr == nil {
		unlocked, unlockedErr = runMode(ctx, o, counter, mode{name: "without", argv: increment})
	}

	// The Leases are listed on a context of their own, so that an
	// interrupted run still says whether one was left.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var leases coordinationv1.LeaseList
	if err := c.List(ctx, &leases, client.InNamespace(o.namespace)); err != nil {
		return errors.Join(lockedErr, unlockedErr, err)
	}
	if lockedErr != nil || unlockedErr != nil {
		fmt.Printf("  leases left  %d\n", len(leases.Items))
		return errors.Join(lockedErr, unlockedErr)
	}

	expected := o.procs * o.increments
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "  \twith leaselock\twithout\n")
	fmt.Fprintf(w, "  expected\t%d\t%d\n", expected, expected)
	fmt.Fprintf(w, "  observed\t%d\t%d\n", locked.observed, unlocked.observed)
	fmt.Fprintf(w, "  updates lost\t%d\t%d\n", expected-locked.observed, expected-unlocked.observed)
	fmt.Fprintf(w, "  wall time\t%v\t%v\n", locked.wall.Round(10*time.Millisecond), unlocked.wall.Round(10*time.Millisecond))
	fmt.Fprintf(w, "  leases left\t%d\n", len(leases.Items))
	if err := w.Flush(); err != nil {
		return err
	}
	if locked.observed != expected || len(leases.Items) > 0 {
		return fmt.Errorf("with leaselock: observed %d of %d, %d Leases left", locked.observed, expected, len(leases.Items))
	}
	return nil
}

// ensureNamespace creates the namespace if it is absent. It reads it
// first: a user who may not create namespaces can still run in one that
// exists.
func ensureNamespace(ctx context.Context, c client.Client, namespace string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	err := c.Get(ctx, client.ObjectKeyFromObject(ns), ns)
	if apierrors.IsNotFound(err) {
		err = c.Create(ctx, ns)
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
	}
	return err
}

// mode is how the increments run.
type mode struct {
	name string
	// argv is the command line of one increment.
	argv []string
	// locked reports whether argv runs leaselock.
	locked bool
}

// runMode sets the counter to zero, then runs o.procs processes at once,
// each running m.argv o.increments times, one after the other, and returns
// the count they left. Each process has its own POD_NAME, which leaselock
// takes as its holder identity, as it does in a Pod.
func runMode(ctx context.Context, o options, counter string, m mode) (result, error) {
	if err := os.WriteFile(counter, []byte("0\n"), 0o644); err != nil {
		return result{}, err
	}
	fmt.Printf(">> %s: %d processes x %d increments, each one run of\n", m.name, o.procs, o.increments)
	fmt.Printf("   POD_NAME=proc-N F=%s %s\n", counter, shellJoin(m.argv))
	start := time.Now()
	errs := make([]error, o.procs)
	var wg sync.WaitGroup
	for p := range o.procs {
		env := append(os.Environ(), "F="+counter, "POD_NAME=proc-"+strconv.Itoa(p))
		wg.Go(func() {
			for i := range o.increments {
				if err := runOne(ctx, m, env); err != nil {
					errs[p] = fmt.Errorf("%s: process %d, increment %d: %w", m.name, p, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	r := result{wall: time.Since(start)}
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s: interrupted", m.name)
	}
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	data, err := os.ReadFile(counter)
	if err != nil {
		return r, err
	}
	r.observed, err = strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return r, fmt.Errorf("counter %s: %w", counter, err)
	}
	return r, nil
}

// runOne runs m.argv once, and returns an error with its output if it
// fails. On a cancel it asks the process to stop as a signal does, so that
// leaselock releases its lock, and kills it only if it does not.
func runOne(ctx context.Context, m mode, env []string) error {
	cmd := exec.CommandContext(ctx, m.argv[0], m.argv[1:]...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	// The output of a run that went well is not shown: leaselock's
	// progress lines, one set per increment, would fill the screen.
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && m.locked {
		if meaning, ok := exitCodes[exit.ExitCode()]; ok {
			err = fmt.Errorf("%w: %s", err, meaning)
		}
	}
	if err != nil {
		return fmt.Errorf("%w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// shellJoin returns args as a shell command line, each quoted where the
// shell would split or expand it.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
			quoted[i] = a
			continue
		}
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}
