package main

import (
	"bytes"
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

	"github.com/google/uuid"
	"k8s.io/utils/ptr"

	"github.com/leaselock/leaselock/internal/testenv"
)

// TestRunPassesTheCommandThrough runs commands under a lock: their exit
// code, stdin, stdout and stderr go through unchanged, and they get the
// lock's name, namespace, holder and token in their environment.
func TestRunPassesTheCommandThrough(t *testing.T) {
	k := newCluster(t)
	tests := []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"exit 0", "", []string{"sh", "-c", "echo out; echo err >&2"}, 0, "out\n", "err\n"},
		{"exit 3", "", []string{"sh", "-c", "echo out; exit 3"}, 3, "out\n", ""},
		{"killed by a signal", "", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9, "", ""},
		{"stdin", "line one\nline two\n", []string{"cat"}, 0, "line one\nline two\n", ""},
		{"environment", "", []string{"sh", "-c", `echo "$LEASELOCK_NAME $LEASELOCK_NAMESPACE"`}, 0, "passthrough " + k.ns + "\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := k.start(t, tt.stdin, append([]string{"run", "passthrough", "--"}, tt.args...)...)
			if code := p.wait(t, time.Minute); code != tt.wantCode {
				t.Errorf("got exit code %d, want %d; stderr: %s", code, tt.wantCode, p.stderr.String())
			}
			if got := p.stdout.String(); got != tt.wantOut {
				t.Errorf("got stdout %q, want %q", got, tt.wantOut)
			}
			if got := p.stderr.String(); got != tt.wantErr {
				t.Errorf("got stderr %q, want %q", got, tt.wantErr)
			}
			k.assertNoLease(t)
		})
	}
}

// TestRunGivesTheCommandItsHolderAndToken checks LEASELOCK_HOLDER and
// LEASELOCK_TOKEN against the Lease while the command runs.
func TestRunGivesTheCommandItsHolderAndToken(t *testing.T) {
	k := newCluster(t)
	done := filepath.Join(t.TempDir(), "done")
	p := k.start(t, "", "run", "env", "--identity", "job-7", "--",
		"sh", "-c", `echo "$LEASELOCK_HOLDER $LEASELOCK_TOKEN"; while [ ! -e "$1" ]; do sleep 0.05; done`, "sh", done)
	lease := k.waitForHolder(t, "env")
	waitFor(t, "the command's output", func() bool { return strings.Contains(p.stdout.String(), "\n") })
	got := strings.Fields(p.stdout.String())
	holder := ptr.Deref(lease.Spec.HolderIdentity, "")
	if len(got) != 2 || got[0] != holder {
		t.Fatalf("got LEASELOCK_HOLDER and LEASELOCK_TOKEN %q, want the Lease's holder %q and a token", got, holder)
	}
	if id, ok := strings.CutPrefix(holder, "job-7_"); !ok || uuid.Validate(id) != nil {
		t.Errorf("got holder %q, want --identity job-7, an underscore and a UUID", holder)
	}
	// The token is the resourceVersion of the write that acquired the lock:
	// the Lease's own, unless a renewal wrote it since.
	if token, err := strconv.ParseUint(got[1], 10, 64); err != nil || token == 0 {
		t.Errorf("got token %q, want a resourceVersion", got[1])
	}
	if lease.ResourceVersion != got[1] && lease.Spec.RenewTime.Equal(lease.Spec.AcquireTime) {
		t.Errorf("got token %q, want the Lease's resourceVersion %q", got[1], lease.ResourceVersion)
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("got exit code %d, want 0; stderr: %s", code, p.stderr.String())
	}
	k.assertNoLease(t)
}

// TestRunWhileHeld: with another holder, --wait 0 and a short --wait exit
// 75 and run nothing; a waiter without --wait gets the lock as soon as the
// holder's command ends; and a SIGTERM to the holder's leaselock reaches
// its command, after which no Lease is left.
func TestRunWhileHeld(t *testing.T) {
	k := newCluster(t)
	log := filepath.Join(t.TempDir(), "log")
	holder := k.start(t, "", "run", "held", "--", "sh", "-c", `echo holder >> "$1"; exec sleep 60`, "sh", log)
	k.waitForHolder(t, "held")

	for _, wait := range []string{"0", "1s"} {
		start := time.Now()
		code, _, stderr := k.run(t, "run", "held", "--wait", wait, "--", "sh", "-c", `echo "must not run" >> "$1"`, "sh", log)
		if code != exitHeld {
			t.Errorf("--wait %s: got exit code %d, want %d; stderr: %s", wait, code, exitHeld, stderr)
		}
		if !strings.Contains(stderr, "held by") {
			t.Errorf("--wait %s: got stderr %q, want it to name the holder", wait, stderr)
		}
		if wait == "1s" && time.Since(start) < time.Second {
			t.Errorf("--wait 1s: gave up after %v", time.Since(start))
		}
	}

	waiter := k.start(t, "", "-v", "1", "run", "held", "--", "sh", "-c", `echo waiter >> "$1"`, "sh", log)
	waitFor(t, "the waiter to take the lock", func() bool { return strings.Contains(waiter.stderr.String(), "taking lock") })
	time.Sleep(time.Second)
	select {
	case <-waiter.exited:
		t.Fatalf("the waiter exited with %d while the lock was held; stderr: %s", waiter.code, waiter.stderr.String())
	default:
	}
	if err := holder.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// sleep dies of the SIGTERM passed on, and leaselock exits as a shell
	// would report it.
	if code := holder.wait(t, 10*time.Second); code != 128+int(syscall.SIGTERM) {
		t.Errorf("holder: got exit code %d, want %d; stderr: %s", code, 128+int(syscall.SIGTERM), holder.stderr.String())
	}
	ended := time.Now()
	if code := waiter.wait(t, 10*time.Second); code != 0 {
		t.Errorf("waiter: got exit code %d, want 0; stderr: %s", code, waiter.stderr.String())
	}
	// Watching the Lease, the waiter is woken by its deletion (the
	// resourcelock tests show how soon); the bound is for a loaded machine.
	if d := time.Since(ended); d > 6*time.Second {
		t.Errorf("the waiter ended %v after the holder, want it woken at the release", d)
	}
	if got, _ := os.ReadFile(log); string(got) != "holder\nwaiter\n" {
		t.Errorf("got the commands' log %q, want the holder's line then the waiter's", got)
	}
	k.assertNoLease(t)
}

// TestRunInterruptedWhileWaiting: a SIGINT to a run that waits for its lock
// ends the wait, with 130, and it leaves no Lease of its own.
func TestRunInterruptedWhileWaiting(t *testing.T) {
	k := newCluster(t)
	holder := k.start(t, "", "run", "busy", "--", "sleep", "60")
	k.waitForHolder(t, "busy")
	waiter := k.start(t, "", "-v", "1", "run", "busy", "--", "echo", "must not run")
	// Logged once leaselock takes the signals, before it waits.
	waitFor(t, "the waiter to take the lock", func() bool { return strings.Contains(waiter.stderr.String(), "taking lock") })
	time.Sleep(300 * time.Millisecond)
	if err := waiter.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := waiter.wait(t, 10*time.Second); code != 128+int(syscall.SIGINT) {
		t.Errorf("got exit code %d, want %d; stderr: %s", code, 128+int(syscall.SIGINT), waiter.stderr.String())
	}
	if out := waiter.stdout.String(); out != "" {
		t.Errorf("the command ran: stdout %q", out)
	}
	// Not the default action of SIGINT, which would exit 130 too.
	if !strings.Contains(waiter.stderr.String(), "interrupted by SIGINT while waiting for lock "+k.ns+"/busy") {
		t.Errorf("got stderr %q, want it to say the wait was interrupted", waiter.stderr.String())
	}
	if err := holder.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	holder.wait(t, 10*time.Second)
	k.assertNoLease(t)
}

// TestRunLockTakenByForce writes another holder into a held Lease: the
// command is stopped within about a renewal period plus --grace, by SIGTERM,
// or by SIGKILL when it ignores SIGTERM, and run exits 124.
func TestRunLockTakenByForce(t *testing.T) {
	k := newCluster(t)
	const lease, grace = 3 * time.Second, time.Second
	tests := []struct {
		name      string
		script    string
		minTime   time.Duration
		wantChild bool
	}{
		{"stops at SIGTERM", `echo started; exec sleep 60`, 0, false},
		{"ignores SIGTERM", `trap "" TERM; echo started; while :; do sleep 0.1; done`, grace, false},
		// The shell dies of SIGTERM; the sleep it started, which ignores
		// SIGTERM, must die too.
		{"started a child", `(trap "" TERM; exec sleep 60) & echo $! > "$1"; echo started; wait`, 0, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "taken-" + strconv.Itoa(i)
			childPID := filepath.Join(t.TempDir(), "pid")
			p := k.start(t, "", "run", name, "--lease", lease.String(), "--grace", grace.String(), "--", "sh", "-c", tt.script, "sh", childPID)
			waitFor(t, "the command to start", func() bool { return p.stdout.String() != "" })
			k.waitForHolder(t, name)
			k.takeOver(t, name, "intruder")
			taken := time.Now()
			// A renewal every third of the lease finds the intruder; the
			// rest is slack for a loaded machine.
			bound := lease/3 + grace + 5*time.Second
			code := p.wait(t, time.Minute)
			took := time.Since(taken)
			if code != exitLost {
				t.Errorf("got exit code %d, want %d; stderr: %s", code, exitLost, p.stderr.String())
			}
			if took > bound || took < tt.minTime {
				t.Errorf("the run ended %v after the takeover, want between %v and %v", took, tt.minTime, bound)
			}
			if !strings.Contains(p.stderr.String(), "lost while the command ran") {
				t.Errorf("got stderr %q, want it to say the lock was lost", p.stderr.String())
			}
			// The release left the intruder's Lease alone.
			if l := k.lease(t, name); l == nil || ptr.Deref(l.Spec.HolderIdentity, "") != "intruder" {
				t.Errorf("got Lease %v after the run, want the intruder's", l)
			}
			if tt.wantChild {
				pid, err := os.ReadFile(childPID)
				if err != nil {
					t.Fatalf("the command's child: %v", err)
				}
				n, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
				if alive(n) {
					_ = syscall.Kill(n, syscall.SIGKILL)
					t.Errorf("the command's child %d outlived the lock", n)
				}
			}
			if err := k.c.Delete(context.Background(), k.lease(t, name)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRunKeepsIgnoredSignalsIgnored: a signal that leaselock was started
// ignoring, as nohup starts a program, stays ignored by the command.
func TestRunKeepsIgnoredSignalsIgnored(t *testing.T) {
	k := newCluster(t)
	script := `trap "" HUP; exec "$0" --kubeconfig "$1" run nohup -- sh -c 'kill -HUP $$; echo alive'`
	out, err := exec.Command("sh", "-c", script, built, k.kubeconfig).CombinedOutput()
	if err != nil || string(out) != "alive\n" {
		t.Errorf("got %v and output %q, want the command to outlive its SIGHUP", err, out)
	}
	k.assertNoLease(t)
}

// waitFor polls cond for up to 30s, and fails t with what when it never
// holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRunWithTheExampleRole runs, waits for and shows a lock as a user
// with only the Role of examples/leaselock-command/rbac.yaml.
func TestRunWithTheExampleRole(t *testing.T) {
	k := newCluster(t)
	testenv.Grant(t, k.c, k.ns, "lock-job", testenv.ReadRole(t, "../../examples/leaselock-command/rbac.yaml"))
	user := &cluster{c: k.c, ns: k.ns, kubeconfig: testenv.KubeConfig(t, testenv.UserConfig(t, "lock-job"), k.ns)}
	holder := user.start(t, "", "run", "role", "--", "sleep", "60")
	k.waitForHolder(t, "role")
	waiter := user.start(t, "", "run", "role", "--", "echo", "waited")
	if code, out, stderr := user.run(t, "status"); code != 0 || !regexp.MustCompile(`(?m)^role `).MatchString(out) {
		t.Errorf("status: got exit code %d, stdout %q, stderr %q; want the lock role", code, out, stderr)
	}
	if err := holder.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	holder.wait(t, 10*time.Second)
	if code := waiter.wait(t, 10*time.Second); code != 0 || waiter.stdout.String() != "waited\n" {
		t.Errorf("waiter: got exit code %d and stdout %q; stderr: %s", code, waiter.stdout.String(), waiter.stderr.String())
	}
	for _, p := range []*invocation{holder, waiter} {
		if strings.Contains(p.stderr.String(), "forbidden") {
			t.Errorf("got stderr %q, want no request forbidden", p.stderr.String())
		}
	}
	k.assertNoLease(t)
}

// alive reports whether process pid runs: it exists and is no zombie
// (an orphan waits as one until its new parent reaps it).
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command's name, in parentheses.
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	return !bytes.HasPrefix(bytes.TrimSpace(rest), []byte("Z"))
}

// TestRunKilledTakesItsCommandAlong: a SIGKILL to leaselock, which can pass
// nothing on, kills its command too (Linux), which would otherwise run on
// without anyone renewing its lock.
func TestRunKilledTakesItsCommandAlong(t *testing.T) {
	k := newCluster(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := k.start(t, "", "run", "killed", "--", "sh", "-c", `echo $$ > "$1"; exec sleep 60`, "sh", pidFile)
	k.waitForHolder(t, "killed")
	var pid int
	waitFor(t, "the command's pid", func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	})
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
	waitFor(t, "the command to die with leaselock", func() bool { return !alive(pid) })
	// The Lease stays until it expires: no one released it.
	if err := k.c.Delete(context.Background(), k.lease(t, "killed")); err != nil {
		t.Fatal(err)
	}
}
