package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLibraryBuildsNoneOfTheCommandsDependencies: a program that imports
// resourcelock or withlock compiles none of the packages the command
// brings in (cobra, cli-runtime and what they import).
func TestLibraryBuildsNoneOfTheCommandsDependencies(t *testing.T) {
	commandOnly := []string{"github.com/spf13/cobra", "k8s.io/cli-runtime/", "sigs.k8s.io/kustomize/"}
	deps := func(pkgs ...string) []string {
		out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).Output()
		if err != nil {
			t.Fatalf("go list -deps %v: %v", pkgs, err)
		}
		return strings.Fields(string(out))
	}
	uses := func(deps []string, prefix string) bool {
		for _, d := range deps {
			if strings.HasPrefix(d, prefix) {
				return true
			}
		}
		return false
	}
	library := deps("github.com/leaselock/leaselock/resourcelock", "github.com/leaselock/leaselock/withlock")
	command := deps("github.com/leaselock/leaselock/cmd/leaselock")
	for _, prefix := range commandOnly {
		if uses(library, prefix) {
			t.Errorf("the library builds %s", prefix)
		}
		if !uses(command, prefix) {
			t.Errorf("the command does not build %s: the check of the library proves nothing", prefix)
		}
	}
}
