package main

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/leaselock/leaselock/internal/testenv"
)

// TestBadInput runs command lines that cannot work, in the test's process,
// against a kubeconfig whose server counts requests: each gets its exit
// code and a message that names what is wrong, and sends no request.
func TestBadInput(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "no requests expected", http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	kubeconfig := testenv.KubeConfig(t, &rest.Config{Host: srv.URL, BearerToken: "x"}, "")

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"invalid lock name", []string{"run", "Foo_Bar", "--", "true"}, exitFailed, `invalid lock name "Foo_Bar"`},
		{"no command", []string{"run", "job"}, exitFailed, "requires at least 2 arg(s)"},
		{"two names", []string{"run", "a", "b", "--", "true"}, exitFailed, "one lock name before --"},
		{"no name before --", []string{"run", "--", "sh", "-c", "true"}, exitFailed, "want the lock's NAME before --"},
		{"negative wait", []string{"run", "job", "--wait", "-1s", "--", "true"}, exitFailed, "--wait -1s: want 0 or more"},
		{"lease under a second", []string{"run", "job", "--lease", "500ms", "--", "true"}, exitFailed, "--lease 500ms: want at least 1s"},
		{"grace over half the lease", []string{"run", "job", "--lease", "10s", "--grace", "6s", "--", "true"}, exitFailed, "--grace 6s: want at most half of --lease 10s"},
		{"bad duration", []string{"run", "job", "--wait", "soon", "--", "true"}, exitFailed, `invalid argument "soon"`},
		{"unknown flag", []string{"run", "job", "--wiat", "1s", "--", "true"}, exitFailed, "unknown flag: --wiat"},
		{"command not found", []string{"run", "job", "--", "no-such-command-here"}, exitNotFound, `"no-such-command-here": executable file not found`},
		{"command not executable", []string{"run", "job", "--", kubeconfig}, exitCannotRun, "permission denied"},
		{"invalid namespace", []string{"run", "job", "-n", "Bad_NS", "--", "true"}, exitFailed, `invalid namespace "Bad_NS"`},
		{"identity not UTF-8", []string{"run", "job", "--identity", "pod-\xff", "--", "true"}, exitFailed, `--identity "pod-\xff": not valid UTF-8`},
		{"status: invalid lock name", []string{"status", "a/b"}, exitError, `invalid lock name "a/b"`},
		{"status: unknown output", []string{"status", "-o", "xml"}, exitError, `unable to match a printer suitable for the output format "xml"`},
		{"status: two names", []string{"status", "a", "b"}, exitError, "accepts at most 1 arg(s)"},
		{"unlock: without --force", []string{"unlock", "job"}, exitError, "pass --force"},
		{"unlock: invalid lock name", []string{"unlock", "a/b", "--force"}, exitError, `invalid lock name "a/b"`},
		{"unlock: unknown flag", []string{"unlock", "-x", "--force"}, exitError, "unknown shorthand flag: 'x'"},
		{"unknown command", []string{"lock", "job"}, exitError, `unknown command "lock"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
			args := append([]string{"--kubeconfig", kubeconfig}, tt.args...)
			if code := execute("leaselock", args, streams); code != tt.wantCode {
				t.Errorf("got exit code %d, want %d; stderr: %s", code, tt.wantCode, errOut.String())
			}
			if !strings.HasPrefix(errOut.String(), "leaselock: ") || !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("got stderr %q, want %q after the program's name", errOut.String(), tt.wantErr)
			}
			if out.Len() != 0 {
				t.Errorf("got stdout %q, want nothing", out.String())
			}
			if n := requests.Load(); n != 0 {
				t.Fatalf("got %d requests, want none", n)
			}
		})
	}
}

// TestRunWithoutAPIServer: a run whose API server does not answer exits
// 125 at once, rather than wait for a lock it cannot see.
func TestRunWithoutAPIServer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // its port now refuses connections
	kubeconfig := testenv.KubeConfig(t, &rest.Config{Host: srv.URL, BearerToken: "x"}, "")
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	start := time.Now()
	code := execute("leaselock", []string{"--kubeconfig", kubeconfig, "run", "job", "--", "true"}, streams)
	if code != exitFailed || !strings.Contains(errOut.String(), "does not answer") {
		t.Errorf("got exit code %d and stderr %q, want %d and that the server does not answer", code, errOut.String(), exitFailed)
	}
	if d := time.Since(start); d > reachTimeout {
		t.Errorf("took %v, want an answer within %v", d, reachTimeout)
	}
}

// TestReach: the check before the wait fails on a server that does not
// answer or refuses the credentials, and takes any other answer.
func TestReach(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tests := []struct {
		name    string
		status  int
		wantErr string
	}{
		{"answers", http.StatusOK, ""},
		{"forbids /version", http.StatusForbidden, ""},
		{"refuses the credentials", http.StatusUnauthorized, "refused the credentials"},
		{"does not answer", 0, "does not answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := closed.URL
			if tt.status != 0 {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tt.status)
					_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","code":` + strconv.Itoa(tt.status) + `}`))
				}))
				t.Cleanup(srv.Close)
				host = srv.URL
			}
			err := reach(t.Context(), &rest.Config{Host: host})
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("got %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestKubectlPluginName: installed as kubectl-leaselock, the binary calls
// itself "kubectl leaselock", as kubectl runs it, in its help and errors.
func TestKubectlPluginName(t *testing.T) {
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	if code := execute("kubectl-leaselock", []string{"run", "--help"}, streams); code != 0 {
		t.Fatalf("got exit code %d; stderr: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "kubectl leaselock run NAME [flags] -- COMMAND [ARGS...]") {
		t.Errorf("got help\n%s\nwant the usage of kubectl leaselock run", out.String())
	}
}

// TestKubectlPlugin runs the binary as kubectl runs a plugin: installed on
// the PATH as kubectl-leaselock, `kubectl leaselock` runs it. kubectl is
// built by make ($LEASELOCK_KUBECTL); without it the test skips, except in
// CI.
func TestKubectlPlugin(t *testing.T) {
	kubectl := os.Getenv("LEASELOCK_KUBECTL")
	if _, err := os.Stat(kubectl); kubectl == "" || err != nil {
		if testenv.InCI() {
			t.Fatalf("in CI (CI is set) and no kubectl at $LEASELOCK_KUBECTL (%q): make test builds it", kubectl)
		}
		t.Skipf("no kubectl at $LEASELOCK_KUBECTL (%q): make test builds it", kubectl)
	}
	k := newCluster(t)
	plugins := t.TempDir()
	if err := os.Symlink(built, filepath.Join(plugins, "kubectl-leaselock")); err != nil {
		t.Fatal(err)
	}
	kubectlRun := func(args ...string) (string, error) {
		cmd := exec.Command(kubectl, args...)
		cmd.Env = append(os.Environ(), "PATH="+plugins+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+k.kubeconfig)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := kubectlRun("plugin", "list")
	if err != nil || !strings.Contains(out, filepath.Join(plugins, "kubectl-leaselock")) {
		t.Fatalf("kubectl plugin list: %v\n%s\nwant it to list kubectl-leaselock", err, out)
	}
	out, err = kubectlRun("leaselock", "run", "plugin", "--", "sh", "-c", `echo "held by $LEASELOCK_HOLDER"`)
	if err != nil || !strings.HasPrefix(out, "held by ") {
		t.Fatalf("kubectl leaselock run: %v\n%s", err, out)
	}
	p := k.start(t, "", "run", "plugin", "--", "sleep", "60")
	holder := ptr.Deref(k.waitForHolder(t, "plugin").Spec.HolderIdentity, "")
	out, err = kubectlRun("leaselock", "status")
	if err != nil || !regexp.MustCompile(`(?m)^plugin +`+regexp.QuoteMeta(holder)+` `).MatchString(out) {
		t.Fatalf("kubectl leaselock status: %v\n%s\nwant the lock plugin held by %s", err, out, holder)
	}
	out, err = kubectlRun("leaselock", "run", "plugin", "--wait", "0", "--", "true")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitHeld || !strings.HasPrefix(out, "kubectl leaselock: ") {
		t.Errorf("kubectl leaselock run of a held lock: got %v and\n%s\nwant exit code %d and an error of kubectl leaselock", err, out, exitHeld)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
	k.assertNoLease(t)
}
