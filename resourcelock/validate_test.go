package resourcelock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/resourcelock"
)

var (
	longName = strings.Repeat("a", 254) // one past a DNS subdomain's 253
	longNS   = strings.Repeat("n", 64)  // one past a DNS label's 63
)

// nilClient is a client type whose nil pointer a caller may pass by
// mistake.
type nilClient struct{ client.Client }

// TestBadInputSendsNoRequest: what cannot work is refused, with a message
// that names the bad value, before any request is sent.
func TestBadInputSendsNoRequest(t *testing.T) {
	valid := func(c client.Client) *resourcelock.ResourceLocker { return resourcelock.NewResourceLocker(c, unitNS) }
	tests := []struct {
		name     string
		locker   func(c client.Client) *resourcelock.ResourceLocker
		lockName string
		lockerID string
		wantMsg  string
	}{
		{name: "empty lock name", locker: valid, lockName: "", lockerID: holderMe, wantMsg: `lock name ""`},
		{name: "underscore in lock name", locker: valid, lockName: "Foo_Bar", lockerID: holderMe, wantMsg: `lock name "Foo_Bar"`},
		{name: "upper case lock name", locker: valid, lockName: "UPPER", lockerID: holderMe, wantMsg: `lock name "UPPER"`},
		{name: "empty label in lock name", locker: valid, lockName: "a..b", lockerID: holderMe, wantMsg: `lock name "a..b"`},
		{name: "leading dash in lock name", locker: valid, lockName: "-lead", lockerID: holderMe, wantMsg: `lock name "-lead"`},
		{name: "254-character lock name", locker: valid, lockName: longName, lockerID: holderMe, wantMsg: fmt.Sprintf("lock name %q", longName)},
		{name: "empty lockerID", locker: valid, lockName: unitLock, lockerID: "", wantMsg: `lockerID ""`},
		{name: "lockerID not UTF-8", locker: valid, lockName: unitLock, lockerID: "pod-\xff", wantMsg: `lockerID "pod-\xff"`},
		{
			name:     "empty namespace",
			locker:   func(c client.Client) *resourcelock.ResourceLocker { return resourcelock.NewResourceLocker(c, "") },
			lockName: unitLock, lockerID: holderMe, wantMsg: `namespace ""`,
		},
		{
			name:     "invalid namespace",
			locker:   func(c client.Client) *resourcelock.ResourceLocker { return resourcelock.NewResourceLocker(c, "Bad_NS") },
			lockName: unitLock, lockerID: holderMe, wantMsg: `namespace "Bad_NS"`,
		},
		{
			name:     "64-character namespace",
			locker:   func(c client.Client) *resourcelock.ResourceLocker { return resourcelock.NewResourceLocker(c, longNS) },
			lockName: unitLock, lockerID: holderMe, wantMsg: fmt.Sprintf("namespace %q", longNS),
		},
		{
			name:     "nil client",
			locker:   func(client.Client) *resourcelock.ResourceLocker { return resourcelock.NewResourceLocker(nil, unitNS) },
			lockName: unitLock, lockerID: holderMe, wantMsg: "client is nil",
		},
		{
			name: "typed nil client",
			locker: func(client.Client) *resourcelock.ResourceLocker {
				var c *nilClient
				return resourcelock.NewResourceLocker(c, unitNS)
			},
			lockName: unitLock, lockerID: holderMe, wantMsg: "client is nil",
		},
		{
			name:     "nil *ResourceLocker",
			locker:   func(client.Client) *resourcelock.ResourceLocker { return nil },
			lockName: unitLock, lockerID: holderMe, wantMsg: "ResourceLocker",
		},
		{
			name:     "zero-value ResourceLocker",
			locker:   func(client.Client) *resourcelock.ResourceLocker { return &resourcelock.ResourceLocker{} },
			lockName: unitLock, lockerID: holderMe, wantMsg: "client is nil",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log callLog
			rl := tt.locker(counted(newFake(), &log, interceptor.Funcs{}))
			ops := []struct {
				name string
				call func(context.Context, string, string) error
			}{
				{"AcquireLock", rl.AcquireLock},
				{"ReleaseLock", rl.ReleaseLock},
			}
			for _, op := range ops {
				err := op.call(context.Background(), tt.lockName, tt.lockerID)
				if err == nil {
					t.Errorf("%s: got nil, want an error naming %s", op.name, tt.wantMsg)
				} else if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("%s: got %q, want it to name %s", op.name, err, tt.wantMsg)
				}
			}
			if got := log.total(); got != 0 {
				t.Errorf("requests: got %v, want none", &log)
			}
		})
	}
}

// badValues returns how an error must name each thing wrong with the
// arguments, nameErr being ValidateLockName's verdict on name; none when all
// are fine.
func badValues(nameErr error, name, lockerID, namespace string) []string {
	var bad []string
	if len(validation.IsDNS1123Label(namespace)) > 0 {
		bad = append(bad, fmt.Sprintf("namespace %q", namespace))
	}
	if nameErr != nil {
		bad = append(bad, fmt.Sprintf("lock name %q", name))
	}
	if lockerID == "" || !utf8.ValidString(lockerID) {
		bad = append(bad, fmt.Sprintf("lockerID %q", lockerID))
	}
	return bad
}

func FuzzAcquireLockInput(f *testing.F) {
	for _, name := range []string{"", "Foo_Bar", "UPPER", "a..b", "-lead", longName, unitLock, "a.b-c", "x"} {
		f.Add(name, holderMe, unitNS)
	}
	for _, ns := range []string{"", "Bad_NS", longNS, "kube-system"} {
		f.Add(unitLock, holderMe, ns)
	}
	f.Add(unitLock, "", unitNS)
	f.Add("Foo_Bar", "", "Bad_NS")

	// One fake client for all inputs, as building one costs more than a run:
	// every valid input leaves it empty again, which the run checks.
	base := newFake()
	f.Fuzz(func(t *testing.T, name, lockerID, namespace string) {
		// ValidateLockName is the exported rule; it must agree with the
		// API server's rule for object names.
		nameErr := resourcelock.ValidateLockName(name)
		if dns := validation.IsDNS1123Subdomain(name); (nameErr == nil) != (name != "" && len(dns) == 0) {
			t.Fatalf("ValidateLockName(%q): got %v, want an error exactly when the name is not a DNS subdomain (%v)", name, nameErr, dns)
		}

		var log callLog
		rl := resourcelock.NewResourceLocker(counted(base, &log, interceptor.Funcs{}), namespace,
			resourcelock.WithRetryTimeout(0), resourcelock.WithMetrics(nil))
		ctx := context.Background()
		errs := map[string]error{
			"AcquireLock": rl.AcquireLock(ctx, name, lockerID),
			"ReleaseLock": rl.ReleaseLock(ctx, name, lockerID),
		}

		bad := badValues(nameErr, name, lockerID, namespace)
		if len(bad) == 0 {
			for op, err := range errs {
				if err != nil {
					t.Errorf("%s(%q, %q) in %q: got %v, want nil", op, name, lockerID, namespace, err)
				}
			}
			var leases coordinationv1.LeaseList
			if err := base.List(ctx, &leases); err != nil || len(leases.Items) != 0 {
				t.Fatalf("Leases after AcquireLock and ReleaseLock: got %d (%v), want none", len(leases.Items), err)
			}
			return
		}
		for op, err := range errs {
			if err == nil {
				t.Errorf("%s(%q, %q) in %q: got nil, want an error naming one of %q", op, name, lockerID, namespace, bad)
				continue
			}
			named := false
			for _, b := range bad {
				named = named || strings.Contains(err.Error(), b)
			}
			if !named {
				t.Errorf("%s(%q, %q) in %q: got %q, want it to name one of %q", op, name, lockerID, namespace, err, bad)
			}
		}
		if got := log.total(); got != 0 {
			t.Errorf("requests for bad input %q: got %v, want none", bad, &log)
		}
	})
}
