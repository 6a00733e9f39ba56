package testenv

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRequestsTimesSucceededWrites: every request is counted, and only the
// writes that succeeded are timed, under their resource.
func TestRequestsTimesSucceededWrites(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusConflict)
		}
	}))
	defer srv.Close()
	var r Requests
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: countingTransport{tr, &r}}
	for _, tt := range []struct{ method, path string }{
		{http.MethodPost, "/apis/coordination.k8s.io/v1/namespaces/ns/leases"},
		{http.MethodDelete, "/apis/coordination.k8s.io/v1/namespaces/ns/leases/a"},
		{http.MethodPost, "/apis/coordination.k8s.io/v1/namespaces/ns/leases?fail=1"},
		{http.MethodGet, "/apis/coordination.k8s.io/v1/namespaces/ns/leases/a"},
		{http.MethodPut, "/api/v1/namespaces/ns/configmaps/a"},
	} {
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := r.Count("", "leases"); got != 4 {
		t.Errorf("lease requests: got %d, want 4", got)
	}
	if got := len(r.Writes("leases")); got != 2 {
		t.Errorf("timed lease writes: got %d, want 2 (the create and delete that succeeded)", got)
	}
	if got := len(r.Writes("configmaps")); got != 1 {
		t.Errorf("timed configmap writes: got %d, want 1", got)
	}
	r.Reset()
	if got := len(r.Writes("leases")); got != 0 {
		t.Errorf("after Reset: got %d timed writes, want 0", got)
	}
}
