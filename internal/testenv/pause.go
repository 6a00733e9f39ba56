package testenv

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"k8s.io/client-go/rest"
)

// PauseAPIServer stops the package's kube-apiserver with SIGSTOP, as a
// server that stalls does: connections stay open and requests get no
// answer. It returns a func that resumes it (SIGCONT), which also runs at
// t's cleanup. Tests of a package run one at a time, so no other test
// sees the pause.
func PauseAPIServer(t testing.TB) (resume func()) {
	t.Helper()
	pid, err := apiServerPID(Config(t))
	if err != nil {
		t.Fatalf("testenv: find kube-apiserver: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("testenv: pause kube-apiserver: %v", err)
	}
	resumed := false
	resume = func() {
		if resumed {
			return
		}
		resumed = true
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Errorf("testenv: resume kube-apiserver: %v", err)
		}
	}
	t.Cleanup(resume)
	return resume
}

// apiServerPID finds the kube-apiserver process that serves cfg's port,
// by its command line.
func apiServerPID(cfg *rest.Config) (int, error) {
	u, err := url.Parse(cfg.Host)
	if err != nil {
		return 0, err
	}
	flag := []byte("--secure-port=" + u.Port())
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err != nil {
			continue // it exited
		}
		args := bytes.Split(cmdline, []byte{0})
		if filepath.Base(string(args[0])) != "kube-apiserver" {
			continue
		}
		for _, arg := range args[1:] {
			if bytes.Equal(arg, flag) {
				return strconv.Atoi(filepath.Base(filepath.Dir(p)))
			}
		}
	}
	return 0, fmt.Errorf("no kube-apiserver process with %s", flag)
}
