package testenv

import (
	"net/http"
	"net/http/httptest"
	"slices"
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
		if err := send(c, tt.method, srv.URL+tt.path); err != nil {
			t.Fatal(err)
		}
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

// TestRequestsTrace: once traced, every request is logged in the order sent,
// with its verb, resource and status (0 when no response came); before
// Trace nothing is, and Reset forgets the log.
func TestRequestsTrace(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost {
			w.WriteHeader(http.StatusConflict)
		}
	}))
	defer srv.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	var r Requests
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: countingTransport{tr, &r}}
	leases := "/apis/coordination.k8s.io/v1/namespaces/ns/leases"

	if err := send(c, http.MethodGet, srv.URL+leases+"/a"); err != nil {
		t.Fatal(err)
	}
	if got := r.Log(); len(got) != 0 {
		t.Errorf("before Trace: got %d requests logged, want 0", len(got))
	}
	r.Trace()
	for _, u := range []struct{ method, url string }{
		{http.MethodPost, srv.URL + leases},
		{http.MethodGet, srv.URL + leases + "?watch=true"},
		{http.MethodDelete, gone.URL + leases + "/a"},
	} {
		_ = send(c, u.method, u.url) // the last fails: no server
	}
	type entry struct {
		verb, resource string
		code           int
	}
	var got []entry
	for i, e := range r.Log() {
		if i > 0 && e.Sent.Before(r.Log()[i-1].Sent) || e.Took <= 0 {
			t.Errorf("request %d: sent %v, took %v: out of order or untimed", i, e.Sent, e.Took)
		}
		got = append(got, entry{e.Verb, e.Resource, e.Code})
	}
	want := []entry{{"create", "leases", http.StatusConflict}, {"watch", "leases", http.StatusOK}, {"delete", "leases", 0}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	r.Reset()
	if got := r.Log(); len(got) != 0 {
		t.Errorf("after Reset: got %d requests logged, want 0", len(got))
	}
}

// send sends a request without a body and discards the answer.
func send(c *http.Client, method, url string) error {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// TestRequestsAcrossNamespaces: a list or watch of every namespace's Leases
// is counted as a list or watch, as one across namespaces; a namespaced
// one is not.
func TestRequestsAcrossNamespaces(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	var r Requests
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: countingTransport{tr, &r}}
	for _, path := range []string{
		"/apis/coordination.k8s.io/v1/leases?limit=500",
		"/apis/coordination.k8s.io/v1/leases?watch=true",
		"/apis/coordination.k8s.io/v1/namespaces/ns/leases",
		"/apis/coordination.k8s.io/v1/namespaces/ns/leases?watch=true",
		"/apis/coordination.k8s.io/v1/namespaces/ns/leases/a",
		"/api/v1/namespaces/ns",
	} {
		if err := send(c, http.MethodGet, srv.URL+path); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		verb, resource string
		count, across  int
	}{
		{"list", "leases", 2, 1},
		{"watch", "leases", 2, 1},
		{"get", "leases", 1, 0},
		{"get", "namespaces", 1, 1},
	}
	for _, tt := range tests {
		if got := r.Count(tt.verb, tt.resource); got != tt.count {
			t.Errorf("Count(%q, %q): got %d, want %d", tt.verb, tt.resource, got, tt.count)
		}
		if got := r.AllNamespaces(tt.verb, tt.resource); got != tt.across {
			t.Errorf("AllNamespaces(%q, %q): got %d, want %d", tt.verb, tt.resource, got, tt.across)
		}
	}
}
