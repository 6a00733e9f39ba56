// Command kube-apiserver is Kubernetes' own kube-apiserver main
// (k8s.io/kubernetes/cmd/kube-apiserver), built for envtest, that can also
// exit when the process that started it is gone (see exitWithParent):
// envtest starts it in a process group of its own, so a test binary that is
// killed, panics or times out would otherwise leave it running.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
	_ "time/tzdata" // for timeZone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	go exitWithParent()
	os.Exit(cli.Run(app.NewAPIServerCommand()))
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
			fmt.Fprintf(os.Stderr, "kube-apiserver: parent process %d exited, exiting\n", parent)
			os.Exit(2)
		}
	}
}
