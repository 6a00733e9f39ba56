package lockmetrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/leaselock/leaselock/internal/lockmetrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tagged is a Registerer whose type cannot be a map key: a struct with a
// slice in it, used by value.
type tagged struct {
	*prometheus.Registry
	tags []string
}

// TestForUncomparableRegisterer: For must not panic on a registerer that
// cannot be a map key, and two Sets of it record into the same exported
// counter: the second takes up the collectors the first registered.
func TestForUncomparableRegisterer(t *testing.T) {
	reg := tagged{Registry: prometheus.NewRegistry(), tags: []string{"a"}}
	lockmetrics.For(reg, false).Takeover("job")
	// The same, inside a wrapper whose type is comparable.
	lockmetrics.For(struct{ prometheus.Registerer }{reg}, false).Takeover("job")
	want := `
# HELP leaselock_expired_takeovers_total Locks taken over from another holder whose lease had expired: it crashed or ran too long.
# TYPE leaselock_expired_takeovers_total counter
leaselock_expired_takeovers_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "leaselock_expired_takeovers_total"); err != nil {
		t.Error(err)
	}
}
