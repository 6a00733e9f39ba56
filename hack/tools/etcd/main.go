// Command etcd is etcd's own server main, built from go.etcd.io/etcd/server/v3
// for envtest, that also exits when the process that started it is gone:
// envtest starts it in a process group of its own, so a test binary that is
// killed, panics or times out would otherwise leave it running.
package main

import (
	"fmt"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	go exitWithParent()
	etcdmain.Main(os.Args)
}

// exitWithParent ends the process once its parent has exited, which shows
// as a new parent (init, or a subreaper). It polls: PR_SET_PDEATHSIG fires
// when the parent's thread exits, not the parent, and a Go parent's threads
// come and go.
func exitWithParent() {
	parent := os.Getppid()
	for range time.Tick(time.Second) {
		if os.Getppid() != parent {
			fmt.Fprintf(os.Stderr, "etcd: parent process %d exited, exiting\n", parent)
			os.Exit(2)
		}
	}
}
