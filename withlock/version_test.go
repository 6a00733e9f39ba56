package withlock_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/rest"

	"github.com/leaselock/leaselock/withlock"
)

// TestReleaseCheckLogsOnce builds a Locker with NewForConfig on a fake
// API server that answers /version alone: the Locker asks once, and logs
// one line when the release is older than 1.35, and none otherwise (nor
// when the server tells no release, or fails).
func TestReleaseCheckLogsOnce(t *testing.T) {
	tests := []struct {
		name       string
		gitVersion string // "" for a server that fails
		wantLine   bool
	}{
		{"older than 1.35", "v1.34.4", true},
		{"1.35", "v1.35.0", false},
		{"a vendor's build of a later release", "v1.36.1-gke.100", false},
		{"an unstamped build", "v0.0.0-master+abcdef", false},
		{"the request fails", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/version" {
					t.Errorf("got a request for %s, want /version alone", r.URL.Path)
					http.NotFound(w, r)
					return
				}
				asked.Add(1)
				if tt.gitVersion == "" {
					http.Error(w, "unavailable", http.StatusServiceUnavailable)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(version.Info{GitVersion: tt.gitVersion})
			}))
			defer srv.Close()
			log, logged := captureLogger()
			l, err := withlock.NewForConfig(&rest.Config{Host: srv.URL}, "locks", withlock.WithLogger(log), withlock.WithLeftoverRemoval(-1))
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the release asked", func() bool { return asked.Load() > 0 || tt.gitVersion == "" })
			if err := l.Close(); err != nil { // waits for the check
				t.Fatal(err)
			}
			if got := asked.Load(); tt.gitVersion != "" && got != 1 {
				t.Errorf("got /version asked %d times, want once", got)
			}
			lines := logged()
			if got := len(lines) == 1 && strings.Contains(lines[0], "older than Kubernetes 1.35") &&
				strings.Contains(lines[0], tt.gitVersion) && strings.Contains(lines[0], "withlock.Token"); got != tt.wantLine {
				t.Errorf("got log lines %q, want one about 1.35 and tokens: %t", lines, tt.wantLine)
			}
			if !tt.wantLine && len(lines) != 0 {
				t.Errorf("got log lines %q, want none", lines)
			}
		})
	}
}
