package withlock

import (
	"testing"
	"time"
)

func TestRenewalPeriod(t *testing.T) {
	tests := []struct {
		name        string
		lease, hold time.Duration
		want        time.Duration
	}{
		{"default: a third of the lease", 15 * time.Second, 12 * time.Second, 5 * time.Second},
		{"zero margin", 9 * time.Second, 9 * time.Second, 3 * time.Second},
		{"a large margin: half the lease less the margin", 10 * time.Second, 4 * time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renewalPeriod(tt.lease, tt.hold); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	const period = 8 * time.Second
	tests := []struct {
		name     string
		failures int
		jitter   float64
		want     time.Duration
	}{
		{"first retry: an eighth of the period", 1, 0, time.Second},
		{"doubles", 2, 0, 2 * time.Second},
		{"up to half the period", 3, 0, 4 * time.Second},
		{"and stays there", 10, 0, 4 * time.Second},
		{"a quarter more at most", 1, 0.999, time.Second + 249750*time.Microsecond},
		{"jitter on the cap", 10, 0.5, 4*time.Second + 500*time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryDelay(period, tt.failures, tt.jitter); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPlanNext(t *testing.T) {
	t0 := time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	// A 15s lease less a 3s margin: a write holds the lock 12s, and the
	// next renewal comes 5s after it.
	base := plan{period: 5 * time.Second, hold: 12 * time.Second, written: t0}
	tests := []struct {
		name      string
		plan      plan
		wantAt    time.Time
		wantRenew bool
		wantEnd   ending
	}{
		{
			name: "renew a period after the acquire", plan: base,
			wantAt: at(5 * time.Second), wantRenew: true, wantEnd: endedExpired,
		},
		{
			name: "renew a period after the last renewal", plan: base.renewed(at(5100 * time.Millisecond)),
			wantAt: at(10100 * time.Millisecond), wantRenew: true, wantEnd: endedExpired,
		},
		{
			name: "retry sooner after a failure", plan: base.failed(at(5 * time.Second)),
			wantAt: at(5625 * time.Millisecond), wantRenew: true, wantEnd: endedExpired,
		},
		{
			name: "back off after failures in a row", plan: base.failed(at(5 * time.Second)).failed(at(5625 * time.Millisecond)),
			wantAt: at(6875 * time.Millisecond), wantRenew: true, wantEnd: endedExpired,
		},
		{
			name:   "no retry past the expiry: the hold ends",
			plan:   base.failed(at(5 * time.Second)).failed(at(6 * time.Second)).failed(at(8 * time.Second)).failed(at(11 * time.Second)),
			wantAt: at(12 * time.Second), wantEnd: endedExpired,
		},
		{
			name: "a success after failures: a period after it", plan: base.failed(at(5 * time.Second)).renewed(at(5700 * time.Millisecond)),
			wantAt: at(10700 * time.Millisecond), wantRenew: true, wantEnd: endedExpired,
		},
		{
			name: "renewal off: the hold ends at the expiry", plan: plan{hold: 12 * time.Second, written: t0},
			wantAt: at(12 * time.Second), wantEnd: endedExpired,
		},
		{
			name: "a cap beyond the expiry: renew", plan: plan{period: 5 * time.Second, hold: 12 * time.Second, written: t0, capAt: at(20 * time.Second)},
			wantAt: at(5 * time.Second), wantRenew: true, wantEnd: endedExpired,
		},
		{
			name:   "a cap before the expiry: no renewal, the hold ends at the cap",
			plan:   plan{period: 5 * time.Second, hold: 12 * time.Second, written: at(10 * time.Second), capAt: at(20 * time.Second)},
			wantAt: at(20 * time.Second), wantEnd: endedMaxHold,
		},
		{
			name:   "a cap at the expiry ends the hold as a cap",
			plan:   plan{hold: 12 * time.Second, written: t0, capAt: at(12 * time.Second)},
			wantAt: at(12 * time.Second), wantEnd: endedMaxHold,
		},
		{
			name:   "a cap shorter than a period",
			plan:   plan{period: 5 * time.Second, hold: 12 * time.Second, written: t0, capAt: at(3 * time.Second)},
			wantAt: at(3 * time.Second), wantEnd: endedMaxHold,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotAt, gotRenew := tt.plan.next(0)
			if !gotAt.Equal(tt.wantAt) || gotRenew != tt.wantRenew {
				t.Errorf("next: got %v, renew %t, want %v, renew %t", gotAt.Sub(t0), gotRenew, tt.wantAt.Sub(t0), tt.wantRenew)
			}
			if got, _ := tt.plan.end(); got != tt.wantEnd {
				t.Errorf("end: got %d, want %d", got, tt.wantEnd)
			}
		})
	}
}
