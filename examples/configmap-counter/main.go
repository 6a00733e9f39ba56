// Command configmap-counter shows what leaselock prevents. It runs several
// replica processes (it re-executes itself in worker mode, so each has its own
// client and connection), and each adds one to a counter in one ConfigMap, many
// times, under withlock.Do. At the end it prints the expected and observed
// count, the updates lost, the lock wait p50/p99 and the Leases left, then
// a timeline of the run: a row per replica, a mark where it was inside its
// critical section, from the replicas' own timestamps. With the lock the
// replicas take turns; without it a row below marks where two were inside
// at once, which is where updates were lost.
//
// Each increment is a read followed by a merge patch that carries no
// resourceVersion, as many controllers write: without the lock (--no-lock)
// two replicas that read the same value write the same value, and an
// increment is lost.
//
// With no --kubeconfig and no KUBECONFIG it starts the local API server that
// `make test` uses and stops it at the end; with one it runs against that
// cluster and needs: get on its namespace (and create, if it is absent);
// in --namespace, create, get, update, delete and watch on leases (see
// examples/rbac.yaml) and list, for the summary of Leases left; and create,
// get, patch and delete on configmaps.
//
// It logs to stderr, one console line each, at info level; -v logs at
// debug level, every lock acquired and released among them.
//
// Copying it into a module of your own: the local API server comes from
// this repository's internal/localapi, which other modules cannot import.
// Replace localapi.Connect with a rest.Config of your own (ctrl.GetConfig).
//
//	go run ./examples/configmap-counter --replicas 4 --increments 25
//	go run ./examples/configmap-counter --replicas 4 --increments 25 --no-lock
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/leaselock/leaselock/internal/localapi"
	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

const (
	configMapName = "counter"
	lockName      = "configmap-counter"

	// replicaStartup is how long the replica processes are given to start
	// and connect before they all begin.
	replicaStartup = 2 * time.Second
)

type options struct {
	replicas   int
	increments int
	namespace  string
	kubeconfig string
	noLock     bool
	sections   string
	verbose    bool
	worker     int
	// startAt is when, in Unix milliseconds, a worker starts its first
	// critical section (see runReplicas).
	startAt int64
}

// report is what a worker prints, as one JSON line, when it is done.
type report struct {
	Replica int             `json:"replica"`
	Waits   []time.Duration `json:"waits"`
	// Sections are its critical sections, in order, for the timeline.
	Sections []span `json:"sections"`
	Err      string `json:"err,omitempty"`
}

func main() {
	var o options
	// A flag set of its own: controller-runtime registers --kubeconfig on the
	// default one.
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	fs.IntVar(&o.replicas, "replicas", 4, "replica processes contending for the lock")
	fs.IntVar(&o.increments, "increments", 25, "increments each replica makes")
	fs.StringVar(&o.namespace, "namespace", "leaselock-demo", "namespace of the ConfigMap and the Lease (created if absent)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to use; default $KUBECONFIG, and with neither a local API server is started")
	fs.BoolVar(&o.noLock, "no-lock", false, "increment without the lock, to show the updates it saves")
	fs.StringVar(&o.sections, "sections", "", "write the critical sections behind the timeline to this file, as JSON: for each replica, the start and end of each")
	fs.BoolVar(&o.verbose, "v", false, "log at debug level: every lock acquired and released")
	fs.IntVar(&o.worker, "worker", -1, "internal: run as replica N and print a JSON report")
	fs.Int64Var(&o.startAt, "start-at", 0, "internal: a worker's start, in Unix milliseconds")
	_ = fs.Parse(os.Args[1:]) // ExitOnError
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "configmap-counter:", err)
		os.Exit(2)
	}

	logger := newLogger(o.verbose)
	logf.SetLogger(logger)
	// client-go's own lines (a warning from the server, a throttled
	// request) come out in the same format.
	klog.SetLogger(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one ends the program at once, as it
	// would by default: the first one's cleanup and summary can take
	// seconds. The local API server, if the program started one, exits
	// with it.
	context.AfterFunc(ctx, stop)
	run := runParent
	if o.worker >= 0 {
		run = runWorker
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "configmap-counter:", err)
		stop()
		os.Exit(1)
	}
}

// newLogger returns the program's logger: console lines on stderr, at info
// level or, when verbose, at debug level.
func newLogger(verbose bool) logr.Logger {
	level := zapcore.InfoLevel
	if verbose {
		level = zapcore.DebugLevel
	}
	shortTime := func(cfg *zapcore.EncoderConfig) {
		cfg.EncodeTime = zapcore.TimeEncoderOfLayout(time.TimeOnly + ".000")
	}
	// No stack traces: an error line names its error, which is what a user
	// of the example needs.
	return zap.New(zap.ConsoleEncoder(shortTime), zap.Level(level), zap.StacktraceLevel(zapcore.PanicLevel))
}

func (o options) validate() error {
	switch {
	case o.replicas < 1:
		return fmt.Errorf("invalid --replicas %d: must be at least 1", o.replicas)
	case o.increments < 1:
		return fmt.Errorf("invalid --increments %d: must be at least 1", o.increments)
	}
	if msgs := apivalidation.ValidateNamespaceName(o.namespace, false); len(msgs) > 0 {
		return fmt.Errorf("invalid --namespace %q: %s", o.namespace, msgs[0])
	}
	if o.sections != "" {
		// Written at the end of the run: a folder that is not there should
		// not cost the run first.
		if fi, err := os.Stat(filepath.Dir(o.sections)); err != nil || !fi.IsDir() {
			return fmt.Errorf("invalid --sections %q: its folder is not there", o.sections)
		}
	}
	return nil
}

// runParent prepares the ConfigMap, runs the replicas, and prints the
// summary. It fails when the locked run lost an update or left a Lease.
func runParent(ctx context.Context, o options) error {
	cluster, err := localapi.Connect(o.kubeconfig, os.Stdout)
	if err != nil {
		return err
	}
	defer cluster.Close()
	c, err := client.New(cluster.Config, client.Options{})
	if err != nil {
		return err
	}
	if err := reset(ctx, c, o.namespace); err != nil {
		return err
	}

	mode := "with the lock"
	if o.noLock {
		mode = "without the lock (--no-lock)"
	}
	fmt.Printf(">> %d replicas x %d increments of ConfigMap %s/%s, %s\n", o.replicas, o.increments, o.namespace, configMapName, mode)
	reports, runErr := runReplicas(ctx, o, cluster.KubeconfigPath)
	interrupted := ctx.Err() != nil
	if runErr != nil && !interrupted {
		return runErr
	}

	// The summary is read on a context of its own, so that an interrupted
	// run still says where the counter stopped and whether Leases were left.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.namespace, Name: configMapName}, &cm); err != nil {
		return err
	}
	observed, _ := strconv.Atoi(cm.Data["count"])
	var leases coordinationv1.LeaseList
	if err := c.List(ctx, &leases, client.InNamespace(o.namespace), client.MatchingLabels{resourcelock.ManagedByLabel: "leaselock"}); err != nil {
		return err
	}
	if interrupted {
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(w, "  mode\t%s, interrupted\n", mode)
		fmt.Fprintf(w, "  observed\t%d\n", observed)
		fmt.Fprintf(w, "  leases left\t%d\n", len(leases.Items))
		return errors.Join(w.Flush(), runErr)
	}
	var waits []time.Duration
	for _, r := range reports {
		waits = append(waits, r.Waits...)
	}
	expected := o.replicas * o.increments

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "  mode\t%s\n", mode)
	fmt.Fprintf(w, "  expected\t%d\n", expected)
	fmt.Fprintf(w, "  observed\t%d\n", observed)
	fmt.Fprintf(w, "  lost updates\t%d\n", expected-observed)
	if !o.noLock {
		fmt.Fprintf(w, "  lock wait p50\t%v\n", percentile(waits, 50))
		fmt.Fprintf(w, "  lock wait p99\t%v\n", percentile(waits, 99))
	}
	fmt.Fprintf(w, "  leases left\t%d\n", len(leases.Items))
	if err := w.Flush(); err != nil {
		return err
	}
	if err := printTimeline(o, reports); err != nil {
		return err
	}
	if !o.noLock && (observed != expected || len(leases.Items) > 0) {
		return fmt.Errorf("with the lock: observed %d of %d, %d Leases left", observed, expected, len(leases.Items))
	}
	return nil
}

// printTimeline prints the timeline of the replicas' critical sections and,
// with --sections, writes them to that file.
func printTimeline(o options, reports []report) error {
	spans := make([][]span, len(reports))
	for i, r := range reports {
		spans[i] = r.Sections
	}
	if o.sections != "" {
		data, err := json.MarshalIndent(spans, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.sections, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return drawTimeline(spans, timelineColumns).print(os.Stdout)
}

// reset creates the namespace if it is absent and sets the counter to zero.
// It reads the namespace first: a user who may not create namespaces can
// still run in one that exists.
func reset(ctx context.Context, c client.Client, namespace string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ns), ns); apierrors.IsNotFound(err) {
		if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	} else if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: configMapName, Namespace: namespace}}
	if err := c.Delete(ctx, cm); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	cm.Data = map[string]string{"count": "0"}
	return c.Create(ctx, cm)
}

// runReplicas starts the worker processes and collects their reports.
func runReplicas(ctx context.Context, o options, kubeconfig string) ([]report, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	reports := make([]report, o.replicas)
	errs := make([]error, o.replicas)
	// The replicas start together, as replicas do that saw the same event:
	// each makes its client and reads the counter once, then waits for
	// this moment. Otherwise the first started could be done before the
	// last has dialed, and a run without the lock would lose nothing.
	startAt := time.Now().Add(replicaStartup).UnixMilli()
	var wg sync.WaitGroup
	for i := range o.replicas {
		args := []string{
			"--worker", strconv.Itoa(i), "--namespace", o.namespace,
			"--increments", strconv.Itoa(o.increments), "--kubeconfig", kubeconfig,
			"--start-at", strconv.FormatInt(startAt, 10),
		}
		if o.noLock {
			args = append(args, "--no-lock")
		}
		if o.verbose {
			args = append(args, "-v")
		}
		cmd := exec.CommandContext(ctx, self, args...)
		// On a cancel, ask the replica to stop as a signal does, so that it
		// releases the lock it may hold, and kill it only if it does not.
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 10 * time.Second
		cmd.Stderr = os.Stderr
		wg.Go(func() {
			out, err := cmd.Output()
			if err != nil {
				errs[i] = fmt.Errorf("replica %d: %w", i, err)
				return
			}
			if err := json.Unmarshal(out, &reports[i]); err != nil {
				errs[i] = fmt.Errorf("replica %d: read report %q: %w", i, out, err)
				return
			}
			if reports[i].Err != "" {
				errs[i] = fmt.Errorf("replica %d: %s", i, reports[i].Err)
			}
		})
	}
	wg.Wait()
	return reports, errors.Join(errs...)
}

// runWorker is one replica: it increments the counter o.increments times and
// prints its report, with the start and end of each critical section.
func runWorker(ctx context.Context, o options) error {
	r := report{Replica: o.worker}
	err := increments(ctx, o, &r)
	if err != nil {
		r.Err = err.Error()
	}
	out := bufio.NewWriter(os.Stdout)
	if err := json.NewEncoder(out).Encode(r); err != nil {
		return err
	}
	return out.Flush()
}

func increments(ctx context.Context, o options, r *report) error {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = -1, -1
	// A client that can watch: waiters watch the Lease and take their turn
	// the moment it is released, instead of polling.
	c, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		return err
	}
	key := client.ObjectKey{Namespace: o.namespace, Name: configMapName}
	// Connect, then wait for the others (see runReplicas).
	if err := c.Get(ctx, key, &corev1.ConfigMap{}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(time.UnixMilli(o.startAt))):
	}
	// Every replica waits its turn: the retry timeout must outlast the
	// queue ahead of it, not the default 5s.
	rl := resourcelock.NewResourceLocker(c, o.namespace, resourcelock.WithRetryTimeout(5*time.Minute))
	// inside is one critical section, timed for the timeline.
	inside := func(ctx context.Context) error {
		start := time.Now()
		err := increment(ctx, c, key)
		r.Sections = append(r.Sections, span{Start: start, End: time.Now()})
		return err
	}
	for range o.increments {
		if o.noLock {
			if err := inside(ctx); err != nil {
				return err
			}
			continue
		}
		asked := time.Now()
		err := withlock.Do(ctx, rl, lockName, func(ctx context.Context) error {
			r.Waits = append(r.Waits, time.Since(asked))
			return inside(ctx)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// increment reads the counter and writes it plus one with a merge patch,
// which carries no resourceVersion: the last writer wins.
func increment(ctx context.Context, c client.Client, key client.ObjectKey) error {
	var cm corev1.ConfigMap
	if err := c.Get(ctx, key, &cm); err != nil {
		return err
	}
	before := cm.DeepCopy()
	n, err := strconv.Atoi(cm.Data["count"])
	if err != nil {
		return fmt.Errorf("ConfigMap %s: count %q: %w", key, cm.Data["count"], err)
	}
	cm.Data["count"] = strconv.Itoa(n + 1)
	return c.Patch(ctx, &cm, client.MergeFrom(before))
}

// percentile returns the p-th percentile of ds, by the nearest-rank method.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1].Round(100 * time.Microsecond)
}
