package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv makes the test binary the command that countSignals runs.
const childEnv = "LEASELOCK_TEST_COUNT_SIGINT"

// countSignals is the command of the signal tests: it says whether its
// stdin is a terminal, and that it is ready; then, from the first SIGINT,
// it counts them for a second, and exits with the count.
func countSignals() int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT)
	_, err := unix.IoctlGetTermios(0, unix.TCGETS)
	fmt.Printf("tty=%v\nready\n", err == nil)
	select {
	case <-sigs:
	case <-time.After(time.Minute):
		return 0
	}
	n := 1
	end := time.After(time.Second)
	for {
		select {
		case <-sigs:
			n++
		case <-end:
			return n
		}
	}
}

// signalCounter returns the command line of a countSignals command.
func signalCounter(t *testing.T) []string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(childEnv, "1")
	return []string{self}
}

// TestRunPassesSIGINTOn: a SIGINT sent to leaselock alone reaches the
// command once.
func TestRunPassesSIGINTOn(t *testing.T) {
	k := newCluster(t)
	p := k.start(t, "", append([]string{"run", "sigint", "--"}, signalCounter(t)...)...)
	waitFor(t, "the command to be ready", func() bool { return strings.Contains(p.stdout.String(), "ready") })
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Errorf("got exit code %d, want 1: the command got SIGINT %d times, want once; stderr: %s", code, code, p.stderr.String())
	}
	k.assertNoLease(t)
}

// TestRunOnATerminal runs leaselock on a pseudo-terminal, as a shell runs
// it in the foreground: the command has the terminal as its stdin, and a
// Ctrl-C, which the terminal sends to leaselock and the command alike,
// reaches the command once, not twice.
func TestRunOnATerminal(t *testing.T) {
	k := newCluster(t)
	term, tty := openPTY(t)
	cmd := exec.Command(built, append([]string{"--kubeconfig", k.kubeconfig, "run", "tty", "--"}, signalCounter(t)...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	// A session of its own with the terminal as its controlling one: its
	// process group is the terminal's foreground group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var out syncBuffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := term.Read(buf)
			_, _ = out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		term.Close()
	})
	waitFor(t, "the command to be ready", func() bool { return strings.Contains(out.String(), "ready") })
	if _, err := term.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("leaselock still runs 30s after Ctrl-C; terminal: %q", out.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("got exit code %d, want 1: the command got SIGINT %d times, want once; terminal: %q", code, code, out.String())
	}
	if !strings.Contains(out.String(), "tty=true") {
		t.Errorf("got terminal output %q, want the command to see a terminal", out.String())
	}
	k.assertNoLease(t)
}

// openPTY opens a pseudo-terminal, and returns its controlling end and the
// terminal a program runs on.
func openPTY(t *testing.T) (term, tty *os.File) {
	t.Helper()
	term, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	fd := int(term.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("number of the pseudo-terminal: %v", err)
	}
	tty, err = os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return term, tty
}
