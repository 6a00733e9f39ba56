package localapi_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/util/version"

	"github.com/leaselock/leaselock/internal/localapi"
	"github.com/leaselock/leaselock/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// childEnv marks the process that TestServersExitWithParent starts and
// kills.
const childEnv = "LEASELOCK_LOCALAPI_CHILD"

// TestServersExitWithParent starts a process that starts the local control
// plane, kills it with SIGKILL, so that none of its cleanup runs, and wants
// the kube-apiserver and etcd it started to exit on their own: envtest runs
// them in process groups of their own, and without the watch on their
// parent (hack/tools) they would run on.
func TestServersExitWithParent(t *testing.T) {
	if _, err := localapi.AssetsDir(); err != nil {
		if testenv.InCI() {
			t.Fatalf("in CI (CI is set) and the API server is not available: %v", err)
		}
		t.Skip(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestChildProcess$", "-test.v")
	// envtest's folders go under the test's, which the test removes: the
	// killed child cannot.
	cmd.Env = append(os.Environ(), childEnv+"=1", "TMPDIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait() // its error is the kill below
	defer cmd.Process.Kill()
	ready := false
	for lines := bufio.NewScanner(out); !ready && lines.Scan(); {
		ready = lines.Text() == "ready"
	}
	if !ready {
		t.Fatal("the child process ended before its control plane was ready")
	}
	servers := serversOf(cmd.Process.Pid)
	if len(servers) != 2 {
		t.Fatalf("got servers %v under the child process, want kube-apiserver and etcd", servers)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// They look every second; a minute is a bound on a hang, not a speed.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		running := map[int]string{}
		for pid, name := range servers {
			if state(pid, name) != "" {
				running[pid] = name
			}
		}
		if len(running) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for pid := range running {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("%v still running a minute after their parent was killed", running)
		}
	}
}

// TestChildProcess is not a test of its own: it is the body of the process
// that TestServersExitWithParent starts (the helper-process pattern of
// os/exec's tests). It starts the control plane, says so, and waits to be
// killed, for two minutes at most.
func TestChildProcess(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("the body of the process that TestServersExitWithParent kills")
	}
	s, err := localapi.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop() // only if nobody killed this process
	os.Stdout.WriteString("ready\n")
	time.Sleep(2 * time.Minute)
}

// serversOf returns the kube-apiserver and etcd processes whose parent is
// pid, by PID.
func serversOf(parent int) map[int]string {
	servers := map[int]string{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		comm, fields, ok := readStat(path)
		if !ok || len(fields) < 2 || fields[1] != strconv.Itoa(parent) || comm != "kube-apiserver" && comm != "etcd" {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		servers[pid] = comm
	}
	return servers
}

// state returns the state of process pid if it is still name and has not
// exited (a zombie has), else "".
func state(pid int, name string) string {
	comm, fields, ok := readStat(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if !ok || comm != name || len(fields) < 1 || fields[0] == "Z" || fields[0] == "X" {
		return ""
	}
	return fields[0]
}

// readStat reads /proc/PID/stat: the command name, and the fields after it
// (state, ppid, ...).
func readStat(path string) (comm string, fields []string, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, false
	}
	line := string(data)
	open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || end < open {
		return "", nil, false
	}
	return line[open+1 : end], strings.Fields(line[end+1:]), true
}

// TestAssetsDirPicksNewestRelease: without KUBEBUILDER_ASSETS, the binaries
// come from the folder of the newest release in bin/k8s, compared as
// versions (v1.37.2 after v1.9.0), whatever else the folder holds.
func TestAssetsDirPicksNewestRelease(t *testing.T) {
	tests := []struct {
		name    string
		folders []string // each with both binaries
		files   []string // beside them, in bin/k8s
		half    []string // folders with kube-apiserver only
		want    string   // "" for an error
	}{
		{name: "one release", folders: []string{"v1.37.2"}, want: "v1.37.2"},
		{name: "newest of two", folders: []string{"v1.34.4", "v1.37.2"}, want: "v1.37.2"},
		{name: "by version, not by name", folders: []string{"v1.9.0", "v1.10.1"}, want: "v1.10.1"},
		{name: "not a release", folders: []string{"v1.34.4", "scratch", "1.99.0"}, files: []string{"etcd-v3.6.16", "v1.99.0"}, want: "v1.34.4"},
		{name: "no release", folders: []string{"scratch"}, files: []string{"kube-apiserver", "etcd"}},
		{name: "a newer build cut short", folders: []string{"v1.34.4"}, half: []string{"v1.37.2"}, want: "v1.34.4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			k8s := filepath.Join(root, "bin", "k8s")
			for _, f := range tt.folders {
				writeFiles(t, filepath.Join(k8s, f), localapi.Binaries...)
			}
			writeFiles(t, k8s, tt.files...)
			for _, f := range tt.half {
				writeFiles(t, filepath.Join(k8s, f), "kube-apiserver")
			}
			t.Setenv("KUBEBUILDER_ASSETS", "")
			t.Chdir(root)
			got, err := localapi.AssetsDir()
			switch {
			case tt.want == "" && err == nil:
				t.Errorf("AssetsDir: got %s, want an error", got)
			case tt.want != "" && err != nil:
				t.Errorf("AssetsDir: %v, want %s", err, tt.want)
			case tt.want != "" && got != filepath.Join(k8s, tt.want):
				t.Errorf("AssetsDir: got %s, want %s", got, filepath.Join(k8s, tt.want))
			}
		})
	}
}

func writeFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBinaryTellsItsRelease: the kube-apiserver the tests run says which
// release it is, as a released binary does, and a folder named by a release
// (bin/k8s/v1.34.4) holds that release. An unstamped build says
// v0.0.0-master.
func TestBinaryTellsItsRelease(t *testing.T) {
	dir, err := localapi.AssetsDir()
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("in CI (CI is set) and the API server is not available: %v", err)
		}
		t.Skip(err)
	}
	out, err := exec.Command(filepath.Join(dir, "kube-apiserver"), "--version").Output()
	if err != nil {
		t.Fatalf("kube-apiserver --version: %v", err)
	}
	told := strings.TrimPrefix(strings.TrimSpace(string(out)), "Kubernetes ")
	v, err := version.ParseSemantic(told)
	if err != nil || v.Major() == 0 {
		t.Fatalf("kube-apiserver --version: got %q, want a release", out)
	}
	if folder := filepath.Base(dir); strings.HasPrefix(folder, "v") {
		if _, err := version.ParseSemantic(folder); err == nil && folder != told {
			t.Errorf("kube-apiserver --version in %s: got %s, want %s", dir, told, folder)
		}
	}
}
