package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	os.Exit(execute(filepath.Base(os.Args[0]), os.Args[1:], streams))
}

// execute runs the command line args of the binary named program, and
// returns the code to exit with. It prints the error of a failed command
// on streams.ErrOut; a command's own exit code passed through prints
// nothing.
func execute(program string, args []string, streams genericiooptions.IOStreams) int {
	root := newRootCommand(displayName(program), streams)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	failCode := exitError
	if cmd != nil && cmd.Name() == "run" {
		// run's own failures must not look like its command's.
		failCode = exitFailed
	}
	if !silent(err) {
		fmt.Fprintf(streams.ErrOut, "%s: %v\n", root.DisplayName(), err)
	}
	return exitCode(err, failCode)
}

// displayName is the name the binary is called by in help and errors:
// installed as kubectl-leaselock on the PATH, it is the kubectl plugin
// "kubectl leaselock", as kubectl names its plugins.
func displayName(program string) string {
	if plugin, ok := strings.CutPrefix(program, "kubectl-"); ok {
		return "kubectl " + strings.ReplaceAll(plugin, "_", "-")
	}
	return "leaselock"
}
