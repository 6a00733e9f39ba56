package bench_test

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestGaugeSum: the samples of the metric whose labels include every label
// asked for, in any order and among others, are summed, and a sample
// without labels when none is asked for; other metrics, even one whose
// name starts the same, other label values, comments and a sample's
// timestamp are not counted.
func TestGaugeSum(t *testing.T) {
	const exposition = `# HELP apiserver_longrunning_requests [STABLE] Gauge of all active long-running apiserver requests.
# TYPE apiserver_longrunning_requests gauge
apiserver_longrunning_requests{component="apiserver",group="coordination.k8s.io",resource="leases",scope="namespace",subresource="",verb="WATCH",version="v1"} 1000
apiserver_longrunning_requests{verb="WATCH",resource="leases",scope="cluster"} 2 1712345678000
apiserver_longrunning_requests{component="apiserver",group="",resource="configmaps",scope="namespace",subresource="",verb="WATCH",version="v1"} 7
apiserver_longrunning_requests{component="apiserver",group="coordination.k8s.io",resource="leases",scope="namespace",subresource="",verb="LIST",version="v1"} 5
apiserver_longrunning_requests_total{resource="leases",verb="WATCH"} 40
apiserver_longrunning_requests{resource="leasesx",verb="WATCH"} 3
apiserver_longrunning_requests 100
go_goroutines 2220
`
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{name: "lease watches", labels: map[string]string{"verb": "WATCH", "resource": "leases"}, want: 1002},
		{name: "every watch", labels: map[string]string{"verb": "WATCH"}, want: 1012},
		{name: "every sample", want: 1117},
		{name: "none", labels: map[string]string{"resource": "pods"}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := gaugeSum(families["apiserver_longrunning_requests"], tt.labels); got != tt.want {
				t.Errorf("gaugeSum(%q): got %v, want %v", tt.labels, got, tt.want)
			}
		})
	}
	// A metric without labels.
	if got := gaugeSum(families["go_goroutines"], nil); got != 2220 {
		t.Errorf("gaugeSum(go_goroutines): got %v, want 2220", got)
	}
}
