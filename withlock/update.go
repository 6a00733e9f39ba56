package withlock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/leaselock/leaselock/internal/nilness"
)

var (
	errNilClient = errors.New("withlock: client is nil")
	errNilReader = errors.New("withlock: ReadFrom reader is nil")
	errNilObject = errors.New("withlock: object is nil")
	errNilMutate = errors.New("withlock: mutate is nil")
	errNilScheme = errors.New("withlock: client has no scheme: Update finds an object's kind from it")
	// errReadCut is the cause of the ctx of a read that ran until the
	// lock's time ran short.
	errReadCut = errors.New("withlock: the read did not finish before the lock's time ran short")
)

// conflictBackoff paces Update's retries on Conflict. Under the lock a
// Conflict means a writer that does not take it; the retries go on until ctx
// ends or the lock's time is up.
var conflictBackoff = wait.Backoff{Duration: 10 * time.Millisecond, Factor: 2, Jitter: 1, Steps: 1 << 30, Cap: time.Second}

// UpdateOption configures Update.
type UpdateOption func(*updateOptions)

type updateOptions struct {
	reader client.Reader
	status bool
}

// ReadFrom makes Update read the object from r instead of from c (or, for
// a Locker from NewForCluster, from the cluster's GetAPIReader()). Pass an
// uncached reader (a manager's GetAPIReader()) when c reads from an informer
// cache: a stale read under the lock only earns a Conflict and a retry, and
// a cache whose informer cannot sync (it needs list and watch on the kind
// in every namespace it caches) fails the read. A nil reader makes Update
// return an error before any request.
func ReadFrom(r client.Reader) UpdateOption {
	return func(o *updateOptions) { o.reader = r }
}

// Status makes Update write the status subresource (c.Status().Update)
// instead of the object: for reconcilers that report what they observed.
// The server writes only the status then, so Update returns an error, and
// writes nothing, when mutate changed anything else.
func Status() UpdateOption {
	return func(o *updateOptions) { o.status = true }
}

// Update reads the object named by obj's namespace and name, applies mutate
// to it, and writes it back, all under the lock LockName(obj's group and kind,
// namespace, name) taken from l. On success obj holds what the server
// returned.
//
// Every attempt reads the object afresh and calls mutate on it, so mutate
// must derive its change from the object it is given, and may run more than
// once. A Conflict is retried with jittered backoff until ctx ends, or until
// the next retry would start less than a second before the lock's first
// lease less the margin runs out (renewals do not prolong the retries: a
// writer that keeps changing the object without the lock is news to
// return, not to wait out): Update then returns the Conflict, and does not
// report the lock lost. When
// mutate changes nothing (semantic equality), nothing is written and obj
// holds the object as read. mutate must not change the name or namespace
// (nor the kind of an unstructured object); Update returns an error if it
// does. The write carries the resourceVersion and UID that Update read,
// whatever mutate did to them; a read without a resourceVersion (a reader
// that drops it) is an error, since the write would overwrite whatever is
// stored. Errors from the server come back wrapped, so apierrors.IsNotFound
// and friends hold. Update does not create the object: one that does not
// exist is a NotFound error.
//
// The read goes through c, or through the cluster's GetAPIReader() for a
// Locker from NewForCluster, or through ReadFrom's reader. It is bounded:
// a read that has not finished a second before the lock's lease less the
// margin runs out, as it stood when the read began (half the time left,
// when less than two seconds are) fails with an error that says so, as a
// cache-backed client's read does when its informer cannot sync; the lock
// is not reported lost then.
//
// obj is set only once the write succeeded (or mutate changed nothing). An
// error with obj set means the change is stored and the lock reported
// afterwards: its release failed, or the lease could have ended before the
// write returned (ErrLockLost). Do not run mutate again for it. To tell,
// compare obj's resourceVersion with the one it had before the call, or pass
// an object that carries only its name. ErrLockLost alone does not say that
// anything was written: a read after the lease ran out fails with it too.
//
// c and obj must not be nil, obj must name an object, and mutate must not be
// nil; Update returns an error before any request otherwise.
func Update[T client.Object](ctx context.Context, l *Locker, c client.Client, obj T, mutate func(T) error, opts ...UpdateOption) error {
	u := updateCall[T]{l: l, c: c, o: updateOptions{reader: c}, mutate: mutate}
	if l != nil && l.reader != nil {
		u.o.reader = l.reader
	}
	for _, opt := range opts {
		if opt != nil {
			opt(&u.o)
		}
	}
	if err := u.check(obj); err != nil {
		return err
	}
	gvk, err := apiutil.GVKForObject(obj, c.Scheme())
	if err != nil {
		return fmt.Errorf("withlock: update %T: %w", obj, err)
	}
	u.gk, u.key = gvk.GroupKind(), client.ObjectKeyFromObject(obj)
	return l.WithLock(ctx, LockName(u.gk, u.key), func(ctx context.Context) error {
		backoff := conflictBackoff
		for {
			err := u.once(ctx, obj)
			if !apierrors.IsConflict(err) {
				return err
			}
			d := backoff.Step()
			if held := innermost(ctx); held != nil && !l.rl.Clock().Now().Add(d+conflictBackoff.Cap).Before(held.acquired.Add(l.hold())) {
				// The retry would start within a backoff's cap of the end of
				// the lock's first lease less the margin, too late to finish
				// under it were the lock not renewed. The writer that does
				// not take the lock is the news: return its Conflict, not a
				// lost lock, nor wait it out while renewals keep the lock.
				return err
			}
			if serr := sleep(ctx, l, d); serr != nil {
				return errors.Join(serr, err)
			}
		}
	})
}

// updateCall is one Update: the object's key and kind, and how to read,
// change and write it.
type updateCall[T client.Object] struct {
	l      *Locker
	c      client.Client
	o      updateOptions
	gk     schema.GroupKind
	key    client.ObjectKey
	mutate func(T) error
}

// check rejects, before any request, an Update that cannot work.
func (u *updateCall[T]) check(obj T) error {
	switch {
	case u.l == nil:
		return errNilLocker
	case u.l.rl == nil:
		return errNilResource
	case nilness.Is(u.c):
		return errNilClient
	case nilness.Is(u.o.reader):
		return errNilReader
	case nilness.Is(obj):
		return errNilObject
	case u.mutate == nil:
		return errNilMutate
	case u.c.Scheme() == nil:
		return errNilScheme
	case obj.GetName() == "":
		return fmt.Errorf("withlock: update %T: object has no name", obj)
	}
	return nil
}

// once makes one read-mutate-write attempt, and copies the result into obj
// when it succeeds.
func (u *updateCall[T]) once(ctx context.Context, obj T) error {
	key := u.key
	current := newLike(obj)
	if err := u.read(ctx, current); err != nil {
		return err
	}
	before := current.DeepCopyObject()
	version, uid := current.GetResourceVersion(), current.GetUID()
	if version == "" {
		return fmt.Errorf("withlock: update %s: the object read has no resourceVersion, so the write could not be conditional", key)
	}
	if err := u.mutate(current); err != nil {
		return err
	}
	if got := client.ObjectKeyFromObject(current); got != key {
		return fmt.Errorf("withlock: update %s: mutate changed the object's key to %s", key, got)
	}
	if _, ok := any(current).(runtime.Unstructured); ok {
		// An unstructured object names its kind itself: another kind is
		// another object, under another lock.
		if got, want := current.GetObjectKind().GroupVersionKind().GroupKind(), before.GetObjectKind().GroupVersionKind().GroupKind(); got != want {
			return fmt.Errorf("withlock: update %s: mutate changed the object's kind from %s to %s", key, want, got)
		}
	}
	// The write is conditional on the version read, even when mutate
	// replaced the object wholesale: a late write fails with Conflict
	// instead of overwriting another holder's.
	if current.GetResourceVersion() != version || current.GetUID() != uid {
		current.SetResourceVersion(version)
		current.SetUID(uid)
	}
	if err := u.write(ctx, before, current); err != nil {
		return err
	}
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(current).Elem())
	return nil
}

// write writes current, read as before, unless mutate changed nothing.
func (u *updateCall[T]) write(ctx context.Context, before runtime.Object, current T) error {
	key := u.key
	if u.o.status {
		// The status subresource writes the status alone: any other change
		// would be dropped without a word.
		if changed, err := changedBesideStatus(before, current); err != nil {
			return fmt.Errorf("withlock: update %s: %w", key, err)
		} else if changed {
			return fmt.Errorf("withlock: update %s: mutate changed more than the status, which Status() does not write", key)
		}
	}
	if equality.Semantic.DeepEqual(before, current) {
		return nil
	}
	var err error
	if u.o.status {
		err = u.c.Status().Update(ctx, current)
	} else {
		err = u.c.Update(ctx, current)
	}
	if err != nil {
		return fmt.Errorf("withlock: update %s: %w", key, err)
	}
	return nil
}

// read gets the object into current, and gives up a little before the
// lock's time is up, so that a read that cannot finish fails as what it is
// rather than as a lost lock.
func (u *updateCall[T]) read(ctx context.Context, current T) error {
	rctx, stop := ctx, func() bool { return false }
	if held := innermost(ctx); held != nil {
		clk := u.l.rl.Clock()
		expiry := held.deadline()
		by := expiry.Add(-min(conflictBackoff.Cap, expiry.Sub(clk.Now())/2))
		rctx, stop = withClockDeadline(ctx, clk, by, errReadCut)
	}
	err := u.o.reader.Get(rctx, u.key, current)
	cut := stop()
	switch {
	case err == nil:
		return nil
	case cut && ctx.Err() == nil:
		return fmt.Errorf("withlock: update %s: get: the read did not finish before the lock's time ran short; "+
			"if the reader is cache-backed (a manager's GetClient()), it waits until its informer of %s syncs, which needs list and watch "+
			"on %[2]s in every namespace the cache covers (all, by default): pass ReadFrom(mgr.GetAPIReader()), "+
			"or build the Locker with NewForCluster: %[3]w", u.key, u.gk, err)
	}
	return fmt.Errorf("withlock: update %s: get: %w", u.key, err)
}

// changedBesideStatus reports whether after differs from before anywhere
// but in its status.
func changedBesideStatus(before, after runtime.Object) (bool, error) {
	var objs [2]map[string]any
	for i, obj := range []runtime.Object{before, after} {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return false, err
		}
		// For an unstructured object m is its own content: delete from a
		// copy.
		m = maps.Clone(m)
		delete(m, "status")
		objs[i] = m
	}
	return !equality.Semantic.DeepEqual(objs[0], objs[1]), nil
}

// newLike returns a new, empty object of obj's type, with obj's
// GroupVersionKind set (which unstructured objects need for a Get).
func newLike[T client.Object](obj T) T {
	fresh := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(T)
	fresh.GetObjectKind().SetGroupVersionKind(obj.GetObjectKind().GroupVersionKind())
	return fresh
}

func isEmpty(s string) bool { return s == "" }

// lockNameHashLen is the number of hex digits of the SHA-256 that end every
// derived lock name: 64 bits, so no two objects share a lock by accident.
const lockNameHashLen = 16

// maxReadable bounds the readable part of a derived lock name, which leaves
// room for the hash within a Lease name's 253 characters.
const maxReadable = 200

// LockName returns the lock name Update uses for the object of group and kind
// gk named key: a valid Lease name for any input. It reads as
// kind-namespace-name, lowercased, with every other character made a dash and
// cut to 200 characters, followed by a hash of the exact group, kind,
// namespace and name, so that objects whose readable parts agree (or are cut
// short) still get locks of their own. The API version is left out: one
// object is one lock whichever version a caller reads it in.
func LockName(gk schema.GroupKind, key client.ObjectKey) string {
	// Each field is prefixed with its length, so that no two tuples encode
	// alike, whatever characters the fields hold.
	h := sha256.New()
	for _, f := range []string{gk.Group, gk.Kind, key.Namespace, key.Name} {
		fmt.Fprintf(h, "%d:%s", len(f), f)
	}
	sum := h.Sum(nil)
	readable := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		default:
			return '-'
		}
	}, strings.Join(slices.DeleteFunc([]string{gk.Kind, key.Namespace, key.Name}, isEmpty), "-"))
	if len(readable) > maxReadable {
		readable = readable[:maxReadable]
	}
	readable = strings.Trim(readable, "-")
	if readable == "" {
		return "x-" + hex.EncodeToString(sum[:])[:lockNameHashLen]
	}
	return readable + "-" + hex.EncodeToString(sum[:])[:lockNameHashLen]
}
