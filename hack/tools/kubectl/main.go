// Command kubectl is kubectl's own main (k8s.io/kubernetes/cmd/kubectl),
// built so that the tests can show the leaselock binary working as the
// kubectl plugin "kubectl leaselock".
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
