// Command reconciler runs several controller-runtime managers (as several
// replicas of an operator would) whose reconcilers all merge entries into one
// shared ConfigMap with withlock.Update, and exits with a summary once every
// entry is there or the run times out.
//
// Each source ConfigMap labelled leaselock.example/source=true holds a value;
// reconciling it writes that value into the registry ConfigMap under the
// source's name. Every manager reconciles every source, so the writes to the
// registry contend; the lock serialises them and Update re-reads under it, so
// no entry is lost and no write fails with Conflict.
//
// Reads go through mgr.GetAPIReader(), not the manager's cached client: a
// stale cached read under the lock would only earn a Conflict and a retry.
// The locker from withlock.NewForCluster reads so for Update by itself.
//
// With no --kubeconfig and no KUBECONFIG it starts the local API server that
// `make test` uses and stops it at the end.
//
// It logs to stderr, one console line each, at info level: the managers'
// own progress (caches, controllers and workers starting and stopping) is
// at debug level, which -v shows, and errors show at every level.
// controller-runtime's --zap-* flags are there too.
//
// Copying it into a module of your own: the local API server comes from
// this repository's internal/localapi, which other modules cannot import.
// Replace localapi.Connect with a rest.Config of your own (ctrl.GetConfig).
//
//	go run ./examples/reconciler --managers 3 --sources 20
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	uberzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/leaselock/leaselock/internal/localapi"
	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

const (
	registryName = "registry"
	sourceLabel  = "leaselock.example/source"
)

type options struct {
	managers   int
	sources    int
	namespace  string
	kubeconfig string
	timeout    time.Duration
	metrics    string
	verbose    bool
	log        zap.Options
}

func main() {
	var o options
	// A flag set of its own: controller-runtime registers --kubeconfig on the
	// default one.
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	fs.IntVar(&o.managers, "managers", 3, "manager instances, each with its own client and cache")
	fs.IntVar(&o.sources, "sources", 20, "source ConfigMaps to merge into the registry")
	fs.StringVar(&o.namespace, "namespace", "leaselock-reconciler", "namespace of the ConfigMaps and Leases (created if absent)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to use; default $KUBECONFIG, and with neither a local API server is started")
	fs.DurationVar(&o.timeout, "timeout", time.Minute, "give up when the registry is not complete after this long")
	fs.StringVar(&o.metrics, "metrics-bind-address", "127.0.0.1:8383", "where the first manager serves /metrics, with leaselock's metrics among them; 0 turns it off")
	fs.BoolVar(&o.verbose, "v", false, "log at debug level: the managers' progress and every lock acquired and released")
	o.log.BindFlags(fs)
	_ = fs.Parse(os.Args[1:]) // ExitOnError
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "reconciler:", err)
		os.Exit(2)
	}
	logger := newLogger(o.log, o.verbose)
	ctrl.SetLogger(logger)
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
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "reconciler:", err)
		stop()
		os.Exit(1)
	}
}

// newLogger returns the program's logger: console lines on stderr, at info
// level or, when verbose, at debug level, without stack traces. The --zap-*
// flags, bound to opts, override each of these.
func newLogger(opts zap.Options, verbose bool) logr.Logger {
	if opts.NewEncoder == nil {
		// Not zap.ConsoleEncoder, whose encoder is made before the flags
		// are read, and so ignores --zap-encoder and --zap-time-encoding.
		opts.NewEncoder = func(eco ...zap.EncoderConfigOption) zapcore.Encoder {
			cfg := uberzap.NewDevelopmentEncoderConfig()
			for _, o := range eco {
				o(&cfg)
			}
			return zapcore.NewConsoleEncoder(cfg)
		}
	}
	if opts.Level == nil && verbose {
		opts.Level = zapcore.DebugLevel
	}
	if opts.StacktraceLevel == nil {
		// An error line names its error; a stack trace of the controller's
		// worker loop, as controller-runtime adds by default, tells a user of
		// the example nothing more.
		opts.StacktraceLevel = zapcore.PanicLevel
	}
	if opts.TimeEncoder == nil {
		opts.TimeEncoder = zapcore.TimeEncoderOfLayout(time.TimeOnly + ".000")
	}
	return zap.New(zap.UseFlagOptions(&opts))
}

func (o options) validate() error {
	switch {
	case o.managers < 1:
		return fmt.Errorf("invalid --managers %d: must be at least 1", o.managers)
	case o.sources < 1:
		return fmt.Errorf("invalid --sources %d: must be at least 1", o.sources)
	case o.timeout <= 0:
		return fmt.Errorf("invalid --timeout %v: must be positive", o.timeout)
	}
	if msgs := apivalidation.ValidateNamespaceName(o.namespace, false); len(msgs) > 0 {
		return fmt.Errorf("invalid --namespace %q: %s", o.namespace, msgs[0])
	}
	return nil
}

// RegistryReconciler merges one source ConfigMap into the registry.
//
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;create;update;delete;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;update
type RegistryReconciler struct {
	// Client writes; it may read from the manager's cache.
	Client client.Client
	// APIReader reads without a cache (mgr.GetAPIReader()).
	APIReader client.Reader
	// Locker is withlock.NewForCluster(mgr, ...)'s, whose Update reads
	// through the API reader.
	Locker    *withlock.Locker
	Namespace string
	// Log is the reconciler's logger, and the lock's: the manager's is at
	// debug level (see newManager), which would hide the lock's info lines.
	Log logr.Logger

	reconciles atomic.Int64
}

// Reconcile writes the source's value into the registry under the source's
// name, under the registry's lock. A reconcile that the manager's stop
// cancels returns no error: the request is not lost, as the next manager to
// start lists every source again.
func (r *RegistryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r.reconciles.Add(1)
	log := r.Log.WithValues("source", req.Name)
	ctx = logf.IntoContext(ctx, log)
	var source corev1.ConfigMap
	if err := r.APIReader.Get(ctx, req.NamespacedName, &source); err != nil {
		return ctrl.Result{}, stopping(ctx, log, client.IgnoreNotFound(err))
	}
	registry := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: registryName, Namespace: r.Namespace}}
	err := withlock.Update(ctx, r.Locker, r.Client, registry, func(cm *corev1.ConfigMap) error {
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[source.Name] = source.Data["value"]
		return nil
	})
	return ctrl.Result{}, stopping(ctx, log, err)
}

// stopping returns err, or nil when err is the cancellation of ctx or the
// closing of the locker: the manager is stopping, which is no failure of
// the reconcile. Any other error is returned as it is, and the controller
// logs it.
func stopping(ctx context.Context, log logr.Logger, err error) error {
	// The manager closes the locker before it stops the controllers: a
	// reconcile that waits for the lock then ends with ErrClosed.
	if err != nil && (ctx.Err() != nil && errors.Is(err, context.Canceled) || errors.Is(err, withlock.ErrClosed)) {
		log.V(1).Info("reconcile cancelled: the manager is stopping", "error", err.Error())
		return nil
	}
	return err
}

// SetupWithManager registers the reconciler for labelled ConfigMaps.
func (r *RegistryReconciler) SetupWithManager(mgr ctrl.Manager, name string) error {
	isSource, err := predicate.LabelSelectorPredicate(metav1.LabelSelector{MatchLabels: map[string]string{sourceLabel: "true"}})
	if err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(name).
		For(&corev1.ConfigMap{}, builder.WithPredicates(isSource)).
		Complete(r)
}

func run(ctx context.Context, o options) error {
	cluster, err := localapi.Connect(o.kubeconfig, os.Stdout)
	if err != nil {
		return err
	}
	defer cluster.Close()
	c, err := client.New(cluster.Config, client.Options{})
	if err != nil {
		return err
	}
	if err := setUp(ctx, c, o); err != nil {
		return err
	}

	fmt.Printf(">> %d managers merging %d sources into ConfigMap %s/%s\n", o.managers, o.sources, o.namespace, registryName)
	// The managers stop when the run does (cancel below), not at a signal:
	// an interrupted run still scrapes the first one's metrics for its
	// summary.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	reconcilers := make([]*RegistryReconciler, o.managers)
	errs := make([]error, o.managers)
	// stopped reports a manager that failed, so that the run ends then and
	// not at its timeout.
	stopped := make(chan error, o.managers)
	var wg sync.WaitGroup
	for i := range o.managers {
		mgr, r, err := newManager(cluster.Config, o, i)
		if err != nil {
			// Stop the managers already started before the caller stops
			// the cluster under them.
			cancel()
			wg.Wait()
			return err
		}
		reconcilers[i] = r
		wg.Go(func() {
			if errs[i] = mgr.Start(runCtx); errs[i] != nil {
				stopped <- errs[i]
			}
		})
	}

	began := time.Now()
	registry := &corev1.ConfigMap{}
	waitErr := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, o.timeout, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-stopped:
			return false, fmt.Errorf("a manager stopped: %w", err)
		default:
		}
		err := c.Get(ctx, client.ObjectKey{Namespace: o.namespace, Name: registryName}, registry)
		return err == nil && len(registry.Data) == o.sources, err
	})
	// The summary is read on contexts of its own, so that an interrupted
	// run still says what it merged and whether it left Leases.
	end := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	}
	if o.metrics != "0" {
		scrapeCtx, cancelScrape := end()
		if err := printMetrics(scrapeCtx, o.metrics); err != nil {
			fmt.Fprintln(os.Stderr, "reconciler: scrape metrics:", err)
		}
		cancelScrape()
	}
	cancel()
	wg.Wait()
	took := time.Since(began)

	listCtx, cancelList := end()
	defer cancelList()
	var leases coordinationv1.LeaseList
	if err := c.List(listCtx, &leases, client.InNamespace(o.namespace), client.MatchingLabels{resourcelock.ManagedByLabel: "leaselock"}); err != nil {
		return err
	}
	return summarize(o, outcome{registry: registry, reconcilers: reconcilers, took: took,
		leasesLeft: len(leases.Items), managerErr: errors.Join(errs...), waitErr: waitErr})
}

// outcome is what a run did, for its summary.
type outcome struct {
	registry    *corev1.ConfigMap
	reconcilers []*RegistryReconciler
	took        time.Duration
	leasesLeft  int
	// managerErr is the managers' failures, waitErr why the wait for a
	// complete registry ended early.
	managerErr, waitErr error
}

// summarize prints the summary of a run and returns the error it ends with,
// if any: a manager failed, the registry is not complete, a Lease is left,
// or an update of the registry met a Conflict.
func summarize(o options, r outcome) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "  entries expected\t%d\n", o.sources)
	fmt.Fprintf(w, "  entries merged\t%d\n", len(r.registry.Data))
	for i, rec := range r.reconcilers {
		fmt.Fprintf(w, "  manager %d reconciles\t%d\n", i, rec.reconciles.Load())
	}
	fmt.Fprintf(w, "  took\t%v\n", r.took.Round(time.Millisecond))
	fmt.Fprintf(w, "  update conflicts\t%d\n", conflicts.Load())
	fmt.Fprintf(w, "  leases left\t%d\n", r.leasesLeft)
	if err := w.Flush(); err != nil {
		return err
	}
	if r.managerErr != nil {
		return r.managerErr
	}
	if r.waitErr != nil {
		return fmt.Errorf("registry has %d of %d entries: %w", len(r.registry.Data), o.sources, r.waitErr)
	}
	if r.leasesLeft > 0 {
		return fmt.Errorf("%d Leases left", r.leasesLeft)
	}
	if n := conflicts.Load(); n > 0 {
		return fmt.Errorf("%d updates of the registry met a Conflict", n)
	}
	return nil
}

// newManager builds manager i: its own client and cache, no leader election
// (every replica reconciles, which is what makes the writes contend), no
// health endpoint, and for the first one a metrics endpoint.
func newManager(cfg *rest.Config, o options, i int) (ctrl.Manager, *RegistryReconciler, error) {
	// The managers share one process and so one metrics registry: the first
	// serves it.
	bind := "0"
	if i == 0 {
		bind = o.metrics
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return conflictCounter{rt} })
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		// The manager's progress, a dozen lines per manager as its caches,
		// controller and workers start and stop, is debug (-v): the run's
		// story is the summary. Its errors show at every level.
		Logger:  ctrl.Log.WithName("manager-" + strconv.Itoa(i)).V(1),
		Metrics: metricsserver.Options{BindAddress: bind},
		// Watch and cache the ConfigMaps of the example's namespace only,
		// which its RBAC can be limited to.
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{o.namespace: {}}},
		HealthProbeBindAddress: "0",
		// Several managers in one process register controllers of the same
		// kind; in real replicas each is alone in its process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, nil, err
	}
	// The locker, in one call: its Leases go through an uncached client of
	// its own that watches, Update reads through the API reader, and it
	// stops with the manager.
	locker, err := withlock.NewForCluster(mgr, o.namespace, withlock.WithIdentity("manager-"+strconv.Itoa(i)),
		withlock.WithResourceLockerOptions(resourcelock.WithRetryTimeout(time.Minute)))
	if err != nil {
		return nil, nil, err
	}
	r := &RegistryReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Locker:    locker,
		Namespace: o.namespace,
		Log:       ctrl.Log.WithName("manager-" + strconv.Itoa(i)),
	}
	if err := r.SetupWithManager(mgr, "registry-"+strconv.Itoa(i)); err != nil {
		return nil, nil, err
	}
	return mgr, r, nil
}

// conflicts counts the ConfigMap updates that the server refused with
// Conflict, for the summary. Every writer of the registry takes its lock and
// reads it afresh under it, so there should be none: a Conflict would mean a
// write raced another.
var conflicts atomic.Int64

// conflictCounter is the managers' transport: it counts conflicts.
type conflictCounter struct{ next http.RoundTripper }

func (c conflictCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err == nil && req.Method == http.MethodPut && resp.StatusCode == http.StatusConflict &&
		strings.Contains(req.URL.Path, "/configmaps/") {
		conflicts.Add(1)
	}
	return resp, err
}

// setUp creates the namespace, an empty registry and the sources.
func setUp(ctx context.Context, c client.Client, o options) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := c.DeleteAllOf(ctx, &corev1.ConfigMap{}, client.InNamespace(o.namespace), client.HasLabels{sourceLabel}); err != nil {
		return err
	}
	registry := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: registryName, Namespace: o.namespace}}
	if err := c.Delete(ctx, registry); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := c.Create(ctx, registry); err != nil {
		return err
	}
	for i := range o.sources {
		source := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name:      fmt.Sprintf("source-%03d", i),
				Namespace: o.namespace,
				Labels:    map[string]string{sourceLabel: "true"},
			},
			Data: map[string]string{"value": strconv.Itoa(i * i)},
		}
		if err := c.Create(ctx, source); err != nil {
			return err
		}
	}
	return nil
}

// printMetrics scrapes the metrics endpoint at addr, as Prometheus would, and
// prints leaselock's series, less the histogram buckets.
func printMetrics(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	fmt.Printf(">> leaselock metrics from http://%s/metrics\n", addr)
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		line := lines.Text()
		if strings.HasPrefix(line, "leaselock_") && !strings.Contains(line, "_bucket{") {
			fmt.Println("  " + line)
		}
	}
	return lines.Err()
}
