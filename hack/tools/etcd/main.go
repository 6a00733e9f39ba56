// Command etcd is etcd's own server main, built from go.etcd.io/etcd/server/v3
// for envtest.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
