// Command etcd is etcd's own server main, built from go.etcd.io/etcd/server/v3
// for envtest, that can also exit when the process that started it is gone
// (see exitWithParent): envtest starts it in a process group of its own, so
// a test binary that is killed, panics or times out would otherwise leave it
// running.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	go exitWithParent()
	etcdmain.Main(os.Args)
}

// exitWithParent ends the process once the process that started it has
// exited, which shows as a new parent (init, or a subreaper). It watches
// only when $LEASELOCK_EXIT_WITH_PARENT names that process's PID, as the
// project's localapi sets it; started any other way (by a supervisor that
// forks twice, say), the binary runs as Kubernetes' own. It polls:
// PR_SET_PDEATHSIG fires when the parent's thread exits, not the parent,
// and a Go parent's threads come and go.
func exitWithParent() {
	parent, err := strconv.Atoi(os.Getenv("LEASELOCK_EXIT_WITH_PARENT"))
	if err != nil {
		return
	}
	for ; ; time.Sleep(time.Second) {
		if os.Getppid() != parent {
			fmt.Fprintf(os.Stderr, "etcd: parent process %d exited, exiting\n", parent)
			os.Exit(2)
		}
	}
}
