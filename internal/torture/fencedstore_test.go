package torture_test

// The store of TestTorturePause's token mode: a system outside the cluster
// that the lock fences with its tokens, and the workers' client of it.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leaselock/leaselock/resourcelock"
)

// fencedStore stands for a system outside the cluster (a database, a
// bucket) that a holder writes under the lock: an HTTP server in the test
// process that keeps a count and the largest fencing token it has seen,
// and refuses, with 409, a request whose token is smaller.
//
// Reads carry the token too, and raise the fence as writes do: the
// workers read the count and write it plus one, and a store that checked
// writes alone would take a stale holder's write that lands between the
// new holder's read and write, which the new holder's write, based on
// its read, then overwrites. Raised by the read, the fence refuses it.
// The check and the read or write it guards are one step, under mu, as a
// database does them in one transaction.
type fencedStore struct {
	srv *httptest.Server

	mu      sync.Mutex // guards the fields below
	count   int
	fence   string // the largest token seen; "" before the first request
	refused int
}

// startFencedStore starts a fenced store, at 0, closed at the end of t.
func startFencedStore(t *testing.T) *fencedStore {
	s := &fencedStore{}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// serve answers GET /count?token=T with the count, and PUT
// /count?token=T&value=N by setting it, once T passed the fence.
func (s *fencedStore) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	token := q.Get("token")
	s.mu.Lock()
	defer s.mu.Unlock()
	fence := cmp.Or(s.fence, token) // the first token is compared with itself: checked, and let in
	c, err := resourcelock.CompareTokens(token, fence)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case c < 0:
		s.refused++
		http.Error(w, fmt.Sprintf("token %s refused: the store has seen %s", token, s.fence), http.StatusConflict)
		return
	}
	s.fence = token
	if r.Method == http.MethodPut {
		n, err := strconv.Atoi(q.Get("value"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.count = n
	}
	fmt.Fprint(w, s.count)
}

// read returns the count, with the times around the read, as readCounter
// does for a ConfigMap.
func (s *fencedStore) read() (n int, call, ret int64) {
	call = time.Now().UnixNano()
	s.mu.Lock()
	n = s.count
	s.mu.Unlock()
	return n, call, time.Now().UnixNano()
}

// refusals returns how many requests the store refused.
func (s *fencedStore) refusals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// tokenClient is a worker's client of the fenced store (fencedStore): every
// request carries the lock's token.
type tokenClient struct {
	base string
	hc   *http.Client
}

// refusedError is the fenced store's refusal of a token.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

func (s *tokenClient) read(ctx context.Context, token string) (int, error) {
	return s.do(ctx, http.MethodGet, url.Values{"token": {token}})
}

func (s *tokenClient) write(ctx context.Context, token string, n int) error {
	_, err := s.do(ctx, http.MethodPut, url.Values{"token": {token}, "value": {strconv.Itoa(n)}})
	return err
}

func (s *tokenClient) outcome(err error) (string, string) {
	var refused *refusedError
	switch {
	case err == nil:
		return wroteYes, ""
	case errors.As(err, &refused):
		return wroteNo, whyToken
	}
	return wroteMaybe, ""
}

// do sends one request to the store, and returns the count it answers.
func (s *tokenClient) do(ctx context.Context, method string, q url.Values) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.base+"/count?"+q.Encode(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	msg := strings.TrimSpace(string(body))
	switch resp.StatusCode {
	case http.StatusOK:
		return strconv.Atoi(msg)
	case http.StatusConflict:
		return 0, &refusedError{msg: msg}
	}
	return 0, fmt.Errorf("fenced store: %s: %s", resp.Status, msg)
}
