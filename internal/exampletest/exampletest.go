// Package exampletest builds and runs the example programs in tests, so that
// they cannot rot.
package exampletest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leaselock/leaselock/internal/localapi"
	"github.com/leaselock/leaselock/internal/testenv"
)

// Build builds the main package in the working directory and returns the
// binary's path, with the race detector when the tests run with it. It
// skips t when the local API server's binaries are absent, except in CI,
// where that fails t.
func Build(t *testing.T) string {
	t.Helper()
	if _, err := localapi.AssetsDir(); err != nil {
		if testenv.InCI() {
			t.Fatalf("in CI (CI is set) and the API server is not available: %v", err)
		}
		t.Skip(err)
	}
	return BuildTo(t, filepath.Join(t.TempDir(), "example"))
}

// BuildTo builds the main package in the working directory into bin, with
// the race detector when the tests run with it, and returns bin.
func BuildTo(t *testing.T, bin string) string {
	t.Helper()
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Run runs bin with args and returns its combined output; it fails t when
// the program fails. The program starts the local API server: a KUBECONFIG
// in the test's environment is not passed on, so that a test never writes
// to the cluster of the developer's shell.
//
// A program still running a minute before the test binary's deadline is
// stopped as Ctrl-C would stop it (SIGTERM: it cleans up and prints its
// summary), and killed 30s later, so that the test fails with its output
// instead of the whole binary timing out.
func Run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx := t.Context()
	if deadline, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-time.Minute))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(bin), args, err, out)
	}
	return string(out)
}

// Figure returns the number on the summary line that starts with label, and
// fails t when there is none.
func Figure(t *testing.T, out, label string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(label) + `\s+(\d+)\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in the summary:\n%s", label, out)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// errorLine matches a log line at error level: controller-runtime's console
// format ("12:00:00.000	ERROR	..."), its JSON format ("level":"error"),
// and klog's ("E1207 12:00:00.000000 ...").
var errorLine = regexp.MustCompile(`\tERROR\t|"level":"error"|^E\d{4} \d`)

// ErrorLines returns the lines of out that a logger wrote at error level.
func ErrorLines(out string) []string {
	var lines []string
	for line := range strings.Lines(out) {
		if errorLine.MatchString(line) {
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
	}
	return lines
}

// ScreenLines is the height of a terminal: a clean run of an example fits
// in it, summary and all.
const ScreenLines = 40

// CheckQuiet fails t if out, the output of a clean run, has a line at
// error level or more lines than a screen.
func CheckQuiet(t *testing.T, out string) {
	t.Helper()
	if lines := ErrorLines(out); len(lines) > 0 {
		t.Errorf("error lines in a clean run: got %q, want none", lines)
	}
	if got := strings.Count(out, "\n"); got > ScreenLines {
		t.Errorf("lines of output: got %d, want at most %d", got, ScreenLines)
	}
}
