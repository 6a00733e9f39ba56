package resourcelock

// Test helpers that the external test package uses too.

import (
	"context"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WatchListFake adds to the fake client the watch-list of the API server: a
// watch with sendInitialEvents first sends the Leases that match its field
// selector, then a bookmark that marks the end of them. The fake client
// itself ignores the request and sends only later changes, which a locker
// treats as a server without watch-lists.
type WatchListFake struct{ client.WithWatch }

// IsWatchList reports whether a watch with opts asks for the current objects
// first.
func IsWatchList(opts []client.ListOption) bool {
	o := (&client.ListOptions{}).ApplyOptions(opts)
	return o.Raw != nil && ptr.Deref(o.Raw.SendInitialEvents, false)
}

func (c WatchListFake) Watch(ctx context.Context, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
	if !IsWatchList(opts) {
		return c.WithWatch.Watch(ctx, list, opts...)
	}
	o := (&client.ListOptions{}).ApplyOptions(opts)
	changes, err := c.WithWatch.Watch(ctx, list, opts...)
	if err != nil {
		return nil, err
	}
	var leases coordinationv1.LeaseList
	if err := c.List(ctx, &leases, client.InNamespace(o.Namespace)); err != nil {
		changes.Stop()
		return nil, err
	}
	events := make(chan watch.Event)
	w := watch.NewProxyWatcher(events)
	go func() {
		defer close(events)
		defer changes.Stop()
		send := func(ev watch.Event) bool {
			select {
			case events <- ev:
				return true
			case <-w.StopChan():
				return false
			}
		}
		for i := range leases.Items {
			lease := &leases.Items[i]
			match := o.FieldSelector == nil || o.FieldSelector.Matches(fields.Set{"metadata.name": lease.Name})
			if match && !send(watch.Event{Type: watch.Added, Object: lease}) {
				return
			}
		}
		end := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
			Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"},
		}}
		if !send(watch.Event{Type: watch.Bookmark, Object: end}) {
			return
		}
		for {
			select {
			case ev, ok := <-changes.ResultChan():
				if !ok || !send(ev) {
					return
				}
			case <-w.StopChan():
				return
			}
		}
	}()
	return w, nil
}

// WatchListRecheck is how long a locker that gave up on watch-lists waits
// on its clock before it asks for one again.
const WatchListRecheck = watchListRecheck
