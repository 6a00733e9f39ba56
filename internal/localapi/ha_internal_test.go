package localapi

import (
	"os/exec"
	"testing"
)

// TestChildPIDAndKill: childPID finds a child of this process by its name
// and an argument, and kill returns once the child is gone (reaped), after
// which childPID finds it no more. StartHA signals its etcd members and API
// servers this way.
func TestChildPIDAndKill(t *testing.T) {
	cmd := exec.Command("sleep", "3601")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep to start: %v", err)
	}
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		cmd.Wait() // its error is the kill below
	}()
	defer func() { <-reaped }()
	defer cmd.Process.Kill() // only if the test failed before its kill

	pid, err := childPID("sleep", "3601")
	if err != nil {
		t.Fatalf("childPID: %v", err)
	}
	if pid != cmd.Process.Pid {
		t.Fatalf("childPID: got %d, want %d", pid, cmd.Process.Pid)
	}
	if _, err := childPID("sleep", "3602"); err == nil {
		t.Errorf("childPID of another argument: got no error, want one")
	}
	if err := kill(pid); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if _, err := childPID("sleep", "3601"); err == nil {
		t.Errorf("childPID after the kill: got no error, want one")
	}
}
