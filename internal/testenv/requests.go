package testenv

import (
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Requests counts the requests clients send, by verb and resource, on the
// client side: what a lock costs the API server, measured, not estimated.
// It also times the writes that succeed.
type Requests struct {
	mu         sync.Mutex
	counts     map[[2]string]int
	compressed map[[2]string]int
	// across counts the requests whose path names no namespace.
	across map[[2]string]int
	writes map[string][]time.Duration
	// tracing is set by Trace; log then holds every request since.
	tracing bool
	log     []Request
}

// Request is one request as Requests traces it.
type Request struct {
	Verb, Resource string
	Sent           time.Time
	// Took is how long the response took to come (for a watch, its
	// headers); Code is its status, 0 when none came.
	Took time.Duration
	Code int
}

// Trace makes r keep every request from now on, for Log: when each was
// sent, how long it took and what it got, the raw material behind a count.
func (r *Requests) Trace() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tracing = true
}

// Log returns the requests traced since Trace, or since the last Reset.
func (r *Requests) Log() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

// Count returns the requests of verb (get, list, watch, create, update,
// patch, delete) on resource (leases, configmaps); "" matches any.
func (r *Requests) Count(verb, resource string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return sum(r.counts, verb, resource)
}

// AllNamespaces returns how many of the requests that Count counts named
// no namespace: a list or watch of every namespace's objects, as the
// informer of a cluster-wide cache sends (or a request for a cluster-scoped
// resource).
func (r *Requests) AllNamespaces(verb, resource string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return sum(r.across, verb, resource)
}

// Compressed returns how many of the requests that Count counts were
// answered gzip-compressed (the transport decompressed them).
func (r *Requests) Compressed(verb, resource string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return sum(r.compressed, verb, resource)
}

// sum adds up the counts of verb on resource; "" matches any.
func sum(counts map[[2]string]int, verb, resource string) int {
	n := 0
	for k, c := range counts {
		if (verb == "" || k[0] == verb) && (resource == "" || k[1] == resource) {
			n += c
		}
	}
	return n
}

// Writes returns how long each write (create, update, patch, delete) of
// resource that succeeded took, from sending it to its response.
func (r *Requests) Writes(resource string) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.writes[resource])
}

// Reset sets every count to zero and forgets the writes and the traced
// requests.
func (r *Requests) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.counts)
	clear(r.compressed)
	clear(r.across)
	clear(r.writes)
	r.log = nil
}

// traced records req, sent at sent, if r traces; resp is nil when no
// response came.
func (r *Requests) traced(req *http.Request, sent time.Time, resp *http.Response) {
	took := time.Since(sent) // before waiting for the lock
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.tracing {
		return
	}
	k := key(req)
	e := Request{Verb: k[0], Resource: k[1], Sent: sent, Took: took}
	if resp != nil {
		e.Code = resp.StatusCode
	}
	r.log = append(r.log, e)
}

// wrote records a write of resource that succeeded in d.
func (r *Requests) wrote(resource string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.writes == nil {
		r.writes = map[string][]time.Duration{}
	}
	r.writes[resource] = append(r.writes[resource], d)
}

func (r *Requests) add(req *http.Request) {
	r.bump(&r.counts, req)
	if p := parsePath(req.URL.Path); p.api && p.namespace == "" {
		r.bump(&r.across, req)
	}
}

// decompressed records that the transport decompressed the answer to req.
func (r *Requests) decompressed(req *http.Request) { r.bump(&r.compressed, req) }

// bump counts req in *m.
func (r *Requests) bump(m *map[[2]string]int, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if *m == nil {
		*m = map[[2]string]int{}
	}
	(*m)[key(req)]++
}

// key is the verb and resource of req.
func key(req *http.Request) [2]string {
	p := parsePath(req.URL.Path)
	verb := map[string]string{
		http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete",
	}[req.Method]
	if req.Method == http.MethodGet {
		verb = "get"
		if req.URL.Query().Get("watch") == "true" {
			verb = "watch"
		} else if p.collection {
			verb = "list"
		}
	}
	return [2]string{verb, p.resource}
}

// apiPath is what an API path such as
// /apis/coordination.k8s.io/v1/namespaces/ns/leases/name names.
type apiPath struct {
	// api is set for a path under /api or /apis.
	api bool
	// namespace is "" for a path that names none.
	namespace, resource string
	// collection is set for a path that names no object of the resource.
	collection bool
}

// parsePath reads an API path: /api/v1 or /apis/GROUP/VERSION, then
// namespaces/NS for a namespaced one, then the resource, and the object's
// name and subresource if any. Any other path is its last element, as a
// resource.
func parsePath(path string) apiPath {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var p apiPath
	switch {
	case len(parts) > 2 && parts[0] == "api":
		p.api, parts = true, parts[2:]
	case len(parts) > 3 && parts[0] == "apis":
		p.api, parts = true, parts[3:]
	default:
		p.resource = parts[len(parts)-1]
		return p
	}
	if len(parts) > 2 && parts[0] == "namespaces" {
		p.namespace, parts = parts[1], parts[2:]
	}
	p.resource, p.collection = parts[0], len(parts) == 1
	return p
}

type countingTransport struct {
	next http.RoundTripper
	r    *Requests
}

// WrappedRoundTripper returns the transport t counts the requests of, so
// that utilnet.CloseIdleConnectionsFor reaches it.
func (t countingTransport) WrappedRoundTripper() http.RoundTripper { return t.next }

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.r.add(req)
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		t.r.traced(req, start, nil)
	} else {
		t.r.traced(req, start, resp)
	}
	if err == nil && resp.Uncompressed {
		t.r.decompressed(req)
	}
	if err == nil && req.Method != http.MethodGet && resp.StatusCode/100 == 2 {
		t.r.wrote(parsePath(req.URL.Path).resource, time.Since(start))
	}
	return resp, err
}

// CountedConfig returns a config of the package's control plane (see
// Config) whose client has a connection of its own, as a separate replica
// would, and whose requests r counts.
func CountedConfig(t testing.TB, r *Requests) *rest.Config {
	t.Helper()
	cfg := Config(t)
	// A Dial function of its own keeps client-go from sharing a cached
	// transport, and so a connection, with other clients.
	cfg.Dial = (&net.Dialer{}).DialContext
	cfg.Wrap(CountingTransport(r))
	return cfg
}

// CountingTransport wraps a config's transport so that r counts its
// requests: cfg.Wrap(CountingTransport(r)).
func CountingTransport(r *Requests) transport.WrapperFunc {
	return func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt, r} }
}

// CountedClient returns a client built from CountedConfig.
func CountedClient(t testing.TB, r *Requests) client.WithWatch {
	t.Helper()
	c, err := client.NewWithWatch(CountedConfig(t, r), client.Options{})
	if err != nil {
		t.Fatalf("testenv: new client: %v", err)
	}
	return c
}
