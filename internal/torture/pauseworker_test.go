package torture_test

// The worker side of TestTorturePause: a worker that runs one critical
// section at a time, as the parent orders on stdin, and that can stop
// between its read and its write (or after its write) until the parent
// says go, so that the parent can stop its process there with SIGSTOP.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/withlock"
)

// The modes of TestTorturePause: how a critical section writes the
// counter.
const (
	// pauseUpdate: withlock.Update of the counter ConfigMap, whose write
	// carries the resourceVersion it read.
	pauseUpdate = "update"
	// pauseToken: WithLock, and a store outside the cluster (fencedStore)
	// that refuses a request whose fencing token is smaller than the
	// largest it has seen.
	pauseToken = "token"
	// pauseBlind: WithLock, and an Update of the counter ConfigMap without
	// a resourceVersion, which nothing fences.
	pauseBlind = "blind"
)

// Why a write of a pause worker did not happen.
const (
	whyConflict = "conflict" // the API server refused its resourceVersion
	whyToken    = "token"    // the fenced store refused its token
	whyCtx      = "ctx"      // the holder found its ctx ended and did not send it
)

// pauseOrder is a line the parent writes to a pause worker: "section
// ROUND [inflight] [before] [after]", "go" or "stop".
type pauseOrder struct {
	cmd   string
	round int
	// inFlight makes the write ignore the end of fn's ctx, as a request
	// that was on its way when the process stopped does: the ctx ending
	// does not call it back. Without it the holder checks its ctx before
	// the write, and writes with it.
	inFlight bool
	// before makes the section print a "poised" record once it read, and
	// wait for "go" before it writes; after makes it wait for "go" once it
	// wrote, holding the lock.
	before, after bool
}

func (o pauseOrder) String() string {
	if o.cmd != "section" {
		return o.cmd
	}
	s := fmt.Sprintf("section %d", o.round)
	for _, f := range []struct {
		name string
		set  bool
	}{{"inflight", o.inFlight}, {"before", o.before}, {"after", o.after}} {
		if f.set {
			s += " " + f.name
		}
	}
	return s
}

func parseOrder(line string) (pauseOrder, error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return pauseOrder{}, errors.New("empty order")
	}
	o := pauseOrder{cmd: f[0]}
	if o.cmd != "section" {
		return o, nil
	}
	if len(f) < 2 {
		return o, fmt.Errorf("order %q: no round", line)
	}
	var err error
	if o.round, err = strconv.Atoi(f[1]); err != nil {
		return o, fmt.Errorf("order %q: %w", line, err)
	}
	for _, flag := range f[2:] {
		switch flag {
		case "inflight":
			o.inFlight = true
		case "before":
			o.before = true
		case "after":
			o.after = true
		default:
			return o, fmt.Errorf("order %q: unknown flag %q", line, flag)
		}
	}
	return o, nil
}

// counterStore is where the token and blind modes keep their counter.
type counterStore interface {
	read(ctx context.Context, token string) (int, error)
	write(ctx context.Context, token string, n int) error
	// outcome tells what a write that returned err did: wroteYes, wroteNo
	// or wroteMaybe, and, for wroteNo, why.
	outcome(err error) (write, why string)
}

// pauseWorker is a worker process of TestTorturePause.
type pauseWorker struct {
	cfg    workerConfig
	c      client.WithWatch
	locker *withlock.Locker
	store  counterStore // nil in the pauseUpdate mode
	orders <-chan pauseOrder
	// life is the worker's run, bounded by its timeout; its end ends the
	// waits for the parent's go.
	life context.Context
}

// runPauseWorker is the body of a pause worker (workerConfig.Pause): it
// runs the sections the parent orders, one after another, until "stop" or
// the end of stdin.
func runPauseWorker(cfg workerConfig) error {
	c, hc, err := newWorkerClient(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	w := &pauseWorker{cfg: cfg, c: c, locker: newWorkerLocker(c, cfg), life: ctx}
	storeClient := &http.Client{}
	switch cfg.Pause {
	case pauseUpdate:
	case pauseToken:
		w.store = &tokenClient{base: cfg.Store, hc: storeClient}
	case pauseBlind:
		w.store = blindStore{c: c, key: client.ObjectKey{Namespace: cfg.Namespace, Name: counterName(w.lock())}}
	default:
		return fmt.Errorf("unknown pause mode %q", cfg.Pause)
	}
	orders := readOrders(os.Stdin)
	w.orders = orders
	emit(record{Kind: "ready", Proc: cfg.Proc})
	for o := range orders {
		if o.cmd == "stop" {
			break
		}
		if o.cmd == "section" {
			emit(w.section(ctx, o))
		}
	}
	for range orders {
		// The reader ends at the end of stdin, which the parent closes
		// after its stop.
	}
	storeClient.CloseIdleConnections()
	settle(hc)
	return nil
}

// readOrders reads the parent's orders from r until its end, and then
// closes the channel.
func readOrders(r io.Reader) <-chan pauseOrder {
	orders := make(chan pauseOrder, 4)
	go func() {
		defer close(orders)
		for sc := bufio.NewScanner(r); sc.Scan(); {
			o, err := parseOrder(sc.Text())
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				continue
			}
			orders <- o
		}
	}()
	return orders
}

func (w *pauseWorker) lock() string { return w.cfg.Locks[0] }

// section runs one critical section as o says, and returns its "op"
// record.
func (w *pauseWorker) section(ctx context.Context, o pauseOrder) record {
	r := record{Kind: "op", Proc: w.cfg.Proc, Round: o.round, Lock: w.lock(), Called: time.Now().UnixNano()}
	var err error
	if w.store == nil {
		err = w.update(ctx, o)
	} else {
		err = w.locker.WithLock(ctx, w.lock(), func(ctx context.Context) error { return w.readWrite(ctx, &o) })
	}
	r.Returned = time.Now().UnixNano()
	if err != nil {
		r.Err, r.Lost = err.Error(), errors.Is(err, withlock.ErrLockLost)
		if apierrors.IsConflict(err) {
			r.Why = whyConflict
		}
	}
	return r
}

// readWrite reads the store's count and writes it plus one, with the
// lock's token, as o says.
func (w *pauseWorker) readWrite(ctx context.Context, o *pauseOrder) error {
	a := w.attempt(o)
	a.Token, _ = withlock.Token(ctx)
	n, err := w.store.read(ctx, a.Token)
	if err != nil {
		return err
	}
	a.ReadOK, a.Read = true, n
	if err := w.poise(ctx, o, &a); err != nil {
		return err
	}
	a.Token, _ = withlock.Token(ctx) // a renewal may have moved it
	err = w.store.write(writeContext(ctx, o), a.Token, n+1)
	return w.wrote(o, &a, err, w.store.outcome)
}

// update increments the counter ConfigMap with withlock.Update, through a
// client that records each read and write attempt, and stops before the
// first write as o says.
func (w *pauseWorker) update(ctx context.Context, o pauseOrder) error {
	var a record
	c := interceptor.NewClient(w.c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			a = w.attempt(&o)
			return c.Get(ctx, key, obj, opts...)
		},
		// ctx is fn's: Update writes with it.
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			a.Token, _ = withlock.Token(ctx)
			if err := w.poise(ctx, &o, &a); err != nil {
				return err
			}
			err := c.Update(writeContext(ctx, &o), obj, opts...)
			return w.wrote(&o, &a, err, counterOutcome)
		},
	})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: w.cfg.Namespace, Name: counterName(w.lock())}}
	return withlock.Update(ctx, w.locker, c, cm, func(cm *corev1.ConfigMap) error {
		n, err := strconv.Atoi(cm.Data["count"])
		if err != nil {
			return fmt.Errorf("counter %s: %w", cm.Name, err)
		}
		a.ReadOK, a.Read = true, n
		cm.Data["count"] = strconv.Itoa(n + 1)
		return nil
	})
}

// attempt starts the record of a read and write of the counter.
func (w *pauseWorker) attempt(o *pauseOrder) record {
	return record{Kind: "attempt", Proc: w.cfg.Proc, Round: o.round, Lock: w.lock(), Start: time.Now().UnixNano()}
}

// poise runs between an attempt's read and its write: with o.before, the
// first time, it prints a "poised" record and waits for the parent's go
// (the parent stops the process meanwhile, or lets a stopped one run
// first). Then, unless the write is in flight, it checks fn's ctx as a
// careful fn does, and returns its cause, having recorded the attempt as
// not sent, when it has ended.
func (w *pauseWorker) poise(ctx context.Context, o *pauseOrder, a *record) error {
	if o.before {
		o.before = false
		emit(record{Kind: "poised", Proc: a.Proc, Round: a.Round, Lock: a.Lock, Start: a.Start, Read: a.Read, Token: a.Token})
		if err := w.awaitGo(); err != nil {
			return err
		}
	}
	if !o.inFlight && ctx.Err() != nil {
		a.End, a.Write, a.Why = time.Now().UnixNano(), wroteNo, whyCtx
		emit(*a)
		return context.Cause(ctx)
	}
	return nil
}

// wrote records the outcome of an attempt's write, which returned err,
// and then, with o.after, the first time, waits for the parent's go,
// holding the lock. It returns err.
func (w *pauseWorker) wrote(o *pauseOrder, a *record, err error, outcome func(error) (string, string)) error {
	a.End = time.Now().UnixNano()
	a.Write, a.Why = outcome(err)
	emit(*a)
	if o.after {
		o.after = false
		return errors.Join(err, w.awaitGo())
	}
	return err
}

// awaitGo waits for the parent's "go".
func (w *pauseWorker) awaitGo() error {
	for {
		select {
		case o, ok := <-w.orders:
			if !ok {
				return errors.New("stdin ended before the parent's go")
			}
			if o.cmd == "go" {
				return nil
			}
		case <-w.life.Done():
			return fmt.Errorf("no go from the parent: %w", w.life.Err())
		}
	}
}

// writeContext is the ctx of a write: fn's, or one that fn's end does not
// cancel for a write in flight.
func writeContext(ctx context.Context, o *pauseOrder) context.Context {
	if o.inFlight {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// counterOutcome is the outcome of a write of the counter ConfigMap.
func counterOutcome(err error) (write, why string) {
	if apierrors.IsConflict(err) {
		return wroteNo, whyConflict
	}
	return writeOutcome(err), ""
}

// blindStore is the counter ConfigMap written without a resourceVersion:
// the write of the pauseBlind mode, which ignores the token.
type blindStore struct {
	c   client.Client
	key client.ObjectKey
}

func (s blindStore) read(ctx context.Context, _ string) (int, error) {
	var cm corev1.ConfigMap
	if err := s.c.Get(ctx, s.key, &cm); err != nil {
		return 0, err
	}
	return strconv.Atoi(cm.Data["count"])
}

func (s blindStore) write(ctx context.Context, _ string, n int) error {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.key.Namespace, Name: s.key.Name},
		Data:       map[string]string{"count": strconv.Itoa(n)},
	}
	return s.c.Update(ctx, cm)
}

func (blindStore) outcome(err error) (string, string) { return counterOutcome(err) }
