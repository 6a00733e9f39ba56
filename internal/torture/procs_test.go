package torture_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes cfg as a kubeconfig file for worker processes.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["torture"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["torture"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken,
	}
	kc.Contexts["torture"] = &clientcmdapi.Context{Cluster: "torture", AuthInfo: "torture"}
	kc.CurrentContext = "torture"
	b, err := clientcmd.Write(*kc)
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	return path
}

// workers runs worker processes and gathers the records they print.
type workers struct {
	t       *testing.T
	mu      sync.Mutex
	records []record
	procs   []*worker
	// onRecord, when set before the first start, sees every record as it
	// arrives, for a parent that must act at once (TestTortureHA's kill
	// of a server while a release is on its way).
	onRecord func(record)
}

// worker is one worker process.
type worker struct {
	cfg    workerConfig
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	output bytes.Buffer // everything but the records: the test framework's lines, panics
	exited chan struct{}
	err    error // of cmd.Wait
	killed bool
}

func newWorkers(t *testing.T) *workers {
	ws := &workers{t: t}
	t.Cleanup(func() {
		// A test that failed half way leaves no process behind.
		for _, w := range ws.procs {
			select {
			case <-w.exited:
			default:
				w.cmd.Process.Kill()
				<-w.exited
			}
		}
	})
	return ws
}

// start starts a worker process with cfg.
func (ws *workers) start(cfg workerConfig) *worker {
	t := ws.t
	t.Helper()
	// A worker ends by the test's deadline, so that a parent killed by its
	// -timeout leaves no process behind for long.
	cfg.Timeout = 30 * time.Minute
	if d, ok := t.Deadline(); ok {
		cfg.Timeout = time.Until(d)
	}
	spec, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := &worker{cfg: cfg, exited: make(chan struct{})}
	w.cmd = exec.Command(os.Args[0], "-test.run=^TestWorkerProcess$", "-test.count=1",
		"-test.timeout="+(cfg.Timeout+10*time.Second).String())
	w.cmd.Env = append(os.Environ(), workerEnv+"="+string(spec))
	w.cmd.Stderr = &lockedWriter{mu: &w.mu, w: &w.output}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start worker %d: %v", cfg.Proc, err)
	}
	ws.procs = append(ws.procs, w)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			rest, ok := strings.CutPrefix(line, recordPrefix)
			if !ok {
				w.mu.Lock()
				fmt.Fprintln(&w.output, line)
				w.mu.Unlock()
				continue
			}
			var r record
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				w.mu.Lock()
				fmt.Fprintf(&w.output, "bad record %q: %v\n", line, err)
				w.mu.Unlock()
				continue
			}
			ws.mu.Lock()
			ws.records = append(ws.records, r)
			ws.mu.Unlock()
			if ws.onRecord != nil {
				ws.onRecord(r)
			}
		}
		// Read to the end first: Wait closes the pipe.
		io.Copy(io.Discard, stdout)
		w.err = w.cmd.Wait()
		close(w.exited)
	}()
	return w
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// open lets a worker started with Gate go.
func (w *worker) open() error { return w.tell("go") }

// tell writes line on the worker's stdin: a pipe, which holds it for a
// worker that is stopped until it runs again.
func (w *worker) tell(line string) error {
	_, err := io.WriteString(w.stdin, line+"\n")
	return err
}

// signal sends sig to the worker (SIGSTOP, SIGCONT) and returns when it was
// sent.
func (w *worker) signal(t *testing.T, sig syscall.Signal) time.Time {
	t.Helper()
	at := time.Now()
	if err := w.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v to worker %d: %v", sig, w.cfg.Proc, err)
	}
	return at
}

// kill sends SIGKILL to the worker and returns when it was sent.
func (w *worker) kill(t *testing.T) time.Time {
	t.Helper()
	w.killed = true
	at := time.Now()
	if err := w.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill worker %d: %v", w.cfg.Proc, err)
	}
	<-w.exited
	return at
}

// stop tells the workers started with UntilStopped to stop once their
// withlock calls in flight return, and closes their stdin.
func (ws *workers) stop() {
	for _, w := range ws.procs {
		io.WriteString(w.stdin, "stop\n")
		w.stdin.Close()
	}
}

// snapshot returns a copy of the records so far.
func (ws *workers) snapshot() []record {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return append([]record(nil), ws.records...)
}

// waitFor waits until ok holds for the records so far, and reports whether
// it did before every worker exited. It polls: the parent's pace does not
// matter to the lock.
func (ws *workers) waitFor(ok func([]record) bool) bool {
	for {
		if ok(ws.snapshot()) {
			return true
		}
		if ws.allExited() {
			return ok(ws.snapshot())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (ws *workers) allExited() bool {
	for _, w := range ws.procs {
		select {
		case <-w.exited:
		default:
			return false
		}
	}
	return true
}

// wait waits for every worker to exit and fails t for any that failed, other
// than those it killed. A worker that hangs ends at its own timeout, the
// test's deadline.
func (ws *workers) wait() {
	t := ws.t
	t.Helper()
	for _, w := range ws.procs {
		<-w.exited
		if w.err != nil && !w.killed {
			w.mu.Lock()
			t.Errorf("worker %d: %v\n%s", w.cfg.Proc, w.err, w.output.String())
			w.mu.Unlock()
		}
	}
}

// count returns how many records r satisfy ok.
func count(rs []record, ok func(r record) bool) int {
	n := 0
	for _, r := range rs {
		if ok(r) {
			n++
		}
	}
	return n
}
